//! `corrald.toml`: where the daemon listens, keeps state and finds
//! plugins and policy, and who may use it. Every setting has a default, so
//! an empty file (or none) is a working configuration.

use corral_protocol::manifest::parse_toml;
use corral_protocol::units::{ByteSize, HumanDuration};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/corral/corrald.toml";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The API socket.
    pub socket: PathBuf,
    /// Its mode, octal text such as "0660".
    pub socket_mode: String,
    /// Group owning the socket (callers get in through it); none keeps the
    /// daemon's group.
    pub socket_group: Option<String>,
    /// Installed packages and the state file.
    pub state_dir: PathBuf,
    /// The package store; `<state_dir>/store` when unset. Plugins run as
    /// their own uids and must be able to traverse every directory above it.
    pub store_dir: Option<PathBuf>,
    /// The operator policy and its drop-in directory.
    pub policy: PathBuf,
    pub policy_dir: PathBuf,
    /// Groups (names or numeric gids) whose members may administer
    /// (install, load, ...). root and the daemon's own uid always may.
    pub admin_groups: Vec<String>,
    /// Groups (names or numeric gids) whose members may list and call
    /// plugins. Admins may too.
    pub caller_groups: Vec<String>,
    /// Directory name of corral's cgroups under the hierarchy it uses.
    pub cgroup_base: String,
    /// Time in-flight calls get to finish on shutdown and unload.
    pub shutdown_grace: HumanDuration,
    /// Where packages come from.
    pub sources: Vec<SourceConfig>,
    /// S3 buckets packages come from (see `crate::sources::config`).
    pub s3_sources: Vec<crate::sources::config::S3SourceConfig>,
    pub limits: ApiLimits,
    /// Log format: "text" or "json".
    pub log_format: String,
    /// Host services' daemon-side settings (`[services.s3]`).
    pub services: ServicesConfig,
}

/// `[services]`: what the host services need from the daemon's side.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesConfig {
    /// The S3 store plugins' granted buckets live in; none: the `s3`
    /// service answers `service_unavailable`.
    pub s3: Option<crate::services::buckets::S3ServiceConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A directory whose subdirectories are packages (each with
    /// plugin.toml).
    pub path: PathBuf,
    /// Load every package found here, at start and when it appears or
    /// changes while the daemon runs (with `watch`), unless an operator
    /// unloaded it. Off: packages are installed, and wait for `corral load`.
    /// (`load` is the older name of this setting.)
    #[serde(default = "yes", alias = "load")]
    pub autoload: bool,
    /// Pick up new and changed packages while running (inotify): install
    /// them, and swap in the ones that are loaded.
    #[serde(default = "yes")]
    pub watch: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimits {
    /// Connections served at once, every peer together.
    pub max_connections: usize,
    /// Connections one uid that is not an admin may hold at once; more are
    /// closed as soon as they are accepted (after /v1/health, see
    /// `health_connections`).
    pub max_connections_per_uid: usize,
    /// Of `max_connections`, how many only admins may use, so an operator
    /// always gets in while other users hold every other slot.
    pub reserved_connections: usize,
    /// Connections kept apart for a peer refused a regular slot: each may
    /// ask `GET /v1/health` once (anything else is answered 503
    /// `overloaded`), at most two per uid, so monitoring keeps working
    /// while the API is full.
    pub health_connections: usize,
    /// Largest request body (uploads included); larger gets 413.
    pub max_request_body: ByteSize,
    /// Time a client gets to send a request's headers (also bounds idle
    /// keep-alive connections).
    pub header_timeout: HumanDuration,
    /// Time a client gets to send a request's body once its head arrived;
    /// with `header_timeout` it bounds a whole request.
    pub request_timeout: HumanDuration,
    /// Time a response may wait on a client that does not read it (no
    /// byte accepted by the socket); the connection is then closed.
    pub write_timeout: HumanDuration,
    /// Calls in flight per plugin; more get 429 `overloaded`.
    pub max_in_flight_per_plugin: u32,
    /// Largest package accepted, unpacked.
    pub max_package_size: ByteSize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_connections: 1024,
            max_connections_per_uid: 128,
            reserved_connections: 64,
            health_connections: 32,
            max_request_body: ByteSize(64 << 20),
            header_timeout: HumanDuration(Duration::from_secs(10)),
            request_timeout: HumanDuration(Duration::from_secs(30)),
            write_timeout: HumanDuration(Duration::from_secs(10)),
            max_in_flight_per_plugin: 1024,
            max_package_size: ByteSize(512 << 20),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from(corral_protocol::api::DEFAULT_SOCKET),
            socket_mode: "0660".into(),
            socket_group: Some("corral".into()),
            state_dir: PathBuf::from("/var/lib/corral"),
            store_dir: None,
            policy: PathBuf::from("/etc/corral/policy.toml"),
            policy_dir: PathBuf::from("/etc/corral/policy.d"),
            admin_groups: vec!["corral-admin".into()],
            caller_groups: vec!["corral".into()],
            cgroup_base: corral_cgroups::DEFAULT_BASE_NAME.into(),
            shutdown_grace: HumanDuration(Duration::from_secs(10)),
            sources: vec![SourceConfig {
                path: PathBuf::from("/usr/lib/corral/plugins"),
                autoload: true,
                watch: true,
            }],
            s3_sources: Vec::new(),
            limits: ApiLimits::default(),
            log_format: "text".into(),
            services: ServicesConfig::default(),
        }
    }
}

