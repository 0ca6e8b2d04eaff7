//! Frame codec: a little-endian `u32` payload length, then a bincode 2
//! payload encoded with fixed-width little-endian integers.
//!
//! The codec is sans-IO at its core ([`FrameBuffer`]) so that the
//! synchronous trampoline and SDK and the asynchronous supervisor share one
//! implementation of the rules: a frame longer than the negotiated maximum,
//! or a payload that does not decode, is an error and never a panic or an
//! unbounded allocation.

use serde::{Serialize, de::DeserializeOwned};
use std::io::{self, Read, Write};

/// Bytes in the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Largest payload any peer may ever negotiate. Decoding is bounded by this
/// figure, so a garbled length field inside a payload can never make the
/// decoder allocate more than this.
pub const HARD_MAX_FRAME: u32 = 16 * 1024 * 1024;

/// Payload limit used until the handshake has chosen one.
pub const DEFAULT_MAX_FRAME: u32 = 4 * 1024 * 1024;

/// Limit for the handshake frames themselves (Hello, Init, the trampoline's
/// bootstrap): they are small, so a peer cannot make us buffer megabytes
/// before it has proven it speaks the protocol.
pub const HANDSHAKE_MAX_FRAME: u32 = 1024 * 1024;

type WireConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<{ HARD_MAX_FRAME as usize }>,
>;

/// The one bincode configuration of the protocol: little-endian, fixed-width
/// integers, decoding bounded by [`HARD_MAX_FRAME`].
pub const fn wire_config() -> WireConfig {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<{ HARD_MAX_FRAME as usize }>()
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: u64, max: u32 },
    #[error("frame payload does not decode: {0}")]
    Decode(String),
    #[error("frame payload does not encode: {0}")]
    Encode(String),
    #[error("{len} trailing bytes after the message in a frame")]
    TrailingBytes { len: usize },
    #[error("channel closed in the middle of a frame")]
    Truncated,
    #[error("channel i/o: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// True when the peer broke the protocol (as opposed to an I/O failure
    /// or an orderly close).
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            FrameError::TooLarge { .. }
                | FrameError::Decode(_)
                | FrameError::TrailingBytes { .. }
                | FrameError::Truncated
        )
    }
}

/// Encodes `message` as one complete frame appended to `out`.
pub fn encode_into<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    let result = bincode::serde::encode_into_std_write(message, out, wire_config());
    let payload_len = match result {
        Ok(n) => n,
        Err(e) => {
            out.truncate(start);
            return Err(FrameError::Encode(e.to_string()));
        }
    };
    if payload_len > HARD_MAX_FRAME as usize {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            len: payload_len as u64,
            max: HARD_MAX_FRAME,
        });
    }
    out[start..start + LENGTH_PREFIX].copy_from_slice(&(payload_len as u32).to_le_bytes());
    Ok(())
}

/// Encodes `message` as one complete frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(64);
    encode_into(message, &mut out)?;
    Ok(out)
}

/// Decodes one payload (without its length prefix). The whole payload must
/// be consumed: trailing bytes mean the peer and we disagree on the schema.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (value, used) = bincode::serde::decode_from_slice(payload, wire_config())
        .map_err(|e| FrameError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::TrailingBytes {
            len: payload.len() - used,
        });
    }
    Ok(value)
}

/// How much a reader asks for at a time: a few dozen small frames per read
/// syscall, without making every idle peer hold a large buffer.
pub const READ_CHUNK: usize = 4096;

/// A drained buffer larger than this is given back.
const SHRINK_ABOVE: usize = 64 * 1024;

/// Accumulates bytes read from a stream and yields complete frames.
///
/// `buf[start..end]` holds received bytes not yet consumed; `buf[end..]` is
/// room to read into, kept initialised so reads need no unsafe code.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: u32,
}

impl FrameBuffer {
    pub fn new(max_frame: u32) -> Self {
        // Empty until the first read: an idle peer costs nothing here.
        FrameBuffer {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_frame: max_frame.min(HARD_MAX_FRAME),
        }
    }

