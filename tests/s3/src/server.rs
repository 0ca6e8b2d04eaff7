//! moto's S3 server, started on 127.0.0.1 on a free port and killed when
//! dropped. moto keeps buckets in memory: a restarted server is empty.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Python running moto; `CORRAL_TEST_PYTHON` overrides.
fn python() -> String {
    std::env::var("CORRAL_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

const INSTALL: &str = "the S3 tests need moto's server: `pip install 'moto[server]'` \
    (or point CORRAL_TEST_PYTHON at a python3 that has it)";

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub log: tempfile::NamedTempFile,
}

impl S3Server {
    pub async fn start() -> S3Server {
        S3Server::start_with(&[]).await
    }

    /// Starts moto with extra environment (`INITIAL_NO_AUTH_ACTION_COUNT=0`
    /// makes it check credentials: then every key is unknown).
    pub async fn start_with(env: &[(&str, &str)]) -> S3Server {
        let check = Command::new(python())
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match check {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "{INSTALL}; importing it failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("{INSTALL}; {} does not run: {e}", python()),
        }
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let port = free_port();
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log fd"))
            .stderr(log.reopen().expect("log fd"))
            .spawn()
            .unwrap_or_else(|e| panic!("{INSTALL}; starting it failed: {e}"));
        let mut server = S3Server {
            child: Some(child),
            port,
            log,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("moto's server exited with {status}: {}", self.log_text());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto's server did not listen within 60 s: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn client(&self) -> Client {
        client_for(&self.endpoint())
    }

    pub async fn create_bucket(&self, bucket: &str) {
        self.client()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "creating bucket {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
    }

    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        self.client()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "putting {key}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = self
            .client()
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "getting {key}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
        out.body
            .collect()
            .await
            .expect("the body")
            .into_bytes()
            .to_vec()
    }

    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "listing {bucket}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }
}

/// A client of an S3 endpoint with the test credentials.
pub fn client_for(endpoint: &str) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            crate::ACCESS_KEY,
            crate::SECRET_KEY,
            None,
            None,
            "test",
        ))
        .build();
    Client::from_conf(config)
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
