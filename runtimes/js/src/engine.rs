//! One QuickJS runtime and context per child, the plugin's instance in it,
//! and a call: walk the method path, pass the input, settle the Promise,
//! answer with JSON. How a call can fail, and the reply each failure gets:
//!
//! | what happened | reply code |
//! |---|---|
//! | the script threw or its Promise rejected | `plugin_error`, "Name: message" |
//! | an allocation passed the engine's limit ([`crate::heap`]) | `memory_limit_exceeded` |
//! | the call ran past its deadline (the interrupt handler stopped it) | `timeout` |
//! | the method path names no function | `unknown_method` |
//! | the input is not JSON | `invalid_input` |
//! | the result has no JSON form (a BigInt, a cycle) | `invalid_output` |
//! | a host service's error left uncaught ([`crate::services`]) | the service's code |
//!
//! A Promise waiting for a host service is driven here: when the script
//! has no job left to run, [`Services::pump`] sends its requests and waits
//! for an answer, and the loop goes on with the jobs that answer starts.
//!
//! After a failure the runtime collects garbage, so what the failed call
//! allocated is back before the next call starts: the child survives its
//! memory bombs and infinite loops, and the host does not restart it.

use crate::console::{self, SharedLog};
use crate::heap::{self, CountingAllocator, HeapState};
use crate::module::{self, CommonJs, ModuleKind, Package, PackageLoader, PackageResolver};
use crate::services::Services;
use corral_sdk::{Context, Error, Event, InitInfo, codes};
use rquickjs::function::{Constructor, This};
use rquickjs::promise::PromiseState;
use rquickjs::{Ctx, Function, Object, Persistent, Promise, Value};
use std::mem::ManuallyDrop;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The script's stack: well inside the main thread's 8 MiB, so deep
/// recursion is a RangeError and not a crash.
const MAX_STACK: usize = 4 << 20;

/// Path segments that never name a plugin method: walking them would
/// reach the class or the prototype machinery instead.
const RESERVED_SEGMENTS: &[&str] = &["constructor", "prototype", "__proto__"];

