//! A TCP proxy between corrald and the S3 server. Armed with a byte
//! count, it stops passing the server's bytes to corrald once a
//! connection has carried that many since arming (a download stalls
//! mid-body), says so, and closes corrald's side when the server's side
//! closes: killing the server then is a server dying mid-fetch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Control {
    upstream: AtomicU16,
    /// Bytes a connection may pass after arming; 0 when disarmed.
    limit: AtomicU64,
    /// Bumped at each arming; connections restart their count.
    epoch: AtomicU64,
    stalled: AtomicBool,
}

pub struct Proxy {
    pub port: u16,
    control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let control = Arc::new(Control::default());
        control.upstream.store(upstream, Ordering::SeqCst);
        let c = control.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let port = c.upstream.load(Ordering::SeqCst);
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", port)).await {
                        relay(client, server, c).await;
                    }
                });
            }
        });
        Proxy {
            port,
            control,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// New connections go to `port`.
    pub fn set_upstream(&self, port: u16) {
        self.control.upstream.store(port, Ordering::SeqCst);
    }

    /// Stall the server's bytes after `bytes` more per connection.
    pub fn arm(&self, bytes: u64) {
        self.control.stalled.store(false, Ordering::SeqCst);
        self.control.epoch.fetch_add(1, Ordering::SeqCst);
        self.control.limit.store(bytes, Ordering::SeqCst);
    }

    pub fn disarm(&self) {
        self.control.limit.store(0, Ordering::SeqCst);
    }

    /// Whether a download has stalled since arming.
    pub fn stalled(&self) -> bool {
        self.control.stalled.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, control: Arc<Control>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    let mut epoch = control.epoch.load(Ordering::SeqCst);
    let mut passed: u64 = 0;
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = control.epoch.load(Ordering::SeqCst);
        if now != epoch {
            epoch = now;
            passed = 0;
        }
        let limit = control.limit.load(Ordering::SeqCst);
        if limit == 0 {
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            continue;
        }
        let room = limit.saturating_sub(passed) as usize;
        let pass = room.min(n);
        if pass > 0 && client_write.write_all(&buf[..pass]).await.is_err() {
            break;
        }
        passed += pass as u64;
        if pass < n {
            // Stalled: swallow the rest until the server goes away.
            control.stalled.store(true, Ordering::SeqCst);
            while let Ok(n) = server_read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            break;
        }
    }
    let _ = client_write.shutdown().await;
    up.abort();
}
