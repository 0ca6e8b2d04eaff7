//! Property tests of the codec and the manifest parser: every message
//! survives encode → stream split anywhere → decode, and no input at all
//! makes the frame decoder or the manifest parser panic.

use corral_protocol::Manifest;
use corral_protocol::frame::{self, FrameBuffer, FrameError, HARD_MAX_FRAME};
use corral_protocol::message::{
    Call, CallResult, Hello, HostMessage, Init, InitLimits, LogLevel, LogRecord, PluginError,
    PluginEvent, PluginMessage, Reply, SandboxFailure,
};
use proptest::collection::vec;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..300)
}

fn text() -> impl Strategy<Value = String> {
    any::<String>()
}

fn init_limits() -> impl Strategy<Value = InitLimits> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(memory_bytes, call_timeout_ms, pids, open_files)| InitLimits {
            memory_bytes,
            call_timeout_ms,
            pids,
            open_files,
        },
    )
}

fn host_message() -> impl Strategy<Value = HostMessage> {
    prop_oneof![
        (any::<u16>(), any::<u32>(), bytes(), init_limits()).prop_map(
            |(version, max_frame, config, limits)| HostMessage::Init(Init {
                version,
                max_frame,
                config,
                limits,
            })
        ),
        (any::<u64>(), text(), bytes(), any::<u64>()).prop_map(
            |(id, method, input, timeout_ms)| HostMessage::Call(Call {
                id,
                method,
                input,
                timeout_ms,
            })
        ),
        any::<u64>().prop_map(|id| HostMessage::Cancel { id }),
        any::<u64>().prop_map(|nonce| HostMessage::Ping { nonce }),
        any::<u32>().prop_map(|grace_ms| HostMessage::Shutdown { grace_ms }),
        any::<u64>().prop_map(|nonce| HostMessage::Pong { nonce }),
    ]
}

fn log_level() -> impl Strategy<Value = LogLevel> {
    prop_oneof![
        Just(LogLevel::Error),
        Just(LogLevel::Warn),
        Just(LogLevel::Info),
        Just(LogLevel::Debug),
        Just(LogLevel::Trace),
    ]
}

fn call_result() -> impl Strategy<Value = CallResult> {
    prop_oneof![
        bytes().prop_map(CallResult::Ok),
        (text(), text()).prop_map(|(code, message)| CallResult::Err(PluginError { code, message })),
    ]
}

fn plugin_message() -> impl Strategy<Value = PluginMessage> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            vec(any::<u16>(), 0..8),
            text(),
            text(),
            any::<u32>()
        )
            .prop_map(|(magic, versions, name, version, max_frame)| {
                PluginMessage::Hello(Hello {
                    magic,
                    versions,
                    name,
                    version,
                    max_frame,
                })
            }),
        Just(PluginMessage::Ready),
        (any::<u64>(), call_result())
            .prop_map(|(id, result)| PluginMessage::Reply(Reply { id, result })),
        (log_level(), text(), vec((text(), text()), 0..4)).prop_map(|(level, message, fields)| {
            PluginMessage::Log(LogRecord {
                level,
                message,
                fields,
            })
        }),
        (text(), bytes())
            .prop_map(|(topic, payload)| PluginMessage::Event(PluginEvent { topic, payload })),
        any::<u64>().prop_map(|nonce| PluginMessage::Pong { nonce }),
        any::<u64>().prop_map(|nonce| PluginMessage::Ping { nonce }),
        (text(), any::<i32>(), text()).prop_map(|(step, errno, message)| {
            PluginMessage::SandboxFailure(SandboxFailure {
                step,
                errno,
                message,
            })
        }),
    ]
}

/// Encodes `messages` back to back, feeds the stream to a FrameBuffer in
/// chunks cut at `cuts`, and returns what comes out.
fn through_stream<T>(messages: &[T], cuts: &[usize]) -> Vec<T>
where
    T: Serialize + DeserializeOwned + Debug,
{
    let mut stream = Vec::new();
    for m in messages {
        frame::encode_into(m, &mut stream).expect("encode");
    }
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.push(stream.len());
    cuts.sort_unstable();
    let mut buf = FrameBuffer::new(HARD_MAX_FRAME);
    let mut out = Vec::new();
    let mut from = 0;
    for cut in cuts {
        buf.extend(&stream[from..cut]);
        from = cut;
        while let Some(m) = buf.next_message::<T>().expect("decode") {
            out.push(m);
        }
    }
    assert_eq!(buf.pending(), 0, "nothing left over");
    out
}

/// Feeds arbitrary bytes to a FrameBuffer until it errors; never panics.
fn drain_soup<T: DeserializeOwned>(soup: &[u8], chunk: usize, max_frame: u32) {
    let mut buf = FrameBuffer::new(max_frame);
    for piece in soup.chunks(chunk.max(1)) {
        buf.extend(piece);
        loop {
            match buf.next_message::<T>() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(
                    FrameError::TooLarge { .. }
                    | FrameError::Decode(_)
                    | FrameError::TrailingBytes { .. },
                ) => return,
                Err(other) => panic!("a buffer decode cannot fail with {other:?}"),
            }
        }
    }
}

