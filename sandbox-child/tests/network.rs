//! Landlock's TCP rules, run for real on the host's loopback.

mod common;

use common::{Spawn, require_root, run, sh};
use corral_protocol::policy::NamespaceSource;
use std::net::TcpListener;

#[test]
fn tcp_connect_reaches_only_the_allowed_port() {
    require_root();
    let allowed = TcpListener::bind("127.0.0.1:0").expect("listen");
    let other = TcpListener::bind("127.0.0.1:0").expect("listen");
    let allowed_port = allowed.local_addr().expect("address").port();
    let other_port = other.local_addr().expect("address").port();
    let mut confinement = sh("");
    confinement.entry = "/bin/bash".into();
    confinement.argv = vec![
        "bash".into(),
        "-c".into(),
        format!(
            r#"
for p in {allowed_port} {other_port}; do
  if (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "$p=connected"; else echo "$p=refused"; fi
done
"#
        ),
    ];
    // The loopback listeners live in the host's network namespace.
    confinement.namespaces.net = NamespaceSource::Host;
    if let Some(landlock) = confinement.landlock.as_mut() {
        landlock.tcp_connect = Some(vec![allowed_port]);
        landlock.tcp_bind = Some(Vec::new());
    }
    let out = run(Spawn::bootstrap(confinement));
    out.assert_success();
    assert_eq!(out.value(&allowed_port.to_string()), "connected");
    assert_eq!(out.value(&other_port.to_string()), "refused");
}
