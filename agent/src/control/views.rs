//! How the cluster state is shown to people and scripts: one row per service, task or node.
//! Pure functions of a [`ClusterState`], shared by the control server and tests.

use std::cmp::Reverse;
use std::fmt;

use serde::{Deserialize, Serialize};
use shoal_scheduler::{
    ClusterState, DesiredState, Node, NodeId, PortSpec, Service, ServiceId, ServiceMode, Task,
    TaskState, Timestamp,
};
use utoipa::ToSchema;

/// One line of `shoal service ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceRow {
    /// The service id.
    #[schema(value_type = u64)]
    pub id: ServiceId,
    /// Its name.
    pub name: String,
    /// `replicated` or `global`.
    pub mode: String,
    /// Tasks observed running.
    pub running: u64,
    /// Tasks wanted.
    pub desired: u64,
    /// The image.
    pub image: String,
    /// Published ports, `*:8080->80/tcp`.
    pub ports: String,
    /// The spec version.
    pub version: u64,
    /// Update progress, if an update ran.
    pub update: Option<String>,
    /// The stack it belongs to (its `io.shoal.stack.namespace` label), if any.
    #[serde(default)]
    pub stack: Option<String>,
}

/// One line of `shoal service ps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskRow {
    /// The task id.
    pub id: String,
    /// `service.slot` or `service.nodeid`.
    pub name: String,
    /// The image of the spec version it runs.
    pub image: String,
    /// The node's hostname (or id), empty while unplaced.
    pub node: String,
    /// What the orchestrator wants (`running`, `shutdown`, ...).
    #[schema(value_type = String)]
    pub desired: DesiredState,
    /// What was observed (`pending`, `running`, `failed`, ...).
    #[schema(value_type = String)]
    pub state: TaskState,
    /// When that was observed (milliseconds since the Unix epoch).
    #[schema(value_type = u64)]
    pub since: Timestamp,
    /// Detail: why it is pending, why it failed.
    pub message: String,
    /// Exit code, once exited.
    pub exit_code: Option<i64>,
    /// Whether it runs the service's current spec (not one that an update is replacing).
    #[serde(default = "runs_current_spec")]
    pub current: bool,
}

/// A task row from an agent that does not say runs the current spec.
fn runs_current_spec() -> bool {
    true
}

/// One line of `shoal node ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeRow {
    /// The node id.
    #[schema(value_type = String)]
    pub id: NodeId,
    /// Its hostname.
    pub hostname: String,
    /// `ready`, `down`, `unknown`.
    pub state: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
    /// `manager` or `worker`.
    pub role: String,
    /// Its container runtime.
    pub runtime: String,
    /// Tasks it runs now.
    pub tasks: u64,
    /// The shoal version.
    pub version: String,
}

/// The rows of `service ls`, in name order.
pub fn service_rows(state: &ClusterState) -> Vec<ServiceRow> {
    service_rows_where(state, |_| true)
}

/// The rows of `service ls` for the services `keep` accepts (its `--filter`), in name order.
pub fn service_rows_where(
    state: &ClusterState,
    keep: impl Fn(&Service) -> bool,
) -> Vec<ServiceRow> {
    let mut rows: Vec<ServiceRow> = state
        .services
        .values()
        .filter(|service| keep(service))
        .map(|service| service_row(state, service))
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

fn service_row(state: &ClusterState, service: &Service) -> ServiceRow {
    let tasks = || {
        state
            .tasks
            .values()
            .filter(|task| task.service == service.id)
    };
    let running = tasks()
        .filter(|task| {
            task.status.state == TaskState::Running && task.desired == DesiredState::Running
        })
        .count() as u64;
    let desired = match service.spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::Global => tasks()
            .filter(|task| task.desired == DesiredState::Running)
            .count() as u64,
    };
    ServiceRow {
        id: service.id,
        name: service.spec.name.clone(),
        mode: match service.spec.mode {
            ServiceMode::Replicated { .. } => "replicated".into(),
            ServiceMode::Global => "global".into(),
        },
        running,
        desired,
        image: service.spec.image.clone(),
        ports: service
            .spec
            .ports
            .iter()
            .map(port_text)
            .collect::<Vec<_>>()
            .join(", "),
        version: service.version,
        stack: service
            .spec
            .labels
            .get(shoal_compose::STACK_NAMESPACE_LABEL)
            .cloned(),
        update: service
            .update_status
            .as_ref()
            .map(|status| format!("{:?}", status.state).to_lowercase()),
    }
}

