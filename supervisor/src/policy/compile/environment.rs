//! The environment the plugin starts with: exactly these variables, none
//! inherited from corrald. The channel's fd, the plugin's name and
//! version, and the scratch space as home and temporary directory.

use super::Context;
use corral_protocol::message::{CHANNEL_FD, CHANNEL_FD_ENV};

pub(super) fn plan(cx: &Context<'_>) -> Vec<(String, String)> {
    let scratch = cx.policy.sandbox.scratch_path.to_string();
    let pair = |k: &str, v: String| (k.to_string(), v);
    vec![
        pair(CHANNEL_FD_ENV, CHANNEL_FD.to_string()),
        pair("CORRAL_PLUGIN", cx.name.to_string()),
        pair(
            "CORRAL_PLUGIN_VERSION",
            cx.manifest.plugin.version.to_string(),
        ),
        pair("CORRAL_SCRATCH", scratch.clone()),
        pair("HOME", scratch.clone()),
        pair("TMPDIR", scratch),
        pair("PATH", "/usr/local/bin:/usr/bin:/bin".to_string()),
        pair("LANG", "C.UTF-8".to_string()),
    ]
}
