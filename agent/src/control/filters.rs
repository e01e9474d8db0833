//! `--filter KEY=VALUE` of `service ls`, `node ls`, `service ps` and `node ps`, as docker
//! takes it: a filter repeated with one key matches any of its values, filters with different
//! keys must all match.
//!
//! The CLI parses the filters (so a typo fails before anything is sent) and sends them as
//! `?filter=KEY=VALUE` query pairs; the server parses them again ([`Filter`] is an axum
//! extractor), answers a bad one with a 400 and `{"error": ...}`, and keeps the rows that match.

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use shoal_scheduler::{Availability, DesiredState, Node, NodeRole, Service, ServiceMode, Task};

use super::server::ApiError;

/// The query key that carries one filter.
pub const QUERY_KEY: &str = "filter";

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Not `KEY=VALUE`.
    #[error("bad filter {0:?}: expected KEY=VALUE")]
    Malformed(String),
    /// A key this command does not filter on.
    #[error("unknown filter key {key:?} for {command}: accepted keys are {accepted}")]
    UnknownKey {
        /// The command.
        command: &'static str,
        /// The key given.
        key: String,
        /// The keys the command takes.
        accepted: &'static str,
    },
    /// A value the key does not take.
    #[error("bad value {value:?} for filter {key}: accepted values are {accepted}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// What it takes.
        accepted: &'static str,
    },
}

/// One `KEY=VALUE` test of a record.
pub trait Condition: Sized {
    /// What the test reads.
    type Subject<'a>;
    /// The commands these filters belong to, for messages (`` `shoal service ls` ``).
    const COMMAND: &'static str;
    /// The keys it takes, for messages.
    const KEYS: &'static str;
    /// Parses one filter.
    fn parse(key: &str, value: &str) -> Result<Self, FilterError>;
    /// Its key: conditions with the same key are alternatives.
    fn key(&self) -> &'static str;
    /// Whether `subject` passes.
    fn holds(&self, subject: &Self::Subject<'_>) -> bool;
}

/// A list of filters: every key must match, by any of its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter<C> {
    conditions: Vec<C>,
}

impl<C> Default for Filter<C> {
    fn default() -> Self {
        Filter {
            conditions: Vec::new(),
        }
    }
}

impl<C: Condition> Filter<C> {
    /// Parses `KEY=VALUE` filters as the user typed them.
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<Self, FilterError> {
        let conditions = filters
            .iter()
            .map(|text| {
                let text = text.as_ref();
                let (key, value) = text
                    .split_once('=')
                    .ok_or_else(|| FilterError::Malformed(text.to_owned()))?;
                C::parse(key.trim(), value)
            })
            .collect::<Result<_, _>>()?;
        Ok(Filter { conditions })
    }

    /// Whether `subject` passes every key (by any of its values).
    pub fn matches(&self, subject: &C::Subject<'_>) -> bool {
        let keys: BTreeSet<&'static str> = self.conditions.iter().map(C::key).collect();
        keys.into_iter().all(|key| {
            self.conditions
                .iter()
                .filter(|c| c.key() == key)
                .any(|c| c.holds(subject))
        })
    }

    /// Whether there is nothing to test.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }
}

/// The query string (with its `?`, empty without filters) that sends `filters` to the server.
pub fn query<S: AsRef<str>>(filters: &[S]) -> String {
    if filters.is_empty() {
        return String::new();
    }
    let pairs: Vec<(&str, &str)> = filters.iter().map(|f| (QUERY_KEY, f.as_ref())).collect();
    serde_urlencoded::to_string(pairs).map_or_else(|_| String::new(), |q| format!("?{q}"))
}

impl<S: Send + Sync, C: Condition + Send> FromRequestParts<S> for Filter<C> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(parts.uri.query().unwrap_or_default())
                .map_err(|e| bad(format!("bad query: {e}")))?;
        let filters: Vec<String> = pairs
            .into_iter()
            .filter(|(key, _)| key == QUERY_KEY)
            .map(|(_, value)| value)
            .collect();
        Filter::parse(&filters).map_err(|e| bad(e.to_string()))
    }
}

/// `label=KEY` (the label is set) or `label=KEY=VALUE` (set to that value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelTest {
    key: String,
    value: Option<String>,
}

impl LabelTest {
    fn parse(value: &str) -> Result<Self, FilterError> {
        let (key, value) = match value.split_once('=') {
            Some((key, value)) => (key, Some(value.to_owned())),
            None => (value, None),
        };
        if key.is_empty() {
            return Err(bad_value(
                "label",
                value.as_deref().unwrap_or(""),
                "KEY or KEY=VALUE",
            ));
        }
        Ok(LabelTest {
            key: key.to_owned(),
            value,
        })
    }

