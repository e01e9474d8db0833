//! The service network in this engine: one bridge network the agent owns (made when missing,
//! with a bridge interface of a known name for the node's packet filter), to which every task
//! is attached and whose gateway serves the agent's resolver to the tasks.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bollard::Docker;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
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
    /// Where the tasks' `resolv.conf` is written (naming the agent's resolver alone), to be
    /// mounted into every task: the engine's own resolver in front of it does not pass every
    /// name on (Docker 20.10 in an engine in a container answers names without a dot itself).
    pub resolv_conf: PathBuf,
}

impl NetworkConfig {
    /// The network `name` with bridge `bridge`, its `resolv.conf` in `dir`.
    pub fn new(name: &str, bridge: &str, dir: &Path) -> Self {
        NetworkConfig {
            name: name.to_owned(),
            bridge: bridge.to_owned(),
            resolv_conf: dir.join("resolv.conf"),
        }
    }
}

/// The network the tasks are attached to, as the engine made it.
#[derive(Debug, Clone)]
pub struct AttachedNetwork {
    /// Its name.
    pub name: String,
    /// Its bridge interface on the node.
    pub bridge: String,
    /// The node's address on it: the tasks' resolver and the proxy listen here.
    pub gateway: Ipv4Addr,
    /// The tasks' `resolv.conf` (see [`NetworkConfig::resolv_conf`]).
    pub resolv_conf: PathBuf,
    /// Whether the agent serves the network (its resolver and proxy listen on the gateway):
    /// until then, and for good if they cannot, tasks start on the engine's default bridge, so
    /// that none is given a resolver that does not answer.
    serving: Arc<AtomicBool>,
}

impl AttachedNetwork {
    /// Whether the agent serves the network: tasks join it from now on.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// Says that the agent serves the network.
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::Relaxed);
    }
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
        (Some(bridge), Some(_)) if !Path::new("/sys/class/net").join(&bridge).exists() => {
            Err(ExecutorError::InvalidSpec(format!(
                "the engine's network {:?} has its bridge {bridge} on another host or in \
                 another network namespace than this agent (an engine shared through its \
                 socket): the agent cannot serve it",
                config.name
            )))
        }
        (Some(bridge), Some(gateway)) => {
            let text = format!(
                "# written by shoal: the agent's resolver\nnameserver {gateway}\noptions ndots:0\n"
            );
            std::fs::write(&config.resolv_conf, text).map_err(|e| {
                ExecutorError::InvalidSpec(format!(
                    "cannot write {}: {e}",
                    config.resolv_conf.display()
                ))
            })?;
            Ok(AttachedNetwork {
                name: config.name.clone(),
                bridge,
                gateway,
                resolv_conf: config.resolv_conf.clone(),
                serving: Arc::new(AtomicBool::new(false)),
            })
        }
        _ => Err(ExecutorError::InvalidSpec(format!(
            "the engine's network {:?} is not one shoal made (no bridge name or no IPv4 gateway): \
             remove it (`docker network rm {}`) or give the agent another --service-network",
            config.name, config.name
        ))),
    }
}

async fn create(docker: &Docker, config: &NetworkConfig) -> Result<()> {
    let routes = std::fs::read_to_string(ROUTES)
        .map(|text| routes_of(&text))
        .unwrap_or_default();
    let subnet = free_subnet(&routes).ok_or_else(|| {
        ExecutorError::InvalidSpec(
            "every candidate subnet for the service network (172.18-31.0.0/16, \
             10.200-249.0.0/16) overlaps a route of this node: make one with `docker network \
             create` and give its name to --service-network"
                .into(),
        )
    })?;
    let request = NetworkCreateRequest {
        ipam: Some(Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.to_string()),
                gateway: Some(subnet.gateway().to_string()),
                ..Default::default()
            }]),
            options: None,
        }),
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

/// Where the kernel lists this node's IPv4 routes.
const ROUTES: &str = "/proc/net/route";

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address.
    pub base: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Subnet {
    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// Whether the two share an address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.base) & mask == u32::from(other.base) & mask
    }

    /// The first host address (the bridge's).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// The destinations of a `/proc/net/route` text (the default route left out: it overlaps
/// everything and hides nothing).
pub fn routes_of(text: &str) -> Vec<Subnet> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let destination = u32::from_str_radix(fields.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?;
            // The kernel prints them in host (little-endian) order.
            let (destination, mask) = (
                u32::from_be(destination.to_le()),
                u32::from_be(mask.to_le()),
            );
            let prefix = u8::try_from(mask.count_ones()).ok()?;
            (prefix > 0).then_some(Subnet {
                base: Ipv4Addr::from(destination),
                prefix,
            })
        })
        .collect()
}

/// The first candidate subnet that overlaps none of `routes`: Docker does not always look, and
/// a service network on the node's own subnet cuts the node off (replies leave by the wrong
/// interface), as happens when an engine runs inside a container of another engine's network.
pub fn free_subnet(routes: &[Subnet]) -> Option<Subnet> {
    let candidates = (18..=31u8)
        .map(|b| Ipv4Addr::new(172, b, 0, 0))
        .chain((200..=249u8).map(|b| Ipv4Addr::new(10, b, 0, 0)));
    candidates
        .map(|base| Subnet { base, prefix: 16 })
        .find(|candidate| !routes.iter().any(|route| route.overlaps(candidate)))
}

/// The addresses on `network` of this node's running task containers.
pub(super) async fn task_addresses(
    inner: &Inner,
    network: &str,
) -> Result<BTreeMap<TaskId, Ipv4Addr>> {
    let listed = inner.node_containers(&[], false).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_network_avoids_every_subnet_the_node_routes() {
        let text = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                    eth1\t000012AC\t00000000\t0001\t0\t0\t0\t00F0FFFF\t0\t0\t0\n";
        let routes = routes_of(text);
        assert_eq!(
            routes,
            vec![
                Subnet {
                    base: Ipv4Addr::new(172, 17, 0, 0),
                    prefix: 16
                },
                Subnet {
                    base: Ipv4Addr::new(172, 18, 0, 0),
                    prefix: 20
                },
            ]
        );
        let free = free_subnet(&routes).expect("a free subnet");
        assert_eq!(free.to_string(), "172.19.0.0/16");
        assert_eq!(free.gateway(), Ipv4Addr::new(172, 19, 0, 1));
        let everything = [
            Subnet {
                base: Ipv4Addr::new(0, 0, 0, 0),
                prefix: 1,
            },
            Subnet {
                base: Ipv4Addr::new(128, 0, 0, 0),
                prefix: 1,
            },
        ];
        assert_eq!(free_subnet(&everything), None);
    }
}