/// Reply codes besides the SDK's own.
pub mod reply_codes {
    /// The script threw, or its Promise rejected.
    pub const PLUGIN_ERROR: &str = "plugin_error";
    /// The script's heap reached the engine's limit.
    pub const MEMORY_LIMIT_EXCEEDED: &str = "memory_limit_exceeded";
    /// The call ran past its deadline and was interrupted.
    pub const TIMEOUT: &str = "timeout";
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the JavaScript engine: {0}")]
    Engine(String),
    #[error("cannot load the plugin: {0}")]
    Load(#[from] module::LoadError),
    #[error("{entry}: {reason}")]
    Script { entry: String, reason: String },
}

/// When the running call must stop, shared with the interrupt handler
/// (which QuickJS calls every few thousand instructions).
#[derive(Debug)]
struct Clock {
    epoch: Instant,
    /// Microseconds after `epoch`; `u64::MAX` when no call is running or
    /// the call has no deadline.
    deadline_us: AtomicU64,
    /// The handler stopped the script since this was last cleared.
    fired: AtomicBool,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
            deadline_us: AtomicU64::new(u64::MAX),
            fired: AtomicBool::new(false),
        }
    }

    fn arm(&self, deadline: Option<Instant>) {
        let us = deadline.map_or(u64::MAX, |d| {
            u64::try_from(d.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
        });
        self.fired.store(false, Ordering::Relaxed);
        self.deadline_us.store(us, Ordering::Relaxed);
    }

    fn disarm(&self) -> bool {
        self.deadline_us.store(u64::MAX, Ordering::Relaxed);
        self.fired.swap(false, Ordering::Relaxed)
    }

    /// The interrupt handler: true stops the script with an exception it
    /// cannot catch.
    fn expired(&self) -> bool {
        let deadline = self.deadline_us.load(Ordering::Relaxed);
        if deadline == u64::MAX {
            return false;
        }
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        if now >= deadline {
            self.fired.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// How a call failed inside the engine, before it is classified.
enum Failure {
    /// An exception, described as "Name: message".
    Thrown(String),
    UnknownMethod(String),
    InvalidInput(String),
    InvalidOutput(String),
    /// A host service's error the script did not catch: (code, message).
    Service(String, String),
    Unsettled,
}

/// The engine and the plugin's instance in it. Its JS half is never
/// freed: the child exits when serving ends, and QuickJS insists that
/// every object be gone before a runtime is freed, which the Rust closures
/// JS functions hold (`require`, `console`) cannot promise at that point.
/// The OS takes the memory back either way.
pub struct Engine {
    runtime: ManuallyDrop<rquickjs::Runtime>,
    context: ManuallyDrop<rquickjs::Context>,
    instance: ManuallyDrop<Persistent<Object<'static>>>,
    heap: Arc<HeapState>,
    clock: Arc<Clock>,
    log: SharedLog,
    services: Services,
    /// The plugin's call timeout, for work outside calls (start-up, events).
    call_timeout: Option<Duration>,
}

impl Engine {
    /// Creates the engine under the limits of `init`, loads `entry` and
    /// instantiates its class with the settings. Loading and the
    /// constructor get one call timeout between them.
    pub fn start(entry: &Path, init: &InitInfo<'_>) -> Result<Engine, StartError> {
        let engine_err = |e: rquickjs::Error| StartError::Engine(e.to_string());
        let heap = HeapState::new(heap::engine_limit(init.limits.memory_bytes, init.max_frame));
        let runtime = rquickjs::Runtime::new_with_alloc(CountingAllocator {
            state: Arc::clone(&heap),
        })
        .map_err(engine_err)?;
        runtime.set_max_stack_size(MAX_STACK);
        let clock = Arc::new(Clock::new());
        let watch = Arc::clone(&clock);
        runtime.set_interrupt_handler(Some(Box::new(move || watch.expired())));
        let dir = entry.parent().unwrap_or(Path::new("."));
        let package = Package::new(dir)?;
        runtime.set_loader(
            PackageResolver(package.clone()),
            PackageLoader(package.clone()),
        );
        let context = rquickjs::Context::full(&runtime).map_err(engine_err)?;
        let log = SharedLog::default();

        let timeout = (init.limits.call_timeout_ms > 0)
            .then(|| Instant::now().checked_add(Duration::from_millis(init.limits.call_timeout_ms)))
            .flatten();
        clock.arm(timeout);
        let loaded = context.with(|ctx| instantiate(&ctx, &package, entry, init.config, &log));
        let (loaded, services) = match loaded {
            Ok((instance, services)) => (Ok(instance), Some(services)),
            Err(e) => (Err(e), None),
        };
        let interrupted = clock.disarm();
        let refused = heap.take_refused();
        // What the script logged while loading goes to stderr, which the
        // host keeps in the plugin's log: there is no call to attach it to.
        for (level, text) in log.borrow_mut().drain() {
            eprintln!("console.{}: {text}", level_name(level));
        }
        let instance = loaded.map_err(|reason| StartError::Script {
            entry: entry.display().to_string(),
            reason: if interrupted {
                format!("loading took longer than the call timeout ({reason})")
            } else if refused {
                format!("loading passed the script's memory limit ({reason})")
            } else {
                reason
            },
        })?;
        let services = services.ok_or_else(|| StartError::Engine("no host services".into()))?;
        Ok(Engine {
            runtime: ManuallyDrop::new(runtime),
            context: ManuallyDrop::new(context),
            instance: ManuallyDrop::new(instance),
            heap,
            clock,
            log,
            services,
            call_timeout: (init.limits.call_timeout_ms > 0)
                .then(|| Duration::from_millis(init.limits.call_timeout_ms)),
        })
    }

    /// Once the plugin is ready: requests the constructor made go out, and
    /// seed 001's `initialize(context)` runs with the `corral` object
    /// (its failure fails the start, as the constructor's does).
    pub fn ready(&mut self, ctx: &mut Context<'_>) -> Result<(), Error> {
        let instance = Persistent::clone(&self.instance);
        let services = &mut self.services;
        self.clock.arm(
            self.call_timeout
                .and_then(|t| Instant::now().checked_add(t)),
        );
        let outcome = self.context.with(|js| {
            let instance = instance.restore(&js).map_err(|e| describe_error(&js, e))?;
            let init: Value = instance
                .get("initialize")
                .map_err(|e| describe_error(&js, e))?;
            let result = match init.as_function() {
                Some(f) => {
                    let corral = services.corral(&js).map_err(|e| describe_error(&js, e))?;
                    f.call::<_, Value>((This(instance.clone()), corral))
                        .map_err(|e| describe_error(&js, e))?
                }
                None => Value::new_undefined(js.clone()),
            };
            if let Some(promise) = result.as_promise() {
                settle(&js, promise, Some((&mut *services, &mut *ctx)))
                    .map_err(|f| failure_text(f, "initialize(context)"))?;
            }
            drain(&js, services, ctx);
            Ok::<(), String>(())
        });
        self.clock.disarm();
        self.flush_log(ctx);
        outcome.map_err(|e| {
            Error::new(
                reply_codes::PLUGIN_ERROR,
                format!("initialize(context) failed: {e}"),
            )
        })
    }

    /// One event for the script's subscriptions; its handlers run to the
    /// end (host services included) before the next call.
    pub fn event(&mut self, ctx: &mut Context<'_>, event: &Event) -> Result<(), Error> {
        let services = &mut self.services;
        self.clock.arm(
            self.call_timeout
                .and_then(|t| Instant::now().checked_add(t)),
        );
        let outcome = self.context.with(|js| {
            services
                .deliver(&js, event)
                .map_err(|e| describe_error(&js, e))?;
            drain(&js, services, ctx);
            Ok::<(), String>(())
        });
        self.clock.disarm();
        self.flush_log(ctx);
        outcome.map_err(|e| Error::new(reply_codes::PLUGIN_ERROR, e))
    }

    fn flush_log(&self, ctx: &mut Context<'_>) {
        for (level, text) in self.log.borrow_mut().drain() {
            ctx.log(level, text);
        }
    }

    /// Serves one call on the instance.
    pub fn call(&mut self, ctx: &mut Context<'_>, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.heap.take_refused();
        self.clock.arm(ctx.deadline());
        let method = ctx.method().to_string();
        let instance = Persistent::clone(&self.instance);
        let services = &mut self.services;
        let outcome = self.context.with(|js| {
            let outcome = invoke(&js, instance, &method, input, &mut *services, &mut *ctx);
            // Requests nobody awaited (`eventBus.emit`) are answered before
            // the reply, so none is left behind.
            drain(&js, services, ctx);
            outcome
        });
        let interrupted = self.clock.disarm();
        let refused = self.heap.take_refused();
        for (level, text) in self.log.borrow_mut().drain() {
            ctx.log(level, text);
        }
        let failure = match outcome {
            Ok(output) => return Ok(output),
            Err(failure) => failure,
        };
        // Give back what the failed call left behind (cycles included).
        self.runtime.run_gc();
        Err(self.classify(failure, &method, refused, interrupted))
    }

    fn classify(&self, failure: Failure, method: &str, refused: bool, interrupted: bool) -> Error {
        if refused {
            let limit = self.heap.limit().unwrap_or(usize::MAX);
            return Error::new(
                reply_codes::MEMORY_LIMIT_EXCEEDED,
                format!(
                    "`{method}` reached the script's memory limit of {} MiB (set just under the plugin's memory limit)",
                    limit >> 20
                ),
            );
        }
        if interrupted {
            return Error::new(
                reply_codes::TIMEOUT,
                format!("`{method}` ran past the call's deadline and was stopped"),
            );
        }
        match failure {
            Failure::Thrown(text) => Error::new(reply_codes::PLUGIN_ERROR, text),
            Failure::UnknownMethod(why) => Error::new(codes::UNKNOWN_METHOD, why),
            Failure::InvalidInput(why) => Error::new(codes::INVALID_INPUT, why),
            Failure::InvalidOutput(why) => Error::new(codes::INVALID_OUTPUT, why),
            Failure::Service(code, message) => Error::new(code, message),
            Failure::Unsettled => Error::new(
                reply_codes::PLUGIN_ERROR,
                format!(
                    "`{method}` returned a Promise that never settles: nothing is left to run that could resolve it"
                ),
            ),
        }
    }
}

fn level_name(level: corral_sdk::LogLevel) -> &'static str {
    use corral_sdk::LogLevel;
    match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        _ => "log",
    }
}

/// Loads the entry, finds its class and constructs it with the settings.
fn instantiate<'js>(
    ctx: &Ctx<'js>,
    package: &Package,
    entry: &Path,
    config: &[u8],
    log: &SharedLog,
) -> Result<(Persistent<Object<'static>>, Services), String> {
    let thrown = |e: rquickjs::Error| describe_error(ctx, e);
    console::install(ctx, log).map_err(thrown)?;
    let services = Services::install(ctx).map_err(thrown)?;
    let entry = entry
        .canonicalize()
        .map_err(|e| format!("{}: {e}", entry.display()))?;
    let source = package.read(&entry).map_err(|e| e.to_string())?;
    let exported = match module::kind_of(&entry) {
        Some(ModuleKind::Es) => load_es_module(ctx, &entry, source)?,
        Some(ModuleKind::CommonJs) => load_commonjs(ctx, package, &entry, None)?,
        None => {
            // Either: a file that does not compile as a CommonJS body but
            // does as a module (import/export statements, top-level
            // await) is a module.
            let loader = CommonJs::new(package.clone());
            match loader.compile(ctx, &entry, &source) {
                Ok(wrapper) => load_commonjs(ctx, package, &entry, Some((loader, wrapper)))?,
                Err(e) => {
                    let as_commonjs = describe_error(ctx, e);
                    load_es_module(ctx, &entry, source).map_err(|as_module| {
                        format!("as CommonJS: {as_commonjs}; as an ES module: {as_module}")
                    })?
                }
            }
        }
    };
    let class = exported
        .as_function()
        .filter(|f| f.is_constructor())
        .cloned()
        .ok_or_else(|| {
            format!(
                "the entry must export a class (module.exports = MyPlugin, or export default class MyPlugin), but it exports {}",
                exported.type_name()
            )
        })?;
    let class = Constructor::from_value(class.into_value())
        .map_err(|_| "the exported class cannot be constructed".to_string())?;
    let settings = ctx.json_parse(config.to_vec()).map_err(thrown)?;
    let corral = services.corral(ctx).map_err(thrown)?;
    let instance: Object = class.construct((settings, corral)).map_err(thrown)?;
    Ok((Persistent::save(ctx, instance), services))
}