    /// The largest payload accepted from now on.
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame.min(HARD_MAX_FRAME);
    }

    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Appends bytes read from the peer.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }

    /// Room to read into, at least `at_least` bytes; report what was
    /// written with [`FrameBuffer::commit`].
    pub fn spare(&mut self, at_least: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            // Give back what a burst of large frames grew, once drained.
            if self.buf.len() > SHRINK_ABOVE {
                self.buf = vec![0; at_least.max(READ_CHUNK)];
            }
        }
        // A partial frame at hand says how much room it needs.
        let at_least = match self.next_len() {
            Some(len) if len <= self.max_frame => {
                at_least.max((LENGTH_PREFIX + len as usize).saturating_sub(self.pending()))
            }
            _ => at_least,
        };
        if self.buf.len() - self.end < at_least {
            // Move the unconsumed tail to the front before growing.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < at_least {
                self.buf.resize(self.end + at_least, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of the last [`FrameBuffer::spare`] slice as filled.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Bytes buffered but not yet consumed.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// Length of the next frame's payload if its prefix is buffered.
    fn next_len(&self) -> Option<u32> {
        let available = &self.buf[self.start..self.end];
        let prefix: [u8; LENGTH_PREFIX] = available.get(..LENGTH_PREFIX)?.try_into().ok()?;
        Some(u32::from_le_bytes(prefix))
    }

    /// True when a complete frame is buffered.
    pub fn has_complete_frame(&self) -> bool {
        self.next_len()
            .is_some_and(|len| self.pending() >= LENGTH_PREFIX + len as usize)
    }

    /// Returns the next complete payload, `Ok(None)` if more bytes are needed.
    pub fn next_payload(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let Some(len) = self.next_len() else {
            return Ok(None);
        };
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len: u64::from(len),
                max: self.max_frame,
            });
        }
        let total = LENGTH_PREFIX + len as usize;
        if self.pending() < total {
            return Ok(None);
        }
        let payload_start = self.start + LENGTH_PREFIX;
        self.start += total;
        Ok(Some(&self.buf[payload_start..payload_start + len as usize]))
    }

    /// Decodes the next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.next_payload()? {
            Some(payload) => decode_payload(payload).map(Some),
            None => Ok(None),
        }
    }
}

