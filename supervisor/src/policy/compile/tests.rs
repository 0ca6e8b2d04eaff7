use super::*;
use crate::policy::PolicyText;
use corral_protocol::policy::{FsAccess, KeptPath, NamespaceSource, Remap, Rlimit};
use namespaces::JOIN_NET_FD;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

struct Fixture {
    _dir: tempfile::TempDir,
    package: PathBuf,
}

/// A package whose entry is a copy of a real ELF binary (dynamic).
fn fixture() -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("corral-compile")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let package = dir.path().join("pkg");
    std::fs::create_dir_all(package.join("bin")).expect("mkdir");
    std::fs::copy("/bin/true", package.join("bin/tool")).expect("copy");
    Fixture { _dir: dir, package }
}

fn manifest(extra: &str) -> Manifest {
    Manifest::parse(
        &format!("[plugin]\nname = \"tool\"\nversion = \"1.0.0\"\nentry = \"bin/tool\"\n{extra}"),
        "tool/plugin.toml",
    )
    .expect("manifest")
}

fn policy(layers: &[&str]) -> Policy {
    let layers: Vec<PolicyText> = layers
        .iter()
        .enumerate()
        .map(|(i, t)| PolicyText {
            name: format!("/etc/corral/policy.d/{i}.toml"),
            text: t.to_string(),
        })
        .collect();
    Policy::from_layers(&layers).expect("policy")
}

fn run(
    m: &Manifest,
    p: &Policy,
    f: &KernelFeatures,
    fx: &Fixture,
) -> Result<SandboxPolicy, CompileError> {
    compile(&CompileInput {
        manifest: m,
        manifest_file: "tool/plugin.toml",
        package_dir: &fx.package,
        policy: p,
        features: f,
        engine: &semver::Version::new(0, 1, 0),
    })
}

#[test]
fn minimal_plugin_gets_defaults_and_full_confinement() {
    let fx = fixture();
    let sp = run(&manifest(""), &policy(&[]), &KernelFeatures::all(), &fx).expect("compile");
    assert_eq!(sp.resources.memory_max, Some(64 << 20));
    assert_eq!(sp.resources.swap_max, Some(0));
    assert_eq!(sp.resources.pids_max, Some(16));
    assert_eq!(sp.resources.cpu_quota_us, Some(100_000));
    assert_eq!(
        sp.confinement.namespaces.net,
        NamespaceSource::Join { fd: JOIN_NET_FD }
    );
    assert!(sp.confinement.namespaces.user);
    let ll = sp.confinement.landlock.as_ref().expect("landlock");
    assert!(ll.scope_signals && ll.scope_abstract_unix);
    assert!(
        ll.fs
            .iter()
            .any(|r| r.path == "/usr/lib" && r.access == FsAccess::ReadExec),
        "dynamic entry gets libraries"
    );
    assert!(ll.tcp_connect.is_none());
    let sc = sp.confinement.seccomp.as_ref().expect("seccomp");
    assert!(sc.allowed.contains(&"read".to_string()));
    assert!(
        !sc.allowed
            .iter()
            .any(|s| s == "socket" || s.starts_with("socket("))
    );
    assert!(
        sc.allowed
            .iter()
            .any(|s| s.starts_with("socketpair(AF_UNIX"))
    );
    assert!(sc.allowed.contains(&"clone(CLONE_THREAD)".to_string()));
    // A binary search, not a chain: short to install, quick to decide.
    assert!(
        sc.instructions.len() < 500,
        "{} instructions",
        sc.instructions.len()
    );
    assert!(sp.warnings.is_empty(), "{:?}", sp.warnings);
    let mem = sp
        .provenance
        .iter()
        .find(|p| p.rule == "limits.memory")
        .expect("provenance");
    assert!(mem.source.contains("defaults.memory"), "{mem:?}");
}

