//! What every client command needs: a control client for the chosen agent (its local socket, or
//! a remote one's TCP API with its token), and the time.

use std::fmt;
use std::path::PathBuf;

use super::ClientOptions;
use crate::control::client::{ControlClient, Endpoint};

/// A control client for the agent the options point at: `--host` if given, else the socket.
pub fn client(options: &ClientOptions) -> ControlClient {
    match &options.host {
        Some(Host::Tcp(addr)) => {
            let token = options
                .api_token_file
                .as_ref()
                .or(options.api_token.as_ref())
                .map(|secret| secret.0.clone());
            ControlClient::at(Endpoint::Tcp {
                addr: addr.clone(),
                token,
            })
        }
        Some(Host::Unix(path)) => ControlClient::new(path),
        None => ControlClient::new(options.socket_path()),
    }
}

/// An agent given by `--host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// `tcp://HOST:PORT`: its TCP API.
    Tcp(String),
    /// `unix://PATH`: its control socket.
    Unix(PathBuf),
}

/// Parses `--host`: `tcp://HOST:PORT` or `unix://PATH`.
pub fn parse_host(text: &str) -> Result<Host, String> {
    if let Some(path) = text.strip_prefix("unix://") {
        return match path {
            "" => Err("unix:// needs the socket's path: unix:///var/lib/shoal/shoal.sock".into()),
            path => Ok(Host::Unix(PathBuf::from(path))),
        };
    }
    let addr = text.strip_prefix("tcp://").ok_or_else(|| {
        format!(
            "expected tcp://HOST:PORT (or unix://PATH), such as tcp://10.0.0.5:7947, not {text:?}"
        )
    })?;
    let addr = addr.trim_end_matches('/');
    let port = addr
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(_))) if !host.is_empty() => Ok(Host::Tcp(addr.to_owned())),
        _ => Err(format!(
            "expected tcp://HOST:PORT with a port, such as tcp://10.0.0.5:7947, not {text:?}"
        )),
    }
}

/// A secret given on the command line or in a file. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// Parses `--api-token`: any non-empty text (trimmed).
pub fn parse_secret(text: &str) -> Result<Secret, String> {
    match text.trim() {
        "" => Err("the API token is empty".into()),
        token => Ok(Secret(token.to_owned())),
    }
}

/// Parses `--api-token-file`: the token the file holds.
pub fn read_secret(path: &str) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_secret(&text).map_err(|e| format!("{path}: {e}"))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_or_say_what_is_expected() {
        assert_eq!(
            parse_host("tcp://127.0.0.1:7947"),
            Ok(Host::Tcp("127.0.0.1:7947".into()))
        );
        assert_eq!(
            parse_host("tcp://[::1]:7947/"),
            Ok(Host::Tcp("[::1]:7947".into()))
        );
        assert_eq!(
            parse_host("tcp://node-1.lan:80"),
            Ok(Host::Tcp("node-1.lan:80".into()))
        );
        assert_eq!(
            parse_host("unix:///run/shoal.sock"),
            Ok(Host::Unix("/run/shoal.sock".into()))
        );
        assert!(parse_host("unix://").is_err());
        for bad in [
            "127.0.0.1:7947",
            "tcp://host",
            "tcp://:80",
            "tcp://h:port",
            "http://h:1",
        ] {
            let error = parse_host(bad).expect_err(bad);
            assert!(error.contains("tcp://"), "{bad}: {error}");
        }
    }

    #[test]
    fn secrets_are_never_shown_and_never_empty() {
        let secret = parse_secret(" s3cret\n").expect("a secret");
        assert_eq!(secret.0, "s3cret");
        assert!(!format!("{secret:?}").contains("s3cret"));
        assert!(parse_secret("  ").is_err());
        assert!(read_secret("/nonexistent/token").is_err());
    }

    /// The client options alone, as every client command flattens them.
    #[derive(Debug, clap::Parser)]
    struct Options {
        #[command(flatten)]
        client: ClientOptions,
    }

    #[test]
    fn the_token_file_wins_and_host_picks_tcp() {
        use clap::Parser as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").expect("write");
        let path = file.to_str().expect("utf-8");
        let host = ["shoal", "--host", "tcp://127.0.0.1:1"];
        let parse = |extra: &[&str]| {
            let argv = host.iter().chain(extra).copied();
            client(&Options::try_parse_from(argv).expect("parses").client)
        };
        let tcp = |token: &str| Endpoint::Tcp {
            addr: "127.0.0.1:1".into(),
            token: Some(token.into()),
        };
        let both = parse(&["--api-token", "from-flag", "--api-token-file", path]);
        assert_eq!(both.endpoint(), &tcp("from-file"));
        assert_eq!(
            parse(&["--api-token", "from-flag"]).endpoint(),
            &tcp("from-flag")
        );
        let local = Options::try_parse_from(["shoal", "--socket", "/s"]).expect("parses");
        assert_eq!(
            client(&local.client).endpoint(),
            &Endpoint::Unix("/s".into())
        );
        assert!(Options::try_parse_from(["shoal", "--host", "10.0.0.1:80"]).is_err());
    }
}
