//! Logs and metrics.
//!
//! Metrics live in a per-gateway [`Metrics`] (a prometheus-client registry, no global
//! recorder), so two gateways in one test process keep separate numbers. Labels are query
//! names, never argument values, tokens or user ids.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// How log lines are written (`STATGATE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Starts structured logging on stderr (stdout carries command output, such as `codegen ts`).
/// `filter` is a `RUST_LOG`-style directive (`info,sqlx=warn` when `None`); an invalid one
/// falls back to the default rather than losing every log line.
pub fn init_logging(format: LogFormat, filter: Option<&str>) {
    use std::io::IsTerminal;
    const DEFAULT_FILTER: &str = "info,sqlx=warn";
    let filter = filter
        .and_then(|directives| tracing_subscriber::EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabel {
    pub query: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// Which limit refused something: `server` (in all), `address` (per peer address) or `user`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabel {
    pub scope: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every series of `/metrics` (docs/PROTOCOL.md).
pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub subscriptions: Gauge,
    pub signatures: Gauge,
    pub notifications: Counter,
    pub notification_errors: Counter,
    pub matched_signatures: Counter,
    pub recomputes: Family<QueryLabel, Counter>,
    pub recompute_statements: Counter,
    pub recompute_errors: Family<QueryLabel, Counter>,
    pub recompute_duration: Family<QueryLabel, Histogram, fn() -> Histogram>,
    pub parity_checks: Family<QueryLabel, Counter>,
    pub parity_divergences: Family<QueryLabel, Counter>,
    pub pushes: Counter,
    pub push_lag: Histogram,
    pub listener_connected: Gauge,
    pub listener_reconnects: Counter,
    pub canary_failures: Counter,
    pub resyncs: Counter,
    pub bulk_merged: Counter,
    pub unrecorded_changes: Gauge,
    pub coalesced_updates: Counter,
    pub slow_consumer_closes: Counter,
    pub subscribe_requests: Family<OutcomeLabel, Counter>,
    pub tcp_connections: Gauge,
    pub refused_connections: Family<ScopeLabel, Counter>,
    pub accept_errors: Counter,
    pub values_too_large: Family<QueryLabel, Counter>,
    pub refused_signatures: Family<ScopeLabel, Counter>,
    pub wal_lag_bytes: Gauge,
    pub wal_lag_seconds: Gauge<f64, AtomicU64>,
    pub wal_slot_invalidations: Counter,
    pub carried_values: Family<QueryLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Records the commit-to-push lag of a value just sent, from the commit time of the oldest
    /// change it answers (`since`, microseconds since the epoch; none when unknown).
    pub fn observe_push_lag(&self, since: Option<i64>) {
        if let Some(since) = since {
            let now = chrono::Utc::now().timestamp_micros();
            self.push_lag.observe((now - since).max(0) as f64 / 1e6);
        }
    }

    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("statgate");
        let metrics = Metrics {
            connections: Gauge::default(),
            subscriptions: Gauge::default(),
            signatures: Gauge::default(),
            notifications: Counter::default(),
            notification_errors: Counter::default(),
            matched_signatures: Counter::default(),
            recomputes: Family::default(),
            recompute_statements: Counter::default(),
            recompute_errors: Family::default(),
            parity_checks: Family::default(),
            parity_divergences: Family::default(),
            recompute_duration: Family::new_with_constructor(latency_histogram),
            pushes: Counter::default(),
            push_lag: latency_histogram(),
            listener_connected: Gauge::default(),
            listener_reconnects: Counter::default(),
            canary_failures: Counter::default(),
            resyncs: Counter::default(),
            bulk_merged: Counter::default(),
            unrecorded_changes: Gauge::default(),
            coalesced_updates: Counter::default(),
            slow_consumer_closes: Counter::default(),
            subscribe_requests: Family::default(),
            tcp_connections: Gauge::default(),
            refused_connections: Family::default(),
            accept_errors: Counter::default(),
            values_too_large: Family::default(),
            refused_signatures: Family::default(),
            wal_lag_bytes: Gauge::default(),
            wal_lag_seconds: Gauge::default(),
            wal_slot_invalidations: Counter::default(),
            carried_values: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "subscriptions",
            "Active subscriptions over all sockets",
            metrics.subscriptions.clone(),
        );
        registry.register(
            "signatures",
            "Distinct active signatures",
            metrics.signatures.clone(),
        );
        registry.register(
            "notifications",
            "Change notifications received",
            metrics.notifications.clone(),
        );
        registry.register(
            "notification_errors",
            "Change notifications that could not be parsed",
            metrics.notification_errors.clone(),
        );
        registry.register(
            "matched_signatures",
            "Signatures marked for recompute by notifications",
            metrics.matched_signatures.clone(),
        );
        registry.register(
            "recomputes",
            "Signatures recomputed",
            metrics.recomputes.clone(),
        );
        registry.register(
            "recompute_statements",
            "SQL statements run by recompute",
            metrics.recompute_statements.clone(),
        );
        registry.register(
            "recompute_errors",
            "Failed recompute statements",
            metrics.recompute_errors.clone(),
        );
        registry.register(
            "parity_checks",
            "Recomputed values compared with their query's live `parity` SQL",
            metrics.parity_checks.clone(),
        );
        registry.register(
            "parity_divergences",
            "Parity checks where the live SQL disagreed (the live value was served)",
            metrics.parity_divergences.clone(),
        );
        registry.register(
            "recompute_duration_seconds",
            "Duration of recompute statements",
            metrics.recompute_duration.clone(),
        );
        registry.register(
            "pushes",
            "query:update messages queued to sockets",
            metrics.pushes.clone(),
        );
        registry.register(
            "push_lag_seconds",
            "Commit-to-push lag, from the payload's `at`",
            metrics.push_lag.clone(),
        );
        registry.register(
            "listener_connected",
            "1 while the LISTEN connection is up",
            metrics.listener_connected.clone(),
        );
        registry.register(
            "listener_reconnects",
            "LISTEN connections re-established",
            metrics.listener_reconnects.clone(),
        );
        registry.register(
            "canary_failures",
            "Change-feed probes that did not come back in time (the listener is then replaced)",
            metrics.canary_failures.clone(),
        );
        registry.register(
            "resyncs",
            "Full resyncs of every active signature",
            metrics.resyncs.clone(),
        );
        registry.register(
            "bulk_requests_merged",
            "Resyncs and overflow recomputes asked for within the debounce window of the last one, merged into one run at its end",
            metrics.bulk_merged.clone(),
        );
        registry.register(
            "unrecorded_changes",
            "Changes the watch triggers could not record, as counted in statgate.unrecorded_changes (a growth resyncs every signature)",
            metrics.unrecorded_changes.clone(),
        );
        registry.register(
            "coalesced_updates",
            "Unsent values replaced by a newer one",
            metrics.coalesced_updates.clone(),
        );
        registry.register(
            "slow_consumer_closes",
            "Sockets closed with 4009",
            metrics.slow_consumer_closes.clone(),
        );
        registry.register(
            "subscribe_requests",
            "Subscriptions asked for over HTTP (POST /realtime/subscribe, and each entry of /realtime/subscribe/batch) by outcome",
            metrics.subscribe_requests.clone(),
        );
        registry.register(
            "tcp_connections",
            "Open TCP connections, WebSockets included",
            metrics.tcp_connections.clone(),
        );
        registry.register(
            "refused_connections",
            "TCP connections refused at accept by the connection limit of the server or of an address",
            metrics.refused_connections.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts (EMFILE and the like back off for 100 ms)",
            metrics.accept_errors.clone(),
        );
        registry.register(
            "values_too_large",
            "Computed values over STATGATE_MAX_VALUE_ROWS or STATGATE_MAX_VALUE_BYTES (not stored, not sent)",
            metrics.values_too_large.clone(),
        );
        registry.register(
            "refused_signatures",
            "Subscriptions refused a new signature by the per-user or total signature limit",
            metrics.refused_signatures.clone(),
        );
        registry.register(
            "wal_feed_lag_bytes",
            "WAL the feed's replication slot holds back: the server's WAL position minus the position statgate confirmed (wal mode)",
            metrics.wal_lag_bytes.clone(),
        );
        registry.register(
            "wal_feed_lag_seconds",
            "How long after its commit the feed received the last transaction; 0 once it has caught up (wal mode)",
            metrics.wal_lag_seconds.clone(),
        );
        registry.register(
            "wal_slot_invalidations",
            "Replication slots found invalidated (wal_status lost, e.g. past max_slot_wal_keep_size), dropped and created again, with a resync",
            metrics.wal_slot_invalidations.clone(),
        );
        registry.register(
            "carried_values",
            "Values taken from the row a WAL change carried, without a statement (wal mode, queries that declare `carried`)",
            metrics.carried_values.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn query(&self, name: &str) -> QueryLabel {
        QueryLabel {
            query: name.to_owned(),
        }
    }
}
