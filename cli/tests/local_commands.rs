//! The daemon-free commands of the real `corral` binary: `check`,
//! `policy show DIR` and `run`.

mod common;

use common::{Run, TestPackage, corral_command};
use serde_json::Value;
use std::path::PathBuf;

fn corral(args: &[&str]) -> Run {
    let mut command = corral_command();
    command.args(args);
    Run::of(command)
}

#[test]
fn check_accepts_the_example_plugin() {
    let package = TestPackage::hello();
    let run = corral(&["check", package.path_str()]).expect_code(0);
    assert!(
        run.stdout.starts_with("ok: hello 0.1.0 ("),
        "{}",
        run.stdout
    );
    let run = corral(&["check", package.path_str(), "--json"]).expect_code(0);
    let v: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["ok"], true);
    assert_eq!(v["plugin"], "hello");
    assert_eq!(v["version"], "0.1.0");
}

#[test]
fn check_names_what_is_wrong_with_a_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("plugin.toml"),
        "[plugin]\nname = \"Bad Name\"\nversion = \"0.1.0\"\nentry = \"bin/x\"\n",
    )
    .expect("write manifest");
    let run = corral(&["check", dir.path().to_str().expect("utf-8")]).expect_code(4);
    assert!(run.stderr.contains("invalid_manifest"), "{}", run.stderr);
    assert!(run.stderr.contains("plugin.name"), "{}", run.stderr);
    let run = corral(&["check", dir.path().to_str().expect("utf-8"), "--json"]).expect_code(4);
    let v: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["error"]["code"], "invalid_manifest");
}

#[test]
fn check_of_a_missing_directory_exits_4() {
    let run = corral(&["check", "/nonexistent/package"]).expect_code(4);
    assert!(
        run.stderr.contains("/nonexistent/package"),
        "{}",
        run.stderr
    );
}

#[test]
fn policy_show_prints_rules_with_their_sources() {
    let package = TestPackage::hello();
    let run = corral(&["policy", "show", package.path_str()]).expect_code(0);
    assert!(
        run.stdout.starts_with("sandbox policy for hello 0.1.0\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("RULE"), "{}", run.stdout);
    assert!(run.stdout.contains("SOURCE"), "{}", run.stdout);
    assert!(
        run.stdout.contains("cgroup: memory 32.0 MiB"),
        "{}",
        run.stdout
    );
    let run = corral(&["policy", "show", package.path_str(), "--json"]).expect_code(0);
    let policy: corral_protocol::policy::SandboxPolicy =
        serde_json::from_str(&run.stdout).expect("a SandboxPolicy");
    assert_eq!(policy.plugin, "hello");
    assert_eq!(policy.resources.memory_max, Some(32 << 20));
}

#[test]
fn policy_show_of_a_missing_path_says_so_without_a_daemon() {
    // Not a plugin name (it has a slash), so nothing asks the daemon.
    let run = corral(&[
        "--socket",
        "/nonexistent/corral.sock",
        "policy",
        "show",
        "./no/such/package",
    ])
    .expect_code(4);
    assert!(run.stderr.contains("no/such/package"), "{}", run.stderr);
}

#[test]
fn run_refuses_bad_input_and_missing_packages() {
    let package = TestPackage::hello();
    let run = corral(&["run", package.path_str(), "--input", "{nope"]).expect_code(4);
    assert!(run.stderr.contains("invalid_input"), "{}", run.stderr);
    let run = corral(&["run", "/nonexistent/package", "--json"]).expect_code(4);
    let v: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert!(v["error"]["code"].is_string(), "{v}");
}

/// The packaged plugins `cargo xtask package` builds.
fn packages() -> PathBuf {
    let dir = std::env::var_os("CORRAL_TEST_PACKAGES").expect(
        "CORRAL_TEST_PACKAGES is not set: it names the packages `cargo xtask package` builds \
         (run cli/tests/run-confined.sh)",
    );
    PathBuf::from(dir)
}

#[test]
#[ignore = "needs the packaged static plugins and corral-sandbox; run by cli/tests/run-confined.sh"]
fn run_calls_the_example_plugin_confined() {
    let package = packages().join("hello");
    let package = package.to_str().expect("utf-8 path");
    let run = corral(&[
        "run",
        package,
        "--method",
        "greet",
        "--input",
        r#"{"name": "Ada"}"#,
        "--json",
    ])
    .expect_code(0);
    let v: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert!(
        v["output"].to_string().contains("Ada"),
        "the greeting names the input: {v}"
    );
    assert!(
        v["usage"]["wall_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{v}"
    );
    // Times come to the microsecond, not with float noise.
    let wall = v["usage"]["wall_ms"].to_string();
    let decimals = wall.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(decimals <= 3, "wall_ms {wall} has {decimals} decimals");
}

#[test]
#[ignore = "needs the packaged static plugins and corral-sandbox; run by cli/tests/run-confined.sh"]
fn run_writes_no_colour_codes_to_a_stderr_that_is_no_terminal() {
    let package = packages().join("hello");
    let package = package.to_str().expect("utf-8 path");
    let run = corral(&[
        "-vv",
        "run",
        package,
        "--method",
        "greet",
        "--input",
        r#"{"name": "Ada"}"#,
    ])
    .expect_code(0);
    assert!(!run.stderr.is_empty(), "-vv logs something to stderr");
    assert!(
        !run.stderr.contains('\u{1b}'),
        "ANSI escape codes in a piped stderr: {:?}",
        run.stderr
    );
}

#[test]
#[ignore = "needs the packaged static plugins and corral-sandbox; run by cli/tests/run-confined.sh"]
fn learn_drafts_the_grants_a_plugin_needs() {
    let package = packages().join("hostile");
    let package = package.to_str().expect("utf-8 path");
    let learn = corral(&[
        "learn",
        package,
        "--method",
        "raw_syscall",
        "--input",
        r#"{"name": "sync"}"#,
        "--method",
        "connect_tcp",
        "--input",
        r#"{"port": 47112}"#,
        "--json",
    ])
    .expect_code(0);
    let v: Value = serde_json::from_str(&learn.stdout).expect("JSON");
    let manifest = v["manifest"].as_str().expect("manifest fragment");
    assert!(
        manifest.contains(r#"net = { connect = ["tcp:47112"] }"#),
        "{manifest}"
    );
    let policy = v["policy"].as_str().expect("policy fragment");
    assert!(policy.contains("[plugins.hostile]"), "{policy}");
    assert!(policy.contains(r#""sync",  # called sync"#), "{policy}");
    assert_eq!(v["calls"][0]["ok"], true, "{v}");
    // An input without its method is refused before anything runs.
    corral(&["learn", package, "--input", "{}"]).expect_code(4);
}
