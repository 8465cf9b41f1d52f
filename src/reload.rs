//! Live reload (SIGHUP, `switchboard reload`): reads the configuration file
//! again and puts it in force without a restart. Gateways, tokens, webhooks
//! and notice settings change in place; unaffected adapters and lanes keep
//! running and nothing queued is lost or sent again. A destination that no
//! gateway writes to any more has its pending rows dead-lettered with the
//! reason "removed from config". A configuration with an error changes
//! nothing; the log names the file and the key. What only a restart can
//! change (the database, the admin listener, the data directory) is named
//! in the log and in the report, and the rest is applied. Accounts added,
//! changed or removed (a Telegram bot, a bot API listener) are started,
//! rebuilt or stopped on their own; the others keep running. Links made
//! from chats stay: they are in the database, merged on top of the new
//! gateways.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use switchboard_core::AccountId;

use crate::config::{self, ConfigError, ConfigIssue};
use crate::hub::Hub;

/// One reload at a time (SIGHUP and `switchboard reload` may meet), and
/// not while a cluster's lease round restarts receive sides.
pub(crate) static RELOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Hub {
    /// Starts a bot API account a reload added (its tokens, webhooks and
    /// listener), or only its listener again (`known`: its address or
    /// limits changed).
    async fn start_api(
        self: &Arc<Self>,
        a: &crate::config::ApiAccount,
        known: bool,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        let listener = tokio::net::TcpListener::bind(a.bind)
            .await
            .with_context(|| format!("{}.bind: cannot listen on {}", a.id, a.bind))?;
        if !known {
            let tokens = Arc::new(crate::api::auth::Tokens::new(a.id.clone(), &a.tokens));
            self.api_tokens
                .write()
                .expect("tokens lock")
                .insert(a.id.clone(), tokens);
            let hooks = Arc::new(crate::api::webhook::WebhookAdapter::new(a));
            self.webhooks
                .write()
                .expect("webhooks lock")
                .insert(a.id.clone(), hooks.clone());
            self.outbox.install(hooks.clone()).await?;
            let running = crate::receivers::start(self, hooks).await?;
            self.receivers
                .lock()
                .expect("receivers lock")
                .insert(a.id.clone(), running);
        }
        let tokens = self.api_tokens.read().expect("tokens lock")[&a.id].clone();
        let running = crate::receivers::start_api(self, a, tokens, listener);
        self.listeners
            .lock()
            .expect("listeners lock")
            .insert(a.id.clone(), running);
        Ok(())
    }
}

/// What a reload did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    /// Gateways in force now.
    pub gateways: Vec<String>,
    /// Destinations no longer written to (`<account> <channel>`); their
    /// queued rows become dead letters.
    pub removed_destinations: Vec<String>,
    /// Accounts started (network and bot API).
    pub added_accounts: Vec<String>,
    /// Network accounts whose section or channels changed: rebuilt, their
    /// receive side restarted, their queues kept.
    pub restarted_accounts: Vec<String>,
    /// Accounts no longer configured: stopped.
    pub removed_accounts: Vec<String>,
    /// Settings that changed but take a restart (`<key>`).
    pub needs_restart: Vec<String>,
}

impl Hub {
    /// Reloads the configuration file this hub was started with: the new
    /// configuration is read and checked (nothing changes if it has an
    /// error), then accounts whose settings changed stop, the new routes go
    /// in force, and accounts added or changed start.
    ///
    /// # Errors
    /// The configuration's problems; nothing was changed.
    pub async fn reload(self: &Arc<Self>) -> Result<ReloadReport, ConfigError> {
        let _one = RELOADING.lock().await;
        let old = self.settings.read().expect("settings lock").clone();
        let new = read_again(&old)?;
        let mut needs_restart = needs_restart(&old, &new);
        let api_stopped = self.stop_changed_api(&old, &new).await;
        let mut stopped = self.stop_changed_networks(&old, &new).await;
        let removed_destinations = {
            // One at a time with a link made meanwhile: each routes on the
            // other's result.
            let _links = self.links.changes.lock().await;
            let removed = self.swap_routes(&new);
            // In force before an account starts: what it receives is routed
            // with the new gateways.
            *self.settings.write().expect("settings lock") = Arc::new(new.clone());
            removed
        };
        let mut started = self
            .start_networks(&old, &new, &stopped, &mut needs_restart)
            .await;
        started.extend(
            self.start_api_accounts(&old, &new, &api_stopped, &mut needs_restart)
                .await,
        );
        for o in &old.api {
            if !new.api.iter().any(|a| a.id == o.id) {
                self.api_tokens.write().expect("tokens lock").remove(&o.id);
                stopped.push(o.id.clone());
            }
        }
        for a in &stopped {
            if !started.contains(a) {
                self.health.forget(a);
            }
        }
        let report = ReloadReport {
            gateways: new.gateways.iter().map(|g| g.name.to_string()).collect(),
            removed_destinations,
            added_accounts: names(started.iter().filter(|a| !stopped.contains(a))),
            restarted_accounts: names(started.iter().filter(|a| stopped.contains(a))),
            removed_accounts: names(stopped.iter().filter(|a| !started.contains(a))),
            needs_restart,
        };
        report.log();
        Ok(report)
    }