fn port_text(port: &PortSpec) -> String {
    let protocol = format!("{:?}", port.protocol).to_lowercase();
    if port.published == 0 {
        format!("{}/{protocol}", port.target)
    } else {
        format!("*:{}->{}/{protocol}", port.published, port.target)
    }
}

/// Finds a service by name, id, or unique id prefix (`None` when that names no single one; see
/// [`lookup_service`] for why).
pub fn find_service<'a>(state: &'a ClusterState, name_or_id: &str) -> Option<&'a Service> {
    lookup_service(state, name_or_id).ok()
}

/// The rows of `service ps`: each slot's (or, for a global service, each node's) tasks
/// together, slots in order; in a slot the task it still wants first, then its history, newest
/// first.
pub fn task_rows(state: &ClusterState, service: &Service) -> Vec<TaskRow> {
    task_rows_where(state, service, |_| true)
}

/// [`task_rows`] for the tasks `keep` accepts (the `--filter` of `service ps`).
pub fn task_rows_where(
    state: &ClusterState,
    service: &Service,
    keep: impl Fn(&Task) -> bool,
) -> Vec<TaskRow> {
    let mut tasks: Vec<&Task> = state
        .tasks
        .values()
        .filter(|task| task.service == service.id && keep(task))
        .collect();
    tasks.sort_by_key(|task| history_order(task));
    tasks
        .into_iter()
        .map(|task| task_row(state, service, task))
        .collect()
}

/// A task's place within its service: its slot, whether it is history, newest first.
type HistoryKey = (
    shoal_scheduler::SlotKey,
    bool,
    Reverse<shoal_scheduler::TaskId>,
);

/// Where a task sorts within its service: by slot, the slot's wanted task first, then newest
/// first (ids grow with creation).
fn history_order(task: &Task) -> HistoryKey {
    (task.slot_key(), !task.is_live(), Reverse(task.id))
}

/// The NAME column of `service ps` and `node ps`: a row that follows one of the same slot is
/// that slot's history, shown indented under it as ` \_ web.1`, as docker does. `rows` are in
/// the order [`task_rows`] gives.
pub fn history_names(rows: &[TaskRow]) -> Vec<String> {
    let mut previous: Option<&str> = None;
    rows.iter()
        .map(|row| {
            let replaced = previous == Some(row.name.as_str());
            previous = Some(&row.name);
            if replaced {
                format!(" \\_ {}", row.name)
            } else {
                row.name.clone()
            }
        })
        .collect()
}

fn task_row(state: &ClusterState, service: &Service, task: &Task) -> TaskRow {
    TaskRow {
        id: task.id.to_string(),
        name: task_name(&service.spec.name, task),
        image: service.spec_for(task.spec_version).image.clone(),
        node: node_name(state, task).unwrap_or_default(),
        desired: task.desired,
        state: task.status.state,
        since: task.status.timestamp,
        message: task.status.message.clone(),
        exit_code: task.status.exit_code,
        current: service.is_current(task.spec_version),
    }
}

/// `service.slot`, or for a global service's task `service.` and the end of its node's id.
fn task_name(service: &str, task: &Task) -> String {
    let suffix = match (task.slot, &task.node) {
        (Some(slot), _) => slot.to_string(),
        (None, Some(node)) => {
            let id = node.as_str();
            let start = id.char_indices().rev().nth(7).map_or(0, |(at, _)| at);
            id[start..].to_owned()
        }
        (None, None) => task.id.to_string(),
    };
    format!("{service}.{suffix}")
}

