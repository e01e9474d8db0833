//! The filter pipeline: whether a task of a given spec may go on a node, and if not, the first
//! reason why. Cheap, static checks come first; capacity checks (which change during a pass) last.

use crate::model::{
    Availability, Constraint, ConstraintKey, ConstraintOp, Node, NodeRole, NodeState, Runtime,
    ServiceId, ServiceSpec,
};
use crate::placement::explain::Refusal;
use crate::placement::usage::Usage;

/// Checks that do not depend on what runs on the node: readiness, availability, runtime and
/// constraints.
pub fn check_static(node: &Node, spec: &ServiceSpec) -> Result<(), Refusal> {
    if node.state != NodeState::Ready {
        return Err(Refusal::NotReady);
    }
    if node.availability != Availability::Active {
        return Err(Refusal::NotActive);
    }
    if node.runtime == Runtime::None {
        return Err(Refusal::NoRuntime);
    }
    match spec.constraints.iter().find(|c| !constraint_holds(c, node)) {
        Some(c) => Err(Refusal::Constraint(c.to_string())),
        None => Ok(()),
    }
}

/// Checks that depend on the node's current load: max replicas per node, host ports, then
/// reserved CPU and memory.
pub fn check_capacity(
    idx: u32,
    node: &Node,
    service: ServiceId,
    spec: &ServiceSpec,
    usage: &Usage,
) -> Result<(), Refusal> {
    let max = spec.max_replicas_per_node;
    if max > 0 && usage.service_count(service, idx) >= max {
        return Err(Refusal::MaxReplicas);
    }
    if let Some(port) = spec.host_ports().find(|p| usage.port_in_use(idx, *p)) {
        return Err(Refusal::PortInUse(port.0, port.1));
    }
    let want = spec.resources.reservations;
    let used = usage.reserved[idx as usize];
    let room = node.allocatable();
    if used.memory_bytes.saturating_add(want.memory_bytes) > room.memory_bytes {
        return Err(Refusal::InsufficientMemory);
    }
    if used.nano_cpus.saturating_add(want.nano_cpus) > room.nano_cpus {
        return Err(Refusal::InsufficientCpu);
    }
    Ok(())
}

/// The whole pipeline.
pub fn check(
    idx: u32,
    node: &Node,
    service: ServiceId,
    spec: &ServiceSpec,
    usage: &Usage,
) -> Result<(), Refusal> {
    check_static(node, spec)?;
    check_capacity(idx, node, service, spec, usage)
}

/// Whether a node satisfies one constraint. A missing label never equals anything.
pub fn constraint_holds(c: &Constraint, node: &Node) -> bool {
    let equal = match &c.key {
        ConstraintKey::NodeId => node.id.as_str() == c.value,
        ConstraintKey::Hostname => node.hostname.eq_ignore_ascii_case(&c.value),
        ConstraintKey::Role => role_name(node.role).eq_ignore_ascii_case(&c.value),
        ConstraintKey::Label(k) => node.labels.get(k).is_some_and(|v| *v == c.value),
        ConstraintKey::PlatformOs => node.platform.os.eq_ignore_ascii_case(&c.value),
        ConstraintKey::PlatformArch => node.platform.arch.eq_ignore_ascii_case(&c.value),
    };
    match c.op {
        ConstraintOp::Eq => equal,
        ConstraintOp::Ne => !equal,
    }
}

/// The name a constraint uses for a role.
pub fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
    }
}
