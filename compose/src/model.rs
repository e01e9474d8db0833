//! What a Compose file becomes: a [`Stack`] of services, each a shoal [`ServiceSpec`] plus what
//! the cluster does not keep in a spec (start dependencies, the secrets and configs as the file
//! names them, networks), and the stack's top-level secrets, configs, volumes and networks.
//!
//! Names: a service `web` of stack `shop` is `shop_web` in the cluster and carries the label
//! [`STACK_NAMESPACE_LABEL`]`=shop`. Volumes, networks, secrets and configs that the stack
//! creates are named `shop_NAME` too, unless they are `external` or have a `name:` of their own.

use std::collections::BTreeMap;
use std::path::PathBuf;

use shoal_scheduler::ServiceSpec;

use crate::warnings::Warning;

/// The label on every service of a stack: its value is the stack's name.
pub use shoal_scheduler::STACK_NAMESPACE_LABEL;

/// Everything a set of Compose files describes, ready to be deployed as a stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// The stack's name.
    pub name: String,
    /// The services, by their name in the file (sorted).
    pub services: Vec<StackService>,
    /// Top-level `secrets`, by their name in the file.
    pub secrets: BTreeMap<String, FileObject>,
    /// Top-level `configs`, by their name in the file.
    pub configs: BTreeMap<String, FileObject>,
    /// Top-level `volumes`, by their name in the file.
    pub volumes: BTreeMap<String, Volume>,
    /// Top-level `networks`, by their name in the file.
    pub networks: BTreeMap<String, Network>,
    /// Settings shoal does not apply as written (empty under strict mode, which refuses them).
    pub warnings: Vec<Warning>,
}

/// One service of the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct StackService {
    /// Its name in the file (`web`); `spec.name` is the cluster's (`shop_web`).
    pub name: String,
    /// What the cluster runs.
    pub spec: ServiceSpec,
    /// The services that must be up before this one starts (`depends_on`).
    pub depends_on: Vec<Dependency>,
    /// The secrets it mounts, as the file names them (`spec.secrets` refers to the cluster's).
    pub secrets: Vec<FileMount>,
    /// The configs it mounts, as the file names them (`spec.configs` refers to the cluster's).
    pub configs: Vec<FileMount>,
    /// The stack networks it is attached to (by their name in the file; empty = `default`).
    pub networks: Vec<String>,
}

/// One `depends_on` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The service depended on (its name in the file).
    pub service: String,
    /// What it must have reached.
    pub condition: Condition,
    /// `required: false` lets this service start when the dependency is not in the stack.
    pub required: bool,
}

/// What a dependency must have reached before its dependents start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `service_started` (the short form): its tasks are running.
    Started,
    /// `service_healthy`: its tasks are running and healthy.
    Healthy,
    /// `service_completed_successfully`: its tasks exited 0.
    CompletedSuccessfully,
}

/// A secret or config given to a service's tasks as a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMount {
    /// The top-level secret or config (its name in the file).
    pub source: String,
    /// Absolute path in the container: secrets default to `/run/secrets/SOURCE` (a relative
    /// target goes under `/run/secrets/`), configs to `/SOURCE`.
    pub target: String,
    /// Owner's uid (default `0`).
    pub uid: String,
    /// Owner's gid (default `0`).
    pub gid: String,
    /// Permission bits (default `0o444`).
    pub mode: u32,
}

/// A top-level secret or config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileObject {
    /// Its name in the cluster (`STACK_NAME`, or its own `name:`, or the external name).
    pub name: String,
    /// Where its bytes come from.
    pub source: FileSource,
    /// Its `labels`.
    pub labels: BTreeMap<String, String>,
}

/// Where a secret's or config's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// `file:`, resolved against the project directory (the first file's directory).
    File(PathBuf),
    /// `external: true`: it already exists in the cluster under `name`.
    External,
    /// `environment: VAR`: the value of that variable when the stack is deployed.
    Environment(String),
    /// `content:` (configs only), interpolated.
    Content(String),
}

/// A top-level volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its name on the nodes (`STACK_NAME`, or its own `name:`, or the external name).
    pub name: String,
    /// It exists already and is not created.
    pub external: bool,
    /// Volume driver (`None` = local).
    pub driver: Option<String>,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A top-level network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Its name (`STACK_NAME`, or its own `name:`, or the external name).
    pub name: String,
    /// It exists already and is not created.
    pub external: bool,
    /// Driver (`None` = shoal's service network).
    pub driver: Option<String>,
    /// `internal: true`: no traffic leaves it.
    pub internal: bool,
    /// `attachable: true`.
    pub attachable: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl Stack {
    /// The service named `name` in the file.
    pub fn service(&self, name: &str) -> Option<&StackService> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The services in `depends_on` order (see [`crate::start_order`]).
    pub fn start_order(&self) -> Result<Vec<&StackService>, crate::ComposeError> {
        crate::depends::start_order(self)
    }
}
