//! The packet filter rule that turns the tasks' TCP connections to the range of service
//! addresses towards the proxy: one `nat PREROUTING` rule on the service network's bridge,
//! installed once (checked first, so a restarted agent does not add a second) and removed when
//! the agent stops.

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
    /// The rule's match and target, after the chain operation.
    pub fn rule(&self) -> Vec<String> {
        [
            "PREROUTING",
            "-i",
            &self.bridge,
            "-d",
            &self.range.to_string(),
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            &self.port.to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// Installs the rule unless it is there already.
    pub async fn install(&self) -> Result<(), RedirectError> {
        if self.present().await? {
            return Ok(());
        }
        iptables("-I", &self.rule()).await.map(|_| ())
    }

    /// Removes the rule (every copy of it, at most a few).
    pub async fn remove(&self) -> Result<(), RedirectError> {
        for _ in 0..4 {
            if !self.present().await? {
                return Ok(());
            }
            iptables("-D", &self.rule()).await?;
        }
        Ok(())
    }

    async fn present(&self) -> Result<bool, RedirectError> {
        match iptables("-C", &self.rule()).await {
            Ok(()) => Ok(true),
            Err(RedirectError::Refused { .. }) => Ok(false),
            Err(other) => Err(other),
        }
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
    fn the_rule_turns_the_bridges_connections_to_the_range_towards_the_port() {
        let redirect = Redirect {
            bridge: "shoal0".into(),
            range: AddressRange::default(),
            port: 7948,
        };
        assert_eq!(
            redirect.rule().join(" "),
            "PREROUTING -i shoal0 -d 10.254.0.0/16 -p tcp -j REDIRECT --to-ports 7948"
        );
    }
}