/// An ES module's default export.
fn load_es_module<'js>(ctx: &Ctx<'js>, entry: &Path, source: String) -> Result<Value<'js>, String> {
    let thrown = |e: rquickjs::Error| describe_error(ctx, e);
    let name = entry.display().to_string();
    let declared = rquickjs::Module::declare(ctx.clone(), name, source).map_err(thrown)?;
    let (evaluated, promise) = declared.eval().map_err(thrown)?;
    settle(ctx, &promise, None).map_err(|f| failure_text(f, "loading the module"))?;
    let namespace = evaluated.namespace().map_err(thrown)?;
    namespace.get::<_, Value>("default").map_err(thrown)
}

/// A CommonJS entry's `module.exports`, or its `default` when that is an
/// object's (a transpiled `export default`).
fn load_commonjs<'js>(
    ctx: &Ctx<'js>,
    package: &Package,
    entry: &Path,
    compiled: Option<(std::rc::Rc<CommonJs>, Function<'js>)>,
) -> Result<Value<'js>, String> {
    let thrown = |e: rquickjs::Error| describe_error(ctx, e);
    let exports = match compiled {
        Some((loader, wrapper)) => loader.run(ctx, entry, wrapper),
        None => CommonJs::new(package.clone()).load(ctx, entry),
    }
    .map_err(thrown)?;
    match exports.as_object() {
        Some(o) if !exports.is_function() => {
            let default: Value = o.get("default").map_err(thrown)?;
            Ok(if default.is_undefined() {
                exports
            } else {
                default
            })
        }
        _ => Ok(exports),
    }
}

