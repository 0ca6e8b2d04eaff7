//! Commands answered by corrald over its socket. With `--json` each prints
//! the daemon's answer exactly; otherwise a human rendering of it.

use super::args::InputArgs;
use super::local::read_input;
use super::output::{answer, emit, emit_raw, fail, fail_client, usage};
use corral::client::InstallOptions;
use corral::exit;
use corral::render;
use corral::{Client, Endpoint};
use corral_protocol::api::{
    CallRequest, CallResponse, EventRecord, Health, InstallResponse, PackageFiles, PluginSummary,
    ReloadReport, RemoveResponse,
};
use corral_protocol::error::CorralError;
use corral_protocol::learn::{LearnRequest, LearnStatus};
use corral_protocol::policy::SandboxPolicy;
use futures_util::StreamExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

pub async fn ls(client: &Client, json: bool) -> u8 {
    answer(
        client,
        Endpoint::List,
        json,
        |plugins: Vec<PluginSummary>| {
            if plugins.is_empty() {
                eprintln!("no plugins installed");
            }
            render::plugins_table(&plugins)
        },
    )
    .await
}

pub async fn info(client: &Client, name: String, json: bool) -> u8 {
    match client.send(&Endpoint::Info { name }).await {
        Ok(raw) if json => emit_raw(&raw),
        Ok(raw) => match corral::client::decode_detail(&raw.body) {
            Ok(detail) => {
                emit(&render::plugin_detail(&detail));
                exit::OK
            }
            Err(e) => fail_client(&e, json),
        },
        Err(e) => fail_client(&e, json),
    }
}

/// `load`, `unload` and `reload`: all answer with the plugin's summary.
pub async fn lifecycle(client: &Client, endpoint: Endpoint, json: bool) -> u8 {
    answer(client, endpoint, json, |p: PluginSummary| {
        render::summary_line(&p)
    })
    .await
}

pub async fn call(
    client: &Client,
    name: String,
    method: String,
    input: InputArgs,
    timeout_ms: Option<u64>,
    json: bool,
) -> u8 {
    let input = match read_input(input).and_then(|text| {
        serde_json::from_str(&text)
            .map_err(|e| CorralError::invalid_input(format!("the input is not JSON: {e}")))
    }) {
        Ok(value) => value,
        Err(e) => return fail(&e, json),
    };
    let endpoint = Endpoint::Call {
        name,
        request: CallRequest {
            method,
            input,
            timeout_ms,
        },
    };
    answer(client, endpoint, json, |response: CallResponse| {
        tracing::info!("{}", render::usage_line(&response.usage));
        render::human_output(&response)
    })
    .await
}

pub async fn install(
    client: &Client,
    path: Option<PathBuf>,
    upload: Option<PathBuf>,
    options: InstallOptions,
    json: bool,
) -> u8 {
    let endpoint = match (path, upload) {
        (_, Some(file)) => match std::fs::read(&file) {
            Ok(bytes) => Endpoint::InstallUpload {
                archive: bytes.into(),
                options,
            },
            Err(e) => {
                let error = CorralError::invalid_input(format!(
                    "cannot read {} to upload: {e}",
                    file.display()
                ));
                return fail(&error, json);
            }
        },
        (Some(path), None) => match corral::client::install_request(&path, options) {
            Ok(request) => Endpoint::InstallPath(request),
            Err(e) => return fail_client(&e, json),
        },
        (None, None) => return usage("install needs a PATH or --upload FILE.tar.gz"),
    };
    answer(client, endpoint, json, |i: InstallResponse| {
        render::installed(&i)
    })
    .await
}

/// `corral files NAME [PATH]`: the list (a table, or the daemon's JSON),
/// or one file's bytes exactly as stored.
pub async fn files(client: &Client, name: String, path: Option<String>, json: bool) -> u8 {
    let Some(path) = path else {
        return answer(client, Endpoint::Files { name }, json, |f: PackageFiles| {
            let mut text = String::new();
            for file in &f.files {
                text.push_str(&format!(
                    "{:>10}  {}\n",
                    render::human_bytes(file.size),
                    file.path
                ));
            }
            text.push_str(&format!(
                "{} files of {} {} ({})",
                f.files.len(),
                f.plugin,
                f.version,
                f.digest
            ));
            text
        })
        .await;
    };
    match client.send(&Endpoint::File { name, path }).await {
        Ok(raw) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A closed stdout (`| head`) is not an error of the command.
            let _ = out.write_all(&raw.body).and_then(|()| out.flush());
            exit::OK
        }
        Err(e) => fail_client(&e, json),
    }
}