#[test]
fn permissions_not_granted_are_named() {
    let fx = fixture();
    let p = policy(&[]);
    let f = KernelFeatures::all();
    let cases = [
        (
            "[permissions]\nnet = { connect = [\"tcp:443\"] }\n",
            "permissions.net = connect",
        ),
        ("[permissions]\nexec = true\n", "permissions.exec = true"),
        (
            "[permissions]\nfs.read = [\"/etc\"]\n",
            "permissions.fs.read \"/etc\"",
        ),
        (
            "[permissions]\nfs.write = [\"/tmp\"]\n",
            "permissions.fs.write \"/tmp\"",
        ),
        (
            "[permissions]\nthreads = 100\n[limits]\npids = 100\n",
            "permissions.threads = 100",
        ),
    ];
    for (extra, permission) in cases {
        match run(&manifest(extra), &p, &f, &fx) {
            Err(CompileError::NotGranted {
                permission: got,
                reason,
            }) => {
                assert_eq!(got, permission);
                assert!(reason.contains("built-in default policy"), "{reason}");
            }
            other => panic!("{extra}: expected NotGranted, got {other:?}"),
        }
    }
}

#[test]
fn operator_grants_and_denials_apply() {
    let fx = fixture();
    let f = KernelFeatures::all();
    let m = manifest("[permissions]\nnet = { connect = [\"tcp:443\"] }\nexec = true\n");
    let granted = policy(&["[plugins.tool]\ngrant = { net = \"connect\", exec = true }\n"]);
    let sp = run(&m, &granted, &f, &fx).expect("granted");
    assert_eq!(sp.confinement.namespaces.net, NamespaceSource::Host);
    assert_eq!(
        sp.confinement
            .landlock
            .as_ref()
            .and_then(|l| l.tcp_connect.clone()),
        Some(vec![443])
    );
    let sc = sp.confinement.seccomp.as_ref().expect("seccomp");
    assert!(sc.allowed.contains(&"connect".to_string()));
    assert!(sc.allowed.contains(&"clone".to_string()));
    assert!(
        sc.allowed
            .contains(&"socket(AF_INET|AF_INET6, SOCK_STREAM, 0|IPPROTO_TCP)".to_string())
    );
    let net = sp
        .provenance
        .iter()
        .find(|p| p.rule == "net")
        .expect("net provenance");
    assert!(
        net.source
            .contains("/etc/corral/policy.d/0.toml (plugins.tool.grant.net)"),
        "{net:?}"
    );

    let denied = policy(&[
        "[grantable]\nnet = \"host\"\n",
        "[plugins.tool]\ndeny = [\"net\"]\n",
    ]);
    match run(&m, &denied, &f, &fx) {
        Err(CompileError::NotGranted { permission, reason }) => {
            assert_eq!(permission, "permissions.net = connect");
            assert!(reason.contains("plugins.tool.deny"), "{reason}");
        }
        other => panic!("expected denial, got {other:?}"),
    }
}

#[test]
fn limits_are_clamped_to_caps_with_a_warning() {
    let fx = fixture();
    let m = manifest("[limits]\nmemory = \"8GiB\"\ntimeout = \"5s\"\n");
    let sp = run(&m, &policy(&[]), &KernelFeatures::all(), &fx).expect("compile");
    assert_eq!(sp.resources.memory_max, Some(1 << 30));
    assert_eq!(sp.timeouts.call, std::time::Duration::from_secs(5));
    assert!(
        sp.warnings
            .iter()
            .any(|w| w.contains("limits.memory = 8GiB")),
        "{:?}",
        sp.warnings
    );
    let raised = policy(&["[plugins.tool]\nlimits = { memory = \"16GiB\" }\n"]);
    let sp = run(&m, &raised, &KernelFeatures::all(), &fx).expect("compile");
    assert_eq!(sp.resources.memory_max, Some(8 << 30));
}

