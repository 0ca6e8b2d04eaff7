//! Installs that try to make corrald misuse its own power (#8 items 1, 5
//! and 6): a path install reads only what the requesting client could
//! read and follows no symbolic link; a FIFO or other special file named
//! for install never blocks the daemon; an archive cannot make the daemon
//! allocate for huge headers or write past the package limit.

use corral_daemon_tests::peer::{Identity, Peer};
use corral_daemon_tests::{Daemon, Request, Setup};
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const ADMINS: u32 = 4200;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn chgrp(path: &Path, gid: u32) {
    std::os::unix::fs::chown(path, None, Some(gid))
        .unwrap_or_else(|e| panic!("chgrp {}: {e}", path.display()));
}

fn install(path: &Path) -> Request {
    Request::post("/v1/plugins").json(&json!({"path": path}))
}

/// The daemon's peak resident memory (VmHWM), bytes.
fn peak_memory(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_install_reads_with_the_clients_permissions_and_follows_no_link() {
    let mut setup = Setup::new();
    setup.socket_mode = "0666".into();
    setup.admin_groups = vec![ADMINS.to_string()];
    let daemon = Daemon::start(&setup).await;
    let socket = setup.socket();
    let peer = Peer::new(env!("CARGO_BIN_EXE_dt-peer"), setup.root());
    // An admin by group, not root.
    let admin = Identity::user(4210, &[ADMINS]);

    // A root-only directory: the admin cannot read it, so neither may the
    // daemon on the admin's behalf.
    let package = setup.package_copy("hello", "secret", "private");
    let private = setup.root().join("private");
    chmod(&private, 0o700);
    let e = peer
        .request(&admin, &socket, &install(&package))
        .await
        .response
        .error(403, "permission_denied");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("private")),
        "the error names what could not be read: {e}"
    );
    assert!(daemon.client.list().await.is_empty());

    // One file inside that only root may read: refused, naming the file.
    chmod(&private, 0o750);
    chgrp(&private, ADMINS);
    let hidden = package.join("root-only.txt");
    std::fs::write(&hidden, "root's eyes only").expect("write");
    chmod(&hidden, 0o600);
    let e = peer
        .request(&admin, &socket, &install(&package))
        .await
        .response
        .error(403, "permission_denied");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("root-only.txt")),
        "{e}"
    );
    assert!(daemon.client.list().await.is_empty());

    // A link anywhere on the path is not followed.
    std::fs::remove_file(&hidden).expect("rm");
    let link = setup.root().join("link-to-package");
    std::os::unix::fs::symlink(&package, &link).expect("symlink");
    let e = peer
        .request(&admin, &socket, &install(&link))
        .await
        .response
        .error(400, "invalid_package");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("symbolic link")),
        "{e}"
    );

    // What the admin may read installs, and the store keeps it no more
    // open than the plugin needs: the store cannot be listed by others,
    // files are not writable by anyone but root.
    peer.request(&admin, &socket, &install(&package))
        .await
        .response
        .status(201);
    let store = setup.state_dir().join("store");
    let mode = std::fs::metadata(&store)
        .expect("store")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode & 0o004,
        0,
        "the store is listable by everyone: {mode:o}"
    );
    let detail = daemon.client.detail("secret").await;
    let stored = store.join(&detail.digest);
    for entry in ["plugin.toml", "bin/hello"] {
        let mode = std::fs::metadata(stored.join(entry))
            .expect("stored file")
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode & 0o7022, 0, "{entry} is {mode:o}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_or_device_named_for_install_never_blocks_the_daemon() {
    let setup = Setup::new().package("hello");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let fifo = setup.root().join("package.fifo");
    let c = std::ffi::CString::new(fifo.display().to_string()).expect("path");
    // SAFETY: mkfifo reads the path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
    // Nothing ever opens the other end: a blocking open would hang.
    let e = api
        .install_path(&fifo, false)
        .await
        .error(400, "invalid_package");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("FIFO")),
        "{e}"
    );
    let e = api
        .install_path(Path::new("/dev/null"), false)
        .await
        .error(400, "invalid_package");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("device")),
        "{e}"
    );

    // Inside a package directory too.
    let package = setup.package_copy("hello", "piped", "packages");
    let inner = package.join("data.fifo");
    let c = std::ffi::CString::new(inner.display().to_string()).expect("path");
    // SAFETY: mkfifo reads the path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
    let e = api
        .install_path(&package, false)
        .await
        .error(400, "invalid_package");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("FIFO")),
        "{e}"
    );

    // The daemon answers and calls work; nothing was installed.
    api.health().await;
    api.call_ok("hello", "greet", json!({"name": "after"}))
        .await;
    assert_eq!(api.list().await.len(), 1);
    daemon.stop().await;
}

/// A tar stream: one header claiming `size` bytes of type `kind`, its data
/// (zeros), gzip'd. Zeros compress ~1000:1, so the upload stays small.
fn bomb(kind: u8, size: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_size(size);
    h.set_path("././@LongLink").expect("path");
    h.set_cksum();
    gz.write_all(h.as_bytes()).expect("header");
    let zeros = vec![0u8; 1 << 20];
    let mut left = size.div_ceil(512) * 512;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        gz.write_all(&zeros[..n]).expect("data");
        left -= n as u64;
    }
    gz.write_all(&[0u8; 1024]).expect("end of archive");
    gz.finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_headers_cannot_make_the_daemon_allocate_their_claimed_size() {
    let setup = Setup::new().package("hello");
    let daemon = Daemon::start(&setup).await;
    let api = &daemon.client;
    let claimed: u64 = 256 << 20;
    let before = peak_memory(daemon.pid);
    let mut refusals = Vec::new();
    for (kind, what) in [(b'L', "GNU long name"), (b'x', "PAX header")] {
        let archive = bomb(kind, claimed);
        assert!(archive.len() < 4 << 20, "{} bytes", archive.len());
        let e = api
            .install_upload(archive, false)
            .await
            .error(400, "invalid_package");
        refusals.push((what, e));
    }
    // Refused either way; what matters first is the memory it took.
    let grew = peak_memory(daemon.pid).saturating_sub(before);
    assert!(
        grew < claimed / 4,
        "the daemon's peak memory grew by {grew} bytes for headers claiming {claimed}"
    );
    for (what, e) in refusals {
        assert!(
            e["message"].as_str().is_some_and(|m| m.contains(what)),
            "{e}"
        );
    }
    api.call_ok("hello", "greet", json!({"name": "after"}))
        .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_over_the_package_limit_is_refused_and_leaves_no_staging() {
    let setup = Setup::new().limit("max_package_size", "\"1MiB\"");
    let daemon = Daemon::start(&setup).await;
    let package = setup.package_copy("hello", "big", "packages");
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    builder.append_dir_all("big", &package).expect("package");
    for i in 0..20 {
        let mut h = tar::Header::new_gnu();
        h.set_size(100 << 10);
        h.set_mode(0o644);
        h.set_cksum();
        builder
            .append_data(&mut h, format!("big/data-{i}"), &vec![0u8; 100 << 10][..])
            .expect("member");
    }
    let archive = builder.into_inner().expect("tar").finish().expect("gzip");
    let e = daemon
        .client
        .install_upload(archive, false)
        .await
        .error(400, "invalid_package");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("larger than")),
        "{e}"
    );
    let left: Vec<_> = std::fs::read_dir(setup.state_dir().join("store"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the store: {left:?}");
    daemon.stop().await;
}
