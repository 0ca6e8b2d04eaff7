//! `corrald --check`: the configuration, the policy and the source
//! folders' packages judged without starting a daemon, with an exit code
//! a script (or a reload) can act on.

use corral_daemon_tests::{Setup, test_env};
use std::path::Path;
use std::process::Command;

/// Runs `corrald --check` on the setup's configuration, written first:
/// (exit code, stdout).
fn check(setup: &Setup) -> (i32, String) {
    setup.write_config();
    check_config(&setup.config_path())
}

/// Runs `corrald --check --config path` as it stands on disk.
fn check_config(path: &Path) -> (i32, String) {
    let out = Command::new(test_env().corrald())
        .arg("--check")
        .arg("--config")
        .arg(path)
        .env_remove("CORRAL_MASK_FEATURES")
        .output()
        .expect("run corrald --check");
    (
        out.status.code().expect("an exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_good_setup_passes_and_every_package_is_named() {
    let setup = Setup::new().package("hello").package("hostile");
    let (code, out) = check(&setup);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("configuration: ok"), "{out}");
    assert!(out.contains("policy: ok"), "{out}");
    assert!(out.contains("plugin hello 0.1.0: ok"), "{out}");
    assert!(out.contains("plugin hostile 0.1.0: ok"), "{out}");
    // Nothing was started: no socket, no state.
    assert!(!setup.socket().exists());
    assert!(
        std::fs::read_dir(setup.state_dir())
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "the check wrote into the state directory"
    );
}

#[test]
fn a_package_that_would_not_load_is_exit_2_with_the_reason() {
    // hostile-net asks for network, which the built-in policy grants nobody.
    let setup = Setup::new().package("hello").package("hostile-net");
    let (code, out) = check(&setup);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("plugin hello 0.1.0: ok"), "{out}");
    assert!(
        out.contains("plugin hostile-net 0.1.0: would not load")
            && out.contains("permission_denied"),
        "{out}"
    );
    assert!(out.contains("1 of 2 packages would not load"), "{out}");
    // Granting it fixes it.
    setup.set_policy("[plugins.hostile-net]\ngrant = { net = \"connect\" }\n");
    let (code, out) = check(&setup);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_bad_policy_or_configuration_is_exit_1_naming_the_file() {
    let setup = Setup::new().package("hello");
    std::fs::write(
        setup.root().join("policy.d/50-typo.toml"),
        "[caps]\nmemmory = \"1GiB\"\n",
    )
    .expect("write the drop-in");
    let (code, out) = check(&setup);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("policy: invalid") && out.contains("50-typo.toml") && out.contains("memmory"),
        "{out}"
    );
    std::fs::remove_file(setup.root().join("policy.d/50-typo.toml")).expect("rm");

    setup.write_config();
    let config = std::fs::read_to_string(setup.config_path()).expect("read");
    std::fs::write(setup.config_path(), format!("sockett = \"/x\"\n{config}")).expect("write");
    let (code, out) = check_config(&setup.config_path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("configuration: invalid") && out.contains("sockett"),
        "{out}"
    );
}

#[test]
fn the_check_names_only_the_policy_files_that_exist_and_missing_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("corrald.toml");
    std::fs::write(
        &config,
        format!(
            "policy = \"{0}/no-policy.toml\"\npolicy_dir = \"{0}/no-policy.d\"\n\n[[sources]]\npath = \"{0}/no-plugins\"\n",
            dir.path().display()
        ),
    )
    .expect("write the configuration");
    let (code, out) = check_config(&config);
    assert_eq!(code, 0, "{out}");
    let policy = out
        .lines()
        .find(|l| l.starts_with("policy: ok"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        policy.contains("built-in") && policy.contains("not present"),
        "{policy}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("no-plugins") && l.contains("not a directory")),
        "{out}"
    );
}
