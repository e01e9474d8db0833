//! The agent's own metric families: orchestration (scheduler passes, placements), the cluster as
//! the leader sees it (nodes, services, tasks, replicas), dispatch (heartbeats, down marks, pushes,
//! reports), the executor (operations and their latency) and task scheduling delay.
//!
//! The families are plain handles (cloning is shallow); the agent's subsystems update them and
//! the registry encodes them on each scrape.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Outcome of an operation, as a label (`ok`, `error`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum OpResult {
    /// It worked.
    Ok,
    /// It failed.
    Error,
}

/// Outcome of committing a plan, as a label (`committed`, `stale`, `failed`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum PlanResult {
    /// Committed.
    Committed,
    /// Refused as stale (recomputed on the next pass).
    Stale,
    /// Refused for another reason, or the write failed.
    Failed,
}

impl EncodeLabelValue for OpResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            OpResult::Ok => "ok",
            OpResult::Error => "error",
        })
    }
}

impl EncodeLabelValue for PlanResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            PlanResult::Committed => "committed",
            PlanResult::Stale => "stale",
            PlanResult::Failed => "failed",
        })
    }
}

/// Labels of `shoal_cluster_nodes`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// `ready`, `down`, `unknown`.
    pub state: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
    /// `manager` or `worker`.
    pub role: String,
}

/// Labels naming a task state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskStateLabels {
    /// The observed task state, lower case.
    pub state: String,
}

/// Labels naming a service.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The service's name.
    pub service: String,
}

/// Labels of executor operations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExecutorOpLabels {
    /// `start`, `stop_remove`.
    pub op: String,
    /// `ok` or `error`.
    pub result: OpResult,
}

/// Labels of a plan outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlanLabels {
    /// How the plan ended.
    pub result: PlanResult,
}

/// Labels of an assignment push.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    /// `ok` or `error`.
    pub result: OpResult,
}

/// Labels of a request refused to another agent.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// The protocol: `dispatch` or `control`.
    pub protocol: &'static str,
    /// What was asked: `assign`, `report`, `heartbeat`, `write`, `read`, ...
    pub request: &'static str,
    /// Why: `not_from_leader`, `other_node`, `unauthorized`, `not_a_node`, `malformed`, ...
    pub reason: &'static str,
}

/// Labels of a message that could not be sent.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnsentLabels {
    /// The protocol: `dispatch` or `control`.
    pub protocol: &'static str,
    /// The message: `assign`, `update`, `report`, `answer`, ...
    pub message: &'static str,
    /// Why: `too_large`, `encode`.
    pub reason: &'static str,
}

/// Every family the agent itself maintains.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    /// Duration of one reconcile + placement pass.
    pub scheduler_pass_seconds: Histogram,
    /// Tasks placed on a node by committed plans.
    pub scheduler_placements: Counter,
    /// Tasks that could not be placed in the last pass.
    pub scheduler_unplaceable_tasks: Gauge,
    /// Plans by outcome.
    pub scheduler_plans: Family<PlanLabels, Counter>,
    /// Nodes by state, availability and role (leader only).
    pub cluster_nodes: Family<NodeLabels, Gauge>,
    /// Services (leader only).
    pub cluster_services: Gauge,
    /// Tasks by observed state (leader only).
    pub cluster_tasks: Family<TaskStateLabels, Gauge>,
    /// Replicas wanted per service (leader only).
    pub service_replicas_desired: Family<ServiceLabels, Gauge>,
    /// Replicas running per service (leader only).
    pub service_replicas_running: Family<ServiceLabels, Gauge>,
    /// Heartbeats received by the dispatcher.
    pub dispatcher_heartbeats: Counter,
    /// Nodes the dispatcher marked down.
    pub dispatcher_nodes_marked_down: Counter,
    /// Assignment sets pushed to workers, by outcome.
    pub dispatcher_pushes: Family<PushLabels, Counter>,
    /// Requests refused to another agent (`shoal_refused_requests_total`).
    pub refused_requests: Family<RefusedLabels, Counter>,
    /// Messages that could not be sent (`shoal_unsent_messages_total`).
    pub unsent_messages: Family<UnsentLabels, Counter>,
    /// Task status reports written through raft.
    pub dispatcher_reports: Counter,
    /// Executor operations by op and result.
    pub executor_operations: Family<ExecutorOpLabels, Counter>,
    /// Executor operation latency by op.
    pub executor_operation_seconds: Family<ExecutorOpLabels, Histogram>,
    /// Time from a task's creation to its first Running report.
    pub task_scheduling_delay_seconds: Histogram,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