/// Runs one call on the instance and returns the JSON of its result.
fn invoke<'js>(
    ctx: &Ctx<'js>,
    instance: Persistent<Object<'static>>,
    method: &str,
    input: &[u8],
    services: &mut Services,
    sdk: &mut Context<'_>,
) -> Result<Vec<u8>, Failure> {
    let thrown = |e: rquickjs::Error| Failure::Thrown(describe_error(ctx, e));
    let instance = instance.restore(ctx).map_err(thrown)?;
    let (holder, function) = resolve_method(ctx, instance, method)?;
    let argument = if input.iter().all(u8::is_ascii_whitespace) {
        Value::new_undefined(ctx.clone())
    } else {
        ctx.json_parse(input.to_vec()).map_err(|e| {
            Failure::InvalidInput(format!("the input is not JSON: {}", describe_error(ctx, e)))
        })?
    };
    let result: Value = function
        .call((This(holder), argument))
        .map_err(|e| thrown_failure(ctx, e, services))?;
    let result = match result.as_promise() {
        Some(promise) => settle(ctx, promise, Some((&mut *services, &mut *sdk)))?,
        None => result,
    };
    match ctx.json_stringify(result) {
        Ok(Some(json)) => json
            .to_string()
            .map(String::into_bytes)
            .map_err(|e| Failure::InvalidOutput(e.to_string())),
        // `undefined` (and functions) have no JSON: the output is null.
        Ok(None) => Ok(b"null".to_vec()),
        Err(e) => Err(Failure::InvalidOutput(format!(
            "the result has no JSON form: {}",
            describe_error(ctx, e)
        ))),
    }
}