/// The hostname (or, for a node the state no longer holds, the id) of the task's node.
fn node_name(state: &ClusterState, task: &Task) -> Option<String> {
    let id = task.node.as_ref()?;
    Some(
        state
            .nodes
            .get(id)
            .map_or_else(|| id.to_string(), |n| n.hostname.clone()),
    )
}

/// The rows of `node ls`, in hostname order.
pub fn node_rows(state: &ClusterState) -> Vec<NodeRow> {
    node_rows_where(state, |_| true)
}

/// The rows of `node ls` for the nodes `keep` accepts (its `--filter`), in hostname order.
pub fn node_rows_where(state: &ClusterState, keep: impl Fn(&Node) -> bool) -> Vec<NodeRow> {
    let mut rows: Vec<NodeRow> = state
        .nodes
        .values()
        .filter(|node| keep(node))
        .map(|node| node_row(state, node))
        .collect();
    rows.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
    rows
}

fn node_row(state: &ClusterState, node: &Node) -> NodeRow {
    let tasks = state
        .tasks
        .values()
        .filter(|task| task.node.as_ref() == Some(&node.id) && !task.status.state.is_terminal())
        .count() as u64;
    NodeRow {
        id: node.id.clone(),
        hostname: node.hostname.clone(),
        state: format!("{:?}", node.state).to_lowercase(),
        availability: format!("{:?}", node.availability).to_lowercase(),
        role: format!("{:?}", node.role).to_lowercase(),
        runtime: format!("{:?}", node.runtime).to_lowercase(),
        tasks,
        version: node.version.clone(),
    }
}

/// What a name given on the command line was looked up among.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Nodes: by id, hostname or unique id prefix.
    Node,
    /// Services: by name, id or unique id prefix.
    Service,
    /// Tasks: by id or unique id prefix.
    Task,
    /// Secrets: by name, id or unique id prefix.
    Secret,
    /// Configs: by name, id or unique id prefix.
    Config,
}

impl Kind {
    /// Where the user finds the names of this kind.
    fn hint(self) -> &'static str {
        match self {
            Kind::Node => "see `shoal node ls`",
            Kind::Service => "see `shoal service ls`",
            Kind::Task => "see `shoal service ps SERVICE` or `shoal node ps NODE`",
            Kind::Secret => "see `shoal secret ls`",
            Kind::Config => "see `shoal config ls`",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Node => "node",
            Kind::Service => "service",
            Kind::Task => "task",
            Kind::Secret => "secret",
            Kind::Config => "config",
        })
    }
}

/// Why a name, id or id prefix names no single node, service or task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Nothing matches.
    #[error("no such {kind}: {given} ({})", kind.hint())]
    NotFound {
        /// What was looked for.
        kind: Kind,
        /// What the user gave.
        given: String,
    },
    /// More than one matches.
    #[error(
        "{given} is ambiguous: it names {} {kind}s ({}); give more of the id",
        .matches.len(),
        .matches.join(", ")
    )]
    Ambiguous {
        /// What was looked for.
        kind: Kind,
        /// What the user gave.
        given: String,
        /// The ids it matches.
        matches: Vec<String>,
    },
}

impl LookupError {
    /// Whether nothing matched (rather than too much).
    pub fn is_not_found(&self) -> bool {
        matches!(self, LookupError::NotFound { .. })
    }
}

/// A record that users name on the command line.
trait Named {
    /// What it is.
    const KIND: Kind;
    /// Its id as the CLI prints it.
    fn id_text(&self) -> String;
    /// Its name, if it has one besides its id.
    fn name(&self) -> Option<&str>;
    /// Its id without the zeros that pad the number (`t2a` for `t0000000002a`), for the records
    /// whose ids are numbered (all but nodes).
    fn short_id(&self) -> Option<String> {
        unpadded(&self.id_text())
    }
}

