//! The service network's metric families (`shoal_proxy_*`), registered into the agent's
//! registry. Cloning is shallow: every clone updates the same series.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use shoal_metrics::Declared;

/// Where a proxied connection went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// A task of this node.
    Local,
    /// A task of another node, over a mesh stream.
    Remote,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::Local => "local",
            Path::Remote => "remote",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServicePath {
    service: String,
    path: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceDirection {
    service: String,
    /// `to_task` or `to_client`.
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceReason {
    service: String,
    /// `no_task` (no running task took it), `limit` (too many open to the service) or `queue`
    /// (a datagram for a UDP session whose task was not keeping up).
    reason: &'static str,
}

/// The connect-latency histogram's buckets: 50 µs to about 1.6 s.
#[derive(Debug, Clone, Copy)]
struct ConnectBuckets;

impl MetricConstructor<Histogram> for ConnectBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
    }
}

/// The proxy's figures.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    connections: Family<ServicePath, Counter>,
    open: Family<ServiceLabel, Gauge>,
    bytes: Family<ServiceDirection, Counter>,
    connect: Family<PathLabel, Histogram, ConnectBuckets>,
    dropped: Family<ServiceReason, Counter>,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics {
            connections: Family::default(),
            open: Family::default(),
            bytes: Family::default(),
            connect: Family::new_with_constructor(ConnectBuckets),
            dropped: Family::default(),
        }
    }
}

impl ProxyMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = ProxyMetrics::default();
        registry.register(
            "shoal_proxy_connections",
            "Connections (and UDP sessions) the service proxy carried, by service and path (local, remote)",
            Declared(m.connections.clone()),
        );
        registry.register(
            "shoal_proxy_open_connections",
            "Connections (and UDP sessions) the service proxy carries now, by service",
            Declared(m.open.clone()),
        );
        registry.register(
            "shoal_proxy_bytes",
            "Bytes the service proxy carried, by service and direction (to_task, to_client)",
            Declared(m.bytes.clone()),
        );
        registry.register(
            "shoal_proxy_connect_seconds",
            "Time to reach a task: a TCP connect (local) or a mesh stream and its connect (remote)",
            Declared(m.connect.clone()),
        );
        registry.register(
            "shoal_proxy_dropped",
            "Connections and UDP sessions the service proxy closed unserved, and datagrams it dropped, by service and reason (no_task, limit, queue)",
            Declared(m.dropped.clone()),
        );
        m
    }

    /// A connection to `service` reached a task by `path` after `took`.
    pub fn connected(&self, service: &str, path: Path, took: Duration) {
        self.connections
            .get_or_create(&ServicePath {
                service: service.to_owned(),
                path: path.label(),
            })
            .inc();
        self.connect
            .get_or_create(&PathLabel { path: path.label() })
            .observe(took.as_secs_f64());
    }

    /// A connection to `service` opened (`+1`) or closed (`-1`).
    pub fn open(&self, service: &str, change: i64) {
        self.open
            .get_or_create(&ServiceLabel {
                service: service.to_owned(),
            })
            .inc_by(change);
    }

    /// A closed connection of `service` carried these bytes.
    pub fn carried(&self, service: &str, to_task: u64, to_client: u64) {
        for (direction, bytes) in [("to_task", to_task), ("to_client", to_client)] {
            self.bytes
                .get_or_create(&ServiceDirection {
                    service: service.to_owned(),
                    direction,
                })
                .inc_by(bytes);
        }
    }

    /// A connection to `service` was closed unserved, or a datagram dropped, for `reason`
    /// (`no_task`, `limit`, `queue`).
    pub fn dropped(&self, service: &str, reason: &'static str) {
        self.dropped
            .get_or_create(&ServiceReason {
                service: service.to_owned(),
                reason,
            })
            .inc();
    }
}