/// Development mode keeps its store in `dir` when plugin uids can reach it
/// there, and otherwise (a checkout under a private home directory) under
/// /var/tmp, named after the uid and the directory.
fn dev_store(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let reachable = dir.ancestors().skip(1).all(|a| {
        std::fs::metadata(a)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(true)
    });
    if reachable {
        return None;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    Some(PathBuf::from(format!(
        "/var/tmp/corral-dev-{uid}-{:08x}/store",
        h.finish() as u32
    )))
}

/// The cgroup base of a `corrald --dev` instance: named after its
/// directory, so two instances (two checkouts, two `--dev-dir`s) never
/// share one, and a restart of the same instance finds its own.
fn dev_cgroup_base(dir: &Path) -> String {
    use sha2::Digest;
    use std::os::unix::ffi::OsStrExt;
    // sha256, not the std hasher: the name must stay the same across
    // builds, or a restart would not find (and clean) its own leftovers.
    let hash = sha2::Sha256::digest(dir.as_os_str().as_bytes());
    let hex: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("corral-dev-{hex}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {key}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
    pub line: Option<usize>,
}

impl From<ConfigError> for corral_protocol::error::CorralError {
    fn from(e: ConfigError) -> Self {
        let message = e.to_string();
        corral_protocol::error::CorralError::new(
            corral_protocol::error::ErrorKind::InvalidConfig {
                file: e.file,
                key: e.key,
                reason: e.reason,
                schema: None,
            },
            message,
        )
    }
}

impl Config {
    /// `new` as a reload can apply it to a daemon running with `self`:
    /// settings read only at start (the socket, the state and store, the
    /// cgroup base, the sources, the server's limits, the log format) keep
    /// their running values, so the running daemon stays consistent, and
    /// the ones `new` changes are named.
    pub fn reloadable(&self, mut new: Config) -> (Config, Vec<&'static str>) {
        let mut restart_needed = Vec::new();
        macro_rules! keep_running {
            ($($field:ident).+) => {
                if new.$($field).+ != self.$($field).+ {
                    restart_needed.push(stringify!($($field).+));
                    new.$($field).+ = self.$($field).+.clone();
                }
            };
        }
        keep_running!(socket);
        keep_running!(socket_mode);
        keep_running!(socket_group);
        keep_running!(state_dir);
        keep_running!(store_dir);
        keep_running!(cgroup_base);
        keep_running!(sources);
        keep_running!(s3_sources);
        keep_running!(log_format);
        keep_running!(services);
        keep_running!(limits.max_connections);
        keep_running!(limits.max_connections_per_uid);
        keep_running!(limits.reserved_connections);
        keep_running!(limits.health_connections);
        keep_running!(limits.max_request_body);
        keep_running!(limits.header_timeout);
        keep_running!(limits.request_timeout);
        keep_running!(limits.write_timeout);
        keep_running!(limits.max_package_size);
        (new, restart_needed)
    }
}

impl Config {
    /// Reads `path`; a missing file at the default location means all
    /// defaults, a missing file named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default());
            }
            Err(e) => {
                return Err(ConfigError {
                    file,
                    key: "(document)".into(),
                    reason: format!("cannot read: {e}"),
                    line: None,
                });
            }
        };
        Config::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let config: Config = parse_toml(text, file).map_err(|e| ConfigError {
            file: e.file,
            key: e.key,
            reason: e.reason,
            line: e.line,
        })?;
        config.check(file)?;
        Ok(config)
    }

    /// Paths for `corrald --dev`: everything under `dir`, the socket open
    /// to the local user, the built-in policy, and `plugins` as the source.
    pub fn dev(dir: &Path, plugins: Option<&Path>) -> Config {
        Config {
            socket: dir.join("corral.sock"),
            socket_mode: "0666".into(),
            socket_group: None,
            state_dir: dir.join("state"),
            store_dir: dev_store(dir),
            policy: dir.join("policy.toml"),
            policy_dir: dir.join("policy.d"),
            admin_groups: Vec::new(),
            caller_groups: Vec::new(),
            cgroup_base: dev_cgroup_base(dir),
            shutdown_grace: HumanDuration(Duration::from_secs(5)),
            sources: plugins
                .map(|p| {
                    vec![SourceConfig {
                        path: p.to_path_buf(),
                        autoload: true,
                        watch: true,
                    }]
                })
                .unwrap_or_default(),
            s3_sources: Vec::new(),
            limits: ApiLimits::default(),
            log_format: "text".into(),
            services: ServicesConfig::default(),
        }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.store_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("store"))
    }

    pub fn socket_mode_bits(&self) -> u32 {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8).unwrap_or(0o660)
    }

    fn check(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            file: file.to_string(),
            key: key.into(),
            reason,
            line: None,
        };
        match u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8) {
            Ok(m) if m <= 0o777 => {}
            _ => {
                return Err(err(
                    "socket_mode",
                    format!("`{}` is not an octal mode like \"0660\"", self.socket_mode),
                ));
            }
        }
        corral_cgroups::validate_name(&self.cgroup_base)
            .map_err(|e| err("cgroup_base", e.to_string()))?;
        if self.limits.max_connections == 0 {
            return Err(err("limits.max_connections", "must be at least 1".into()));
        }
        if self.limits.reserved_connections >= self.limits.max_connections {
            return Err(err(
                "limits.reserved_connections",
                format!(
                    "must be below max_connections ({})",
                    self.limits.max_connections
                ),
            ));
        }
        if self.limits.max_connections_per_uid == 0 {
            return Err(err(
                "limits.max_connections_per_uid",
                "must be at least 1".into(),
            ));
        }
        if self.limits.max_in_flight_per_plugin == 0 {
            return Err(err(
                "limits.max_in_flight_per_plugin",
                "must be at least 1".into(),
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(err(
                "log_format",
                format!("`{}`: use \"text\" or \"json\"", self.log_format),
            ));
        }
        crate::sources::config::check(&self.s3_sources)
            .map_err(|(key, reason)| err(&key, reason))?;
        if let Some(s3) = &self.services.s3 {
            s3.check().map_err(|(key, reason)| err(&key, reason))?;
        }
        for (i, s) in self.sources.iter().enumerate() {
            if !s.path.is_absolute() {
                return Err(err(
                    &format!("sources[{i}].path"),
                    format!("{} is not absolute", s.path.display()),
                ));
            }
        }
        Ok(())
    }

    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(Config::parse("", "c").expect("empty"), Config::default());
    }

    #[test]
    fn the_shipped_example_lists_exactly_the_defaults() {
        let example = include_str!("../../systemd/corrald.toml");
        assert_eq!(
            Config::parse(example, "systemd/corrald.toml").expect("parse"),
            Config::default()
        );
    }

    #[test]
    fn settings_parse() {
        let c = Config::parse(
            "socket = \"/tmp/x.sock\"\nsocket_mode = \"0600\"\ncaller_groups = [\"apps\"]\n\n[[sources]]\npath = \"/srv/plugins\"\nwatch = false\n\n[limits]\nmax_in_flight_per_plugin = 8\n",
            "c",
        )
        .expect("parse");
        assert_eq!(c.socket_mode_bits(), 0o600);
        assert_eq!(c.sources.len(), 1);
        assert!(c.sources[0].autoload && !c.sources[0].watch);
        assert_eq!(c.limits.max_in_flight_per_plugin, 8);
        assert_eq!(c.limits.max_connections, 1024, "untouched defaults stay");
    }

    #[test]
    fn dev_mode_moves_the_store_out_of_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let private = tempfile::Builder::new()
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let dev = private.path().join("checkout/.corral-dev");
        let store = Config::dev(&dev, None).store_dir();
        assert!(
            store.to_string_lossy().starts_with("/var/tmp/corral-dev-"),
            "{}",
            store.display()
        );
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        assert_eq!(Config::dev(&dev, None).store_dir(), dev.join("state/store"));
    }

    #[test]
    fn each_dev_directory_has_a_cgroup_base_of_its_own() {
        let a = Config::dev(Path::new("/srv/a/.corral-dev"), None).cgroup_base;
        let b = Config::dev(Path::new("/srv/b/.corral-dev"), None).cgroup_base;
        assert_ne!(a, b);
        assert_eq!(
            a,
            Config::dev(Path::new("/srv/a/.corral-dev"), None).cgroup_base
        );
        assert!(a.starts_with("corral-dev-"), "{a}");
        corral_cgroups::validate_name(&a).expect("a valid cgroup name");
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("sockett = \"/x\"", "sockett"),
            ("socket_mode = \"rw-\"", "socket_mode"),
            ("cgroup_base = \"../x\"", "cgroup_base"),
            (
                "[limits]\nmax_request_body = \"big\"",
                "limits.max_request_body",
            ),
            ("[[sources]]\npath = \"relative\"", "sources[0].path"),
            ("log_format = \"xml\"", "log_format"),
        ] {
            let e = Config::parse(text, "/etc/corral/corrald.toml").expect_err(text);
            assert_eq!(e.key, key, "{e}");
            assert_eq!(e.file, "/etc/corral/corrald.toml");
        }
    }

    #[test]
    fn missing_default_file_is_fine_but_missing_explicit_file_is_not() {
        let path = Path::new("/nonexistent/corrald.toml");
        assert_eq!(
            Config::load(path, false).expect("defaults"),
            Config::default()
        );
        assert!(Config::load(path, true).is_err());
    }

    #[test]
    fn a_reload_keeps_what_is_read_only_at_start() {
        let running = Config::default();
        let edited = Config {
            state_dir: "/srv/elsewhere".into(),
            caller_groups: vec!["apps".into()],
            limits: ApiLimits {
                header_timeout: HumanDuration(Duration::from_secs(1)),
                max_in_flight_per_plugin: 7,
                ..ApiLimits::default()
            },
            ..Config::default()
        };
        let (applied, restart_needed) = running.reloadable(edited);
        assert_eq!(restart_needed, ["state_dir", "limits.header_timeout"]);
        assert_eq!(applied.state_dir, running.state_dir);
        assert_eq!(applied.limits.header_timeout, running.limits.header_timeout);
        assert_eq!(applied.limits.max_in_flight_per_plugin, 7, "reloadable");
        assert_eq!(applied.caller_groups, ["apps"], "reloadable");
    }
}