impl AgentMetrics {
    /// Creates the families and registers them into `registry`.
    pub fn register(registry: &mut Registry) -> AgentMetrics {
        let metrics = AgentMetrics {
            scheduler_pass_seconds: Histogram::new(exponential_buckets(0.000_01, 4.0, 12)),
            scheduler_placements: Counter::default(),
            scheduler_unplaceable_tasks: Gauge::default(),
            scheduler_plans: Family::default(),
            cluster_nodes: Family::default(),
            cluster_services: Gauge::default(),
            cluster_tasks: Family::default(),
            service_replicas_desired: Family::default(),
            service_replicas_running: Family::default(),
            dispatcher_heartbeats: Counter::default(),
            dispatcher_nodes_marked_down: Counter::default(),
            dispatcher_pushes: Family::default(),
            dispatcher_reports: Counter::default(),
            refused_requests: Family::default(),
            unsent_messages: Family::default(),
            executor_operations: Family::default(),
            executor_operation_seconds: Family::new_with_constructor(|| {
                Histogram::new(latency_buckets())
            }),
            task_scheduling_delay_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
        };
        metrics.register_into(registry);
        metrics
    }

    fn register_into(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("shoal");
        r.register(
            "scheduler_pass_seconds",
            "Duration of one reconcile and placement pass",
            self.scheduler_pass_seconds.clone(),
        );
        r.register(
            "scheduler_placements",
            "Tasks placed on a node by committed plans",
            self.scheduler_placements.clone(),
        );
        r.register(
            "scheduler_unplaceable_tasks",
            "Tasks that could not be placed in the last pass",
            self.scheduler_unplaceable_tasks.clone(),
        );
        r.register(
            "scheduler_plans",
            "Plans by outcome",
            crate::Declared(self.scheduler_plans.clone()),
        );
        r.register(
            "cluster_nodes",
            "Nodes by state, availability and role (on the leader)",
            crate::Declared(self.cluster_nodes.clone()),
        );
        r.register(
            "cluster_services",
            "Services (on the leader)",
            self.cluster_services.clone(),
        );
        r.register(
            "cluster_tasks",
            "Tasks by observed state (on the leader)",
            crate::Declared(self.cluster_tasks.clone()),
        );
        r.register(
            "service_replicas_desired",
            "Replicas wanted per service (on the leader)",
            crate::Declared(self.service_replicas_desired.clone()),
        );
        r.register(
            "service_replicas_running",
            "Replicas running per service (on the leader)",
            crate::Declared(self.service_replicas_running.clone()),
        );
        r.register(
            "dispatcher_heartbeats",
            "Worker heartbeats received by the dispatcher",
            self.dispatcher_heartbeats.clone(),
        );
        r.register(
            "dispatcher_nodes_marked_down",
            "Nodes the dispatcher marked down",
            self.dispatcher_nodes_marked_down.clone(),
        );
        r.register(
            "dispatcher_pushes",
            "Assignment sets pushed to workers, by outcome",
            crate::Declared(self.dispatcher_pushes.clone()),
        );
        r.register(
            "dispatcher_reports",
            "Task status reports written through raft",
            self.dispatcher_reports.clone(),
        );
        r.register(
            "refused_requests",
            "Dispatch and control requests refused to another agent, by request and reason",
            crate::Declared(self.refused_requests.clone()),
        );
        r.register(
            "unsent_messages",
            "Dispatch and control messages that could not be sent (too large, not encodable)",
            crate::Declared(self.unsent_messages.clone()),
        );
        r.register(
            "executor_operations",
            "Executor operations by op and result",
            crate::Declared(self.executor_operations.clone()),
        );
        r.register(
            "executor_operation_seconds",
            "Executor operation latency by op and result",
            crate::Declared(self.executor_operation_seconds.clone()),
        );
        r.register(
            "task_scheduling_delay_seconds",
            "Time from a task's creation to its first Running report",
            self.task_scheduling_delay_seconds.clone(),
        );
    }

    /// Counts one request refused to another agent.
    pub fn refused(&self, protocol: &'static str, request: &'static str, reason: &'static str) {
        self.refused_requests
            .get_or_create(&RefusedLabels {
                protocol,
                request,
                reason,
            })
            .inc();
    }

    /// Counts one message that could not be sent.
    pub fn unsent(&self, protocol: &'static str, message: &'static str, reason: &'static str) {
        self.unsent_messages
            .get_or_create(&UnsentLabels {
                protocol,
                message,
                reason,
            })
            .inc();
    }

    /// Families for code that runs without a registry (benchmarks, tests): registered nowhere.
    pub fn unregistered() -> AgentMetrics {
        AgentMetrics::register(&mut Registry::default())
    }
}