/// `corral install --alongside PATH`.
pub async fn install_alongside(client: &Client, path: PathBuf, json: bool) -> u8 {
    let options = InstallOptions {
        load: false,
        replace: false,
    };
    let endpoint = match corral::client::install_request(&path, options) {
        Ok(request) => Endpoint::InstallPathAlongside(request),
        Err(e) => return fail_client(&e, json),
    };
    answer(client, endpoint, json, |i: InstallResponse| {
        render::installed(&i)
    })
    .await
}

/// `corral rm NAME` or `corral rm NAME@VERSION`.
pub async fn rm(client: &Client, name: String, purge_data: bool, json: bool) -> u8 {
    let endpoint = match name.split_once('@') {
        Some(_) if purge_data => {
            return usage("--purge-data removes a plugin's data with the plugin: name no version");
        }
        Some((name, version)) => Endpoint::RemoveVersion {
            name: name.to_string(),
            version: version.to_string(),
        },
        None => Endpoint::Remove { name, purge_data },
    };
    answer(client, endpoint, json, |r: RemoveResponse| {
        render::removed(&r)
    })
    .await
}

/// The compiled policy; a plugin in a learning run is marked, since its
/// instances run under the learning policy instead (less confined).
pub async fn policy(client: &Client, name: String, json: bool) -> u8 {
    let learning = match client
        .send(&Endpoint::LearnStatus { name: name.clone() })
        .await
    {
        Ok(raw) => raw.json::<LearnStatus>().ok().filter(|s| s.learning),
        Err(_) => None,
    };
    answer(
        client,
        Endpoint::Policy { name: name.clone() },
        json,
        |p: SandboxPolicy| {
            let mut text = String::new();
            if let Some(status) = &learning {
                text.push_str(&learning_line(&name, status));
                text.push('\n');
            }
            text.push_str(&render::policy(&p));
            text
        },
    )
    .await
}

/// `corral config NAME [--set K=V ...|--patch FILE|-]`.
pub async fn config(
    client: &Client,
    name: String,
    set: Vec<String>,
    patch: Option<PathBuf>,
    json: bool,
) -> u8 {
    let patch = match (set.is_empty(), patch) {
        (true, None) => None,
        (false, _) => match settings_patch(&set) {
            Ok(p) => Some(p),
            Err(e) => return fail(&e, json),
        },
        (true, Some(file)) => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
            } else {
                std::fs::read_to_string(&file)
            };
            let parsed = text
                .map_err(|e| {
                    CorralError::invalid_input(format!("cannot read {}: {e}", file.display()))
                })
                .and_then(|t| {
                    serde_json::from_str(&t).map_err(|e| {
                        CorralError::invalid_input(format!("the patch is not JSON: {e}"))
                    })
                });
            match parsed {
                Ok(p) => Some(p),
                Err(e) => return fail(&e, json),
            }
        }
    };
    let endpoint = match patch {
        Some(patch) => Endpoint::PatchSettings { name, patch },
        None => Endpoint::Settings { name },
    };
    answer(client, endpoint, json, |v: serde_json::Value| {
        serde_json::to_string_pretty(&v).unwrap_or_default()
    })
    .await
}

/// `--set` arguments as one merge patch: `a.b=1` is `{"a": {"b": 1}}`; a
/// value that is not JSON is a string.
pub fn settings_patch(set: &[String]) -> Result<serde_json::Value, CorralError> {
    let mut patch = serde_json::Map::new();
    for item in set {
        let Some((key, raw)) = item.split_once('=') else {
            return Err(CorralError::invalid_input(format!(
                "--set {item}: write KEY=VALUE"
            )));
        };
        let path: Vec<&str> = key.split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(CorralError::invalid_input(format!(
                "--set {item}: the key {key:?} has an empty part"
            )));
        }
        let value = serde_json::from_str(raw)
            .unwrap_or_else(|_| serde_json::Value::String(raw.to_string()));
        let mut at = &mut patch;
        for part in &path[..path.len() - 1] {
            let slot = at
                .entry(part.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !slot.is_object() {
                *slot = serde_json::Value::Object(Default::default());
            }
            match slot.as_object_mut() {
                Some(o) => at = o,
                None => unreachable!("made an object just above"),
            }
        }
        at.insert(path[path.len() - 1].to_string(), value);
    }
    Ok(serde_json::Value::Object(patch))
}

fn learning_line(name: &str, status: &LearnStatus) -> String {
    format!(
        "learning: yes, for {} more: {name} runs under the learning policy (refused system calls let through and recorded, reads allowed everywhere), not the one below",
        humantime::format_duration(Duration::from_millis(status.remaining_ms / 1000 * 1000))
    )
}