/// `t2a` for `t0000000002a`: the kind letter and the number, unpadded.
fn unpadded(id: &str) -> Option<String> {
    let mut chars = id.chars();
    let letter = chars.next()?;
    let digits = chars.as_str();
    let number = digits.trim_start_matches('0');
    Some(format!(
        "{letter}{}",
        if number.is_empty() { "0" } else { number }
    ))
}

impl Named for Node {
    const KIND: Kind = Kind::Node;
    fn id_text(&self) -> String {
        self.id.to_string()
    }
    fn name(&self) -> Option<&str> {
        Some(&self.hostname)
    }
    fn short_id(&self) -> Option<String> {
        None
    }
}

impl Named for Service {
    const KIND: Kind = Kind::Service;
    fn id_text(&self) -> String {
        self.id.to_string()
    }
    fn name(&self) -> Option<&str> {
        Some(&self.spec.name)
    }
}

impl Named for Task {
    const KIND: Kind = Kind::Task;
    fn id_text(&self) -> String {
        self.id.to_string()
    }
    fn name(&self) -> Option<&str> {
        None
    }
}

impl Named for shoal_scheduler::Secret {
    const KIND: Kind = Kind::Secret;
    fn id_text(&self) -> String {
        self.id.to_string()
    }
    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }
}

impl Named for shoal_scheduler::Config {
    const KIND: Kind = Kind::Config;
    fn id_text(&self) -> String {
        self.id.to_string()
    }
    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }
}

/// The secret `given` names: its name, its id, or a unique prefix of its id.
pub fn find_secret<'a>(
    state: &'a ClusterState,
    given: &str,
) -> Result<&'a shoal_scheduler::Secret, LookupError> {
    lookup(given, state.secrets.values())
}

/// The config `given` names: its name, its id, or a unique prefix of its id.
pub fn find_config<'a>(
    state: &'a ClusterState,
    given: &str,
) -> Result<&'a shoal_scheduler::Config, LookupError> {
    lookup(given, state.configs.values())
}

/// The one record `given` names, trying in turn: its full id, its name, a prefix of its id, its
/// unpadded id (`t2a`). The first way that matches anything decides; more than one match is
/// ambiguous.
fn lookup<'a, T: Named + 'a>(
    given: &str,
    records: impl Iterator<Item = &'a T> + Clone,
) -> Result<&'a T, LookupError> {
    let ways: [&dyn Fn(&T) -> bool; 4] = [
        &|r| r.id_text() == given,
        &|r| {
            r.name()
                .is_some_and(|name| !name.is_empty() && name == given)
        },
        &|r| !given.is_empty() && r.id_text().starts_with(given),
        &|r| r.short_id().is_some_and(|short| short == given),
    ];
    for matches in ways {
        let found: Vec<&T> = records.clone().filter(|r| matches(r)).collect();
        match found.as_slice() {
            [] => continue,
            [one] => return Ok(one),
            many => {
                return Err(LookupError::Ambiguous {
                    kind: T::KIND,
                    given: given.to_owned(),
                    matches: many.iter().map(|r| r.id_text()).collect(),
                });
            }
        }
    }
    Err(LookupError::NotFound {
        kind: T::KIND,
        given: given.to_owned(),
    })
}

/// The node `given` names: its id, its hostname, or a unique prefix of its id.
pub fn find_node<'a>(state: &'a ClusterState, given: &str) -> Result<&'a Node, LookupError> {
    lookup(given, state.nodes.values())
}

/// The service `given` names: its name, its id, or a unique prefix of its id.
pub fn lookup_service<'a>(
    state: &'a ClusterState,
    given: &str,
) -> Result<&'a Service, LookupError> {
    lookup(given, state.services.values())
}

/// The task `given` names: its id or a unique prefix of it.
pub fn find_task<'a>(state: &'a ClusterState, given: &str) -> Result<&'a Task, LookupError> {
    lookup(given, state.tasks.values())
}

/// The rows of `node ps`: the tasks placed on `node`, by service and slot, each slot's wanted
/// task first and then its history, newest first.
pub fn node_task_rows(state: &ClusterState, node: &NodeId) -> Vec<TaskRow> {
    node_task_rows_where(state, node, |_| true)
}

