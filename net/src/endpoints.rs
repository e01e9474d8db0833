//! The endpoint table: every service's virtual address, ports and the tasks that take its
//! connections, derived from the applied state (and the addresses of this node's own tasks) and
//! from nothing else. The resolver and the proxy only read it; a new table replaces the old one
//! whole each time the state moves.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use shoal_scheduler::{ClusterState, NodeId, PortSpec, Service, ServiceId, Task, TaskId};

use crate::addresses::AddressRange;

/// One task that takes new connections of its service: running (healthy, where it has a health
/// check: a task only reports running once healthy) and still wanted running. A task told to
/// stop leaves the table before its container is stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The task.
    pub task: TaskId,
    /// The node it runs on.
    pub node: NodeId,
    /// Its address on this node's service network, when it runs on this node and its address
    /// is known.
    pub local_address: Option<Ipv4Addr>,
}

/// A service as the network sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEndpoints {
    /// Its id.
    pub id: ServiceId,
    /// Its name, as given.
    pub name: String,
    /// Its virtual address, if it holds one within the range.
    pub address: Option<Ipv4Addr>,
    /// The ports its spec declares.
    pub ports: Vec<PortSpec>,
    /// The tasks that take its connections, in task order.
    pub endpoints: Vec<Endpoint>,
}

/// Every service's endpoints, by name (case-insensitive, as DNS names are) and by virtual
/// address, and the stack of each of this node's tasks that belongs to one (by its address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointTable {
    by_name: BTreeMap<String, ServiceEndpoints>,
    by_address: BTreeMap<Ipv4Addr, String>,
    stacks: BTreeMap<Ipv4Addr, String>,
}

impl EndpointTable {
    /// The table of `state` as node `here` sees it, whose own tasks have the addresses `local`.
    pub fn build(
        state: &ClusterState,
        range: &AddressRange,
        here: &NodeId,
        local: &BTreeMap<TaskId, Ipv4Addr>,
    ) -> EndpointTable {
        let mut endpoints: BTreeMap<ServiceId, Vec<Endpoint>> = BTreeMap::new();
        for task in state.tasks.values() {
            if let Some(endpoint) = endpoint(task, here, local) {
                endpoints.entry(task.service).or_default().push(endpoint);
            }
        }
        let mut table = EndpointTable::default();
        for (task, address) in local {
            let stack = state
                .tasks
                .get(task)
                .and_then(|t| state.services.get(&t.service))
                .and_then(|s| shoal_scheduler::stack_of(&s.spec));
            if let Some(stack) = stack {
                table.stacks.insert(*address, stack.to_ascii_lowercase());
            }
        }
        for service in state.services.values() {
            let key = service.spec.name.to_ascii_lowercase();
            if table.by_name.contains_key(&key) {
                // Names differing only in case: the older service keeps the DNS name.
                continue;
            }
            let entry = entry(
                service,
                range,
                endpoints.remove(&service.id).unwrap_or_default(),
            );
            if let Some(address) = entry.address {
                table.by_address.insert(address, key.clone());
            }
            table.by_name.insert(key, entry);
        }
        table
    }

    /// The service named `name` (any case).
    pub fn service(&self, name: &str) -> Option<&ServiceEndpoints> {
        self.by_name.get(&name.to_ascii_lowercase())
    }

    /// The service `name` means to a task of stack `stack`: the stack's own service of that
    /// name (`STACK_NAME`, as Compose files name each other) before any other.
    pub fn service_in_stack(&self, name: &str, stack: Option<&str>) -> Option<&ServiceEndpoints> {
        stack
            .and_then(|stack| self.service(&format!("{stack}_{name}")))
            .or_else(|| self.service(name))
    }

    /// The stack of this node's task at `address`, if it belongs to one (lower case).
    pub fn stack_at(&self, address: Ipv4Addr) -> Option<&str> {
        self.stacks.get(&address).map(String::as_str)
    }

