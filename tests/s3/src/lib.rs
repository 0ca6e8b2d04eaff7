//! Support for the S3 source tests: a real S3-compatible server (moto's,
//! from PyPI: `pip install 'moto[server]'`) started on 127.0.0.1 on a
//! free port ([`server`]), a proxy in front of it that can stall a
//! download so the server can be killed mid-fetch ([`proxy`]), package
//! versions made from the built `hello` package and published with the
//! real `corral pack` and `corral publish` ([`packages`]), and daemons
//! pointed at the bucket ([`source_config`]).
//!
//! Without python3 and moto every test fails saying how to install them;
//! none is skipped. The daemon side needs what `cargo xtask test` builds
//! (see corral-daemon-tests).

pub mod packages;
pub mod proxy;
pub mod server;

pub use packages::{Published, Version};
pub use proxy::Proxy;
pub use server::S3Server;

use std::time::Duration;

/// The poll interval of test sources.
pub const POLL: &str = "300ms";
/// How long a test waits for something a poll does (many intervals, and
/// the start of a plugin, on a busy machine).
pub const PICKUP_WAIT: Duration = Duration::from_secs(60);
/// Credentials moto accepts (it checks none unless asked to).
pub const ACCESS_KEY: &str = "corral-test";
pub const SECRET_KEY: &str = "corral-test-secret";

/// An `[[s3_sources]]` table for corrald.toml; `extra` lines are added
/// as they are.
pub fn source_config(
    name: &str,
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    extra: &str,
) -> String {
    format!(
        "[[s3_sources]]\nname = {name:?}\nbucket = {bucket:?}\nprefix = {prefix:?}\nendpoint = {endpoint:?}\nregion = \"us-east-1\"\npath_style = true\naccess_key_id = {ACCESS_KEY:?}\nsecret_access_key = {SECRET_KEY:?}\npoll_interval = {POLL:?}\n{extra}\n"
    )
}

/// The `timeout` limit (ms) the serving child of `plugin` runs with,
/// which each test version sets differently (see [`Version`]): proof of
/// which version answers calls.
pub async fn serving_timeout_ms(client: &corral_daemon_tests::Client, plugin: &str) -> Option<u64> {
    let response = client.call(plugin, "limits", serde_json::Value::Null).await;
    if response.status != 200 {
        return None;
    }
    let value = response.value();
    let output = value.get("output")?;
    let limits = output.get("limits")?;
    limits
        .get("call_timeout_ms")
        .and_then(serde_json::Value::as_u64)
}
