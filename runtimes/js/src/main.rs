//! `corral-js ENTRY`: the embedded JavaScript runtime. corral starts it in
//! the plugin's sandbox with the plugin's `index.js` (or whatever the
//! manifest names) as its one argument and the child channel on fd 3; it
//! speaks the child protocol through `corral_sdk` and serves the class the
//! entry exports (seed 000's contract):
//!
//! 1. Hello goes out at once; nothing of the script runs before the host's
//!    Init, because the engine's limits come from it.
//! 2. On Init ([`heap`]): a QuickJS runtime whose allocator refuses to grow
//!    past a limit just under the plugin's memory limit, so a script that
//!    allocates without end meets a typed `memory_limit_exceeded` reply
//!    instead of the cgroup's OOM killer; and an interrupt handler
//!    ([`engine`]) that stops a call at its deadline.
//! 3. The entry is loaded ([`module`]) as CommonJS or as an ES module,
//!    with only the package's own files reachable by `require`/`import`,
//!    and its exported class is instantiated once with the settings.
//!    A failure here is a failed start: no Ready, the reason on stderr.
//! 4. Each Call walks its method path on the instance
//!    (`codeGeneration.generateCode`), passes the parsed input, and
//!    answers with the JSON of the result (or of what its Promise
//!    resolves to). A thrown error is `plugin_error` with "Name: message";
//!    `console.*` becomes Log records ([`console`]).
//! 5. Host services ([`services`], protocol version 2): the constructor's
//!    second argument is the `corral` object, the Node runtime's API and
//!    code (runtimes/node/services.js, typed by corral-plugin.d.ts); its
//!    requests go out through the SDK and settle their Promises from the
//!    engine's loop. Once ready, a
//!    seed-001 `initialize(context)` runs with it; deliveries run the
//!    subscribed handlers between calls. It is the only host API.
//!
//! QuickJS is compiled without its `quickjs-libc` half, so the `std` and
//! `os` modules, files, sockets and processes do not exist in this binary
//! at all; the sandbox around it is the second wall, not the first.

mod console;
mod engine;
mod heap;
mod module;
mod services;

use corral_sdk::{Context, Error, Event, InitInfo, Plugin};
use engine::Engine;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(entry), None) = (args.next(), args.next()) else {
        eprintln!("usage: corral-js ENTRY (the plugin's index.js); corral starts it");
        std::process::exit(64); // EX_USAGE
    };
    let entry = PathBuf::from(entry);
    // Announced in Hello; the host compares them with the manifest.
    let name = std::env::var("CORRAL_PLUGIN_NAME").unwrap_or_else(|_| default_name(&entry));
    let version = std::env::var("CORRAL_PLUGIN_VERSION").unwrap_or_else(|_| "0.0.0".into());

    let engine: Rc<RefCell<Option<Engine>>> = Rc::new(RefCell::new(None));
    let for_init = Rc::clone(&engine);
    let for_ready = Rc::clone(&engine);
    let for_events = Rc::clone(&engine);
    Plugin::new(name, version)
        .on_init(move |init: &InitInfo<'_>| {
            let started = Engine::start(&entry, init).map_err(|e| e.to_string())?;
            *for_init.borrow_mut() = Some(started);
            Ok(())
        })
        .on_ready(
            move |ctx: &mut Context<'_>| match for_ready.borrow_mut().as_mut() {
                Some(engine) => engine.ready(ctx),
                None => Ok(()),
            },
        )
        .on_event(move |ctx: &mut Context<'_>, event: &Event| {
            match for_events.borrow_mut().as_mut() {
                Some(engine) => engine.event(ctx, event),
                None => Ok(()),
            }
        })
        .fallback(move |ctx: &mut Context<'_>, input: &[u8]| {
            let mut engine = engine.borrow_mut();
            let engine = engine
                .as_mut()
                .ok_or_else(|| Error::new("not_ready", "the script was not loaded"))?;
            engine.call(ctx, input)
        })
        .serve()
}

/// The package directory's name: a bucket-layout plugin is named after
/// its folder.
fn default_name(entry: &std::path::Path) -> String {
    entry
        .parent()
        .and_then(|dir| dir.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "js".into())
}
