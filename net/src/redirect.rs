//! The packet filter rules that turn connections to the range of service addresses towards
//! the proxy. TCP: every connection to the range, from the tasks (`nat PREROUTING` on the
//! service network's bridge, to the proxy on the bridge's address) and from the node's own
//! programs (`nat OUTPUT`, to the proxy on loopback). UDP: only the ports services declare,
//! each to a relay socket of its own, through a chain of the agent's own
//! ([`Redirect::udp_chain`]) that the agent fills as services come and go. Installed once (each
//! checked first, so a restarted agent does not add a second; the chain is emptied) and removed
//! when the agent stops.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::process::Command;

use crate::addresses::AddressRange;

/// How long one `iptables` call may take (it waits for the table's lock meanwhile).
const IPTABLES_LIMIT: Duration = Duration::from_secs(10);
/// Copies of one rule removed at most.
const MAX_COPIES: usize = 4;

/// Why a rule could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    /// `iptables` could not be run.
    #[error("cannot run iptables: {0} (is it installed, and does the agent run as root?)")]
    Spawn(std::io::Error),
    /// `iptables` took too long.
    #[error("iptables took longer than {0:?}")]
    Timeout(Duration),
    /// `iptables` refused.
    #[error("iptables {args}: {stderr}")]
    Refused {
        /// What it was asked.
        args: String,
        /// What it said.
        stderr: String,
    },
}

/// Connections from `bridge` (and from the node itself) to `range` go to the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The service network's bridge interface.
    pub bridge: String,
    /// The range of service addresses.
    pub range: AddressRange,
    /// The proxy's TCP port on the bridge's address and on loopback.
    pub port: u16,
}

impl Redirect {
    /// The chain of the UDP rules, one per service port (`SHOAL-UDP-<bridge>`: at most 25
    /// characters, as bridge names have at most 15).
    pub fn udp_chain(&self) -> String {
        format!("SHOAL-UDP-{}", self.bridge)
    }

    /// The fixed rules' chains, matches and targets (after the chain operation): the tasks' and
    /// the node's own TCP connections, then the jumps of their UDP datagrams to
    /// [`Redirect::udp_chain`].
    pub fn rules(&self) -> [Vec<String>; 4] {
        let (range, port, chain) = (
            self.range.to_string(),
            self.port.to_string(),
            self.udp_chain(),
        );
        let tcp = ["-p", "tcp", "-j", "REDIRECT", "--to-ports", port.as_str()];
        let udp = ["-p", "udp", "-j", chain.as_str()];
        let tasks = ["PREROUTING", "-i", &self.bridge, "-d", &range];
        let node = ["OUTPUT", "-d", &range];
        [
            words(&[&tasks[..], &tcp[..]].concat()),
            words(&[&node[..], &tcp[..]].concat()),
            words(&[&tasks[..], &udp[..]].concat()),
            words(&[&node[..], &udp[..]].concat()),
        ]
    }

    /// The rule that turns UDP datagrams to `address`:`port` towards local port `relay`.
    pub fn udp_rule(&self, address: Ipv4Addr, port: u16, relay: u16) -> Vec<String> {
        let (address, port, relay) = (format!("{address}/32"), port.to_string(), relay.to_string());
        let chain = self.udp_chain();
        words(&[
            chain.as_str(),
            "-d",
            &address,
            "-p",
            "udp",
            "--dport",
            &port,
            "-j",
            "REDIRECT",
            "--to-ports",
            &relay,
        ])
    }

    /// Every `iptables -t nat` call that takes the rules away, in order (each removal of a
    /// rule is repeated while it succeeds, at most a few times): for a clean-up that cannot
    /// wait on the agent.
    pub fn teardown(&self) -> Vec<Vec<String>> {
        let chain = self.udp_chain();
        let mut calls: Vec<Vec<String>> = self
            .rules()
            .into_iter()
            .map(|rule| [vec!["-D".to_owned()], rule].concat())
            .collect();
        calls.push(words(&["-F", &chain]));
        calls.push(words(&["-X", &chain]));
        calls
    }

    /// Makes the UDP chain (emptied, when a previous agent left it), then installs the fixed
    /// rules that are not there already.
    pub async fn install(&self) -> Result<(), RedirectError> {
        let chain = self.udp_chain();
        if iptables(&["-N", &chain]).await.is_err() {
            iptables(&["-F", &chain]).await?;
        }
        for rule in self.rules() {
            if !present(&rule).await? {
                on_rule("-I", &rule).await?;
            }
        }
        Ok(())
    }

