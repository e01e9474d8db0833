//! A real headless Chromium for the web view's tests, driven through its DevTools protocol.
//!
//! [`Browser::launch`] starts Debian's `chromium` (or `$SHOAL_CHROMIUM`) with a throw-away
//! profile, reads the DevTools address it prints on stderr and opens one page on it. The
//! protocol is JSON over a WebSocket; the few calls the tests need (navigate, evaluate, emulate a
//! screen size, capture a screenshot) do not need a protocol library, and the WebSocket client
//! here is the small part of RFC 6455 a local client uses (masked text frames out, unmasked
//! frames in, fragments, ping). Every wait is bounded. The browser's whole process group (it and
//! the helpers it forked, nothing else) is killed when the [`Browser`] is dropped.

use std::io::{BufRead as _, BufReader as StdBufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// The longest wait for Chromium to start and print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait for the answer to one DevTools call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest message read (a full-page screenshot of a big page, base64).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The Chromium binary to use: `$SHOAL_CHROMIUM`, else the first of Debian's and other common
/// names found on the `PATH`.
pub fn chromium_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SHOAL_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|candidate| candidate.is_file())
}

/// A headless Chromium with one page open.
pub struct Browser {
    child: Child,
    /// The profile directory, removed after the browser is gone.
    _profile: tempfile::TempDir,
    socket: WebSocket,
    session: String,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium headless and opens a blank page.
    pub async fn launch(binary: &Path) -> anyhow::Result<Browser> {
        use std::os::unix::process::CommandExt as _;
        let profile = tempfile::tempdir().context("a profile dir")?;
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--hide-scrollbars",
                "--mute-audio",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: the helpers it forks go with it, and only they.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stderr = child.stderr.take().context("chromium's stderr")?;
        let (tx, rx) = std_mpsc::channel();
        // Reads stderr to its end (a full pipe would stall the browser), passing on the address.
        std::thread::spawn(move || {
            for line in StdBufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(Ok(line[at..].trim().to_owned()));
                } else if std::env::var_os("SHOAL_CHROMIUM_LOG").is_some() {
                    eprintln!("chromium: {line}");
                }
            }
            let _ = tx.send(Err(()));
        });
        let address = match rx.recv_timeout(LAUNCH_TIMEOUT) {
            Ok(Ok(address)) => address,
            _ => {
                kill_group(&mut child);
                bail!(
                    "{} printed no DevTools address within {LAUNCH_TIMEOUT:?} (SHOAL_CHROMIUM_LOG=1 shows its output)",
                    binary.display()
                );
            }
        };
        let socket = match WebSocket::connect(&address).await {
            Ok(socket) => socket,
            Err(error) => {
                kill_group(&mut child);
                return Err(error.context(format!("connecting to {address}")));
            }
        };
        let mut browser = Browser {
            child,
            _profile: profile,
            socket,
            session: String::new(),
            next_id: 0,
        };
        let target = browser
            .browser_call("Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = target["targetId"]
            .as_str()
            .context("Target.createTarget answered no targetId")?
            .to_owned();
        let attached = browser
            .browser_call(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        browser.session = attached["sessionId"]
            .as_str()
            .context("Target.attachToTarget answered no sessionId")?
            .to_owned();
        browser.call("Page.enable", json!({})).await?;
        browser.call("Runtime.enable", json!({})).await?;
        Ok(browser)
    }

    /// A call to the browser itself.
    async fn browser_call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.send(method, params, None).await
    }

    /// A call to the page.
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let session = self.session.clone();
        self.send(method, params, Some(session)).await
    }

    async fn send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<String>,
    ) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = Value::String(session);
        }
        self.socket.send_text(&message.to_string()).await?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let text = tokio::time::timeout(left, self.socket.read_text())
                .await
                .map_err(|_| anyhow!("{method}: no answer within {CALL_TIMEOUT:?}"))??;
            let answer: Value = serde_json::from_str(&text).context("a DevTools message")?;
            // Events (no id) and answers to earlier calls are not waited for.
            if answer["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                bail!("{method}: {error}");
            }
            return Ok(answer["result"].clone());
        }
    }

    /// Loads `url` in the page (it may still be running its scripts when this returns).
    pub async fn navigate(&mut self, url: &str) -> anyhow::Result<()> {
        let answer = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(error) = answer["errorText"].as_str() {
            bail!("navigating to {url}: {error}");
        }
        Ok(())
    }

    /// The value of the JavaScript `expression` in the page (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let answer = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(exception) = answer.get("exceptionDetails") {
            bail!("{expression}: {exception}");
        }
        Ok(answer["result"]["value"].clone())
    }

    /// Polls `expression` every 25 ms until it is truthy, at most `timeout`; its value then. An
    /// expression that throws (the page is still loading) counts as false.
    pub async fn wait_for(&mut self, expression: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = match self.eval(expression).await {
                Ok(value) => value,
                Err(error) if Instant::now() < deadline => {
                    tracing::debug!(%error, "not yet");
                    Value::Null
                }
                Err(error) => return Err(error.context(format!("waited {timeout:?}"))),
            };
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                bail!("timed out after {timeout:?} waiting for `{expression}` (last: {value})");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Makes the page's screen `width` x `height` CSS pixels (`mobile`: a phone's viewport
    /// rules).
    pub async fn screen(&mut self, width: u32, height: u32, mobile: bool) -> anyhow::Result<()> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await?;
        Ok(())
    }

    /// Writes a PNG of the whole page (beyond the screen's height) to `path`.
    pub async fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let answer = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await?;
        let data = answer["data"]
            .as_str()
            .context("Page.captureScreenshot answered no data")?;
        let png = decode_base64(data).context("the screenshot's base64")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Closes the browser politely, then makes sure it is gone.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.browser_call("Browser.close", json!({})),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Drop kills what is left of its group.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Kills the process group of `child` (it and the helpers it forked), then reaps it.
fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// The part of a WebSocket client that talks to a local DevTools endpoint.
struct WebSocket {
    stream: BufReader<TcpStream>,
    mask_seed: u32,
}

impl WebSocket {
    /// Opens `ws://HOST:PORT/PATH` (the handshake; the answer's accept key is not checked, the
    /// peer being the browser this process started on loopback).
    async fn connect(url: &str) -> anyhow::Result<WebSocket> {
        let rest = url.strip_prefix("ws://").context("a ws:// address")?;
        let (host, path) = rest.split_once('/').context("a path in the address")?;
        let stream = tokio::time::timeout(LAUNCH_TIMEOUT, TcpStream::connect(host))
            .await
            .context("connect timed out")??;
        let mut stream = BufReader::new(stream);
        let request = format!(
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: c2hvYWwtd2ViLXZpZXctdA==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.get_mut().write_all(request.as_bytes()).await?;
        let mut status = String::new();
        stream.read_line(&mut status).await?;
        if !status.contains(" 101 ") {
            bail!("the WebSocket handshake was refused: {}", status.trim());
        }
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await? == 0 {
                bail!("the connection closed during the handshake");
            }
            if line == "\r\n" {
                break;
            }
        }
        let mask_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0x5a5a_5a5a);
        Ok(WebSocket { stream, mask_seed })
    }

    /// Sends one frame: `opcode`, masked as a client must.
    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        // A fresh key per frame (xorshift): the peer only needs it to unmask.
        self.mask_seed ^= self.mask_seed << 13;
        self.mask_seed ^= self.mask_seed >> 17;
        self.mask_seed ^= self.mask_seed << 5;
        let key = self.mask_seed.to_be_bytes();
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.stream.get_mut().write_all(&frame).await?;
        Ok(())
    }

    async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.send_frame(0x1, text.as_bytes()).await
    }

    /// The next whole text or binary message (fragments joined; pings answered).
    async fn read_text(&mut self) -> anyhow::Result<String> {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).await?;
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0f;
            let masked = head[1] & 0x80 != 0;
            let length = match head[1] & 0x7f {
                126 => {
                    let mut n = [0u8; 2];
                    self.stream.read_exact(&mut n).await?;
                    usize::from(u16::from_be_bytes(n))
                }
                127 => {
                    let mut n = [0u8; 8];
                    self.stream.read_exact(&mut n).await?;
                    usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX)
                }
                n => usize::from(n),
            };
            if message.len().saturating_add(length) > MAX_MESSAGE_BYTES {
                bail!("a DevTools message over {MAX_MESSAGE_BYTES} bytes");
            }
            let mut key = [0u8; 4];
            if masked {
                self.stream.read_exact(&mut key).await?;
            }
            let mut payload = vec![0u8; length];
            self.stream.read_exact(&mut payload).await?;
            if masked {
                for (i, byte) in payload.iter_mut().enumerate() {
                    *byte ^= key[i % 4];
                }
            }
            match opcode {
                0x0..=0x2 => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).context("a DevTools message in UTF-8");
                    }
                }
                0x8 => bail!("the browser closed the DevTools connection"),
                0x9 => self.send_frame(0xA, &payload).await?,
                _ => {}
            }
        }
    }
}

/// Standard base64 (with padding, no line breaks) decoded.
fn decode_base64(text: &str) -> anyhow::Result<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = value(*c).ok_or_else(|| anyhow!("not base64: {:?}", *c as char))?;
            acc |= v << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(decode_base64("aGVsbG8=").expect("valid"), b"hello");
        assert_eq!(decode_base64("aGk=").expect("valid"), b"hi");
        assert_eq!(decode_base64("aGV5").expect("valid"), b"hey");
        assert!(decode_base64("a$==").is_err());
    }
}