    fn holds(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        labels
            .get(&self.key)
            .is_some_and(|v| self.value.as_ref().is_none_or(|wanted| wanted == v))
    }
}

fn bad_value(key: &'static str, value: &str, accepted: &'static str) -> FilterError {
    FilterError::BadValue {
        key,
        value: value.to_owned(),
        accepted,
    }
}

/// A value that must not be empty.
fn some_text(key: &'static str, value: &str) -> Result<String, FilterError> {
    if value.is_empty() {
        return Err(bad_value(key, value, "any non-empty text"));
    }
    Ok(value.to_owned())
}

fn unknown<C: Condition>(key: &str) -> FilterError {
    FilterError::UnknownKey {
        command: C::COMMAND,
        key: key.to_owned(),
        accepted: C::KEYS,
    }
}

/// A filter of `service ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceCondition {
    /// `name=PREFIX`: the service's name starts with it.
    Name(String),
    /// `id=PREFIX`: the service's id starts with it.
    Id(String),
    /// `label=KEY[=VALUE]`.
    Label(LabelTest),
    /// `mode=replicated|global`.
    Mode {
        /// Global rather than replicated.
        global: bool,
    },
}

impl Condition for ServiceCondition {
    type Subject<'a> = Service;
    const COMMAND: &'static str = "`shoal service ls`";
    const KEYS: &'static str = "name, id, label, mode";

    fn parse(key: &str, value: &str) -> Result<Self, FilterError> {
        Ok(match key {
            "name" => ServiceCondition::Name(some_text("name", value)?),
            "id" => ServiceCondition::Id(some_text("id", value)?),
            "label" => ServiceCondition::Label(LabelTest::parse(value)?),
            "mode" => ServiceCondition::Mode {
                global: match value {
                    "global" => true,
                    "replicated" => false,
                    _ => return Err(bad_value("mode", value, "replicated, global")),
                },
            },
            _ => return Err(unknown::<Self>(key)),
        })
    }

    fn key(&self) -> &'static str {
        match self {
            ServiceCondition::Name(_) => "name",
            ServiceCondition::Id(_) => "id",
            ServiceCondition::Label(_) => "label",
            ServiceCondition::Mode { .. } => "mode",
        }
    }

    fn holds(&self, service: &Service) -> bool {
        match self {
            ServiceCondition::Name(prefix) => service.spec.name.starts_with(prefix.as_str()),
            ServiceCondition::Id(prefix) => service.id.to_string().starts_with(prefix.as_str()),
            ServiceCondition::Label(test) => test.holds(&service.spec.labels),
            ServiceCondition::Mode { global } => {
                (service.spec.mode == ServiceMode::Global) == *global
            }
        }
    }
}

/// A filter of `node ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCondition {
    /// `name=PREFIX`: the node's hostname starts with it.
    Name(String),
    /// `id=PREFIX`: the node's id starts with it.
    Id(String),
    /// `role=manager|worker`.
    Role(NodeRole),
    /// `availability=active|pause|drain`.
    Availability(Availability),
    /// `label=KEY[=VALUE]`: a node label.
    Label(LabelTest),
}

impl Condition for NodeCondition {
    type Subject<'a> = Node;
    const COMMAND: &'static str = "`shoal node ls`";
    const KEYS: &'static str = "name, id, role, availability, label";

    fn parse(key: &str, value: &str) -> Result<Self, FilterError> {
        Ok(match key {
            "name" => NodeCondition::Name(some_text("name", value)?),
            "id" => NodeCondition::Id(some_text("id", value)?),
            "role" => NodeCondition::Role(match value {
                "manager" => NodeRole::Manager,
                "worker" => NodeRole::Worker,
                _ => return Err(bad_value("role", value, "manager, worker")),
            }),
            "availability" => NodeCondition::Availability(match value {
                "active" => Availability::Active,
                "pause" => Availability::Pause,
                "drain" => Availability::Drain,
                _ => return Err(bad_value("availability", value, "active, pause, drain")),
            }),
            "label" => NodeCondition::Label(LabelTest::parse(value)?),
            _ => return Err(unknown::<Self>(key)),
        })
    }

