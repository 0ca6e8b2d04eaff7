//! `dt-peer SOCKET METHOD PATH CONTENT_TYPE|- BODY`: makes one request on
//! corrald's socket and prints `{"status", "content_type", "body", "error"}`
//! as JSON. The access tests start it as other uids (see `peer.rs`), so
//! the daemon gets real connections from them. With `DT_PEER_REPEAT=n` in
//! its environment it makes the request n times (one connection each) and
//! prints the last answer.
//!
//! `dt-peer --hold SOCKET N slow|pipeline`: a hostile client. It opens N
//! connections and on each sends a request head it never finishes
//! (`slow`) or pipelines `GET /metrics` until the socket takes no more and
//! never reads (`pipeline`), prints `{"opened": n}`, and holds them all
//! until its stdin closes.

use corral_daemon_tests::client::{Client, Request};
use corral_daemon_tests::peer::{HoldOutput, PeerOutput};
use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, socket, count, mode] = args.as_slice()
        && flag == "--hold"
    {
        return hold(socket, count, mode);
    }
    let [socket, method, path, content_type, body] = args.as_slice() else {
        eprintln!("usage: dt-peer SOCKET METHOD PATH CONTENT_TYPE|- BODY");
        return ExitCode::from(2);
    };
    let mut request = Request::new(method, path);
    if content_type != "-" {
        request = request.raw(content_type, body.clone().into_bytes());
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dt-peer: starting a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let repeat: usize = std::env::var("DT_PEER_REPEAT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let client = Client::new(socket);
    let mut answer = runtime.block_on(client.try_send(&request));
    for _ in 1..repeat {
        answer = runtime.block_on(client.try_send(&request));
    }
    let output = match answer {
        Ok(response) => PeerOutput {
            status: Some(response.status),
            content_type: response.content_type.clone(),
            body: response.text(),
            error: None,
        },
        Err(e) => PeerOutput {
            status: None,
            content_type: None,
            body: String::new(),
            error: Some(e.to_string()),
        },
    };
    match serde_json::to_string(&output) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dt-peer: {e}");
            ExitCode::from(2)
        }
    }
}

/// Opens `count` connections and abuses each; holds them until stdin
/// closes.
fn hold(socket: &str, count: &str, mode: &str) -> ExitCode {
    let Ok(count) = count.parse::<usize>() else {
        eprintln!("dt-peer: {count} is not a number");
        return ExitCode::from(2);
    };
    let mut held = Vec::new();
    for _ in 0..count {
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
            continue;
        };
        let sent = match mode {
            "slow" => stream
                .write_all(b"GET /v1/health HTTP/1.1\r\nHost: corral\r\nX-Slow: ")
                .is_ok(),
            "pipeline" => pipeline(&mut stream),
            other => {
                eprintln!("dt-peer: unknown mode {other}");
                return ExitCode::from(2);
            }
        };
        if sent {
            held.push(stream);
        }
    }
    let output = HoldOutput { opened: held.len() };
    match serde_json::to_string(&output) {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("dt-peer: {e}");
            return ExitCode::from(2);
        }
    }
    let _ = std::io::stdout().flush();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(held);
    ExitCode::SUCCESS
}

/// Writes pipelined requests until the socket would block.
fn pipeline(stream: &mut std::os::unix::net::UnixStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let request = b"GET /metrics HTTP/1.1\r\nHost: corral\r\n\r\n".repeat(64);
    for _ in 0..100_000 {
        match stream.write(&request) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    true
}