/// [`node_task_rows`] for the tasks `keep` accepts (the `--filter` of `node ps`).
pub fn node_task_rows_where(
    state: &ClusterState,
    node: &NodeId,
    keep: impl Fn(&Task) -> bool,
) -> Vec<TaskRow> {
    let mut tasks: Vec<(&Service, &Task)> = state
        .tasks
        .values()
        .filter(|task| task.node.as_ref() == Some(node) && keep(task))
        .filter_map(|task| Some((state.services.get(&task.service)?, task)))
        .collect();
    tasks.sort_by(|(sa, a), (sb, b)| {
        (&sa.spec.name, history_order(a)).cmp(&(&sb.spec.name, history_order(b)))
    });
    tasks
        .into_iter()
        .map(|(service, task)| task_row(state, service, task))
        .collect()
}

/// One task in full, as `shoal task inspect` shows it: the record, and what it refers to by
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDetail {
    /// The task id as the CLI prints it.
    pub id: String,
    /// `service.slot`, as `service ps` names it.
    pub name: String,
    /// Its service's name (`None` once the service was removed).
    pub service_name: Option<String>,
    /// The image of the spec it runs (`None` once the service was removed).
    pub image: Option<String>,
    /// Its node's hostname, once placed.
    pub node_hostname: Option<String>,
    /// Whether it runs the service's current spec.
    pub current: bool,
    /// The task as the cluster records it.
    pub task: Task,
}

/// The detail of `task`.
pub fn task_detail(state: &ClusterState, task: &Task) -> TaskDetail {
    let service = state.services.get(&task.service);
    let service_name = service.map_or_else(|| task.service.to_string(), |s| s.spec.name.clone());
    TaskDetail {
        id: task.id.to_string(),
        name: task_name(&service_name, task),
        service_name: service.map(|s| s.spec.name.clone()),
        image: service.map(|s| s.spec_for(task.spec_version).image.clone()),
        node_hostname: node_name(state, task),
        current: service.is_some_and(|s| s.is_current(task.spec_version)),
        task: task.clone(),
    }
}

#[cfg(test)]
mod tests {
    use shoal_scheduler::synthetic::{self, ClusterShape};
    use shoal_scheduler::{TaskId, status_at};

    use super::*;

    /// A cluster of two nodes with the services `names`, each of one replica (no tasks yet).
    fn cluster(names: &[&str]) -> ClusterState {
        let mut state = synthetic::cluster(&ClusterShape::new(2, 1));
        for name in names {
            synthetic::create_service(&mut state, synthetic::spec(name, 1), Timestamp(0))
                .expect("created");
        }
        state
    }

    /// Adds a task of the first service in `slot`.
    fn add_task(state: &mut ClusterState, id: u64, slot: u64, desired: DesiredState) {
        let service = *state.services.keys().next().expect("a service");
        let node = state.nodes.keys().next().cloned();
        let observed = match desired {
            DesiredState::Shutdown => TaskState::Shutdown,
            _ => TaskState::Running,
        };
        let task = Task {
            id: TaskId(id),
            service,
            slot: Some(slot),
            node,
            spec_version: 1,
            desired,
            status: status_at(observed, Timestamp(id)),
            created_at: Timestamp(id),
            not_before: Timestamp(0),
        };
        state.tasks.insert(task.id, task);
    }

    #[test]
    fn services_are_found_by_name_id_or_unique_prefix() {
        let state = cluster(&["web", "api"]);
        let web = lookup_service(&state, "web").expect("by name");
        let id = web.id.to_string();
        assert_eq!(lookup_service(&state, &id).expect("by id").id, web.id);
        let api = lookup_service(&state, "api").expect("api").id.to_string();
        let common = id
            .chars()
            .zip(api.chars())
            .take_while(|(a, b)| a == b)
            .count();
        let unique = &id[..=common];
        assert_eq!(
            lookup_service(&state, unique).expect("by prefix").id,
            web.id
        );
        let ambiguous = lookup_service(&state, "s0000").expect_err("two services start so");
        assert!(!ambiguous.is_not_found());
        let text = ambiguous.to_string();
        assert!(
            text.starts_with("s0000 is ambiguous: it names 2 services (s"),
            "{text}"
        );
        let missing = lookup_service(&state, "db").expect_err("no such service");
        assert!(missing.is_not_found());
        assert_eq!(
            missing.to_string(),
            "no such service: db (see `shoal service ls`)"
        );
        assert!(find_service(&state, "s0000").is_none());
    }

