//! corral-js against the class contract, outside the sandbox: the built
//! binary is started with a script package and driven through the child
//! protocol by `corral_sdk::testing::TestHost`, as corral would drive it.
//! (The confined runs are in tests/runtime_js.rs at the workspace root.)

use corral_protocol::frame::DEFAULT_MAX_FRAME;
use corral_protocol::message::{CallResult, Init, InitLimits, LogLevel, PluginMessage};
use corral_sdk::testing::{Options, TestHost};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const LIMITS: InitLimits = InitLimits {
    memory_bytes: 64 << 20,
    call_timeout_ms: 5_000,
    pids: 4,
    open_files: 64,
};

/// A package directory holding `files`.
fn package(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

fn spawn(entry: &Path) -> TestHost {
    TestHost::spawn(
        env!("CARGO_BIN_EXE_corral-js"),
        Options {
            args: vec![entry.into()],
            env: vec![
                ("CORRAL_PLUGIN_NAME".into(), "t".into()),
                ("CORRAL_PLUGIN_VERSION".into(), "1.0.0".into()),
            ],
            read_timeout: Duration::from_secs(30),
            ..Options::default()
        },
    )
    .expect("spawn corral-js")
}

fn start_with(entry: &Path, config: &str) -> TestHost {
    let mut host = spawn(entry);
    let hello = host
        .handshake(Init {
            version: 1,
            max_frame: DEFAULT_MAX_FRAME,
            config: config.as_bytes().to_vec(),
            limits: LIMITS,
        })
        .expect("handshake");
    assert_eq!(hello.name, "t", "the name comes from CORRAL_PLUGIN_NAME");
    assert_eq!(hello.version, "1.0.0");
    host
}

fn start(entry: &Path) -> TestHost {
    start_with(entry, "{}")
}

/// The JSON output of a call that must succeed.
fn ok(host: &mut TestHost, method: &str, input: &str) -> Value {
    match host.call(method, input.as_bytes()).expect("call") {
        CallResult::Ok(bytes) => serde_json::from_slice(&bytes).expect("output is JSON"),
        CallResult::Err(e) => panic!("{method} failed: {}: {}", e.code, e.message),
    }
}

/// The (code, message) of a call that must fail.
fn err(host: &mut TestHost, method: &str, input: &str, timeout_ms: u64) -> (String, String) {
    let id = host
        .send_call(method, input.as_bytes(), timeout_ms)
        .expect("send");
    let reply = host.reply().expect("reply");
    assert_eq!(reply.id, id);
    match reply.result {
        CallResult::Err(e) => (e.code, e.message),
        CallResult::Ok(bytes) => panic!(
            "{method} was expected to fail, returned {}",
            String::from_utf8_lossy(&bytes)
        ),
    }
}

fn example_entry() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins/my-plugin/index.js")
}

#[test]
fn the_seed_readme_example_generates_code_from_its_settings() {
    let mut host = start(&example_entry());
    let out = ok(
        &mut host,
        "codeGeneration.generateCode",
        r#"{"dataset":"users.csv","rows":5}"#,
    );
    let code = out.as_str().expect("a string");
    assert!(code.starts_with("import pandas as pd"), "{code}");
    assert!(code.contains("pd.read_csv('users.csv')"), "{code}");
    assert!(code.contains("data.head(5)"), "{code}");
    assert!(host.close().expect("exit").success());
}

const COMMONJS: &str = r#"
const { shout } = require("./lib/util");
const table = require("./table.json");
class Greeter {
  constructor(settings) {
    this.greeting = settings.greeting || "Hello";
    this.calls = 0;
    this.nested = { deeper: { who() { return this.name; }, name: "deeper" } };
  }
  greet(input) {
    this.calls += 1;
    console.log("greeting", input.name, { calls: this.calls });
    console.warn("careful");
    console.error(new RangeError("shown as an error"));
    console.debug("details");
    return { text: `${this.greeting}, ${input.name}!`, calls: this.calls };
  }
  async later(input) {
    const value = await Promise.resolve(input * 2);
    return value + 1;
  }
  nothing() {}
  loud(input) { return shout(input); }
  lookup(key) { return table[key]; }
  fail() { throw new TypeError("bad thing"); }
  failCustom() {
    class ValidationError extends Error {}
    const e = new ValidationError("field x is required");
    e.name = "ValidationError";
    throw e;
  }
  throwString() { throw "plain text"; }
  async reject() { throw new Error("async failure"); }
  never() { return new Promise(() => {}); }
  bigint() { return 10n; }
}
module.exports = Greeter;
"#;