    /// Bot API accounts: tokens and webhooks change in place; a listener
    /// whose address or limits changed, or whose account is gone, stops
    /// (new and changed ones start once the routes are in force). Returns
    /// the accounts whose listener stopped.
    async fn stop_changed_api(
        &self,
        old: &crate::config::Settings,
        new: &crate::config::Settings,
    ) -> Vec<AccountId> {
        let mut api_stopped = Vec::new();
        for a in &new.api {
            if let Some(o) = old.api.iter().find(|o| o.id == a.id) {
                if let Some(t) = self.api_tokens.read().expect("tokens lock").get(&a.id) {
                    t.replace(&a.tokens);
                }
                if let Some(w) = self.webhooks.read().expect("webhooks lock").get(&a.id) {
                    w.replace(a);
                }
                if o.bind != a.bind
                    || o.max_body_bytes != a.max_body_bytes
                    || o.max_connections != a.max_connections
                    || o.header_timeout != a.header_timeout
                    || o.buffer != a.buffer
                    || o.max_response_bytes != a.max_response_bytes
                {
                    api_stopped.push(a.id.clone());
                }
            }
        }
        for o in &old.api {
            if !new.api.iter().any(|a| a.id == o.id) {
                api_stopped.push(o.id.clone());
                let running = self.receivers.lock().expect("receivers lock").remove(&o.id);
                if let Some(r) = running {
                    r.stop().await;
                }
            }
        }
        for id in &api_stopped {
            let running = self.listeners.lock().expect("listeners lock").remove(id);
            if let Some(r) = running {
                r.stop().await;
            }
        }
        api_stopped
    }

    /// Network accounts: a removed one stops receiving (its queue is
    /// dead-lettered like any removed destination's); a changed one (its
    /// section, or its channels) stops, to be rebuilt with its queue kept.
    /// The others are not touched. Returns the accounts stopped.
    async fn stop_changed_networks(
        &self,
        old: &crate::config::Settings,
        new: &crate::config::Settings,
    ) -> Vec<AccountId> {
        let mut stopped = Vec::new();
        for o in &old.networks {
            let account = o.account();
            let changed = match new.networks.iter().find(|n| n.account() == account) {
                None => true,
                Some(n) => {
                    !n.same(o.as_ref())
                        || crate::adapters::channels_of(new, account)
                            != crate::adapters::channels_of(old, account)
                        || new.commands.get(account) != old.commands.get(account)
                }
            };
            if changed {
                let running = self
                    .receivers
                    .lock()
                    .expect("receivers lock")
                    .remove(account);
                if let Some(r) = running {
                    r.stop().await;
                }
                stopped.push(account.clone());
            }
        }
        stopped
    }

    /// Puts the new gateways in force, with the links made from chats on
    /// top (`crate::links`); destinations no gateway writes to any more
    /// have their queues dead-lettered ("removed from config"). Returns
    /// those (`<account> <channel>`). A reload calls it, and a link change.
    pub(crate) fn swap_routes(&self, new: &crate::config::Settings) -> Vec<String> {
        let new = &self.links.effective(new);
        let before = self.router.load().destinations();
        self.router.replace(new);
        let after = self.router.load().destinations();
        self.outbox.set_gateways(&new.gateways);
        let mut removed = Vec::new();
        for (account, channel) in before.difference(&after) {
            removed.push(format!("{account} {channel}"));
            self.outbox.retire(account, channel, true);
        }
        for (account, channel) in &after {
            self.outbox.retire(account, channel, false);
        }
        removed
    }