#[test]
fn missing_features_follow_required_and_best_effort() {
    let fx = fixture();
    let m = manifest("");
    let p = policy(&[]);
    let mut f = KernelFeatures::all();
    f.mask("landlock");
    match run(&m, &p, &f, &fx) {
        Err(CompileError::FeatureUnavailable {
            feature,
            source_key,
        }) => {
            assert_eq!(feature, "landlock");
            assert!(source_key.contains("features.landlock"));
        }
        other => panic!("landlock is required: {other:?}"),
    }
    let mut f = KernelFeatures::all();
    f.mask("landlock_scope,cgroup_swap,cgroup_cpu");
    let sp = run(&m, &p, &f, &fx).expect("best effort features may be missing");
    let ll = sp.confinement.landlock.expect("landlock");
    assert!(!ll.scope_signals);
    assert_eq!(sp.resources.swap_max, None);
    assert_eq!(sp.resources.cpu_quota_us, None);
    assert_eq!(sp.warnings.len(), 3, "{:?}", sp.warnings);
    let mut f = KernelFeatures::all();
    f.mask("cgroup_pids");
    let relaxed =
        policy(&["[features]\ncgroup_pids = \"best_effort\"\n[grantable]\nexec = true\n"]);
    let exec = manifest("[permissions]\nexec = true\n");
    let sp = run(&exec, &relaxed, &f, &fx).expect("compile");
    assert!(
        sp.confinement
            .rlimits
            .iter()
            .any(|r| r.resource == Rlimit::Nproc && r.hard == 16),
        "NPROC falls back to the pids limit"
    );
}

