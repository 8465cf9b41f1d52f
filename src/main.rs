//! The `switchboard` binary: parses the command line and hands over to
//! [`switchboard::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = switchboard::cli::Cli::parse();
    switchboard::cli::init_logging(cli.log_format);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.worker_threads {
        rt.worker_threads(n.get());
    }
    match rt.enable_all().build() {
        Ok(rt) => rt.block_on(switchboard::cli::main(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
