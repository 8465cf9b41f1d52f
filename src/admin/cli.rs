//! The CLI's side of the admin listener: a client that sends the admin
//! token as the server expects it (configured, or the generated file), and
//! `switchboard dead-letters`.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use crate::config::Settings;

/// `switchboard dead-letters ...`; without one, the list.
#[derive(Debug, Subcommand)]
pub enum DeadLettersAction {
    /// Put dead letters back in their queue: each in its old place when
    /// nothing after it was delivered yet, otherwise at the end.
    Requeue {
        /// Dead letter ids (from the list).
        ids: Vec<i64>,
        /// Every dead letter of this account instead.
        #[arg(long, conflicts_with = "ids")]
        account: Option<String>,
    },
    /// Delete dead letters for good.
    Drop {
        /// Dead letter ids (from the list).
        ids: Vec<i64>,
        /// Every dead letter of this account instead.
        #[arg(long, conflicts_with = "ids")]
        account: Option<String>,
    },
}

/// What the running switchboard answered.
pub enum Answer {
    /// 2xx, with the JSON answer.
    Done(Value),
    /// Another status, with the error's message.
    Refused(reqwest::StatusCode, String),
    /// Nothing answers there.
    NotRunning,
}

/// A client of the running switchboard's admin listener.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    addr: std::net::SocketAddr,
}

impl AdminClient {
    /// For `settings`' admin listener.
    ///
    /// # Errors
    /// The message to print when there is no admin listener.
    pub fn new(settings: &Settings, why: &str) -> Result<Self, String> {
        let Some(addr) = settings.admin_bind else {
            return Err(format!(
                "{}: general.admin_bind is not set; {why}",
                settings.source
            ));
        };
        Ok(Self {
            base: format!("http://{addr}"),
            // Without one the server answers 401, which says what is missing.
            token: super::auth::cli_token(settings)
                .ok()
                .map(|t| t.expose().to_owned()),
            addr,
        })
    }

    /// The listener's address.
    #[must_use]
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The same client for another instance of a cluster, whose admin
    /// listener is at `addr` (the instances share the admin token when
    /// it is configured; a generated one is each instance's own, and the
    /// other answers 401).
    #[must_use]
    pub fn at(&self, addr: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            token: self.token.clone(),
            addr,
        }
    }

    /// `POST path` (with a JSON-less body).
    pub async fn post(&self, path: &str) -> Answer {
        self.send(reqwest::Client::new().post(format!("{}{path}", self.base)))
            .await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(reqwest::Client::new().get(format!("{}{path}", self.base)))
            .await
    }

    async fn send(&self, mut req: reqwest::RequestBuilder) -> Answer {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let Ok(r) = req.send().await else {
            return Answer::NotRunning;
        };
        let status = r.status();
        let body: Value = r.json().await.unwrap_or_default();
        if status.is_success() {
            Answer::Done(body)
        } else {
            let message = body["error"]["message"].as_str().unwrap_or("no details");
            Answer::Refused(status, message.to_owned())
        }
    }
}

/// Prints that nothing answers at `addr`.
pub fn not_running(addr: std::net::SocketAddr) -> ExitCode {
    eprintln!("error: switchboard is not running (nothing answers on {addr})");
    ExitCode::FAILURE
}

/// A compact age ("45s", "12m", "3h", "2d").
#[must_use]
pub fn age(ms: i64) -> String {
    let s = (crate::store::now_ms() - ms).max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `switchboard dead-letters [requeue|drop]`.
pub async fn dead_letters(
    settings: &Settings,
    action: Option<DeadLettersAction>,
    account: Option<String>,
    limit: u32,
) -> ExitCode {
    let client = match AdminClient::new(
        settings,
        "dead letters are listed and acted on through the running switchboard",
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (verb, ids, account) = match action {
        None => return list(&client, account.as_deref(), limit).await,
        Some(DeadLettersAction::Requeue { ids, account }) => ("requeue", ids, account),
        Some(DeadLettersAction::Drop { ids, account }) => ("drop", ids, account),
    };
    let paths: Vec<String> = match (&account, ids.is_empty()) {
        (Some(a), _) => vec![format!("/v1/dead-letters/{verb}?account={a}")],
        (None, false) => ids
            .iter()
            .map(|id| format!("/v1/dead-letters/{id}/{verb}"))
            .collect(),
        (None, true) => {
            eprintln!("error: name dead letter ids, or --account ACCOUNT for all of one account's");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    for path in paths {
        match client.post(&path).await {
            Answer::Done(body) => {
                for r in body["requeued"].as_array().into_iter().flatten() {
                    match r["placement"].as_str() {
                        Some("in_place") => println!("{}: requeued in its old place.", r["id"]),
                        _ => println!(
                            "{}: requeued at the end of its queue (now {}): later messages were delivered already.",
                            r["id"], r["new_id"]
                        ),
                    }
                }
                if body
                    .get("requeued")
                    .is_some_and(|r| r.as_array().is_some_and(Vec::is_empty))
                {
                    println!("Nothing to requeue.");
                }
                if let Some(n) = body["dropped"].as_u64() {
                    println!("{n} dead letter(s) dropped.");
                }
            }
            Answer::Refused(status, message) => {
                eprintln!("error: {status}: {message}");
                failed = true;
            }
            Answer::NotRunning => return not_running(client.addr()),
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn list(client: &AdminClient, account: Option<&str>, limit: u32) -> ExitCode {
    let mut path = format!("/v1/dead-letters?limit={limit}");
    if let Some(a) = account {
        path.push_str(&format!("&account={a}"));
    }
    let body = match client.get(&path).await {
        Answer::Done(b) => b,
        Answer::Refused(status, message) => {
            eprintln!("error: {status}: {message}");
            return ExitCode::FAILURE;
        }
        Answer::NotRunning => return not_running(client.addr()),
    };
    let rows = body["dead_letters"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("No dead letters.");
        return ExitCode::SUCCESS;
    }
    let mut table = vec![vec![
        "ID".to_owned(),
        "DESTINATION".into(),
        "GATEWAY".into(),
        "DIED".into(),
        "QUEUED".into(),
        "REASON".into(),
    ]];
    for r in &rows {
        table.push(vec![
            r["id"].to_string(),
            format!(
                "{} {}",
                r["account"].as_str().unwrap_or("?"),
                r["channel"].as_str().unwrap_or("?")
            ),
            r["gateway"].as_str().unwrap_or("?").to_owned(),
            format!("{} ago", age(r["died_ms"].as_i64().unwrap_or(0))),
            format!("{} ago", age(r["queued_ms"].as_i64().unwrap_or(0))),
            r["reason"].as_str().unwrap_or("").to_owned(),
        ]);
    }
    print!("{}", crate::cli::table(&table));
    ExitCode::SUCCESS
}