    fn key(&self) -> &'static str {
        match self {
            NodeCondition::Name(_) => "name",
            NodeCondition::Id(_) => "id",
            NodeCondition::Role(_) => "role",
            NodeCondition::Availability(_) => "availability",
            NodeCondition::Label(_) => "label",
        }
    }

    fn holds(&self, node: &Node) -> bool {
        match self {
            NodeCondition::Name(prefix) => node.hostname.starts_with(prefix.as_str()),
            NodeCondition::Id(prefix) => node.id.as_str().starts_with(prefix.as_str()),
            NodeCondition::Role(role) => node.role == *role,
            NodeCondition::Availability(availability) => node.availability == *availability,
            NodeCondition::Label(test) => test.holds(&node.labels),
        }
    }
}

/// What a task filter reads: the task and the node it is placed on, if the state holds it.
#[derive(Debug, Clone, Copy)]
pub struct PlacedTask<'a> {
    /// The task.
    pub task: &'a Task,
    /// Its node's record.
    pub node: Option<&'a Node>,
}

/// A filter of `service ps` and `node ps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskCondition {
    /// `desired-state=running|shutdown|accepted` (`accepted`, or `ready`: placed and prepared
    /// but not started yet).
    Desired(DesiredState),
    /// `node=NODE`: placed on the node with this id, hostname or id prefix.
    Node(String),
    /// `id=PREFIX`: the task's id starts with it.
    Id(String),
}

impl Condition for TaskCondition {
    type Subject<'a> = PlacedTask<'a>;
    const COMMAND: &'static str = "`shoal service ps` and `shoal node ps`";
    const KEYS: &'static str = "desired-state, node, id";

    fn parse(key: &str, value: &str) -> Result<Self, FilterError> {
        Ok(match key {
            "desired-state" => TaskCondition::Desired(match value {
                "running" => DesiredState::Running,
                "shutdown" => DesiredState::Shutdown,
                "accepted" | "ready" => DesiredState::Ready,
                _ => {
                    return Err(bad_value(
                        "desired-state",
                        value,
                        "running, shutdown, accepted",
                    ));
                }
            }),
            "node" => TaskCondition::Node(some_text("node", value)?),
            "id" => TaskCondition::Id(some_text("id", value)?),
            _ => return Err(unknown::<Self>(key)),
        })
    }

    fn key(&self) -> &'static str {
        match self {
            TaskCondition::Desired(_) => "desired-state",
            TaskCondition::Node(_) => "node",
            TaskCondition::Id(_) => "id",
        }
    }

    fn holds(&self, placed: &PlacedTask<'_>) -> bool {
        match self {
            TaskCondition::Desired(desired) => placed.task.desired == *desired,
            TaskCondition::Node(given) => {
                let id = placed.task.node.as_ref().map(|n| n.as_str());
                id.is_some_and(|id| id.starts_with(given.as_str()))
                    || placed.node.is_some_and(|n| n.hostname == *given)
            }
            TaskCondition::Id(prefix) => placed.task.id.to_string().starts_with(prefix.as_str()),
        }
    }
}

/// The filter of `service ls`.
pub type ServiceFilter = Filter<ServiceCondition>;
/// The filter of `node ls`.
pub type NodeFilter = Filter<NodeCondition>;
/// The filter of `service ps` and `node ps`.
pub type TaskFilter = Filter<TaskCondition>;

impl TaskFilter {
    /// Whether `task` (read with its node from `state`) passes.
    pub fn keeps(&self, state: &shoal_scheduler::ClusterState, task: &Task) -> bool {
        self.is_empty()
            || self.matches(&PlacedTask {
                task,
                node: task.node.as_ref().and_then(|id| state.nodes.get(id)),
            })
    }
}

#[cfg(test)]
mod tests {
    use shoal_scheduler::synthetic;
    use shoal_scheduler::{ClusterState, ServiceId, Timestamp};

    use super::*;