/// `a.b.c` on the instance: the function at the end, and the object that
/// holds it (its `this`).
fn resolve_method<'js>(
    ctx: &Ctx<'js>,
    instance: Object<'js>,
    method: &str,
) -> Result<(Object<'js>, Function<'js>), Failure> {
    let unknown = |why: String| Failure::UnknownMethod(format!("no method `{method}`: {why}"));
    let segments: Vec<&str> = method.split('.').collect();
    if method.is_empty() || segments.iter().any(|s| s.is_empty()) {
        return Err(unknown(
            "name a method of the plugin's class, like `greet` or `codeGeneration.generateCode`"
                .into(),
        ));
    }
    if let Some(s) = segments.iter().find(|s| RESERVED_SEGMENTS.contains(s)) {
        return Err(unknown(format!("`{s}` is not a method")));
    }
    let thrown = |e: rquickjs::Error| Failure::Thrown(describe_error(ctx, e));
    let object_prototype: Object = ctx
        .globals()
        .get::<_, Object>("Object")
        .and_then(|o| o.get("prototype"))
        .map_err(thrown)?;
    let (last, path) = segments
        .split_last()
        .ok_or_else(|| unknown("empty".into()))?;
    let mut holder = instance;
    for (i, segment) in path.iter().enumerate() {
        let next: Value = holder.get(*segment).map_err(thrown)?;
        holder = next
            .into_object()
            .ok_or_else(|| unknown(format!("`{}` is not an object", segments[..=i].join("."))))?;
    }
    let value: Value = holder.get(*last).map_err(thrown)?;
    let Some(function) = value.as_function().cloned() else {
        return Err(unknown(format!(
            "it is {}, not a function",
            value.type_name()
        )));
    };
    // Object.prototype's own methods (toString, valueOf, ...) are not the
    // plugin's.
    let inherited: Value = object_prototype.get(*last).map_err(thrown)?;
    if inherited.as_function().is_some() && inherited == value {
        return Err(unknown(
            "it is inherited from Object, not the plugin's".into(),
        ));
    }
    Ok((holder, function))
}

