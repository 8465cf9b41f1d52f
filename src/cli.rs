//! The command line: `switchboard run | check | status | pause | resume |
//! reload | dead-letters`. The commands that talk to the running process
//! use its admin listener with the admin token (see [`crate::admin::cli`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Settings};
use crate::store::Store;

/// A multi-protocol messaging bridge with a durable outbox.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    /// Configuration file; the embedded default (config/switchboard.toml)
    /// when absent.
    #[arg(long, short, global = true, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Threads for the async runtime (default: one per CPU).
    #[arg(long, global = true, env = "SWITCHBOARD_WORKER_THREADS")]
    pub worker_threads: Option<std::num::NonZeroUsize>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge until SIGTERM or SIGINT.
    Run,
    /// Validate the configuration and print the resolved gateways.
    Check,
    /// Print each account's state, queue depth and last error; in a
    /// cluster also each instance, its liveness and what it holds.
    Status {
        /// In a cluster: list every lane with the instance driving it.
        #[arg(long)]
        lanes: bool,
    },
    /// Hold delivery to an account (maintenance): its queue fills and
    /// drains in order on `resume`. Remembered across restarts.
    Pause {
        /// `<network>.<name>`, e.g. `telegram.main`.
        account: String,
    },
    /// Release an account paused with `pause`.
    Resume {
        /// `<network>.<name>`.
        account: String,
    },
    /// Make the running switchboard read its configuration again (as
    /// SIGHUP does); prints what changed, or why nothing did.
    Reload,
    /// List dead letters (reason, destination, age), or requeue or drop
    /// them, through the running switchboard.
    DeadLetters {
        /// What to do; without one, list.
        #[command(subcommand)]
        action: Option<crate::admin::cli::DeadLettersAction>,
        /// Only this account's.
        #[arg(long)]
        account: Option<String>,
        /// List at most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Matrix helpers.
    #[command(subcommand)]
    Matrix(MatrixCommand),
}

/// `switchboard matrix ...`.
#[derive(Debug, Subcommand)]
pub enum MatrixCommand {
    /// Write the application service registration of a `mode =
    /// "appservice"` account (random tokens, the ghosts' namespace, the
    /// URL) to the file its `registration` key names, for the homeserver's
    /// `app_service_config_files`.
    Registration {
        /// `matrix.<name>`.
        #[arg(long)]
        account: String,
        /// Replace an existing file (new tokens: the homeserver must be
        /// given the new file and restarted).
        #[arg(long)]
        force: bool,
    },
}

/// Sets up logging. `RUST_LOG` overrides the default `info` level.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

