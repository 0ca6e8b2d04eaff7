//! `dt-peer SOCKET METHOD PATH CONTENT_TYPE|- BODY`: makes one request on
//! corrald's socket and prints `{"status", "content_type", "body", "error"}`
//! as JSON. The access tests start it as other uids (see `peer.rs`), so
//! the daemon gets real connections from them.

use corral_daemon_tests::client::{Client, Request};
use corral_daemon_tests::peer::PeerOutput;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
    let answer = runtime.block_on(Client::new(socket).try_send(&request));
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
