//! Commands that work on a package directory without a daemon: `run`,
//! `check` and `policy show DIR`.

use super::args::InputArgs;
use super::output::{emit, fail};
use corral::exit;
use corral::render;
use corral_protocol::error::CorralError;
use corral_protocol::policy::SandboxPolicy;
use corral_supervisor::package::Package;
use corral_supervisor::run::{self, RunRequest};
use std::path::{Path, PathBuf};

/// The input as JSON text, checked to be JSON (`null` when none is given).
pub fn read_input(input: InputArgs) -> Result<String, CorralError> {
    let text = match (input.input, input.input_file) {
        (Some(text), _) => text,
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| CorralError::invalid_input(format!("reading stdin: {e}")))?;
            s
        }
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| CorralError::invalid_input(format!("{}: {e}", path.display())))?,
        (None, None) => "null".to_string(),
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| CorralError::invalid_input(format!("the input is not JSON: {e}")))?;
    Ok(text)
}

pub async fn run(
    package: PathBuf,
    method: String,
    input: InputArgs,
    policy: Option<PathBuf>,
    json: bool,
) -> u8 {
    let input = match read_input(input) {
        Ok(i) => i,
        Err(e) => return fail(&e, json),
    };
    let result = run::run_once(RunRequest {
        package_dir: package,
        policy_file: policy,
        trampoline: None,
        method,
        input: input.into_bytes(),
    })
    .await;
    match result {
        Ok(out) => {
            let response = render::call_response(&out.output, out.usage);
            if json {
                emit(&serde_json::to_string(&response).unwrap_or_default());
            } else {
                emit(&render::human_output(&response));
                tracing::info!("{}", render::usage_line(&response.usage));
            }
            exit::OK
        }
        Err(e) => fail(&e, json),
    }
}

/// `corral learn`: one learning run, then the draft.
pub async fn learn(
    package: PathBuf,
    methods: Vec<String>,
    inputs: Vec<String>,
    policy: Option<PathBuf>,
    json: bool,
) -> u8 {
    if inputs.len() > methods.len() {
        return fail(
            &CorralError::invalid_input(
                "more --input than --method: each input goes with the method at its position",
            ),
            json,
        );
    }
    let mut calls = Vec::new();
    for (i, method) in methods.into_iter().enumerate() {
        let input = inputs.get(i).cloned().unwrap_or_else(|| "null".into());
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&input) {
            return fail(
                &CorralError::invalid_input(format!("the input of {method} is not JSON: {e}")),
                json,
            );
        }
        calls.push((method, input.into_bytes()));
    }
    let result = corral_supervisor::learn::learn_once(corral_supervisor::learn::LearnRequest {
        package_dir: package,
        policy_file: policy,
        trampoline: None,
        calls,
    })
    .await;
    let (draft, outcomes) = match result {
        Ok(v) => v,
        Err(e) => return fail(&e, json),
    };
    if json {
        let calls: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|o| match &o.result {
                Ok(bytes) => {
                    serde_json::json!({"method": o.method, "ok": true, "output_bytes": bytes})
                }
                Err(e) => serde_json::json!({"method": o.method, "ok": false, "error": e}),
            })
            .collect();
        let out = serde_json::json!({
            "plugin": draft.plugin,
            "manifest": draft.manifest_fragment(),
            "policy": draft.policy_fragment(),
            "calls": calls,
            "not_recorded": draft.dropped,
        });
        emit(&out.to_string());
        return exit::OK;
    }
    for o in &outcomes {
        match &o.result {
            Ok(bytes) => tracing::info!("{}: answered ({bytes} bytes)", o.method),
            Err(e) => tracing::warn!("{}: failed under learning: {e}", o.method),
        }
    }
    if draft.dropped > 0 {
        tracing::warn!(
            "{} needs past the record's bound were not drafted",
            draft.dropped
        );
    }
    let mut text = String::new();
    if draft.is_empty() {
        text.push_str("# The run needed nothing beyond what the package is granted.\n");
    }
    text.push_str("# plugin.toml\n");
    text.push_str(&draft.manifest_fragment());
    text.push_str(&format!(
        "\n# operator policy, e.g. /etc/corral/policy.d/{}.toml\n",
        draft.plugin
    ));
    text.push_str(&draft.policy_fragment());
    emit(&text);
    exit::OK
}

/// Compiles the package for this kernel.
fn compile_here(
    package: &Path,
    policy: Option<&Path>,
) -> Result<(Package, SandboxPolicy), CorralError> {
    let policy = run::load_policy(policy)?;
    let package = Package::open(package)?;
    let features = corral_supervisor::features::KernelFeatures::detect(
        corral_supervisor::features::probe_cgroups(),
    );
    let compiled = run::compile_for(
        &package.manifest,
        &package.manifest_file,
        &package.dir,
        &policy,
        &features,
    )?;
    Ok((package, compiled))
}

pub fn check(package: PathBuf, policy: Option<PathBuf>, json: bool) -> u8 {
    match compile_here(&package, policy.as_deref()) {
        Ok((package, compiled)) => {
            if json {
                let v = serde_json::json!({
                    "ok": true,
                    "plugin": package.name(),
                    "version": package.manifest.plugin.version.to_string(),
                    "warnings": compiled.warnings,
                });
                emit(&v.to_string());
            } else {
                emit(&format!(
                    "ok: {} {} ({})",
                    package.name(),
                    package.manifest.plugin.version,
                    package.manifest_file
                ));
                for w in &compiled.warnings {
                    emit(&format!("warning: {w}"));
                }
            }
            exit::OK
        }
        Err(e) => fail(&e, json),
    }
}

pub fn policy_show(package: &Path, policy: Option<PathBuf>, json: bool) -> u8 {
    match compile_here(package, policy.as_deref()) {
        Ok((_, compiled)) => {
            if json {
                emit(&serde_json::to_string_pretty(&compiled).unwrap_or_default());
            } else {
                emit(&render::policy(&compiled));
            }
            exit::OK
        }
        Err(e) => fail(&e, json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_defaults_to_null_and_must_be_json() {
        assert_eq!(read_input(InputArgs::default()).expect("default"), "null");
        let given = InputArgs {
            input: Some(r#"{"a": 1}"#.into()),
            input_file: None,
        };
        assert_eq!(read_input(given).expect("json"), r#"{"a": 1}"#);
        let bad = InputArgs {
            input: Some("{not json".into()),
            input_file: None,
        };
        let error = read_input(bad).expect_err("not JSON");
        assert_eq!(error.code(), "invalid_input");
        assert!(error.message.contains("not JSON"), "{}", error.message);
    }

    #[test]
    fn input_files_are_read_and_missing_ones_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("in.json");
        std::fs::write(&file, "[1, 2]").expect("write");
        let from_file = InputArgs {
            input: None,
            input_file: Some(file),
        };
        assert_eq!(read_input(from_file).expect("read"), "[1, 2]");
        let missing = dir.path().join("missing.json");
        let error = read_input(InputArgs {
            input: None,
            input_file: Some(missing.clone()),
        })
        .expect_err("missing file");
        assert!(
            error.message.contains(&missing.display().to_string()),
            "{}",
            error.message
        );
    }
}