    /// Removes the fixed rules (every copy of them, at most a few), then the UDP chain with
    /// what it holds.
    pub async fn remove(&self) -> Result<(), RedirectError> {
        for rule in self.rules() {
            for _ in 0..MAX_COPIES {
                if !present(&rule).await? {
                    break;
                }
                on_rule("-D", &rule).await?;
            }
        }
        let chain = self.udp_chain();
        iptables(&["-F", &chain]).await?;
        iptables(&["-X", &chain]).await
    }

    /// Adds the UDP rule of `address`:`port` (see [`Redirect::udp_rule`]).
    pub async fn add_udp(
        &self,
        address: Ipv4Addr,
        port: u16,
        relay: u16,
    ) -> Result<(), RedirectError> {
        self.change_udp("-A", address, port, relay).await
    }

    /// Removes the UDP rule of `address`:`port`.
    pub async fn remove_udp(
        &self,
        address: Ipv4Addr,
        port: u16,
        relay: u16,
    ) -> Result<(), RedirectError> {
        self.change_udp("-D", address, port, relay).await
    }

    async fn change_udp(
        &self,
        operation: &str,
        address: Ipv4Addr,
        port: u16,
        relay: u16,
    ) -> Result<(), RedirectError> {
        let rule = self.udp_rule(address, port, relay);
        on_rule(operation, &rule).await
    }
}

fn words<S: AsRef<str>>(words: &[S]) -> Vec<String> {
    words.iter().map(|w| w.as_ref().to_owned()).collect()
}

async fn present(rule: &[String]) -> Result<bool, RedirectError> {
    match on_rule("-C", rule).await {
        Ok(()) => Ok(true),
        Err(RedirectError::Refused { .. }) => Ok(false),
        Err(other) => Err(other),
    }
}

/// Runs `iptables -t nat OPERATION RULE...`.
async fn on_rule(operation: &str, rule: &[String]) -> Result<(), RedirectError> {
    let mut args = Vec::with_capacity(rule.len() + 1);
    args.push(operation);
    args.extend(rule.iter().map(String::as_str));
    iptables(&args).await
}

/// Runs `iptables -t nat` with `args` (the operation first).
async fn iptables<S: AsRef<str>>(args: &[S]) -> Result<(), RedirectError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let mut command = Command::new("iptables");
    command
        .args(["-w", "5", "-t", "nat"])
        .args(&args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(IPTABLES_LIMIT, command.output())
        .await
        .map_err(|_| RedirectError::Timeout(IPTABLES_LIMIT))?
        .map_err(RedirectError::Spawn)?;
    if output.status.success() {
        return Ok(());
    }
    Err(RedirectError::Refused {
        args: format!("-t nat {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_turn_the_tasks_and_the_nodes_connections_to_the_range_towards_the_port() {
        let redirect = Redirect {
            bridge: "shoal0".into(),
            range: AddressRange::default(),
            port: 7948,
        };
        let [tasks, node, tasks_udp, node_udp] = redirect.rules();
        assert_eq!(
            tasks.join(" "),
            "PREROUTING -i shoal0 -d 10.254.0.0/16 -p tcp -j REDIRECT --to-ports 7948"
        );
        assert_eq!(
            node.join(" "),
            "OUTPUT -d 10.254.0.0/16 -p tcp -j REDIRECT --to-ports 7948"
        );
        assert_eq!(
            tasks_udp.join(" "),
            "PREROUTING -i shoal0 -d 10.254.0.0/16 -p udp -j SHOAL-UDP-shoal0"
        );
        assert_eq!(
            node_udp.join(" "),
            "OUTPUT -d 10.254.0.0/16 -p udp -j SHOAL-UDP-shoal0"
        );
        assert_eq!(
            redirect
                .udp_rule(Ipv4Addr::new(10, 254, 0, 3), 53, 40001)
                .join(" "),
            "SHOAL-UDP-shoal0 -d 10.254.0.3/32 -p udp --dport 53 -j REDIRECT --to-ports 40001"
        );
        let teardown = redirect.teardown();
        assert_eq!(teardown.len(), 6);
        assert_eq!(teardown[4].join(" "), "-F SHOAL-UDP-shoal0");
        assert_eq!(teardown[5].join(" "), "-X SHOAL-UDP-shoal0");
    }
}
