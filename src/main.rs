//! The `switchboard` binary: parses the command line and hands over to
//! [`switchboard::cli`].

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = switchboard::cli::Cli::parse();
    switchboard::cli::init_logging(cli.log_format);
    switchboard::cli::main(cli).await
}
