//! The worked examples of `PROTOCOL.md` are golden vectors: each ```hex
//! block there is parsed out and compared byte for byte with the encoding
//! of the message it names here, then decoded back. The variant tables of
//! the document are checked against the encoder too, so the page cannot
//! drift from the code.

use corral_protocol::frame::{self, FrameBuffer, HANDSHAKE_MAX_FRAME, HARD_MAX_FRAME};
use corral_protocol::message::{
    Call, CallResult, Delivery, Hello, HostMessage, Init, InitLimits, LogLevel, LogRecord, MAGIC,
    PluginError, PluginEvent, PluginMessage, Reply, SandboxFailure, ServiceError, ServiceRequest,
    ServiceResponse, ServiceResult,
};
use std::collections::BTreeMap;

const DOC: &str = include_str!("../PROTOCOL.md");

#[derive(Debug, Clone, PartialEq)]
enum Vector {
    Host(HostMessage),
    Plugin(PluginMessage),
}

impl Vector {
    fn encode(&self) -> Vec<u8> {
        match self {
            Vector::Host(m) => frame::encode(m),
            Vector::Plugin(m) => frame::encode(m),
        }
        .expect("golden message encodes")
    }

    /// Decodes `bytes` as one frame of the same direction.
    fn decode_like(&self, bytes: &[u8]) -> Vector {
        let mut buf = FrameBuffer::new(HARD_MAX_FRAME);
        buf.extend(bytes);
        let decoded = match self {
            Vector::Host(_) => buf
                .next_message::<HostMessage>()
                .map(|m| m.map(Vector::Host)),
            Vector::Plugin(_) => buf
                .next_message::<PluginMessage>()
                .map(|m| m.map(Vector::Plugin)),
        };
        let decoded = decoded
            .expect("golden bytes decode")
            .expect("golden bytes are one whole frame");
        assert_eq!(buf.pending(), 0, "golden bytes hold exactly one frame");
        decoded
    }
}

