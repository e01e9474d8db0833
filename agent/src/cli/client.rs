//! What every client command needs: a control client for the chosen agent, and the time.

use super::ClientOptions;
use crate::control::client::ControlClient;

/// A control client for the agent the options point at.
pub fn client(options: &ClientOptions) -> ControlClient {
    ControlClient::new(options.socket_path())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