#[test]
fn entry_must_stay_in_the_package_and_be_reachable() {
    let fx = fixture();
    std::os::unix::fs::symlink("/bin/sh", fx.package.join("bin/escape")).expect("symlink");
    let m = Manifest::parse(
        "[plugin]\nname = \"tool\"\nversion = \"1.0.0\"\nentry = \"bin/escape\"\n",
        "p",
    )
    .expect("m");
    match run(&m, &policy(&[]), &KernelFeatures::all(), &fx) {
        Err(CompileError::Manifest { key, reason, .. }) => {
            assert_eq!(key, "plugin.entry");
            assert!(reason.contains("outside the package"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::set_permissions(
        fx.package.join("bin/tool"),
        std::fs::Permissions::from_mode(0o750),
    )
    .expect("chmod");
    match run(&manifest(""), &policy(&[]), &KernelFeatures::all(), &fx) {
        Err(CompileError::Manifest { reason, .. }) => {
            assert!(reason.contains("chmod o+rx"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(fx.package.join("bin/tool"), "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(
        fx.package.join("bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    match run(&manifest(""), &policy(&[]), &KernelFeatures::all(), &fx) {
        Err(CompileError::Manifest { reason, .. }) => {
            assert!(reason.contains("not an ELF"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn packages_and_paths_under_the_scratch_mount_are_kept_visible() {
    let dir = tempfile::Builder::new()
        .prefix("corral-compile")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let package = dir.path().join("pkg");
    std::fs::create_dir_all(package.join("bin")).expect("mkdir");
    std::fs::copy("/bin/true", package.join("bin/tool")).expect("copy");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let fx = Fixture { _dir: dir, package };
    // With the host's tree shown, paths beneath the scratch are kept.
    let p = policy(&["[grantable]\nfs_write = [\"/tmp\"]\n[sandbox]\nminimal_root = false\n"]);
    let m = manifest(&format!(
        "[permissions]\nfs.write = [\"{}\"]\n",
        data.display()
    ));
    let sp = run(&m, &p, &KernelFeatures::all(), &fx).expect("compile");
    assert!(sp.confinement.mounts.root.is_none());
    let keep = &sp.confinement.mounts.scratch.expect("scratch").keep;
    let package_dir = fx.package.canonicalize().expect("canonical");
    assert!(
        keep.contains(&KeptPath {
            path: package_dir.display().to_string(),
            writable: false
        }),
        "{keep:?}"
    );
    assert!(
        keep.contains(&KeptPath {
            path: data.display().to_string(),
            writable: true
        }),
        "{keep:?}"
    );
    // The mount point itself cannot be kept.
    let p = policy(&["[grantable]\nfs_read = [\"/tmp\"]\n"]);
    match run(
        &manifest("[permissions]\nfs.read = [\"/tmp\"]\n"),
        &p,
        &KernelFeatures::all(),
        &fx,
    ) {
        Err(CompileError::Manifest { key, reason, .. }) => {
            assert_eq!(key, "permissions.fs.read");
            assert!(reason.contains("scratch mount point"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn engine_range_is_checked() {
    let fx = fixture();
    let m = Manifest::parse(
        "[plugin]\nname = \"tool\"\nversion = \"1.0.0\"\nentry = \"bin/tool\"\nengine = \">=2\"\n",
        "p",
    )
    .expect("m");
    match run(&m, &policy(&[]), &KernelFeatures::all(), &fx) {
        Err(CompileError::Manifest { key, .. }) => assert_eq!(key, "plugin.engine"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn remaps_mount_host_paths_where_the_plugin_looks() {
    let fx = fixture();
    let root = fx.package.parent().expect("fixture root").to_path_buf();
    let data = root.join("tenant-a");
    std::fs::create_dir_all(data.join("in")).expect("mkdir");
    let covered = root.join("covered");
    std::fs::create_dir_all(&covered).expect("mkdir");
    let m = manifest(&format!(
        "[permissions.fs]\nread = [\"/tmp/data/in\"]\nwrite = [\"{}\"]\n",
        covered.display()
    ));
    let p = policy(&[&format!(
        "[plugins.tool]\ngrant = {{ fs_read = [\"/tmp/data\"], fs_write = [\"{covered}\"] }}\n\
         remap = {{ \"/tmp/data\" = \"{data}\", \"{covered}\" = \"{data}\" }}\n",
        covered = covered.display(),
        data = data.display()
    )]);
    let compiled = run(&m, &p, &KernelFeatures::all(), &fx).expect("compiles");
    let mounts = &compiled.confinement.mounts;
    let data = data.display().to_string();
    let covered = covered.display().to_string();
    let mut expected = vec![
        Remap {
            source: data.clone(),
            target: "/tmp/data".into(),
            writable: false,
        },
        Remap {
            source: data.clone(),
            target: covered.clone(),
            writable: true,
        },
    ];
    expected.sort_by(|a, b| a.target.cmp(&b.target));
    assert_eq!(mounts.remaps, expected);
    // Remapped paths beneath the scratch are not bound back from the host.
    let scratch = mounts.scratch.as_ref().expect("scratch");
    assert!(scratch.keep.is_empty(), "{:?}", scratch.keep);
    // Landlock rules name the paths as the plugin sees them.
    let fs = &compiled.confinement.landlock.as_ref().expect("landlock").fs;
    assert!(fs.iter().any(|r| r.path == "/tmp/data/in"), "{fs:?}");
    let line = compiled
        .provenance
        .iter()
        .find(|p| p.rule == "mount /tmp/data")
        .expect("provenance for the remap");
    assert!(line.value.contains("read-only"), "{line:?}");
    assert!(
        line.source.contains("/etc/corral/policy.d/0.toml") && line.source.contains("remap"),
        "{line:?}"
    );
}

#[test]
fn a_remap_that_cannot_be_mounted_is_a_policy_error() {
    let fx = fixture();
    let root = fx.package.parent().expect("fixture root").to_path_buf();
    let m = manifest("");
    let missing_source =
        policy(&["[plugins.tool]\nremap = { \"/tmp/data\" = \"/nonexistent/corral\" }\n"]);
    match run(&m, &missing_source, &KernelFeatures::all(), &fx) {
        Err(CompileError::Policy { file, key, reason }) => {
            assert_eq!(file, "/etc/corral/policy.d/0.toml");
            assert_eq!(key, "plugins.tool.remap.\"/tmp/data\"");
            assert!(reason.contains("/nonexistent/corral"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Nothing is created on the host for a target outside the scratch.
    let target = root.join("no-such-mount-point");
    let missing_target = policy(&[&format!(
        "[plugins.tool]\nremap = {{ \"{}\" = \"{}\" }}\n",
        target.display(),
        root.display()
    )]);
    match run(&m, &missing_target, &KernelFeatures::all(), &fx) {
        Err(CompileError::Policy { reason, .. }) => {
            assert!(reason.contains("mounts over an existing path"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!target.exists());
    // A directory cannot cover a file.
    let file_target = fx.package.join("bin/tool");
    let kinds = policy(&[&format!(
        "[plugins.tool]\nremap = {{ \"{}\" = \"{}\" }}\n",
        file_target.display(),
        root.display()
    )]);
    match run(&m, &kinds, &KernelFeatures::all(), &fx) {
        Err(e @ CompileError::Policy { .. }) => {
            assert_eq!(e.to_corral_error().code(), "invalid_policy");
            assert!(
                e.to_string().contains("both be directories or both files"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_remapped_path_is_checked_at_its_source() {
    let fx = fixture();
    let root = fx.package.parent().expect("fixture root").to_path_buf();
    let m = manifest("[permissions.fs]\nread = [\"/tmp/data/missing\"]\n");
    let p = policy(&[&format!(
        "[plugins.tool]\ngrant = {{ fs_read = [\"/tmp/data\"] }}\nremap = {{ \"/tmp/data\" = \"{}\" }}\n",
        root.display()
    )]);
    match run(&m, &p, &KernelFeatures::all(), &fx) {
        Err(CompileError::Manifest { reason, .. }) => {
            assert!(reason.contains("remapped"), "{reason}");
            assert!(
                reason.contains(&root.join("missing").display().to_string()),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_minimal_root_holds_only_what_is_granted() {
    let fx = fixture();
    let root = fx.package.parent().expect("fixture root").to_path_buf();
    let data = root.join("data");
    let remapped = root.join("remapped");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::create_dir_all(&remapped).expect("mkdir");
    let m = manifest(&format!(
        "[permissions.fs]\nread = [\"/tmp/in\"]\nwrite = [\"{}\"]\n",
        data.display()
    ));
    let p = policy(&[&format!(
        "[plugins.tool]\ngrant = {{ fs_read = [\"/tmp/in\"], fs_write = [\"{data}\"] }}\n\
         remap = {{ \"/tmp/in\" = \"{remapped}\" }}\n",
        data = data.display(),
        remapped = remapped.display()
    )]);
    let sp = run(&m, &p, &KernelFeatures::all(), &fx).expect("compile");
    let mounts = &sp.confinement.mounts;
    let paths = &mounts
        .root
        .as_ref()
        .expect("a minimal root by default")
        .paths;
    let find = |p: &str| paths.iter().find(|r| r.path == p);
    let package = fx.package.canonicalize().expect("canonical");
    let pkg = find(&package.display().to_string()).expect("the package");
    assert!(pkg.exec && !pkg.writable, "{pkg:?}");
    let granted = find(&data.display().to_string()).expect("the granted path");
    assert!(
        granted.writable && !granted.exec,
        "nothing writable is executable"
    );
    // The entry is dynamic: the loader's directories, executable.
    assert!(find("/usr/lib").is_some_and(|r| r.exec && !r.writable));
    assert!(find("/dev/null").is_some_and(|r| r.writable && !r.exec));
    // /proc is mounted afresh, remaps come from their source.
    assert!(
        find("/proc").is_none() && find("/tmp/in").is_none(),
        "{paths:?}"
    );
    assert_eq!(mounts.remaps.len(), 1);
    // Nothing else of the host.
    assert!(find("/etc").is_none() && find("/usr").is_none() && find("/home").is_none());
    assert!(mounts.scratch.as_ref().expect("scratch").keep.is_empty());
    assert!(sp.confinement.namespaces.cgroup && sp.confinement.namespaces.memfd_noexec);
    assert!(
        sp.provenance
            .iter()
            .any(|p| p.rule == "root" && p.source.contains("sandbox.minimal_root")),
        "{:?}",
        sp.provenance
    );
}

#[test]
fn without_exec_the_threads_permission_is_the_task_limit() {
    let fx = fixture();
    let nproc = |sp: &SandboxPolicy| {
        sp.confinement
            .rlimits
            .iter()
            .find(|r| r.resource == Rlimit::Nproc)
            .map(|r| (r.soft, r.hard))
    };
    let p = policy(&["[grantable]\nexec = true\n"]);
    let one = run(&manifest(""), &p, &KernelFeatures::all(), &fx).expect("compile");
    assert_eq!(nproc(&one), Some((1, 1)), "the default of one thread");
    let four = run(
        &manifest("[permissions]\nthreads = 4\n"),
        &p,
        &KernelFeatures::all(),
        &fx,
    )
    .expect("compile");
    assert_eq!(nproc(&four), Some((4, 4)));
    assert!(
        four.provenance
            .iter()
            .any(|l| l.rule == "rlimits.nproc" && l.source.contains("permissions.threads")),
        "{:?}",
        four.provenance
    );
    // With exec, the pids cgroup counts processes and threads together.
    let exec = run(
        &manifest("[permissions]\nexec = true\nthreads = 4\n"),
        &p,
        &KernelFeatures::all(),
        &fx,
    )
    .expect("compile");
    assert_eq!(nproc(&exec), None);
}

#[test]
fn host_services_not_granted_are_named() {
    let fx = fixture();
    let f = KernelFeatures::all();
    let closed = policy(&["[grantable]\ncalls = false\ntables = false\n"]);
    let cases = [
        (
            "[dependencies]\ntext-utils = \"^1\"\n",
            "plugins.call text-utils",
            "calls = [\"text-utils\"]",
        ),
        (
            "[permissions.events]\npublish = [\"orders.*\"]\n",
            "events.publish orders.*",
            "events_publish = [\"orders.*\"]",
        ),
        (
            "[permissions.events]\nsubscribe = [\"user:*\"]\n",
            "events.subscribe user:*",
            "events_subscribe = [\"user:*\"]",
        ),
        (
            "[permissions.storage]\ntables = [\"users\"]\n",
            "kv.table users",
            "tables = [\"users\"]",
        ),
        (
            "[permissions.storage]\nbuckets = [\"data\"]\n",
            "s3.bucket data",
            "buckets = [\"data\"]",
        ),
    ];
    for (extra, permission, how) in cases {
        match run(&manifest(extra), &closed, &f, &fx) {
            Err(CompileError::NotGranted {
                permission: got,
                reason,
            }) => {
                assert_eq!(got, permission);
                assert!(reason.contains(how), "{reason}");
            }
            other => panic!("{extra}: expected NotGranted, got {other:?}"),
        }
    }
}

#[test]
fn host_services_are_granted_with_names_and_bounds() {
    let fx = fixture();
    let f = KernelFeatures::all();
    let m = manifest(
        "[dependencies]\ntext-utils = \"^1\"\n\
         [permissions.events]\npublish = [\"orders.created\"]\nsubscribe = [\"user:*\"]\n\
         [permissions.storage]\ntables = [\"users\", \"orders\"]\nbuckets = [\"data\"]\n",
    );
    let p = policy(&["[plugins.tool.grant]\n\
         events_publish = [\"orders.*\"]\nevents_subscribe = [\"*\"]\nbuckets = [\"data\"]\n\
         [plugins.tool.names]\ntables = { users = \"accounts_users\" }\ntopic_prefix = \"t.\"\n\
         [plugins.tool.services]\nstorage_quota = \"1MiB\"\nrequest_rate = 10\n"]);
    let compiled = run(&m, &p, &f, &fx).expect("compiles");
    let s = &compiled.services;
    assert_eq!(s.calls, ["text-utils"]);
    assert_eq!(s.publish, ["orders.created"]);
    assert_eq!(s.subscribe, ["user:*"]);
    assert_eq!(s.tables, ["users", "orders"]);
    assert_eq!(s.buckets, ["data"]);
    assert_eq!(s.table_names.resolve("users"), "accounts_users");
    assert_eq!(s.table_names.resolve("orders"), "tool_orders");
    assert_eq!(s.topic_names.resolve("orders.created"), "t.orders.created");
    assert_eq!(s.bucket_names.resolve("data"), "data");
    assert_eq!(s.storage_quota, 1 << 20);
    assert_eq!(s.requests.per_second, 10);
    assert_eq!(s.requests.in_flight, 64);
    let lines: Vec<String> = compiled
        .provenance
        .iter()
        .map(|l| format!("{} = {} <- {}", l.rule, l.value, l.source))
        .collect();
    for expected in [
        "services.plugins.call = text-utils <- built-in default policy (grantable.calls)",
        "services.events.publish = orders.created <- /etc/corral/policy.d/0.toml (plugins.tool.grant.events_publish) grants orders.*",
        "services.names.tables = users -> accounts_users",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "{expected} in {lines:#?}"
        );
    }
}

#[test]
fn a_denied_service_is_refused_even_when_grantable() {
    let fx = fixture();
    let f = KernelFeatures::all();
    let p = policy(&["[plugins.tool]\ndeny = [\"calls\", \"tables\"]\n"]);
    for extra in [
        "[dependencies]\nx = \"*\"\n",
        "[permissions.storage]\ntables = [\"a\"]\n",
    ] {
        match run(&manifest(extra), &p, &f, &fx) {
            Err(CompileError::NotGranted { reason, .. }) => {
                assert!(reason.contains("plugins.tool.deny"), "{reason}")
            }
            other => panic!("{extra}: expected NotGranted, got {other:?}"),
        }
    }
}

#[test]
fn bad_service_names_and_bounds_are_refused() {
    assert!(Manifest::parse(
        "[plugin]\nname = \"t\"\nversion = \"1.0.0\"\nentry = \"x\"\n[permissions.storage]\ntables = [\"a b\"]\n",
        "t/plugin.toml"
    )
    .is_err());
    assert!(Manifest::parse(
        "[plugin]\nname = \"t\"\nversion = \"1.0.0\"\nentry = \"x\"\n[permissions.events]\npublish = [\"ok.*\"]\nlisten = []\n",
        "t/plugin.toml"
    )
    .is_err());
    for (layer, key) in [
        (
            "[services]\nrequest_in_flight = 0\n",
            "services.request_in_flight",
        ),
        (
            "[plugins.x.services]\nevent_queue = 100000\n",
            "plugins.x.services.event_queue",
        ),
        (
            "[plugins.x.names]\ntable_prefix = \"a b\"\n",
            "plugins.x.names.table_prefix",
        ),
        (
            "[plugins.x.grant]\ncalls = [\"Bad Name\"]\n",
            "plugins.x.grant.calls",
        ),
        ("[plugins.x.names]\ncolours = {}\n", "colours"),
    ] {
        let err = Policy::from_layers(&[PolicyText {
            name: "p.toml".into(),
            text: layer.into(),
        }])
        .expect_err(layer);
        assert!(
            err.key.contains(key) || err.reason.contains(key),
            "{layer}: {err:?}"
        );
    }
}