/// Reads frames from a blocking reader.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: FrameBuffer,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R, max_frame: u32) -> Self {
        FrameReader {
            inner,
            buf: FrameBuffer::new(max_frame),
        }
    }

    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.buf.set_max_frame(max_frame);
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// True when a complete frame is already buffered, so the next
    /// [`FrameReader::read`] will not block.
    pub fn has_buffered_frame(&self) -> bool {
        self.buf.has_complete_frame()
    }

    /// Reads the next message. `Ok(None)` is an orderly close between frames.
    pub fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        loop {
            if let Some(message) = self.buf.next_message()? {
                return Ok(Some(message));
            }
            if self.fill()? == 0 {
                return if self.buf.pending() == 0 {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// Reads whatever the peer has sent into the buffer; returns the byte
    /// count (0 at end of stream). A reader in non-blocking mode returns
    /// `WouldBlock` as an error.
    pub fn fill(&mut self) -> Result<usize, FrameError> {
        let spare = self.buf.spare(READ_CHUNK);
        let n = loop {
            match self.inner.read(spare) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        self.buf.commit(n);
        Ok(n)
    }

    /// Decodes a message already in the buffer without reading.
    pub fn try_buffered<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        self.buf.next_message()
    }
}

/// Writes one frame to a blocking writer.
pub fn write_frame<W: Write, T: Serialize>(writer: &mut W, message: &T) -> Result<(), FrameError> {
    let bytes = encode(message)?;
    writer.write_all(&bytes)?;
    Ok(())
}

#[cfg(feature = "tokio")]
pub use self::tokio_io::AsyncFrameReader;

#[cfg(feature = "tokio")]
mod tokio_io {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt};

    /// Reads frames from an async reader.
    #[derive(Debug)]
    pub struct AsyncFrameReader<R> {
        inner: R,
        buf: FrameBuffer,
    }

    impl<R: AsyncRead + Unpin> AsyncFrameReader<R> {
        pub fn new(inner: R, max_frame: u32) -> Self {
            AsyncFrameReader {
                inner,
                buf: FrameBuffer::new(max_frame),
            }
        }

        pub fn set_max_frame(&mut self, max_frame: u32) {
            self.buf.set_max_frame(max_frame);
        }

        /// Next message; `Ok(None)` is an orderly close between frames.
        pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
            loop {
                if let Some(message) = self.buf.next_message()? {
                    return Ok(Some(message));
                }
                if self.fill().await? == 0 {
                    return if self.buf.pending() == 0 {
                        Ok(None)
                    } else {
                        Err(FrameError::Truncated)
                    };
                }
            }
        }

        /// Before the first read: bytes already taken from the stream by
        /// other means (a `recvmsg` that also took ancillary data), to be
        /// decoded ahead of everything read later.
        pub fn prepend_read(&mut self, bytes: &[u8]) {
            self.buf.extend(bytes);
        }

        /// Decodes a message already buffered, without waiting for more.
        pub fn try_buffered<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
            self.buf.next_message()
        }

        async fn fill(&mut self) -> Result<usize, FrameError> {
            let spare = self.buf.spare(READ_CHUNK);
            let n = self.inner.read(spare).await?;
            self.buf.commit(n);
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    }

    #[test]
    fn frame_layout_is_length_then_fixint_payload() {
        let bytes = encode(&Sample {
            id: 7,
            data: vec![0xAA],
        })
        .expect("encode");
        // u32 len=17 | u64 id=7 | u64 len=1 | 0xAA
        assert_eq!(
            bytes,
            [
                17, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xAA
            ]
        );
    }

    #[test]
    fn buffer_yields_frames_split_across_reads() {
        let mut all = Vec::new();
        for id in 0..3 {
            encode_into(
                &Sample {
                    id,
                    data: vec![1, 2, 3],
                },
                &mut all,
            )
            .expect("encode");
        }
        let mut buf = FrameBuffer::new(DEFAULT_MAX_FRAME);
        let mut seen = Vec::new();
        for chunk in all.chunks(5) {
            buf.extend(chunk);
            while let Some(s) = buf.next_message::<Sample>().expect("decode") {
                seen.push(s.id);
            }
        }
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(buf.pending(), 0);
    }

    #[test]
    fn oversized_length_is_rejected_before_buffering_the_payload() {
        let mut buf = FrameBuffer::new(1024);
        buf.extend(&2000u32.to_le_bytes());
        match buf.next_payload() {
            Err(FrameError::TooLarge {
                len: 2000,
                max: 1024,
            }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn inner_length_claiming_gigabytes_is_a_decode_error_not_an_allocation() {
        // A 16-byte payload whose byte-vector length claims 2^40 bytes.
        let mut payload = Vec::new();
        payload.extend_from_slice(&1u64.to_le_bytes());
        payload.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let err = decode_payload::<Sample>(&payload).expect_err("must fail");
        assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut payload = bincode::serde::encode_to_vec(
            Sample {
                id: 1,
                data: vec![],
            },
            wire_config(),
        )
        .expect("encode");
        payload.push(0);
        assert!(matches!(
            decode_payload::<Sample>(&payload),
            Err(FrameError::TrailingBytes { len: 1 })
        ));
    }

    #[test]
    fn reader_reports_truncation_mid_frame() {
        let mut bytes = encode(&Sample {
            id: 1,
            data: vec![9; 10],
        })
        .expect("encode");
        bytes.truncate(bytes.len() - 3);
        let mut reader = FrameReader::new(&bytes[..], DEFAULT_MAX_FRAME);
        assert!(matches!(
            reader.read::<Sample>(),
            Err(FrameError::Truncated)
        ));
        let mut empty = FrameReader::new(&[][..], DEFAULT_MAX_FRAME);
        assert!(matches!(empty.read::<Sample>(), Ok(None)));
    }
}
