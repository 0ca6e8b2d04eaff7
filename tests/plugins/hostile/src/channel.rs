//! Attacks on the host through the channel and stdout: frames the host
//! must refuse, and more output than it wants to log.

use crate::attempt::Attempt;
use corral_protocol::message::{CHANNEL_FD, CHANNEL_FD_ENV};
use serde::Deserialize;
use std::io;
use std::time::{Duration, Instant};

/// The channel as the SDK found it.
pub(crate) fn channel_fd() -> i32 {
    std::env::var(CHANNEL_FD_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(CHANNEL_FD)
}

/// Writes all of `bytes` to `fd`, waiting out a full socket buffer.
pub(crate) fn write_all(fd: i32, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: bytes is valid for its length. MSG_NOSIGNAL turns a
        // closed peer into EPIPE; a non-socket fd falls back to write.
        let mut n =
            unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOTSOCK) {
            // SAFETY: as above.
            n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 100) };
                    continue;
                }
                _ => return Err(e),
            }
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

#[derive(Deserialize, Default)]
pub struct HugeReplyInput {
    /// Output bytes in the forged reply (default 32 MiB, twice the largest
    /// frame any peer may negotiate).
    pub bytes: Option<u64>,
}

/// Writes, straight to the channel, a Reply to the current call whose
/// frame is larger than the negotiated maximum. The host must stop reading
/// at the length prefix and end the plugin.
pub fn huge_reply(call_id: u64, input: Option<HugeReplyInput>) -> Attempt {
    let size = input.unwrap_or_default().bytes.unwrap_or(32 << 20);
    // PluginMessage::Reply = tag 2 | id u64 | CallResult::Ok = tag 0 | len u64 | bytes
    let payload_len = 4 + 8 + 4 + 8 + size;
    let attempted = format!("write a Reply frame with a {payload_len}-byte payload to the channel");
    let Ok(prefix) = u32::try_from(payload_len) else {
        return Attempt::failed(attempted, &io::Error::from_raw_os_error(libc::EINVAL))
            .with_detail("a frame length must fit in 32 bits");
    };
    let mut header = Vec::with_capacity(28);
    header.extend_from_slice(&prefix.to_le_bytes());
    header.extend_from_slice(&2u32.to_le_bytes());
    header.extend_from_slice(&call_id.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&size.to_le_bytes());
    let fd = channel_fd();
    let chunk = vec![b'A'; 64 * 1024];
    let mut sent = 0u64;
    let result = write_all(fd, &header).and_then(|()| {
        while sent < size {
            let n = chunk.len().min((size - sent) as usize);
            write_all(fd, &chunk[..n])?;
            sent += n as u64;
        }
        Ok(())
    });
    match result {
        Ok(()) => Attempt::succeeded(
            attempted,
            format!("wrote all {size} bytes: the host did not stop reading"),
        )
        .with_value(sent),
        Err(e) => Attempt::failed(attempted, &e)
            .with_detail(format!(
                "the host stopped reading after {sent} payload bytes: {e}"
            ))
            .with_value(sent),
    }
}

#[derive(Deserialize, Default)]
pub struct GarbledInput {
    /// Random bytes to write (default 64).
    pub bytes: Option<usize>,
    /// `payload` (default): a correct length prefix around random bytes
    /// whose message tag is out of range, so the host must see a decode
    /// error at once. `raw`: random bytes, length prefix included.
    pub mode: Option<String>,
}

pub fn garbled_frame(input: Option<GarbledInput>) -> Result<Attempt, corral_sdk::Error> {
    let input = input.unwrap_or_default();
    let len = input.bytes.unwrap_or(64).clamp(8, 1 << 20);
    let mut bytes = random_bytes(len);
    let mode = input.mode.unwrap_or_else(|| "payload".into());
    match mode.as_str() {
        "payload" => {
            bytes[..4].copy_from_slice(&((len - 4) as u32).to_le_bytes());
            // The tag is the u32 after the prefix; its top bit set puts it
            // far beyond the last message variant.
            bytes[7] |= 0x80;
        }
        "raw" => {}
        other => {
            return Err(corral_sdk::Error::invalid_input(format!(
                "mode `{other}`: use payload or raw"
            )));
        }
    }
    let attempted = format!("write {len} random bytes ({mode}) to the channel");
    Ok(match write_all(channel_fd(), &bytes) {
        Ok(()) => Attempt::succeeded(attempted, format!("wrote {}", hex(&bytes[..16]))),
        Err(e) => Attempt::failed(attempted, &e),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// getrandom(2), or a time-seeded xorshift where that is not allowed.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    // SAFETY: bytes is valid for its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), len, libc::GRND_NONBLOCK) };
    if n == len as isize {
        return bytes;
    }
    let mut state = Instant::now().elapsed().as_nanos() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
        | 1;
    for b in &mut bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    bytes
}

#[derive(Deserialize, Default)]
pub struct FloodInput {
    /// How long to flood (default 2 s).
    pub seconds: Option<f64>,
}

/// Writes lines to stdout as fast as it can, then replies normally.
pub fn stdout_flood(input: Option<FloodInput>) -> Attempt {
    let seconds = input
        .unwrap_or_default()
        .seconds
        .unwrap_or(2.0)
        .clamp(0.0, 600.0);
    let attempted = format!("write lines to stdout for {seconds} s");
    let mut block = Vec::with_capacity(64 * 1024);
    let mut line = 0u64;
    while block.len() < 60 * 1024 {
        block.extend_from_slice(
            format!(
                "hostile stdout flood line {line:08}: the quick brown fox jumps over the lazy dog\n"
            )
            .as_bytes(),
        );
        line += 1;
    }
    let start = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    let mut written = 0u64;
    while start.elapsed() < limit {
        if let Err(e) = write_all(libc::STDOUT_FILENO, &block) {
            return Attempt::failed(attempted, &e)
                .with_detail(format!("stdout failed after {written} bytes: {e}"))
                .with_value(written);
        }
        written += block.len() as u64;
    }
    Attempt::succeeded(attempted, format!("wrote {written} bytes to stdout")).with_value(written)
}