fn commonjs_package() -> tempfile::TempDir {
    package(&[
        ("index.js", COMMONJS),
        (
            "lib/util.js",
            "exports.shout = (s) => String(s).toUpperCase() + '!';",
        ),
        ("table.json", r#"{"a": 1, "b": [2, 3]}"#),
    ])
}

#[test]
fn commonjs_class_is_built_once_with_the_settings_and_serves_methods() {
    let dir = commonjs_package();
    let mut host = start_with(&dir.path().join("index.js"), r#"{"greeting":"Hi"}"#);
    let out = ok(&mut host, "greet", r#"{"name":"Ada"}"#);
    assert_eq!(out, json!({"text": "Hi, Ada!", "calls": 1}));
    let out = ok(&mut host, "greet", r#"{"name":"Bob"}"#);
    assert_eq!(out["calls"], 2, "one instance serves every call");
    assert_eq!(ok(&mut host, "later", "20"), json!(41), "a Promise's value");
    assert_eq!(
        ok(&mut host, "nothing", ""),
        Value::Null,
        "undefined is null"
    );
    assert_eq!(ok(&mut host, "loud", r#""hey""#), json!("HEY!"));
    assert_eq!(ok(&mut host, "lookup", r#""b""#), json!([2, 3]));
    assert_eq!(
        ok(&mut host, "nested.deeper.who", ""),
        json!("deeper"),
        "`this` is the object holding the method"
    );
    let logs: Vec<(LogLevel, String)> = host
        .side
        .iter()
        .filter_map(|m| match m {
            PluginMessage::Log(r) => Some((r.level, r.message.clone())),
            _ => None,
        })
        .collect();
    assert!(
        logs.contains(&(LogLevel::Info, r#"greeting Ada {"calls":1}"#.to_string())),
        "{logs:?}"
    );
    assert!(logs.contains(&(LogLevel::Warn, "careful".to_string())));
    assert!(logs.contains(&(LogLevel::Error, "RangeError: shown as an error".to_string())));
    assert!(logs.contains(&(LogLevel::Debug, "details".to_string())));
    assert!(host.close().expect("exit").success());
}

#[test]
fn errors_are_typed_and_the_plugin_goes_on() {
    let dir = commonjs_package();
    let mut host = start(&dir.path().join("index.js"));
    let cases = [
        ("fail", "plugin_error", "TypeError: bad thing"),
        (
            "failCustom",
            "plugin_error",
            "ValidationError: field x is required",
        ),
        ("throwString", "plugin_error", "Uncaught plain text"),
        ("reject", "plugin_error", "Error: async failure"),
        ("never", "plugin_error", "never settles"),
        ("bigint", "invalid_output", "no JSON form"),
        ("missing", "unknown_method", "undefined, not a function"),
        ("greeting", "unknown_method", "string, not a function"),
        ("toString", "unknown_method", "inherited from Object"),
        ("constructor", "unknown_method", "not a method"),
        ("nested.__proto__.x", "unknown_method", "not a method"),
        ("nested.nowhere.x", "unknown_method", "not an object"),
        ("", "unknown_method", "name a method"),
    ];
    for (method, code, text) in cases {
        let (c, m) = err(&mut host, method, "{}", 0);
        assert_eq!(c, code, "{method}: {m}");
        assert!(m.contains(text), "{method}: {m}");
    }
    let (c, m) = err(&mut host, "greet", "{not json", 0);
    assert_eq!(c, "invalid_input", "{m}");
    assert_eq!(ok(&mut host, "later", "1"), json!(3), "still serving");
    assert!(host.close().expect("exit").success());
}

#[test]
fn es_module_default_class_works_too() {
    let dir = package(&[
        (
            "index.mjs",
            "import { twice } from './math.js';\nexport default class P {\n  constructor(s) { this.k = s.k; }\n  run(x) { return twice(x) + this.k; }\n}\n",
        ),
        ("math.js", "export function twice(x) { return 2 * x; }\n"),
    ]);
    let mut host = start_with(&dir.path().join("index.mjs"), r#"{"k": 1}"#);
    assert_eq!(ok(&mut host, "run", "20"), json!(41));
    assert!(host.close().expect("exit").success());
}

const RUNAWAY: &str = r#"
class Runaway {
  constructor() { this.kept = []; }
  spin() { for (;;) {} }
  async spinLater() { await null; for (;;) {} }
  spinCatching() { for (;;) { try { for (;;) {} } catch (e) {} } }
  bomb() { const a = []; for (;;) { a.push(new Array(100000).fill(1)); } }
  bombMap() { const m = new Map(); for (let i = 0; ; i++) m.set(i, { i, s: "v" + i }); }
  bombCatching() {
    const a = [];
    try { for (;;) a.push(new Array(100000).fill(1)); }
    catch (e) { throw new Error("caught and rethrown: " + e.message); }
  }
  recurse() { const f = (n) => f(n + 1) + 1; return f(0); }
  ok() { return "fine"; }
}
module.exports = Runaway;
"#;

#[test]
fn an_infinite_loop_is_stopped_at_the_deadline_and_the_next_call_works() {
    let dir = package(&[("index.js", RUNAWAY)]);
    let mut host = start(&dir.path().join("index.js"));
    for method in ["spin", "spinLater", "spinCatching"] {
        let (code, message) = err(&mut host, method, "", 300);
        assert_eq!(code, "timeout", "{method}: {message}");
        assert_eq!(ok(&mut host, "ok", ""), json!("fine"), "after {method}");
    }
    assert!(host.close().expect("exit").success());
}

#[test]
fn a_memory_bomb_meets_the_engine_limit_and_the_next_call_works() {
    let dir = package(&[("index.js", RUNAWAY)]);
    let mut host = start(&dir.path().join("index.js"));
    for method in ["bomb", "bombMap", "bombCatching"] {
        let (code, message) = err(&mut host, method, "", 20_000);
        assert_eq!(code, "memory_limit_exceeded", "{method}: {message}");
        assert!(message.contains("MiB"), "{message}");
        assert_eq!(ok(&mut host, "ok", ""), json!("fine"), "after {method}");
    }
    let (code, message) = err(&mut host, "recurse", "", 20_000);
    assert_eq!(code, "plugin_error", "{message}");
    assert!(message.contains("RangeError"), "{message}");
    assert_eq!(ok(&mut host, "ok", ""), json!("fine"));
    // The child is the same process throughout: it survived.
    assert!(host.close().expect("exit").success());
}

const HOSTILE: &str = r#"
class Hostile {
  globals() {
    return ["std", "os", "process", "require", "module", "Deno", "Bun", "fetch",
            "XMLHttpRequest", "WebSocket", "setTimeout", "scriptArgs", "print"]
      .filter((name) => typeof globalThis[name] !== "undefined");
  }
  requireBuiltin(name) { return require(name); }
  requireOutside() { return require("../../../../etc/passwd"); }
  async importBuiltin(name) { return await import(name); }
  async importAbsolute() { return await import("/etc/passwd"); }
  evalHost() { return eval("typeof std + typeof os + typeof globalThis.require"); }
  functionCtor() { return Function("return typeof this.std + typeof this.os")(); }
}
module.exports = Hostile;
"#;

#[test]
fn hostile_scripts_find_no_host_api() {
    let dir = package(&[("index.js", HOSTILE)]);
    let mut host = start(&dir.path().join("index.js"));
    assert_eq!(
        ok(&mut host, "globals", ""),
        json!([]),
        "no host object is defined globally"
    );
    for name in [
        "fs",
        "os",
        "std",
        "child_process",
        "net",
        "qjs:os",
        "/etc/passwd",
    ] {
        let (code, message) = err(&mut host, "requireBuiltin", &json!(name).to_string(), 0);
        assert_eq!(code, "plugin_error", "{name}: {message}");
        assert!(message.contains("cannot load"), "{name}: {message}");
    }
    let (code, message) = err(&mut host, "requireOutside", "", 0);
    assert_eq!(code, "plugin_error");
    assert!(message.contains("cannot load"), "{message}");
    for name in ["os", "std", "qjs:std", "fs"] {
        let (code, message) = err(&mut host, "importBuiltin", &json!(name).to_string(), 0);
        assert_eq!(code, "plugin_error", "{name}: {message}");
        assert!(message.contains("cannot load"), "{name}: {message}");
    }
    let (code, message) = err(&mut host, "importAbsolute", "", 0);
    assert_eq!(code, "plugin_error", "{message}");
    assert_eq!(
        ok(&mut host, "evalHost", ""),
        json!("undefinedundefinedundefined")
    );
    assert_eq!(
        ok(&mut host, "functionCtor", ""),
        json!("undefinedundefined")
    );
    assert!(host.close().expect("exit").success());
}

/// A failure before Ready: no Ready, a reason on stderr, a non-zero exit.
fn start_fails(entry: &Path) {
    let mut host = spawn(entry);
    let result = host.handshake(Init {
        version: 1,
        max_frame: DEFAULT_MAX_FRAME,
        config: b"{}".to_vec(),
        limits: LIMITS,
    });
    assert!(result.is_err(), "{}: started", entry.display());
    let status = host.wait().expect("exit");
    assert!(!status.success(), "{}: {status}", entry.display());
}

#[test]
fn scripts_that_cannot_start_fail_before_ready() {
    let dir = package(&[
        ("syntax.js", "class {"),
        ("noclass.js", "module.exports = { notAClass: true };"),
        ("arrow.js", "module.exports = () => 1;"),
        (
            "ctor.js",
            "module.exports = class { constructor() { throw new Error('no'); } };",
        ),
        ("loops.js", "for (;;) {}"),
    ]);
    for file in [
        "syntax.js",
        "noclass.js",
        "arrow.js",
        "ctor.js",
        "loops.js",
        "missing.js",
    ] {
        start_fails(&dir.path().join(file));
    }
}