    /// Starts the network accounts that are new or were stopped to be
    /// rebuilt; one that cannot start is named in `needs_restart`.
    async fn start_networks(
        self: &Arc<Self>,
        old: &crate::config::Settings,
        new: &crate::config::Settings,
        stopped: &[AccountId],
        needs_restart: &mut Vec<String>,
    ) -> Vec<AccountId> {
        let mut started = Vec::new();
        for n in &new.networks {
            let account = n.account();
            let known = old.networks.iter().any(|o| o.account() == account);
            if known && !stopped.contains(account) {
                continue;
            }
            let adapter = crate::adapters::build_network(n, new);
            let result = async {
                self.outbox.install(adapter.clone()).await?;
                crate::receivers::start(self, adapter).await
            }
            .await;
            match result {
                Ok(running) => {
                    self.receivers
                        .lock()
                        .expect("receivers lock")
                        .insert(account.clone(), running);
                    started.push(account.clone());
                }
                Err(e) => {
                    tracing::error!(%account, error = %format!("{e:#}"), "Cannot start the account.");
                    needs_restart.push(format!("{account} (could not start: {e:#})"));
                }
            }
        }
        started
    }

    /// Starts the bot API accounts that are new, and the listeners that
    /// stopped for new settings; returns the accounts added.
    async fn start_api_accounts(
        self: &Arc<Self>,
        old: &crate::config::Settings,
        new: &crate::config::Settings,
        api_stopped: &[AccountId],
        needs_restart: &mut Vec<String>,
    ) -> Vec<AccountId> {
        let mut started = Vec::new();
        for a in &new.api {
            let known = old.api.iter().any(|o| o.id == a.id);
            if known && !api_stopped.contains(&a.id) {
                continue;
            }
            match self.start_api(a, known).await {
                Ok(()) if known => {
                    tracing::info!(account = %a.id, addr = %a.bind, "Bot API listener restarted with its new settings.")
                }
                Ok(()) => started.push(a.id.clone()),
                Err(e) => {
                    tracing::error!(account = %a.id, error = %format!("{e:#}"), "Cannot start the bot API account.");
                    needs_restart.push(format!("{} (could not start: {e:#})", a.id));
                }
            }
        }
        started
    }
}

/// The configuration file read and checked again, with generated tokens;
/// its problems are logged (with file and key) and returned.
fn read_again(old: &crate::config::Settings) -> Result<crate::config::Settings, ConfigError> {
    let path = (old.source != "<embedded default>").then(|| PathBuf::from(&old.source));
    let refuse = |e: ConfigError| {
        for i in &e.0 {
            tracing::error!(file = %i.file, key = %i.key, problem = %i.message, "Reload refused; nothing changed.");
        }
        e
    };
    let new = config::load(path.as_deref()).map_err(refuse)?;
    crate::adapters::ensure_tokens(new).map_err(|e| {
        refuse(ConfigError(vec![ConfigIssue {
            file: old.source.clone(),
            key: "(generated tokens)".into(),
            message: format!("{e:#}"),
        }]))
    })
}

/// Settings that changed but only a restart can apply.
fn needs_restart(old: &crate::config::Settings, new: &crate::config::Settings) -> Vec<String> {
    let mut keys = Vec::new();
    if new.database.url != old.database.url || new.database.max_size != old.database.max_size {
        keys.push("database".to_owned());
    }
    if new.admin_token.is_some() && new.admin_token != old.admin_token {
        keys.push("general.admin_token".to_owned());
    }
    if new.admin_bind != old.admin_bind {
        keys.push("general.admin_bind".to_owned());
    }
    if new.data_dir != old.data_dir {
        keys.push("general.data_dir".to_owned());
    }
    keys
}

fn names<'a>(ids: impl Iterator<Item = &'a AccountId>) -> Vec<String> {
    ids.map(ToString::to_string).collect()
}

impl ReloadReport {
    fn log(&self) {
        if !self.needs_restart.is_empty() {
            tracing::warn!(settings = ?self.needs_restart, "Reloaded, but these changes take a restart.");
        }
        tracing::info!(
            gateways = self.gateways.len(),
            removed = self.removed_destinations.len(),
            "Configuration reloaded."
        );
        for a in &self.added_accounts {
            tracing::info!(account = %a, "Account started.");
        }
        for a in &self.restarted_accounts {
            tracing::info!(account = %a, "Account restarted with its new settings.");
        }
        for a in &self.removed_accounts {
            tracing::info!(account = %a, "Account stopped; it is no longer configured.");
        }
    }
}
