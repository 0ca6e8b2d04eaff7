//! Learning mode: four plugins that each need one thing their manifest
//! does not ask for (a network port, a directory, a subprocess, an
//! unusual system call) run under `learn_once`, and the draft grants
//! exactly that thing, in fragments that parse.

use corral_supervisor::learn::{Draft, LearnRequest, learn_once};
use corral_supervisor::policy::{Policy, PolicyText};
use corral_tests::run;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

async fn learn(method: &str, input: Value) -> Draft {
    let (draft, outcomes) = learn_once(LearnRequest {
        package_dir: corral_tests::package_dir("hostile"),
        policy_file: None,
        trampoline: None,
        calls: vec![(method.to_string(), input.to_string().into_bytes())],
    })
    .await
    .expect("the learning run");
    assert_eq!(outcomes.len(), 1);
    assert!(
        outcomes[0].result.is_ok(),
        "{method} failed under learning: {:?}",
        outcomes[0].result
    );
    // Both fragments parse: the manifest's as TOML, the policy's as a
    // policy layer.
    let manifest: toml::Table = draft
        .manifest_fragment()
        .parse()
        .expect("manifest fragment");
    assert!(manifest.contains_key("permissions"));
    Policy::from_layers(&[PolicyText {
        name: "draft".into(),
        text: draft.policy_fragment(),
    }])
    .unwrap_or_else(|e| panic!("policy fragment:\n{}\n{e}", draft.policy_fragment()));
    draft
}

fn nothing_but(draft: &Draft, what: &str) {
    let mut others = Vec::new();
    if what != "fs_read" && !draft.fs_read.is_empty() {
        others.push(format!("fs_read {:?}", draft.fs_read));
    }
    if !draft.fs_write.is_empty() {
        others.push(format!("fs_write {:?}", draft.fs_write));
    }
    if what != "connect" && !draft.connect.is_empty() {
        others.push(format!("connect {:?}", draft.connect));
    }
    if draft.host_network.is_some() {
        others.push(format!("host network {:?}", draft.host_network));
    }
    if what != "exec" && draft.exec.is_some() {
        others.push(format!("exec {:?}", draft.exec));
    }
    if what != "syscalls" && !draft.syscalls.is_empty() {
        others.push(format!("syscalls {:?}", draft.syscalls));
    }
    assert!(
        others.is_empty(),
        "the draft grants more than {what}: {others:?}\n{}\n{}",
        draft.manifest_fragment(),
        draft.policy_fragment()
    );
}

#[test]
fn a_plugin_that_needs_a_port_gets_that_port() {
    run(async {
        let draft = learn("connect_tcp", json!({"port": 47111})).await;
        assert_eq!(draft.connect.keys().copied().collect::<Vec<_>>(), [47111]);
        assert!(
            draft
                .manifest_fragment()
                .contains("net = { connect = [\"tcp:47111\"] }"),
            "{}",
            draft.manifest_fragment()
        );
        nothing_but(&draft, "connect");
    });
}

#[test]
fn a_plugin_that_needs_a_directory_gets_that_directory() {
    run(async {
        let dir = tempfile::Builder::new()
            .prefix("corral-learn-")
            .tempdir_in("/var/tmp")
            .expect("a directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::write(dir.path().join("data.csv"), "a,b\n").expect("a file");
        let draft = learn("list_dir", json!({"path": dir.path()})).await;
        assert_eq!(
            draft.fs_read.keys().cloned().collect::<Vec<_>>(),
            [PathBuf::from(dir.path())]
        );
        nothing_but(&draft, "fs_read");
    });
}

#[test]
fn a_plugin_that_needs_a_subprocess_gets_exec() {
    run(async {
        let draft = learn("fork_bomb", json!({"max": 1})).await;
        assert!(draft.exec.is_some(), "{draft:?}");
        assert!(draft.manifest_fragment().contains("exec = true"));
        nothing_but(&draft, "exec");
    });
}

#[test]
fn a_plugin_that_needs_an_unusual_system_call_gets_that_call() {
    run(async {
        let draft = learn("raw_syscall", json!({"name": "sync"})).await;
        assert_eq!(draft.syscalls.keys().cloned().collect::<Vec<_>>(), ["sync"]);
        assert!(draft.policy_fragment().contains("\"sync\""));
        nothing_but(&draft, "syscalls");
    });
}