/// The messages the examples of PROTOCOL.md show, by block name.
fn vectors() -> BTreeMap<&'static str, Vector> {
    use Vector::{Host, Plugin};
    BTreeMap::from([
        (
            "hello",
            Plugin(PluginMessage::Hello(Hello {
                magic: MAGIC,
                versions: vec![1],
                name: "hello".into(),
                version: "0.1.0".into(),
                max_frame: 4 << 20,
            })),
        ),
        (
            "init",
            Host(HostMessage::Init(Init {
                version: 1,
                max_frame: 1 << 20,
                config: b"{}".to_vec(),
                limits: InitLimits {
                    memory_bytes: 32 << 20,
                    call_timeout_ms: 10_000,
                    pids: 4,
                    open_files: 32,
                },
            })),
        ),
        ("ready", Plugin(PluginMessage::Ready)),
        (
            "call",
            Host(HostMessage::Call(Call {
                id: 1,
                method: "greet".into(),
                input: br#"{"name":"Ada"}"#.to_vec(),
                timeout_ms: 10_000,
            })),
        ),
        (
            "reply-ok",
            Plugin(PluginMessage::Reply(Reply {
                id: 1,
                result: CallResult::Ok(br#"{"greeting":"Hello, Ada!"}"#.to_vec()),
            })),
        ),
        (
            "reply-err",
            Plugin(PluginMessage::Reply(Reply {
                id: 2,
                result: CallResult::Err(PluginError {
                    code: "empty_name".into(),
                    message: "say who".into(),
                }),
            })),
        ),
        ("cancel", Host(HostMessage::Cancel { id: 3 })),
        (
            "ping",
            Host(HostMessage::Ping {
                nonce: 0x0102_0304_0506_0708,
            }),
        ),
        (
            "pong",
            Plugin(PluginMessage::Pong {
                nonce: 0x0102_0304_0506_0708,
            }),
        ),
        ("plugin-ping", Plugin(PluginMessage::Ping { nonce: 42 })),
        ("host-pong", Host(HostMessage::Pong { nonce: 42 })),
        (
            "log",
            Plugin(PluginMessage::Log(LogRecord {
                level: LogLevel::Info,
                message: "started".into(),
                fields: vec![("call".into(), "1".into())],
            })),
        ),
        (
            "event",
            Plugin(PluginMessage::Event(PluginEvent {
                topic: "progress".into(),
                payload: b"20".to_vec(),
            })),
        ),
        ("shutdown", Host(HostMessage::Shutdown { grace_ms: 5_000 })),
        (
            "sandbox-failure",
            Plugin(PluginMessage::SandboxFailure(SandboxFailure {
                step: "seccomp".into(),
                errno: 22,
                message: "invalid".into(),
            })),
        ),
        (
            "request",
            Plugin(PluginMessage::Request(ServiceRequest {
                id: 1,
                call_id: 7,
                service: "kv".into(),
                operation: "get".into(),
                payload: br#"{"table":"users","key":"u1"}"#.to_vec(),
            })),
        ),
        (
            "response-ok",
            Host(HostMessage::Response(ServiceResponse {
                id: 1,
                result: ServiceResult::Ok(br#"{"value":{"n":1}}"#.to_vec()),
            })),
        ),
        (
            "response-err",
            Host(HostMessage::Response(ServiceResponse {
                id: 2,
                result: ServiceResult::Err(ServiceError {
                    code: "permission_denied".into(),
                    message: "not granted".into(),
                    details: br#"{"code":"permission_denied","message":"not granted","permission":"kv.table secrets"}"#.to_vec(),
                }),
            })),
        ),
        (
            "deliver",
            Host(HostMessage::Deliver(Delivery {
                topic: "user:1".into(),
                from: "accounts".into(),
                payload: br#"{"n":1}"#.to_vec(),
            })),
        ),
    ])
}

/// Every ```hex NAME block of the document, as (name, bytes). Text after
/// `#` on a line is commentary.
fn hex_blocks() -> Vec<(String, Vec<u8>)> {
    let mut blocks = Vec::new();
    let mut lines = DOC.lines().enumerate();
    while let Some((start, line)) = lines.next() {
        let Some(name) = line.strip_prefix("```hex") else {
            continue;
        };
        let name = name.trim().to_string();
        assert!(
            !name.is_empty(),
            "PROTOCOL.md:{}: a hex block needs a name",
            start + 1
        );
        let mut bytes = Vec::new();
        for (n, line) in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            let data = line.split('#').next().unwrap_or("");
            for token in data.split_whitespace() {
                let byte = (token.len() == 2)
                    .then(|| u8::from_str_radix(token, 16).ok())
                    .flatten()
                    .unwrap_or_else(|| {
                        panic!("PROTOCOL.md:{}: `{token}` is not a hex byte", n + 1)
                    });
                bytes.push(byte);
            }
        }
        blocks.push((name, bytes));
    }
    blocks
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_hex_example_in_protocol_md_is_exact() {
    let vectors = vectors();
    let blocks = hex_blocks();
    assert!(!blocks.is_empty(), "PROTOCOL.md has no hex examples");
    for (name, bytes) in &blocks {
        let vector = vectors
            .get(name.as_str())
            .unwrap_or_else(|| panic!("PROTOCOL.md shows `{name}`, which golden.rs does not know"));
        let encoded = vector.encode();
        assert_eq!(
            hex(bytes),
            hex(&encoded),
            "PROTOCOL.md example `{name}` (left) differs from the encoder (right)"
        );
        assert_eq!(&vector.decode_like(bytes), vector, "`{name}` decodes back");
    }
}

#[test]
fn every_golden_vector_is_shown_in_protocol_md() {
    let shown: Vec<String> = hex_blocks().into_iter().map(|(n, _)| n).collect();
    for name in vectors().keys() {
        assert_eq!(
            shown.iter().filter(|s| s == name).count(),
            1,
            "`{name}` must appear exactly once as a ```hex block"
        );
    }
}

/// The rows `| index | `Variant` | ... |` of the table under `heading`.
fn variant_table(heading: &str) -> BTreeMap<String, u32> {
    let at = DOC
        .find(heading)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no `{heading}`"));
    let mut table = BTreeMap::new();
    for line in DOC[at..].lines().skip(1) {
        if table.is_empty() && !line.starts_with('|') {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let (Some(index), Some(name)) = (cells.get(1), cells.get(2))
            && let Ok(index) = index.parse::<u32>()
        {
            table.insert(name.trim_matches('`').to_string(), index);
        }
    }
    table
}

/// The variant index the encoder writes: the first u32 of the payload.
fn tag(frame: &[u8]) -> u32 {
    u32::from_le_bytes(frame[4..8].try_into().expect("a tag"))
}

#[test]
fn the_variant_tables_match_the_encoder() {
    let plugin_samples: [(&str, PluginMessage); 9] = [
        (
            "Hello",
            PluginMessage::Hello(Hello {
                magic: MAGIC,
                versions: vec![],
                name: String::new(),
                version: String::new(),
                max_frame: 0,
            }),
        ),
        ("Ready", PluginMessage::Ready),
        (
            "Reply",
            PluginMessage::Reply(Reply {
                id: 0,
                result: CallResult::Ok(vec![]),
            }),
        ),
        (
            "Log",
            PluginMessage::Log(LogRecord {
                level: LogLevel::Error,
                message: String::new(),
                fields: vec![],
            }),
        ),
        (
            "Event",
            PluginMessage::Event(PluginEvent {
                topic: String::new(),
                payload: vec![],
            }),
        ),
        ("Pong", PluginMessage::Pong { nonce: 0 }),
        ("Ping", PluginMessage::Ping { nonce: 0 }),
        (
            "SandboxFailure",
            PluginMessage::SandboxFailure(SandboxFailure {
                step: String::new(),
                errno: 0,
                message: String::new(),
            }),
        ),
        (
            "Request",
            PluginMessage::Request(ServiceRequest {
                id: 0,
                call_id: 0,
                service: String::new(),
                operation: String::new(),
                payload: vec![],
            }),
        ),
    ];
    let table = variant_table("### Plugin to host");
    assert_eq!(table.len(), plugin_samples.len(), "{table:?}");
    for (name, message) in &plugin_samples {
        let encoded = frame::encode(message).expect("encode");
        assert_eq!(
            table.get(*name),
            Some(&tag(&encoded)),
            "PluginMessage::{name}"
        );
    }

    let host_samples: [(&str, HostMessage); 8] = [
        (
            "Init",
            HostMessage::Init(Init {
                version: 1,
                max_frame: 0,
                config: vec![],
                limits: InitLimits::default(),
            }),
        ),
        (
            "Call",
            HostMessage::Call(Call {
                id: 0,
                method: String::new(),
                input: vec![],
                timeout_ms: 0,
            }),
        ),
        ("Cancel", HostMessage::Cancel { id: 0 }),
        ("Ping", HostMessage::Ping { nonce: 0 }),
        ("Shutdown", HostMessage::Shutdown { grace_ms: 0 }),
        ("Pong", HostMessage::Pong { nonce: 0 }),
        (
            "Response",
            HostMessage::Response(ServiceResponse {
                id: 0,
                result: ServiceResult::Ok(vec![]),
            }),
        ),
        (
            "Deliver",
            HostMessage::Deliver(Delivery {
                topic: String::new(),
                from: String::new(),
                payload: vec![],
            }),
        ),
    ];
    let table = variant_table("### Host to plugin");
    assert_eq!(table.len(), host_samples.len(), "{table:?}");
    for (name, message) in &host_samples {
        let encoded = frame::encode(message).expect("encode");
        assert_eq!(
            table.get(*name),
            Some(&tag(&encoded)),
            "HostMessage::{name}"
        );
    }
}

#[test]
fn log_levels_and_call_results_have_the_documented_indices() {
    let levels = [
        (LogLevel::Error, 0u32),
        (LogLevel::Warn, 1),
        (LogLevel::Info, 2),
        (LogLevel::Debug, 3),
        (LogLevel::Trace, 4),
    ];
    let doc_row = DOC
        .lines()
        .find(|l| l.starts_with("| `LogLevel` |"))
        .expect("LogLevel row");
    for (level, index) in levels {
        let encoded = frame::encode(&PluginMessage::Log(LogRecord {
            level,
            message: String::new(),
            fields: vec![],
        }))
        .expect("encode");
        assert_eq!(tag(&encoded[4..]), index, "{level:?}");
        assert!(
            doc_row.contains(&format!("{index} `{level:?}`")),
            "the LogLevel row must list {index} `{level:?}`: {doc_row}"
        );
    }
    let ok = frame::encode(&Reply {
        id: 0,
        result: CallResult::Ok(vec![]),
    })
    .expect("encode");
    let err = frame::encode(&Reply {
        id: 0,
        result: CallResult::Err(PluginError {
            code: String::new(),
            message: String::new(),
        }),
    })
    .expect("encode");
    // Reply = id u64, then the CallResult tag.
    assert_eq!(tag(&ok[8..]), 0);
    assert_eq!(tag(&err[8..]), 1);
}

#[test]
fn the_documented_limits_are_the_codes_limits() {
    assert_eq!(HANDSHAKE_MAX_FRAME, 1_048_576);
    assert!(DOC.contains("| 1 MiB (1 048 576), `HANDSHAKE_MAX_FRAME` |"));
    assert_eq!(HARD_MAX_FRAME, 16_777_216);
    assert!(DOC.contains("16 MiB (16 777 216)"));
    assert_eq!(&MAGIC, b"CRRL");
    assert!(DOC.contains("`43 52 52 4c` (`\"CRRL\"`)"));
    assert_eq!(corral_protocol::message::CHANNEL_FD, 3);
    assert!(DOC.contains(&format!(
        "| `{}` | `3`",
        corral_protocol::message::CHANNEL_FD_ENV
    )));
}
