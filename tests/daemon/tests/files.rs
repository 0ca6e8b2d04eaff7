//! An installed package's files over the API and the CLI: listed with
//! sizes, served byte for byte from the store, nothing outside the
//! package reachable, and readable by whoever may read the plugin.

use corral_daemon_tests::peer::{Identity, Peer};
use corral_daemon_tests::{Daemon, Request, Setup, test_env};
use corral_protocol::api::PackageFiles;

const CALLERS: u32 = 4120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_files_are_listed_and_served_and_nothing_else() {
    let mut setup = Setup::new().package("hello");
    setup.socket_mode = "0666".into();
    setup.caller_groups = vec![CALLERS.to_string()];
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let built = test_env().package("hello");

    let listed: PackageFiles = api.get("/v1/plugins/hello/files").await.ok();
    assert_eq!(listed.plugin, "hello");
    let entry = listed
        .files
        .iter()
        .find(|f| f.path == "bin/hello")
        .expect("the entry is listed");
    let on_disk = std::fs::read(built.join("bin/hello")).expect("the built entry");
    assert_eq!(entry.size, on_disk.len() as u64);
    assert!(entry.modified_ms > 0);
    assert!(listed.files.iter().any(|f| f.path == "plugin.toml"));

    let served = api
        .get("/v1/plugins/hello/files/bin/hello")
        .await
        .status(200);
    assert_eq!(served.body.as_ref(), on_disk.as_slice(), "byte for byte");

    // Outside the package, or no such file: refused, typed.
    for path in [
        "/v1/plugins/hello/files/%2e%2e/%2e%2e/etc/passwd",
        "/v1/plugins/hello/files/bin/%2e%2e/plugin.toml",
        "/v1/plugins/hello/files/%2fetc%2fpasswd",
        "/v1/plugins/hello/files/bin",
        "/v1/plugins/hello/files/no-such-file",
    ] {
        api.get(path).await.error(400, "invalid_input");
    }
    api.get("/v1/plugins/nope/files")
        .await
        .error(404, "plugin_not_found");

    // The detail's readers: a caller reads, a stranger does not.
    let peer = Peer::new(env!("CARGO_BIN_EXE_dt-peer"), setup.root());
    let socket = setup.socket();
    let caller = Identity::user(4021, &[CALLERS]);
    let stranger = Identity::user(4022, &[]);
    for path in [
        "/v1/plugins/hello/files",
        "/v1/plugins/hello/files/plugin.toml",
    ] {
        peer.request(&caller, &socket, &Request::get(path))
            .await
            .response
            .status(200);
        peer.request(&stranger, &socket, &Request::get(path))
            .await
            .response
            .error(403, "permission_denied");
    }

    // The CLI: the list, then one file's exact bytes.
    let corral = |args: &[&str]| {
        let out = std::process::Command::new(test_env().corral())
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .expect("corral runs");
        assert!(
            out.status.success(),
            "corral {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let table = String::from_utf8(corral(&["files", "hello"])).expect("utf-8");
    assert!(
        table.contains("bin/hello") && table.contains("plugin.toml"),
        "{table}"
    );
    let manifest = corral(&["files", "hello", "plugin.toml"]);
    assert_eq!(
        manifest,
        std::fs::read(built.join("plugin.toml")).expect("the built manifest")
    );
    daemon.stop().await;
}