    /// The service whose virtual address is `address`.
    pub fn at_address(&self, address: Ipv4Addr) -> Option<&ServiceEndpoints> {
        self.by_name.get(self.by_address.get(&address)?)
    }

    /// The services, by name.
    pub fn services(&self) -> impl Iterator<Item = &ServiceEndpoints> {
        self.by_name.values()
    }

    /// How many services the table holds.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the table holds no service.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

fn endpoint(task: &Task, here: &NodeId, local: &BTreeMap<TaskId, Ipv4Addr>) -> Option<Endpoint> {
    if !task.takes_connections() {
        return None;
    }
    let node = task.node.clone()?;
    let local_address = if &node == here {
        local.get(&task.id).copied()
    } else {
        None
    };
    Some(Endpoint {
        task: task.id,
        node,
        local_address,
    })
}

fn entry(service: &Service, range: &AddressRange, endpoints: Vec<Endpoint>) -> ServiceEndpoints {
    ServiceEndpoints {
        id: service.id,
        name: service.spec.name.clone(),
        address: service.address_index.and_then(|i| range.address(i)),
        ports: service.spec.ports.clone(),
        endpoints,
    }
}

#[cfg(test)]
mod tests {
    use shoal_scheduler::synthetic;
    use shoal_scheduler::{Command, DesiredState, Timestamp};

    use super::*;
    use crate::testkit::running;

    fn tasks_of(state: &ClusterState, service: ServiceId) -> Vec<&Task> {
        state
            .tasks
            .values()
            .filter(|t| t.service == service)
            .collect()
    }

    #[test]
    fn running_tasks_are_endpoints_and_local_ones_carry_their_address() {
        let (state, ids) = running(2, &[("web", 2)]);
        let first = tasks_of(&state, ids[0])[0];
        let here = first.node.clone().expect("placed");
        let local = BTreeMap::from([(first.id, Ipv4Addr::new(172, 30, 0, 5))]);
        let table = EndpointTable::build(&state, &AddressRange::default(), &here, &local);
        let web = table.service("WEB").expect("names are case-insensitive");
        assert_eq!(web.address, Some(Ipv4Addr::new(10, 254, 0, 1)));
        assert_eq!(web.endpoints.len(), 2);
        let mine = web
            .endpoints
            .iter()
            .find(|e| e.task == first.id)
            .expect("mine");
        assert_eq!(mine.local_address, Some(Ipv4Addr::new(172, 30, 0, 5)));
        assert_eq!(
            table.at_address(Ipv4Addr::new(10, 254, 0, 1)).map(|s| s.id),
            Some(ids[0])
        );
    }

    #[test]
    fn a_task_told_to_stop_takes_no_new_connections() {
        let (mut state, ids) = running(1, &[("web", 1)]);
        let task = tasks_of(&state, ids[0])[0].id;
        if let Some(task) = state.tasks.get_mut(&task) {
            task.desired = DesiredState::Shutdown;
        }
        let here = NodeId::new("elsewhere");
        let table = EndpointTable::build(&state, &AddressRange::default(), &here, &BTreeMap::new());
        assert!(table.service("web").expect("web").endpoints.is_empty());
    }

    #[test]
    fn a_removed_services_address_goes_to_the_next_one() {
        let (mut state, ids) = running(1, &[("web", 1), ("api", 1)]);
        state
            .apply(&Command::RemoveService {
                id: ids[0],
                at: Timestamp(2),
            })
            .expect("removed");
        synthetic::create_service(&mut state, synthetic::spec("db", 1), Timestamp(3))
            .expect("valid spec");
        let here = NodeId::new("elsewhere");
        let table = EndpointTable::build(&state, &AddressRange::default(), &here, &BTreeMap::new());
        let address = |name: &str| table.service(name).and_then(|s| s.address);
        assert_eq!(address("api"), Some(Ipv4Addr::new(10, 254, 0, 2)));
        assert_eq!(address("db"), Some(Ipv4Addr::new(10, 254, 0, 1)));
        assert!(table.service("web").is_none());
    }
}