    #[test]
    fn tasks_are_found_by_id_or_unique_prefix() {
        let mut state = cluster(&["web"]);
        add_task(&mut state, 0x2a, 1, DesiredState::Running);
        add_task(&mut state, 0x2b, 2, DesiredState::Running);
        assert_eq!(
            find_task(&state, "t0000000002a").expect("full").id,
            TaskId(0x2a)
        );
        let both = find_task(&state, "t0000000002").expect_err("ambiguous");
        assert_eq!(
            both,
            LookupError::Ambiguous {
                kind: Kind::Task,
                given: "t0000000002".into(),
                matches: vec!["t0000000002a".into(), "t0000000002b".into()],
            }
        );
        // The unpadded number names one task too.
        assert_eq!(find_task(&state, "t2b").expect("unpadded").id, TaskId(0x2b));
        assert_eq!(
            lookup_service(&state, "s0").expect("unpadded").spec.name,
            "web"
        );
        let missing = find_task(&state, "t9").expect_err("unknown");
        assert!(
            missing
                .to_string()
                .contains("see `shoal service ps SERVICE`")
        );
        assert!(
            find_task(&state, "").is_err(),
            "an empty name names nothing"
        );
    }

    #[test]
    fn nodes_are_found_by_hostname_before_id_prefix() {
        let state = cluster(&[]);
        let node = state.nodes.values().next().expect("a node");
        assert_eq!(
            find_node(&state, &node.hostname).expect("by name").id,
            node.id
        );
        assert_eq!(
            find_node(&state, node.id.as_str()).expect("by id").id,
            node.id
        );
    }

    #[test]
    fn a_slots_history_follows_its_task_newest_first() {
        let mut state = cluster(&["web"]);
        add_task(&mut state, 1, 1, DesiredState::Shutdown);
        add_task(&mut state, 2, 2, DesiredState::Running);
        add_task(&mut state, 3, 1, DesiredState::Shutdown);
        add_task(&mut state, 4, 1, DesiredState::Running);
        let service = lookup_service(&state, "web").expect("web");
        let rows = task_rows(&state, service);
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "t00000000004",
                "t00000000003",
                "t00000000001",
                "t00000000002"
            ]
        );
        assert_eq!(
            history_names(&rows),
            ["web.1", " \\_ web.1", " \\_ web.1", "web.2"]
        );
        let live = task_rows_where(&state, service, |t| t.is_live());
        assert_eq!(history_names(&live), ["web.1", "web.2"]);
        let node = state.tasks[&TaskId(1)].node.clone().expect("placed");
        let on_node = node_task_rows(&state, &node);
        assert_eq!(on_node, rows, "node ps orders a service's tasks alike");
    }

    #[test]
    fn a_task_detail_names_its_service_and_node() {
        let mut state = cluster(&["web"]);
        add_task(&mut state, 7, 1, DesiredState::Running);
        let detail = task_detail(&state, &state.tasks[&TaskId(7)]);
        assert_eq!(detail.id, "t00000000007");
        assert_eq!(detail.name, "web.1");
        assert_eq!(detail.service_name.as_deref(), Some("web"));
        assert!(detail.node_hostname.is_some() && detail.current);
        state.services.clear();
        let orphan = task_detail(&state, &state.tasks[&TaskId(7)]);
        assert_eq!(orphan.service_name, None);
        assert!(orphan.name.starts_with("s0"), "{}", orphan.name);
    }
}
