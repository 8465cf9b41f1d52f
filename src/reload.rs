//! Live reload (SIGHUP, `switchboard reload`): reads the configuration file
//! again and puts it in force without a restart. Gateways, tokens, webhooks
//! and notice settings change in place; unaffected adapters and lanes keep
//! running and nothing queued is lost or sent again. A destination that no
//! gateway writes to any more has its pending rows dead-lettered with the
//! reason "removed from config". A configuration with an error changes
//! nothing; the log names the file and the key. What only a restart can
//! change (the database, listeners, accounts added or removed) is named in
//! the log and in the report, and the rest is applied.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{self, ConfigError, ConfigIssue};
use crate::hub::Hub;

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Gateways in force now.
    pub gateways: Vec<String>,
    /// Destinations no longer written to (`<account> <channel>`); their
    /// queued rows become dead letters.
    pub removed_destinations: Vec<String>,
    /// Settings that changed but take a restart (`<key>`).
    pub needs_restart: Vec<String>,
}

impl Hub {
    /// Reloads the configuration file this hub was started with.
    ///
    /// # Errors
    /// The configuration's problems; nothing was changed.
    pub async fn reload(&self) -> Result<ReloadReport, ConfigError> {
        let old = self.settings.read().expect("settings lock").clone();
        let path = (old.source != "<embedded default>").then(|| PathBuf::from(&old.source));
        let refuse = |e: ConfigError| {
            for i in &e.0 {
                tracing::error!(file = %i.file, key = %i.key, problem = %i.message, "Reload refused; nothing changed.");
            }
            e
        };
        let new = config::load(path.as_deref()).map_err(refuse)?;
        let new = crate::adapters::ensure_tokens(new).map_err(|e| {
            refuse(ConfigError(vec![ConfigIssue {
                file: old.source.clone(),
                key: "(generated tokens)".into(),
                message: format!("{e:#}"),
            }]))
        })?;

        let mut needs_restart = Vec::new();
        if new.database.url != old.database.url || new.database.max_size != old.database.max_size {
            needs_restart.push("database".to_owned());
        }
        if new.admin_bind != old.admin_bind {
            needs_restart.push("general.admin_bind".to_owned());
        }
        if new.data_dir != old.data_dir {
            needs_restart.push("general.data_dir".to_owned());
        }
        for a in &new.api {
            match old.api.iter().find(|o| o.id == a.id) {
                None => needs_restart.push(format!("{} (a new account)", a.id)),
                Some(o) => {
                    if o.bind != a.bind || o.max_body_bytes != a.max_body_bytes {
                        needs_restart.push(format!("{}.bind/max_body_bytes", a.id));
                    }
                    // Tokens and webhooks change in place.
                    if let Some(t) = self.api_tokens.get(&a.id) {
                        t.replace(&a.tokens);
                    }
                    if let Some(w) = self.webhooks.get(&a.id) {
                        w.replace(a);
                    }
                }
            }
        }
        for o in &old.api {
            if !new.api.iter().any(|a| a.id == o.id) {
                needs_restart.push(format!("{} (removed)", o.id));
            }
        }
        // A network account's connection (token, server) is its adapter's
        // own: changing it takes a restart of that adapter, today of the
        // process.
        for n in &new.networks {
            match old.networks.iter().find(|o| o.account() == n.account()) {
                None => needs_restart.push(format!("{} (a new account)", n.account())),
                Some(o) if o != n => needs_restart.push(n.account().to_string()),
                Some(_) => {}
            }
        }
        for o in &old.networks {
            if !new.networks.iter().any(|n| n.account() == o.account()) {
                needs_restart.push(format!("{} (removed)", o.account()));
            }
        }

        let before = self.router.load().destinations();
        self.router.replace(&new);
        let after = self.router.load().destinations();
        self.outbox.set_gateways(&new.gateways);
        let mut removed_destinations = Vec::new();
        for (account, channel) in before.difference(&after) {
            removed_destinations.push(format!("{account} {channel}"));
            self.outbox.retire(account, channel, true);
        }
        for (account, channel) in &after {
            self.outbox.retire(account, channel, false);
        }
        let gateways: Vec<String> = new.gateways.iter().map(|g| g.name.to_string()).collect();
        *self.settings.write().expect("settings lock") = Arc::new(new);
        if !needs_restart.is_empty() {
            tracing::warn!(settings = ?needs_restart, "Reloaded, but these changes take a restart.");
        }
        tracing::info!(
            gateways = gateways.len(),
            removed = removed_destinations.len(),
            "Configuration reloaded."
        );
        Ok(ReloadReport {
            gateways,
            removed_destinations,
            needs_restart,
        })
    }
}
