//! Where an agent keeps its state: the data dir and the control socket inside it.

use std::path::PathBuf;

/// The file name of the control socket inside the data dir.
pub const CONTROL_SOCKET_NAME: &str = "shoal.sock";

/// The default data dir: `/var/lib/shoal` for root, the XDG data dir (`$XDG_DATA_HOME/shoal` or
/// `~/.local/share/shoal`) otherwise.
pub fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/shoal");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("shoal");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/shoal"),
        None => PathBuf::from(".shoal"),
    }
}

/// The control socket of the agent whose data dir is `data_dir`.
pub fn control_socket(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join(CONTROL_SOCKET_NAME)
}

/// Whether this process runs as root (read from `/proc/self/status`, no unsafe libc call).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