fn load(cli: &Cli) -> Result<Settings, ExitCode> {
    config::load(cli.config.as_deref()).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// Runs the parsed command.
pub async fn main(cli: Cli) -> ExitCode {
    // Before the configuration is loaded: it cannot load without the
    // registration file this writes.
    if let Command::Matrix(MatrixCommand::Registration { account, force }) = &cli.command {
        return match matrix_registration(cli.config.as_deref(), account, *force) {
            Ok(msg) => {
                print!("{msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let settings = match load(&cli) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match cli.command {
        Command::Check => {
            let links = read_links(&settings).await;
            print!(
                "{}",
                check_report(&settings, links.as_deref().map_err(String::as_str))
            );
            ExitCode::SUCCESS
        }
        Command::Status { lanes } => status(&settings, lanes).await,
        Command::Pause { account } => pause(&settings, &account, true).await,
        Command::Resume { account } => pause(&settings, &account, false).await,
        Command::Reload => reload(&settings).await,
        Command::DeadLetters {
            action,
            account,
            limit,
        } => crate::admin::cli::dead_letters(&settings, action, account, limit).await,
        Command::Matrix(_) => unreachable!("handled before loading"),
        Command::Run => match crate::run(settings, crate::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "switchboard failed.");
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Rows as aligned columns.
#[must_use]
pub fn table(rows: &[Vec<String>]) -> String {
    let mut widths = vec![0; rows.first().map_or(0, Vec::len)];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The links made from chats in the configuration's database, read
/// without changing it; why not, when they cannot be read (no database
/// yet, unreachable, older than the links).
async fn read_links(settings: &Settings) -> Result<Vec<crate::links::Link>, String> {
    let url = settings.database.url.expose();
    if let Some(file) = url
        .strip_prefix("sqlite:")
        .map(|_| crate::store::where_is(url))
    {
        if !std::path::Path::new(&file).exists() {
            return Err(format!("no database at {file} yet"));
        }
    }
    let options = crate::store::OpenOptions {
        migrate: false,
        ..crate::store::OpenOptions::new(2)
    };
    let store = Store::open_with(url, &options)
        .await
        .map_err(|e| format!("cannot open the database: {e}"))?;
    let links = crate::links::store::load(&store)
        .await
        .map_err(|e| format!("cannot read them: {e}"));
    store.close().await;
    links
}

/// Links made from chats, and the warnings for those not in force, as
/// `check` and `status` print them.
fn links_report(s: &Settings, links: &[crate::links::Link]) -> String {
    let mut out = String::new();
    if links.is_empty() {
        return out;
    }
    let merged = crate::links::merge(s, links);
    let mut rows = vec![vec![
        "LINK".into(),
        "GATEWAY".into(),
        "ACCOUNT".into(),
        "CHANNEL".into(),
        "NAME".into(),
        "SINCE".into(),
        "BY".into(),
    ]];
    for l in links {
        rows.push(vec![
            l.id.to_string(),
            l.gateway.to_string(),
            l.account.to_string(),
            l.channel.to_string(),
            l.name.clone().unwrap_or_else(|| "-".into()),
            time::OffsetDateTime::from_unix_timestamp(l.created_ms / 1000)
                .ok()
                .and_then(|t| {
                    t.format(time::macros::format_description!(
                        "[year]-[month]-[day] [hour]:[minute]"
                    ))
                    .ok()
                })
                .unwrap_or_default(),
            l.created_by.clone(),
        ]);
    }
    out.push_str(
        "
Links made from chats (in the database):
",
    );
    out.push_str(&table(&rows));
    for i in &merged.inactive {
        out.push_str(&format!(
            "warning: link {} ({} {} in gateway `{}`) is not in force: {}
",
            i.link.id, i.link.account, i.link.channel, i.link.gateway, i.why
        ));
    }
    out
}

/// The text `switchboard check` prints: the gateways in force (with the
/// chats linked from the chats, when the database could be read: `links`,
/// or why not).
#[must_use]
pub fn check_report(s: &Settings, links: Result<&[crate::links::Link], &str>) -> String {
    let merged = crate::links::merge(s, links.unwrap_or_default());
    let linked = |g: &crate::config::Gateway, m: &crate::config::Member| {
        !s.gateways
            .iter()
            .any(|c| c.name == g.name && c.members.contains(m))
    };
    let mut rows = vec![vec![
        "GATEWAY".into(),
        "ACCOUNT".into(),
        "CHANNEL".into(),
        "DIRECTION".into(),
    ]];
    for g in &merged.gateways {
        for m in &g.members {
            rows.push(vec![
                g.name.to_string(),
                m.account.to_string(),
                m.channel.to_string(),
                if linked(g, m) {
                    format!("{} (linked from the chat)", m.direction.as_str())
                } else {
                    m.direction.as_str().into()
                },
            ]);
        }
        for a in &s.api {
            for w in a
                .webhooks
                .iter()
                .filter(|w| crate::router::webhook_receives(g, &a.id, w))
            {
                rows.push(vec![
                    g.name.to_string(),
                    a.id.to_string(),
                    w.channel().to_string(),
                    format!(
                        "out ({}://{}{})",
                        w.url.scheme(),
                        w.url.host_str().unwrap_or(""),
                        w.url.path()
                    ),
                ]);
            }
        }
    }
    let mut out = format!("{}: configuration is valid.\n\n", s.source);
    out.push_str(&table(&rows));
    match links {
        Ok(links) => out.push_str(&links_report(s, links)),
        Err(why) => out.push_str(&format!("\n(Links made from chats not read: {why}.)\n")),
    }
    for a in &s.api {
        out.push_str(&format!(
            "\n{} listens on {} with {} token(s){}\n",
            a.id,
            a.bind,
            a.tokens.len(),
            if a.tokens.is_empty() {
                " (one is generated at start)"
            } else {
                ""
            }
        ));
    }
    out
}

use crate::admin::cli::{not_running, AdminClient, Answer as Admin};

/// `reload`: asks the running switchboard on its admin listener.
async fn reload(settings: &Settings) -> ExitCode {
    let client = match AdminClient::new(settings, "send SIGHUP to the process instead") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match client.post("/v1/reload").await {
        Admin::Done(body) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Admin::Refused(_, message) => {
            eprintln!("error: nothing changed: {message}");
            ExitCode::from(2)
        }
        Admin::NotRunning => not_running(client.addr()),
    }
}

/// `pause` / `resume`: asks the running switchboard on its admin listener.
async fn pause(settings: &Settings, account: &str, paused: bool) -> ExitCode {
    let client = match AdminClient::new(
        settings,
        "pause and resume talk to the running switchboard there",
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let verb = if paused { "pause" } else { "resume" };
    match client.post(&format!("/v1/accounts/{account}/{verb}")).await {
        Admin::Done(_) => {
            println!(
                "{account}: delivery {}.",
                if paused { "paused" } else { "resumed" }
            );
            ExitCode::SUCCESS
        }
        Admin::Refused(status, message) => {
            eprintln!("error: {status}: {message}");
            ExitCode::FAILURE
        }
        Admin::NotRunning => not_running(client.addr()),
    }
}

async fn status(settings: &Settings, list_lanes: bool) -> ExitCode {
    // Read only what is there: a live server's database is not migrated
    // (or created) by a status query.
    let options = crate::store::OpenOptions {
        migrate: false,
        ..crate::store::OpenOptions::new(2)
    };
    let url = settings.database.url.expose();
    let sqlite_file = url
        .strip_prefix("sqlite:")
        .map(|_| crate::store::where_is(url));
    if sqlite_file
        .as_deref()
        .is_some_and(|f| !std::path::Path::new(f).exists())
    {
        eprintln!(
            "error: no database at {} yet: switchboard has not run with this configuration",
            sqlite_file.unwrap_or_default()
        );
        return ExitCode::FAILURE;
    }
    let store = match Store::open_with(url, &options).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot open the database: {e}");
            return ExitCode::FAILURE;
        }
    };
    let queues = match store.queues().await {
        Ok(q) => q,
        Err(e) => {
            eprintln!(
                "error: cannot read the queues from {} (has switchboard run with this configuration?): {e}",
                crate::store::where_is(url)
            );
            return ExitCode::FAILURE;
        }
    };
    // Channels a network moved (a Telegram group upgraded to a supergroup).
    let moves = store.channel_moves().await.unwrap_or_default();
    // Links made from chats (none in a database older than them).
    let links = crate::links::store::load(&store).await.unwrap_or_default();
    let cluster = cluster_view(settings, &store).await;
    store.close().await;
    let live: Option<serde_json::Value> = match AdminClient::new(settings, "") {
        Ok(client) => match client.get("/v1/status").await {
            Admin::Done(v) => Some(v),
            Admin::Refused(status, message) => {
                eprintln!("warning: the running switchboard refused the status query: {status}: {message}");
                None
            }
            Admin::NotRunning => None,
        },
        Err(_) => None,
    };
    // In a cluster an account's receive side is where its lease is: that
    // instance says how it goes.
    let mut holders_live: std::collections::HashMap<String, serde_json::Value> =
        std::collections::HashMap::new();
    if let (Some(view), Ok(client)) = (&cluster, AdminClient::new(settings, "")) {
        for i in view.instances.iter().filter(|i| i.state == "live") {
            let admin = i.info["admin"].as_str().and_then(|a| a.parse().ok());
            if let Some(addr) = admin {
                if let Admin::Done(v) = client.at(addr).get("/v1/status").await {
                    holders_live.insert(i.name.clone(), v);
                }
            }
        }
    }
    let live_of = |account: &str| -> Option<&serde_json::Value> {
        let holder = cluster.as_ref().and_then(|v| v.holder_of(account));
        holder
            .and_then(|h| holders_live.get(h))
            .or(live.as_ref())?
            .get("accounts")?
            .as_array()?
            .iter()
            .find(|x| x["account"] == account)
    };
    let state_of = |account: &str| -> String {
        match &live {
            None if settings.admin_bind.is_none() => "unknown (no general.admin_bind)".into(),
            None => "not running".into(),
            Some(_) => {
                let entry = live_of(account);
                let state = entry
                    .and_then(|x| x["state"].as_str())
                    .unwrap_or("up")
                    .to_owned();
                match entry.and_then(|x| x["rate_limited_until_ms"].as_i64()) {
                    Some(until) => format!(
                        "{state} (for {}s)",
                        ((until - crate::store::now_ms()).max(0) + 999) / 1000
                    ),
                    None => state,
                }
            }
        }
    };
    // The running process's view of the last error wins: it knows when an
    // error stopped holding. Else what keeps a queued row waiting, or why
    // the last dead letter died (a row delivered after all has no say).
    let last_error_of = |account: &str, queued: Option<&crate::store::AccountQueue>| {
        live_of(account)
            .and_then(|x| x["last_error"].as_str())
            .map(str::to_owned)
            .or_else(|| queued.and_then(|q| q.last_error.clone()))
    };
    let mut accounts: Vec<String> = settings
        .api
        .iter()
        .map(|a| a.id.to_string())
        .chain(settings.networks.iter().map(|n| n.account().to_string()))
        .collect();
    let configured = accounts.len();
    for q in &queues {
        if !accounts.contains(&q.account) {
            accounts.push(q.account.clone());
        }
    }
    let mut rows = vec![vec![
        "ACCOUNT".into(),
        "STATE".into(),
        "QUEUED".into(),
        "DEAD".into(),
        "LAST ERROR".into(),
    ]];
    if cluster.is_some() {
        rows[0].insert(2, "RECEIVING ON".into());
    }
    for (i, a) in accounts.into_iter().enumerate() {
        let q = queues.iter().find(|q| q.account == a);
        let mut row = vec![
            a.clone(),
            // Rows of an account removed from the configuration.
            if i < configured {
                state_of(&a)
            } else {
                "not configured".into()
            },
            q.map_or(0, |q| q.pending).to_string(),
            q.map_or(0, |q| q.dead).to_string(),
            last_error_of(&a, q).unwrap_or_else(|| "-".into()),
        ];
        if let Some(view) = &cluster {
            row.insert(2, view.receiving_on(&a));
        }
        rows.push(row);
    }
    print!("{}", table(&rows));
    if let Some(view) = &cluster {
        print!("{}", view.render(list_lanes));
    }
    let mut problems = vec![vec![
        "ACCOUNT".into(),
        "CHANNEL".into(),
        "STATE".into(),
        "SINCE".into(),
        "WHAT THE NETWORK SAYS".into(),
    ]];
    for entry in live
        .as_ref()
        .and_then(|v| v["accounts"].as_array())
        .into_iter()
        .flatten()
    {
        for c in entry["channels"].as_array().into_iter().flatten() {
            let since = c["since_ms"].as_i64().unwrap_or(0);
            problems.push(vec![
                entry["account"].as_str().unwrap_or("?").to_owned(),
                c["channel"].as_str().unwrap_or("?").to_owned(),
                c["state"].as_str().unwrap_or("?").to_owned(),
                format!("{}s ago", (crate::store::now_ms() - since).max(0) / 1000),
                c["error"].as_str().unwrap_or("").to_owned(),
            ]);
        }
    }
    if problems.len() > 1 {
        println!("\nChannels that need an admin on their network (their messages wait):");
        print!("{}", table(&problems));
    }
    print!("{}", links_report(settings, &links));
    if !moves.is_empty() {
        let mut rows = vec![vec!["ACCOUNT".into(), "CONFIGURED AS".into(), "NOW".into()]];
        for (account, from, to) in &moves {
            rows.push(vec![account.to_string(), from.to_string(), to.to_string()]);
        }
        println!("\nMoved channels (the network gave them a new id):");
        print!("{}", table(&rows));
    }
    ExitCode::SUCCESS
}

/// The instances and leases of a cluster, as the database has them.
struct ClusterView {
    instances: Vec<crate::store::postgres::InstanceRow>,
    leases: Vec<crate::store::postgres::LeaseRow>,
    takeover_after: std::time::Duration,
}

/// The cluster's view, when this database has one (PostgreSQL with
/// instances that ran with `[cluster]`).
async fn cluster_view(settings: &Settings, store: &Store) -> Option<ClusterView> {
    use crate::store::postgres;
    if store.backend() != crate::store::Backend::Postgres {
        return None;
    }
    let takeover_after = settings
        .cluster
        .as_ref()
        .map_or(std::time::Duration::from_secs(15), |c| c.takeover_after);
    let fresh = crate::cluster::Timing::of(takeover_after).ttl_ms();
    // A database from before clusters has no tables for them.
    let instances = postgres::instances(store.pool(), fresh).await.ok()?;
    if instances.is_empty() && settings.cluster.is_none() {
        return None;
    }
    let leases = postgres::leases(store.pool()).await.unwrap_or_default();
    Some(ClusterView {
        instances,
        leases,
        takeover_after,
    })
}

impl ClusterView {
    /// The instance receiving for `account`, while its lease runs.
    fn holder_of(&self, account: &str) -> Option<&str> {
        self.leases
            .iter()
            .find(|l| l.kind == "account" && l.account == account && l.expires_in_ms > 0)
            .and_then(|l| l.holder.as_deref())
    }

    fn receiving_on(&self, account: &str) -> String {
        if account.starts_with("api.") {
            return "every instance".into();
        }
        match self.holder_of(account) {
            Some(h) => h.to_owned(),
            None if self
                .leases
                .iter()
                .any(|l| l.kind == "account" && l.account == account) =>
            {
                "nobody (taking over)".into()
            }
            None => "-".into(),
        }
    }

    /// The instances table, lanes waiting for an instance, and with
    /// `lanes` every lane.
    fn render(&self, lanes: bool) -> String {
        let held =
            |l: &&crate::store::postgres::LeaseRow| l.expires_in_ms > 0 && l.holder.is_some();
        let mut rows = vec![vec![
            "INSTANCE".into(),
            "STATE".into(),
            "LAST SEEN".into(),
            "RECEIVES FOR".into(),
            "LANES".into(),
            "PID".into(),
            "HOST".into(),
            "ADMIN".into(),
        ]];
        for i in &self.instances {
            let mine: Vec<&crate::store::postgres::LeaseRow> = self
                .leases
                .iter()
                .filter(held)
                .filter(|l| l.holder.as_deref() == Some(i.name.as_str()))
                .collect();
            let accounts: Vec<&str> = mine
                .iter()
                .filter(|l| l.kind == "account")
                .map(|l| l.account.as_str())
                .collect();
            rows.push(vec![
                i.name.clone(),
                i.state.into(),
                format!("{:.1}s ago", i.seen_ms_ago.max(0) as f64 / 1000.0),
                if accounts.is_empty() {
                    "-".into()
                } else {
                    accounts.join(", ")
                },
                mine.iter().filter(|l| l.kind == "lane").count().to_string(),
                i.info["pid"].to_string(),
                i.info["host"].as_str().unwrap_or("-").to_owned(),
                i.info["admin"].as_str().unwrap_or("-").to_owned(),
            ]);
        }
        let mut out = format!(
            "\nInstances (takeover within {}; stale: no heartbeat, its leases go to the others):\n",
            humantime::format_duration(self.takeover_after)
        );
        out.push_str(&table(&rows));
        let orphans: Vec<&crate::store::postgres::LeaseRow> = self
            .leases
            .iter()
            .filter(|l| l.kind == "lane" && !held(l))
            .collect();
        if !orphans.is_empty() && !lanes {
            out.push_str(&format!(
                "\n{} lane(s) have no instance right now (taken within the takeover time; `status --lanes` lists them).\n",
                orphans.len()
            ));
        }
        if lanes {
            let mut rows = vec![vec![
                "ACCOUNT".into(),
                "CHANNEL".into(),
                "DRIVEN BY".into(),
                "HANDOVERS".into(),
            ]];
            for l in self.leases.iter().filter(|l| l.kind == "lane") {
                rows.push(vec![
                    l.account.clone(),
                    l.channel.clone(),
                    if held(&l) {
                        l.holder.clone().unwrap_or_default()
                    } else {
                        "nobody".into()
                    },
                    l.token.to_string(),
                ]);
            }
            out.push_str("\nLanes:\n");
            out.push_str(&table(&rows));
        }
        out
    }
}

/// `switchboard matrix registration`: writes the registration file and
/// says what to do with it.
fn matrix_registration(
    config: Option<&std::path::Path>,
    account: &str,
    force: bool,
) -> Result<String, String> {
    let Some(path) = config else {
        return Err("give the configuration file with --config".into());
    };
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: cannot read: {e}"))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let name = account
        .strip_prefix("matrix.")
        .ok_or_else(|| format!("`{account}` is not a Matrix account like `matrix.main`"))?;
    let section = doc
        .get("matrix")
        .and_then(|m| m.get(name))
        .ok_or_else(|| format!("{file}: there is no [matrix.{name}] section"))?;
    let plan =
        switchboard_matrix::config::registration_plan(name, section).map_err(|problems| {
            problems
                .iter()
                .map(|(k, m)| format!("{file}: matrix.{name}.{k}: {m}"))
                .collect::<Vec<_>>()
                .join("\n")
        })?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    let out = base.join(&plan.path);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    // The file holds both tokens: readable by its owner only.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} exists; keep it, or write new tokens with --force (then give it to the homeserver again)",
                out.display()
            )
        } else {
            format!("cannot write {}: {e}", out.display())
        }
    })?;
    std::io::Write::write_all(
        &mut f,
        switchboard_matrix::config::registration_yaml(&plan).as_bytes(),
    )
    .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    let abs = std::fs::canonicalize(&out).unwrap_or(out);
    Ok(format!(
        "Wrote {abs}.\nAdd it to the homeserver's homeserver.yaml and restart the homeserver:\n  app_service_config_files:\n    - {abs}\nThe homeserver will push to {url}.\n",
        abs = abs.display(),
        url = plan.url,
    ))
}
