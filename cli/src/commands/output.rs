//! Writing results and failures, as text or (with `--json`) as JSON, and
//! choosing the exit code.

use corral::exit;
use corral::render;
use corral::{Client, ClientError, Endpoint, RawResponse};
use corral_protocol::error::CorralError;
use serde::de::DeserializeOwned;
use std::io::Write;

/// Writes `text` and a newline to stdout. False when stdout is gone (a
/// closed pipe, as with `corral events | head`): the caller stops then.
pub fn emit(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    let newline: &[u8] = if text.ends_with('\n') { b"" } else { b"\n" };
    out.write_all(text.as_bytes())
        .and_then(|()| out.write_all(newline))
        .and_then(|()| out.flush())
        .is_ok()
}

/// An answer body exactly as the daemon sent it.
pub fn emit_raw(raw: &RawResponse) -> u8 {
    emit(&String::from_utf8_lossy(&raw.body));
    exit::OK
}

/// Reports a typed error; returns its exit code.
pub fn fail(error: &CorralError, json: bool) -> u8 {
    if json {
        emit(&render::error_json(error));
    } else {
        eprintln!("{}", render::human_error(error));
    }
    exit::code_for(error)
}

/// Reports a failure to talk to the daemon; returns its exit code.
pub fn fail_client(error: &ClientError, json: bool) -> u8 {
    let code = match error {
        ClientError::Api(e) => return fail(e, json),
        ClientError::InvalidRequest(reason) => {
            return fail(&CorralError::invalid_input(reason.clone()), json);
        }
        ClientError::Unreachable { .. } => "daemon_unreachable",
        ClientError::Disconnected { .. } => "daemon_disconnected",
        ClientError::Protocol(_) => "bad_response",
    };
    if json {
        let mut body = serde_json::json!({"code": code, "message": error.to_string()});
        if let ClientError::Unreachable { socket, .. } | ClientError::Disconnected { socket, .. } =
            error
        {
            body["socket"] = socket.display().to_string().into();
        }
        emit(&serde_json::json!({ "error": body }).to_string());
    } else {
        eprintln!("error: {error}");
    }
    exit::code_for_client(error)
}

/// A usage error found after parsing, reported the way clap reports its own.
pub fn usage(message: &str) -> u8 {
    use clap::CommandFactory;
    let error =
        super::args::Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message);
    let _ = error.print();
    exit::USAGE
}

/// Sends `endpoint`; prints the raw answer (`--json`) or `human` of it.
pub async fn answer<T: DeserializeOwned>(
    client: &Client,
    endpoint: Endpoint,
    json: bool,
    human: impl FnOnce(T) -> String,
) -> u8 {
    match client.send(&endpoint).await {
        Ok(raw) if json => emit_raw(&raw),
        Ok(raw) => match raw.json::<T>() {
            Ok(value) => {
                emit(&human(value));
                exit::OK
            }
            Err(e) => fail_client(&e, json),
        },
        Err(e) => fail_client(&e, json),
    }
}