    fn service(name: &str, global: bool, labels: &[(&str, &str)]) -> Service {
        let mut spec = synthetic::spec(name, 1);
        if global {
            spec.mode = ServiceMode::Global;
        }
        spec.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Service {
            id: ServiceId(7),
            spec,
            version: 1,
            revision: 1,
            previous_spec: None,
            previous_version: None,
            update_status: None,
            equivalent_version: None,
            address_index: None,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    fn services(filters: &[&str]) -> Result<ServiceFilter, FilterError> {
        Filter::parse(filters)
    }

    #[test]
    fn one_key_is_any_of_its_values_and_keys_are_all_required() {
        let web = service("web", false, &[("tier", "front")]);
        let agent = service("agent", true, &[("tier", "ops")]);
        let either = services(&["name=we", "name=ag"]).expect("parses");
        assert!(either.matches(&web) && either.matches(&agent));
        let both = services(&["name=we", "mode=global"]).expect("parses");
        assert!(!both.matches(&web) && !both.matches(&agent));
        let labelled = services(&["label=tier=front"]).expect("parses");
        assert!(labelled.matches(&web) && !labelled.matches(&agent));
        let has_label = services(&["label=tier"]).expect("parses");
        assert!(has_label.matches(&web) && has_label.matches(&agent));
        let by_id = services(&["id=s000"]).expect("parses");
        assert!(by_id.matches(&web));
        assert!(Filter::<ServiceCondition>::default().matches(&web));
    }

    #[test]
    fn bad_filters_say_what_is_accepted() {
        let unknown = services(&["colour=red"]).expect_err("unknown key");
        assert_eq!(
            unknown.to_string(),
            "unknown filter key \"colour\" for `shoal service ls`: accepted keys are name, id, \
             label, mode"
        );
        let mode = services(&["mode=both"]).expect_err("bad mode");
        assert!(mode.to_string().contains("replicated, global"), "{mode}");
        assert_eq!(
            services(&["name"]).expect_err("no ="),
            FilterError::Malformed("name".into())
        );
        assert!(services(&["name="]).is_err(), "an empty name");
        assert!(services(&["label="]).is_err(), "an empty label key");
        let role = Filter::<NodeCondition>::parse(&["role=boss"]).expect_err("bad role");
        assert!(role.to_string().contains("manager, worker"), "{role}");
        let availability =
            Filter::<NodeCondition>::parse(&["availability=off"]).expect_err("bad value");
        assert!(availability.to_string().contains("active, pause, drain"));
        let desired = TaskFilter::parse(&["desired-state=gone"]).expect_err("bad value");
        assert!(desired.to_string().contains("running, shutdown, accepted"));
    }

    #[test]
    fn node_filters_read_the_node_record() {
        let state = synthetic::cluster(&synthetic::ClusterShape::new(3, 1));
        let nodes: Vec<&Node> = state.nodes.values().collect();
        let first = nodes[0];
        let by_name =
            Filter::<NodeCondition>::parse(&[format!("name={}", first.hostname)]).expect("parses");
        assert_eq!(nodes.iter().filter(|n| by_name.matches(n)).count(), 1);
        let workers = Filter::<NodeCondition>::parse(&["role=worker", "availability=active"])
            .expect("parses");
        let expected = nodes
            .iter()
            .filter(|n| n.role == NodeRole::Worker && n.availability == Availability::Active)
            .count();
        assert_eq!(
            nodes.iter().filter(|n| workers.matches(n)).count(),
            expected
        );
    }

    #[test]
    fn task_filters_match_desired_state_node_and_id() {
        let mut state: ClusterState = synthetic::cluster(&synthetic::ClusterShape::new(2, 1));
        synthetic::create_service(&mut state, synthetic::spec("web", 2), Timestamp(0))
            .expect("created");
        let plan = shoal_scheduler::reconcile(&state, Timestamp(1));
        state
            .apply(&shoal_scheduler::Command::ApplyPlan {
                plan,
                at: Timestamp(1),
            })
            .expect("placed");
        let tasks: Vec<&Task> = state.tasks.values().collect();
        assert_eq!(tasks.len(), 2);
        let running = TaskFilter::parse(&["desired-state=running"]).expect("parses");
        assert!(tasks.iter().all(|t| running.keeps(&state, t)));
        let shutdown = TaskFilter::parse(&["desired-state=shutdown"]).expect("parses");
        assert!(tasks.iter().all(|t| !shutdown.keeps(&state, t)));
        let first = tasks[0];
        let node = first.node.as_ref().expect("placed");
        let hostname = state.nodes[node].hostname.clone();
        for given in [node.to_string(), hostname] {
            let on = TaskFilter::parse(&[format!("node={given}")]).expect("parses");
            assert!(on.keeps(&state, first), "node={given}");
        }
        let by_id = TaskFilter::parse(&[format!("id={}", first.id)]).expect("parses");
        assert_eq!(tasks.iter().filter(|t| by_id.keeps(&state, t)).count(), 1);
    }

    #[test]
    fn filters_travel_as_query_pairs() {
        assert_eq!(query::<&str>(&[]), "");
        assert_eq!(
            query(&["label=a=b&c", "name=web"]),
            "?filter=label%3Da%3Db%26c&filter=name%3Dweb"
        );
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str("filter=label%3Da%3Db%26c&filter=name=web&stale=true")
                .expect("decodes");
        assert_eq!(pairs[0], ("filter".into(), "label=a=b&c".into()));
        assert_eq!(pairs[1], ("filter".into(), "name=web".into()));
    }
}
