//! The packet filter rules that turn TCP connections to the range of service addresses towards
//! the proxy: the tasks' (`nat PREROUTING` on the service network's bridge, to the proxy on the
//! bridge's address) and the node's own programs' (`nat OUTPUT`, to the proxy on loopback).
//! Installed once (each checked first, so a restarted agent does not add a second) and removed
//! when the agent stops.

use std::time::Duration;

use tokio::process::Command;

use crate::addresses::AddressRange;

/// How long one `iptables` call may take (it waits for the table's lock meanwhile).
const IPTABLES_LIMIT: Duration = Duration::from_secs(10);

/// Why the rule could not be installed or removed.
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

/// Connections from `bridge` to `range` go to local port `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The service network's bridge interface.
    pub bridge: String,
    /// The range of service addresses.
    pub range: AddressRange,
    /// The proxy's port on the bridge's address.
    pub port: u16,
}

impl Redirect {
    /// The rules' chains, matches and targets (after the chain operation): the tasks' and the
    /// node's own.
    pub fn rules(&self) -> [Vec<String>; 2] {
        let (range, port) = (self.range.to_string(), self.port.to_string());
        let target = ["-p", "tcp", "-j", "REDIRECT", "--to-ports", port.as_str()];
        let owned = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        [
            owned(
                &[
                    &["PREROUTING", "-i", &self.bridge, "-d", &range],
                    &target[..],
                ]
                .concat(),
            ),
            owned(&[&["OUTPUT", "-d", &range], &target[..]].concat()),
        ]
    }

    /// Installs the rules that are not there already.
    pub async fn install(&self) -> Result<(), RedirectError> {
        for rule in self.rules() {
            if !present(&rule).await? {
                iptables("-I", &rule).await?;
            }
        }
        Ok(())
    }

    /// Removes the rules (every copy of them, at most a few).
    pub async fn remove(&self) -> Result<(), RedirectError> {
        for rule in self.rules() {
            for _ in 0..4 {
                if !present(&rule).await? {
                    break;
                }
                iptables("-D", &rule).await?;
            }
        }
        Ok(())
    }
}

async fn present(rule: &[String]) -> Result<bool, RedirectError> {
    match iptables("-C", rule).await {
        Ok(()) => Ok(true),
        Err(RedirectError::Refused { .. }) => Ok(false),
        Err(other) => Err(other),
    }
}

async fn iptables(operation: &str, rule: &[String]) -> Result<(), RedirectError> {
    let mut command = Command::new("iptables");
    command
        .args(["-w", "5", "-t", "nat", operation])
        .args(rule)
        .kill_on_drop(true);
    let output = tokio::time::timeout(IPTABLES_LIMIT, command.output())
        .await
        .map_err(|_| RedirectError::Timeout(IPTABLES_LIMIT))?
        .map_err(RedirectError::Spawn)?;
    if output.status.success() {
        return Ok(());
    }
    Err(RedirectError::Refused {
        args: format!("-t nat {operation} {}", rule.join(" ")),
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
        let [tasks, node] = redirect.rules();
        assert_eq!(
            tasks.join(" "),
            "PREROUTING -i shoal0 -d 10.254.0.0/16 -p tcp -j REDIRECT --to-ports 7948"
        );
        assert_eq!(
            node.join(" "),
            "OUTPUT -d 10.254.0.0/16 -p tcp -j REDIRECT --to-ports 7948"
        );
    }
}