/// `corral learn --daemon NAME --for D`: starts the run, waits for it to
/// end (clients call the plugin meanwhile), prints the draft.
pub async fn learn(client: &Client, name: String, duration: Duration, json: bool) -> u8 {
    let request = LearnRequest {
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
    };
    let started = match client
        .send(&Endpoint::LearnStart {
            name: name.clone(),
            request,
        })
        .await
        .and_then(|raw| raw.json::<LearnStatus>())
    {
        Ok(status) => status,
        Err(e) => return fail_client(&e, json),
    };
    eprintln!("{}", learning_line(&name, &started));
    tokio::time::sleep(Duration::from_millis(started.remaining_ms)).await;
    // The daemon ends the run on its own clock; ask until it did.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let raw = match client
            .send(&Endpoint::LearnStatus { name: name.clone() })
            .await
        {
            Ok(raw) => raw,
            Err(e) => return fail_client(&e, json),
        };
        let status = match raw.json::<LearnStatus>() {
            Ok(status) => status,
            Err(e) => return fail_client(&e, json),
        };
        if let (false, Some(draft)) = (status.learning, &status.draft) {
            if json {
                return emit_raw(&raw);
            }
            if let Some(e) = &draft.restore_error {
                eprintln!(
                    "warning: {name} did not start again under its normal policy and is unloaded: {}",
                    render::human_error(e)
                );
            }
            if draft.not_recorded > 0 {
                eprintln!(
                    "warning: {} needs past the record's bound were not drafted",
                    draft.not_recorded
                );
            }
            let mut text = String::new();
            if draft.needed_nothing {
                text.push_str("# The run needed nothing beyond what the plugin is granted.\n");
            }
            text.push_str("# plugin.toml\n");
            text.push_str(&draft.manifest);
            text.push_str("\n# policy (e.g. /etc/corral/policy.d/");
            text.push_str(&name);
            text.push_str(".toml)\n");
            text.push_str(&draft.policy);
            emit(&text);
            return exit::OK;
        }
        if std::time::Instant::now() > deadline {
            let e = CorralError::internal(format!(
                "the learning run of {name} did not end within two minutes of its time"
            ));
            return fail(&e, json);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn reload_configuration(client: &Client, json: bool) -> u8 {
    answer(
        client,
        Endpoint::ReloadConfiguration,
        json,
        |r: ReloadReport| render::reloaded(&r),
    )
    .await
}

pub async fn health(client: &Client, json: bool) -> u8 {
    answer(client, Endpoint::Health, json, |h: Health| {
        render::health(&h)
    })
    .await
}

/// The metrics are text in both modes: the API has no JSON form of them.
pub async fn metrics(client: &Client, json: bool) -> u8 {
    match client.send(&Endpoint::Metrics).await {
        Ok(raw) => emit_raw(&raw),
        Err(e) => fail_client(&e, json),
    }
}

/// Streams events until Ctrl-C (exit 0) or until the daemon ends the
/// stream, which it only does when it goes away (exit 3).
pub async fn events(client: &Client, plugin: Option<String>, json: bool) -> u8 {
    // Registered before the first event arrives, so a Ctrl-C right after
    // the first line still ends the command cleanly.
    let mut interrupt = match signal(SignalKind::interrupt()) {
        Ok(interrupt) => interrupt,
        Err(e) => {
            let error = CorralError::internal(format!("cannot watch for Ctrl-C: {e}"));
            return fail(&error, json);
        }
    };
    let lines = client.event_lines(plugin.as_deref());
    let mut lines = std::pin::pin!(lines);
    loop {
        let line = tokio::select! {
            _ = interrupt.recv() => return exit::OK,
            line = lines.next() => line,
        };
        let shown = match line {
            Some(Ok(line)) if json => emit(&line),
            Some(Ok(line)) => match serde_json::from_str::<EventRecord>(&line) {
                Ok(record) => emit(&render::event_line(&record)),
                Err(e) => {
                    // A newer daemon may send events this client does not
                    // know yet: say so and keep following the stream.
                    eprintln!("warning: an event this corral does not understand ({e}): {line}");
                    true
                }
            },
            Some(Err(e)) => return fail_client(&e, json),
            None => {
                // Not on stdout even with --json: that is the event stream.
                eprintln!(
                    "error: corrald at {} ended the event stream (is it shutting down?)",
                    client.socket().display()
                );
                return exit::UNREACHABLE;
            }
        };
        if !shown {
            // Nobody reads stdout any more.
            return exit::OK;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::settings_patch;
    use serde_json::json;

    #[test]
    fn set_arguments_make_one_merge_patch() {
        let patch = settings_patch(&[
            "retries=3".into(),
            "greeting=hi there".into(),
            "db.port=5432".into(),
            "db.host=\"x\"".into(),
            "token=null".into(),
        ])
        .expect("a patch");
        assert_eq!(
            patch,
            json!({"retries": 3, "greeting": "hi there", "db": {"port": 5432, "host": "x"}, "token": null})
        );
        assert!(settings_patch(&["no-equals".into()]).is_err());
        assert!(settings_patch(&["a..b=1".into()]).is_err());
    }
}
