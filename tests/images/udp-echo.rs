//! A tiny UDP tool for the test image (busybox has no UDP server and no UDP client), built
//! statically with `rustc` alone by build-busybox-image.sh.
//!
//! - `udp-echo serve PORT [PREFIX]`: answers every datagram with PREFIX (default: the
//!   container's hostname and a colon) followed by the datagram, for ever.
//! - `udp-echo send HOST:PORT MESSAGE [COUNT]`: sends MESSAGE COUNT times (default 1), waiting
//!   up to 2 s for each answer, and prints each answer on a line of its own; fails when no
//!   answer came at all.

use std::net::UdpSocket;
use std::process::ExitCode;
use std::time::Duration;

fn serve(port: &str, prefix: Option<String>) -> std::io::Result<()> {
    let prefix = match prefix {
        Some(prefix) => prefix,
        None => format!(
            "{}:",
            std::fs::read_to_string("/etc/hostname")
                .unwrap_or_default()
                .trim()
        ),
    };
    let socket = UdpSocket::bind(format!("0.0.0.0:{port}"))?;
    let mut buffer = vec![0u8; 65_536];
    loop {
        let (length, from) = socket.recv_from(&mut buffer)?;
        let mut answer = prefix.clone().into_bytes();
        answer.extend_from_slice(&buffer[..length]);
        socket.send_to(&answer, from)?;
    }
}

fn send(to: &str, message: &str, count: usize) -> std::io::Result<usize> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(to)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buffer = vec![0u8; 65_536];
    let mut answered = 0;
    for _ in 0..count {
        socket.send(message.as_bytes())?;
        if let Ok(length) = socket.recv(&mut buffer) {
            println!("{}", String::from_utf8_lossy(&buffer[..length]));
            answered += 1;
        }
    }
    Ok(answered)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", port] => serve(port, None).map(|()| 1),
        ["serve", port, prefix] => serve(port, Some((*prefix).to_owned())).map(|()| 1),
        ["send", to, message] => send(to, message, 1),
        ["send", to, message, count] => send(to, message, count.parse().unwrap_or(1)),
        _ => {
            eprintln!(
                "usage: udp-echo serve PORT [PREFIX] | udp-echo send HOST:PORT MESSAGE [COUNT]"
            );
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(answered) if answered > 0 => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("udp-echo: no answer");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("udp-echo: {error}");
            ExitCode::FAILURE
        }
    }
}
