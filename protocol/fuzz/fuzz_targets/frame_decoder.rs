//! Whatever bytes a plugin (or host) sends, the frame decoder answers with
//! a message, "need more bytes" or an error: never a panic, never an
//! allocation beyond the frame limit. Every message it does accept must
//! re-encode to bytes that decode to the same message.
//!
//! Input layout: byte 0 picks the chunk size the stream is fed in, byte 1
//! picks the frame limit; the rest is the stream.

#![no_main]

use corral_protocol::frame::{self, FrameBuffer, FrameError, HARD_MAX_FRAME};
use corral_protocol::message::{HostMessage, PluginMessage};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

fuzz_target!(|data: &[u8]| {
    let Some((&[chunk, limit], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let max_frame = match limit {
        0 => HARD_MAX_FRAME,
        n => u32::from(n) * 64,
    };
    feed::<HostMessage>(stream, chunk, max_frame);
    feed::<PluginMessage>(stream, chunk, max_frame);
    if let Ok(m) = frame::decode_payload::<HostMessage>(stream) {
        round_trip(&m);
    }
    if let Ok(m) = frame::decode_payload::<PluginMessage>(stream) {
        round_trip(&m);
    }
});

fn feed<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    stream: &[u8],
    chunk: usize,
    max_frame: u32,
) {
    let mut buf = FrameBuffer::new(max_frame);
    for piece in stream.chunks(chunk) {
        buf.extend(piece);
        loop {
            match buf.next_message::<T>() {
                Ok(Some(m)) => round_trip(&m),
                Ok(None) => break,
                Err(FrameError::TooLarge { len, max }) => {
                    assert!(len > u64::from(max));
                    return;
                }
                Err(FrameError::Decode(_) | FrameError::TrailingBytes { .. }) => return,
                Err(other) => panic!("a buffer decode cannot fail with {other:?}"),
            }
        }
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(message: &T) {
    let bytes = frame::encode(message).expect("an accepted message re-encodes");
    let mut buf = FrameBuffer::new(HARD_MAX_FRAME);
    buf.extend(&bytes);
    let again = buf
        .next_message::<T>()
        .expect("a re-encoded message decodes")
        .expect("a re-encoded message is one whole frame");
    assert_eq!(&again, message);
}