/// Runs the job queue until `promise` settles; its value, or the failure.
/// With `services`, a Promise waiting for the host is driven too: when no
/// job is left, the oldest request's answer is waited for.
fn settle<'js>(
    ctx: &Ctx<'js>,
    promise: &Promise<'js>,
    mut services: Option<(&mut Services, &mut Context<'_>)>,
) -> Result<Value<'js>, Failure> {
    loop {
        match promise.state() {
            PromiseState::Resolved => {
                return promise
                    .result::<Value>()
                    .unwrap_or_else(|| Ok(Value::new_undefined(ctx.clone())))
                    .map_err(|e| Failure::Thrown(describe_error(ctx, e)));
            }
            PromiseState::Rejected => {
                let e = promise
                    .result::<Value>()
                    .map(|r| r.err())
                    .and_then(|e| e)
                    .unwrap_or(rquickjs::Error::Exception);
                return Err(match services.as_mut() {
                    Some((services, _)) => thrown_failure(ctx, e, services),
                    None => Failure::Thrown(describe_error(ctx, e)),
                });
            }
            PromiseState::Pending => {
                if ctx.execute_pending_job() {
                    continue;
                }
                let pumped = match services.as_mut() {
                    Some((services, sdk)) => services
                        .pump(ctx, sdk)
                        .map_err(|e| Failure::Thrown(describe_error(ctx, e)))?,
                    None => false,
                };
                if !pumped {
                    return Err(Failure::Unsettled);
                }
            }
        }
    }
}

/// Runs jobs and answers requests until the script waits for nothing: what
/// an event handler started, or requests a method did not await.
fn drain(js: &Ctx<'_>, services: &mut Services, sdk: &mut Context<'_>) {
    loop {
        while js.execute_pending_job() {}
        if !services.busy() {
            return;
        }
        match services.pump(js, sdk) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                let text = describe_error(js, e);
                sdk.log(
                    corral_sdk::LogLevel::Error,
                    format!("settling a host request failed: {text}"),
                );
                return;
            }
        }
    }
}

/// What a thrown value means: a host service's error keeps its code.
fn thrown_failure(ctx: &Ctx<'_>, e: rquickjs::Error, services: &Services) -> Failure {
    if !matches!(e, rquickjs::Error::Exception) {
        return Failure::Thrown(e.to_string());
    }
    let value = ctx.catch();
    if let Some((code, message)) = services.service_code(ctx, &value) {
        return Failure::Service(code, message);
    }
    if let Some(text) = console::error_text(&value) {
        return Failure::Thrown(text);
    }
    Failure::Thrown(format!("Uncaught {}", console::describe(ctx, &value)))
}

fn failure_text(failure: Failure, what: &str) -> String {
    match failure {
        Failure::Service(code, message) => format!("{code}: {message}"),
        Failure::Thrown(t)
        | Failure::UnknownMethod(t)
        | Failure::InvalidInput(t)
        | Failure::InvalidOutput(t) => t,
        Failure::Unsettled => format!("{what} waits for something that never comes"),
    }
}

/// An engine error as "Name: message": the thrown value when there is
/// one, else the binding's own description.
fn describe_error(ctx: &Ctx<'_>, e: rquickjs::Error) -> String {
    if !matches!(e, rquickjs::Error::Exception) {
        return e.to_string();
    }
    let value = ctx.catch();
    if let Some(text) = console::error_text(&value) {
        return text;
    }
    // `throw "text"` or `throw 42`: not an Error, but still the message.
    format!("Uncaught {}", console::describe(ctx, &value))
}
