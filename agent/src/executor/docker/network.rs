//! The service network in this engine: one bridge network the agent owns (made when missing,
//! with a bridge interface of a known name for the node's packet filter), to which every task
//! is attached and whose gateway serves the agent's resolver to the tasks.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::ListContainersOptionsBuilder;
use shoal_scheduler::TaskId;

use super::{Inner, status_of};
use crate::executor::{ExecutorError, LABEL_TASK_ID, Result, parse_task_id};

/// The label on the networks shoal makes.
pub const LABEL_NETWORK: &str = "io.shoal.network";
/// Docker's option naming a bridge network's interface.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// Which network the tasks join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The network's name in the engine (`shoal`).
    pub name: String,
    /// Its bridge interface on the node (`shoal0`).
    pub bridge: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            name: "shoal".into(),
            bridge: "shoal0".into(),
        }
    }
}

/// The network the tasks are attached to, as the engine made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedNetwork {
    /// Its name.
    pub name: String,
    /// Its bridge interface on the node.
    pub bridge: String,
    /// The node's address on it: the tasks' resolver and the proxy listen here.
    pub gateway: Ipv4Addr,
}

/// The network of `config`, made first if the engine has none of that name.
pub(super) async fn ensure(docker: &Docker, config: &NetworkConfig) -> Result<AttachedNetwork> {
    let inspected = match docker.inspect_network(&config.name, None).await {
        Ok(network) => network,
        Err(e) if status_of(&e) == Some(404) => {
            create(docker, config).await?;
            docker
                .inspect_network(&config.name, None)
                .await
                .map_err(ExecutorError::docker("inspect network"))?
        }
        Err(source) => return Err(ExecutorError::docker("inspect network")(source)),
    };
    let bridge = inspected
        .options
        .as_ref()
        .and_then(|o| o.get(BRIDGE_NAME_OPTION))
        .cloned();
    let gateway = inspected
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.gateway)
        .find_map(|g| g.split('/').next()?.parse::<Ipv4Addr>().ok());
    match (bridge, gateway) {
        (Some(bridge), Some(gateway)) => Ok(AttachedNetwork {
            name: config.name.clone(),
            bridge,
            gateway,
        }),
        _ => Err(ExecutorError::InvalidSpec(format!(
            "the engine's network {:?} is not one shoal made (no bridge name or no IPv4 gateway): \
             remove it (`docker network rm {}`) or give the agent another --service-network",
            config.name, config.name
        ))),
    }
}

async fn create(docker: &Docker, config: &NetworkConfig) -> Result<()> {
    let request = NetworkCreateRequest {
        name: config.name.clone(),
        driver: Some("bridge".into()),
        options: Some(HashMap::from([(
            BRIDGE_NAME_OPTION.to_owned(),
            config.bridge.clone(),
        )])),
        labels: Some(HashMap::from([(
            LABEL_NETWORK.to_owned(),
            "service".to_owned(),
        )])),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => {
            tracing::info!(network = %config.name, bridge = %config.bridge, "made the service network");
            Ok(())
        }
        // Made meanwhile by another caller: fine.
        Err(e) if status_of(&e) == Some(409) => Ok(()),
        Err(source) => Err(ExecutorError::docker("create network")(source)),
    }
}

/// The addresses on `network` of this node's running task containers.
pub(super) async fn task_addresses(
    inner: &Inner,
    network: &str,
) -> Result<BTreeMap<TaskId, Ipv4Addr>> {
    let filters: HashMap<&str, Vec<String>> = HashMap::from([("label", vec![inner.node_filter()])]);
    let options = ListContainersOptionsBuilder::new()
        .filters(&filters)
        .build();
    let listed = inner
        .docker
        .list_containers(Some(options))
        .await
        .map_err(ExecutorError::docker("list"))?;
    Ok(listed
        .into_iter()
        .filter_map(|container| {
            let task = parse_task_id(container.labels.as_ref()?.get(LABEL_TASK_ID)?)?;
            let address = container
                .network_settings?
                .networks?
                .get(network)?
                .ip_address
                .as_deref()?
                .parse()
                .ok()?;
            Some((task, address))
        })
        .collect())
}
