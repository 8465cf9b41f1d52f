//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The account a figure is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabel {
    /// `<network>.<name>`.
    pub account: String,
}

/// An adapter's own event on an account.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdapterEventLabel {
    /// `<network>.<name>`.
    pub account: String,
    /// What happened (`plain_text_resend`, ...).
    pub event: String,
}

/// The kind of a cluster's lease: `account`, `lane` or `task`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The lease kind.
    pub kind: String,
}

/// The table a figure is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    /// A store table: `events`, `feed`, `outbox`, `blobs`, ...
    pub table: String,
}

fn send_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Every metric switchboard exports.
pub struct Metrics {
    registry: Registry,
    /// Events committed, by source account.
    pub events_in: Family<AccountLabel, Counter>,
    /// Events delivered, by destination account.
    pub events_out: Family<AccountLabel, Counter>,
    /// Outbox rows waiting, by destination account.
    pub queue_depth: Family<AccountLabel, Gauge>,
    /// Failed attempts that will be retried.
    pub retries: Family<AccountLabel, Counter>,
    /// Rows given up on.
    pub dead_letters: Family<AccountLabel, Counter>,
    /// Adapter restarts by the supervisor.
    pub restarts: Family<AccountLabel, Counter>,
    /// Duration of single send attempts.
    pub send_seconds: Family<AccountLabel, Histogram, fn() -> Histogram>,
    /// Commands per store transaction (group commit).
    pub commit_batch: Histogram,
    /// Duration of store transactions.
    pub commit_seconds: Histogram,
    /// Rows deleted by retention, by table.
    pub pruned: Family<TableLabel, Counter>,
    /// What adapters counted (`Host::count`), by account and event.
    pub adapter_events: Family<AdapterEventLabel, Counter>,
    /// In a cluster: leases this instance holds, by kind.
    pub cluster_leases: Family<KindLabel, Gauge>,
    /// In a cluster: leases taken from an instance whose lease ran out.
    pub cluster_takeovers: Family<KindLabel, Counter>,
    /// In a cluster: live instances, as this one sees them.
    pub cluster_instances: Gauge,
}

impl Metrics {
    /// Registers every metric.
    #[must_use]
    pub fn new() -> Self {
        Self::for_instance(None)
    }

    /// Registers every metric; in a cluster each carries the label
    /// `instance`, so figures of several instances add up in Prometheus.
    #[must_use]
    pub fn for_instance(instance: Option<&str>) -> Self {
        let mut registry = match instance {
            None => Registry::with_prefix("switchboard"),
            Some(name) => Registry::with_prefix_and_labels(
                "switchboard",
                [(
                    std::borrow::Cow::Borrowed("instance"),
                    std::borrow::Cow::Owned(name.to_owned()),
                )]
                .into_iter(),
            ),
        };
        let events_in = Family::<AccountLabel, Counter>::default();
        let events_out = Family::<AccountLabel, Counter>::default();
        let queue_depth = Family::<AccountLabel, Gauge>::default();
        let retries = Family::<AccountLabel, Counter>::default();
        let dead_letters = Family::<AccountLabel, Counter>::default();
        let restarts = Family::<AccountLabel, Counter>::default();
        let send_seconds =
            Family::<AccountLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                send_histogram,
            );
        registry.register(
            "events_in",
            "Events committed, by source account",
            events_in.clone(),
        );
        registry.register(
            "events_out",
            "Events delivered, by destination account",
            events_out.clone(),
        );
        registry.register(
            "queue_depth",
            "Outbox rows waiting, by destination account",
            queue_depth.clone(),
        );
        registry.register(
            "retries",
            "Send attempts that failed and will be retried",
            retries.clone(),
        );
        registry.register(
            "dead_letters",
            "Outbox rows given up on",
            dead_letters.clone(),
        );
        registry.register(
            "adapter_restarts",
            "Adapter receive loops restarted after an error or a panic",
            restarts.clone(),
        );
        registry.register(
            "send_seconds",
            "Duration of one send attempt",
            send_seconds.clone(),
        );
        let commit_batch =
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]);
        let commit_seconds = send_histogram();
        registry.register(
            "commit_batch",
            "Commands per store transaction",
            commit_batch.clone(),
        );
        registry.register(
            "commit_seconds",
            "Duration of one store transaction",
            commit_seconds.clone(),
        );
        let pruned = Family::<TableLabel, Counter>::default();
        registry.register(
            "pruned_rows",
            "Rows deleted by retention, by table",
            pruned.clone(),
        );
        let adapter_events = Family::<AdapterEventLabel, Counter>::default();
        registry.register(
            "adapter_events",
            "Events adapters counted, by account and event (e.g. plain_text_resend)",
            adapter_events.clone(),
        );
        let cluster_leases = Family::<KindLabel, Gauge>::default();
        let cluster_takeovers = Family::<KindLabel, Counter>::default();
        let cluster_instances = Gauge::default();
        if instance.is_some() {
            registry.register(
                "cluster_leases",
                "Leases this instance holds, by kind (account, lane, task)",
                cluster_leases.clone(),
            );
            registry.register(
                "cluster_takeovers",
                "Leases taken over from an instance whose lease ran out, by kind",
                cluster_takeovers.clone(),
            );
            registry.register(
                "cluster_instances",
                "Live instances of the cluster, as this instance sees them",
                cluster_instances.clone(),
            );
        }
        Self {
            registry,
            events_in,
            events_out,
            queue_depth,
            retries,
            dead_letters,
            restarts,
            send_seconds,
            commit_batch,
            commit_seconds,
            pruned,
            adapter_events,
            cluster_leases,
            cluster_takeovers,
            cluster_instances,
        }
    }

    /// The label for an account.
    #[must_use]
    pub fn label(account: &impl ToString) -> AccountLabel {
        AccountLabel {
            account: account.to_string(),
        }
    }

    /// The text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