proptest! {
    #[test]
    fn host_messages_survive_any_stream_split(
        messages in vec(host_message(), 1..12),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        prop_assert_eq!(through_stream(&messages, &cuts), messages);
    }

    #[test]
    fn plugin_messages_survive_any_stream_split(
        messages in vec(plugin_message(), 1..12),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        prop_assert_eq!(through_stream(&messages, &cuts), messages);
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_by_its_prefix(
        message in plugin_message(),
        limit in 0u32..64,
    ) {
        let encoded = frame::encode(&message).expect("encode");
        let len = (encoded.len() - 4) as u32;
        let mut buf = FrameBuffer::new(limit);
        // Only the prefix: the verdict must not wait for the payload.
        buf.extend(&encoded[..4]);
        match buf.next_message::<PluginMessage>() {
            Err(FrameError::TooLarge { len: l, max }) => {
                prop_assert!(len > limit);
                prop_assert_eq!((l, max), (u64::from(len), limit));
            }
            Ok(None) => prop_assert!(len <= limit),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn byte_soup_never_panics_the_decoder(
        soup in vec(any::<u8>(), 0..2048),
        chunk in 1usize..64,
        max_frame in prop_oneof![Just(HARD_MAX_FRAME), 0u32..4096],
    ) {
        drain_soup::<HostMessage>(&soup, chunk, max_frame);
        drain_soup::<PluginMessage>(&soup, chunk, max_frame);
        let _ = frame::decode_payload::<HostMessage>(&soup);
        let _ = frame::decode_payload::<PluginMessage>(&soup);
    }

    #[test]
    fn damaged_frames_never_panic_the_decoder(
        messages in vec(plugin_message(), 1..4),
        damage in vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut stream = Vec::new();
        for m in &messages {
            frame::encode_into(m, &mut stream).expect("encode");
        }
        for (at, byte) in damage {
            let at = at % stream.len();
            stream[at] = byte;
        }
        drain_soup::<PluginMessage>(&stream, stream.len(), HARD_MAX_FRAME);
        drain_soup::<HostMessage>(&stream, 7, HARD_MAX_FRAME);
    }

    #[test]
    fn the_manifest_parser_never_panics_on_any_string(text in any::<String>()) {
        let _ = Manifest::parse(&text, "plugin.toml");
    }

    #[test]
    fn the_manifest_parser_never_panics_on_near_manifests(text in near_manifest()) {
        match Manifest::parse(&text, "plugin.toml") {
            Ok(m) => prop_assert!(!m.name().is_empty()),
            Err(e) => {
                prop_assert_eq!(e.file.as_str(), "plugin.toml");
                prop_assert!(!e.key.is_empty() && !e.reason.is_empty(), "{e:?}");
                if let Some(line) = e.line {
                    prop_assert!(line >= 1 && line <= text.lines().count().max(1) + 1, "{e:?}");
                }
            }
        }
    }
}

/// Text assembled from the pieces of real manifests, so most cases get
/// past the TOML syntax and into the checks of each key.
fn near_manifest() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("[plugin]\n"),
        Just("[permissions]\n"),
        Just("[limits]\n"),
        Just("[dependencies]\n"),
        Just("[config]\n"),
        Just("[permissions.fs]\n"),
        Just("name = \"demo\"\n"),
        Just("name = \"Bad Name\"\n"),
        Just("version = \"1.2.3\"\n"),
        Just("version = \"x\"\n"),
        Just("entry = \"bin/demo\"\n"),
        Just("entry = \"../../etc/passwd\"\n"),
        Just("entry = \"/abs\"\n"),
        Just("runtime = \"native\"\n"),
        Just("engine = \">=0.1\"\n"),
        Just("instances = 0\n"),
        Just("fs.read = [\"/usr/share\"]\n"),
        Just("fs.write = [\"relative\"]\n"),
        Just("net = \"none\"\n"),
        Just("net = { connect = [\"tcp:443\"] }\n"),
        Just("net = { connect = [] }\n"),
        Just("net = { connect = [\"udp:53\"], listen = 1 }\n"),
        Just("exec = true\n"),
        Just("threads = 0\n"),
        Just("threads = 4\n"),
        Just("memory = \"128MiB\"\n"),
        Just("memory = \"18446744073709551615TiB\"\n"),
        Just("cpu = \"50%\"\n"),
        Just("cpu = \"-1%\"\n"),
        Just("pids = 16\n"),
        Just("pids = 1\n"),
        Just("timeout = \"30s\"\n"),
        Just("timeout = \"0s\"\n"),
        Just("open_files = 64\n"),
        Just("disk = \"1MiB\"\n"),
        Just("\"text-utils\" = \"^1\"\n"),
        Just("demo = \"*\"\n"),
        Just("unknown = 1\n"),
        Just("é = \"ü\"\n"),
        Just("= \n"),
        Just("[[plugin]]\n"),
        Just("\u{feff}"),
        Just("\"\"\"\n"),
        Just("\n"),
    ];
    (vec(pieces, 0..24), any::<String>(), any::<usize>()).prop_map(|(pieces, noise, at)| {
        let mut text: String = pieces.concat();
        // Sometimes splice arbitrary text into the middle of it.
        if !noise.is_empty() && at % 3 == 0 {
            let mut cut = at % (text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.insert_str(cut, &noise);
        }
        text
    })
}
