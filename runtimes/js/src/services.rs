//! Host services for the script (PROTOCOL.md section 9): the `corral`
//! object of `runtimes/node/services.js`, and the Rust half that sends its
//! requests through the SDK and settles their Promises.
//!
//! services.js is the Node runtime's own module (its bootstrap `require`s
//! it), so both runtimes give plugins one implementation of
//! corral-plugin.d.ts. It is CommonJS in plain ECMAScript: this engine has
//! no module loader (and gets none), so [`SOURCE`] wraps it in a function
//! that provides `module`/`exports` and calls its `createHostServices`
//! with what differs here: the one native binding `send`, logs through
//! `console.error`, and the module's own Uint8Array bytes for S3 bodies.
//!
//! The script's only native binding queues a request here; nothing is sent
//! from inside JavaScript. The engine's loop ([`crate::engine`]) calls
//! [`Services::pump`] whenever the script has no job left to run: it sends
//! what was queued (with the id of the call being served, which the SDK's
//! context carries) and waits for the oldest answer. While the SDK waits it
//! answers Pings, queues Calls and keeps deliveries, and a Cancel of the
//! call ends the wait as `cancelled`; the answer then settles the script's
//! Promise and the loop runs the jobs that follow. Before Ready there is no
//! context to send with: requests wait in the queue until the plugin is ready.

use corral_sdk::{Context, Event, RequestId};
use rquickjs::{Ctx, Function, Object, Persistent, Value};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

/// The script side, evaluated once per engine: a function of `send` that
/// returns `{ corral, settle, deliver, serviceCode, ... }`. The shim opens on
/// the module's first line, so line numbers in its errors stay the file's.
const SOURCE: &str = concat!(
    "(function (send) { const module = { exports: {} }; (function (module, exports) {",
    include_str!("../../node/services.js"),
    "\n})(module, module.exports);\n",
    "return module.exports.createHostServices({ send, log: (message) => console.error(message) });\n})",
);

/// Requests the script may queue before the loop sends them. The host
/// bounds what is in flight (answering `overloaded`); this bounds the
/// queue, which lives outside the script's heap and its limit.
const MAX_QUEUED: usize = 1024;

/// A request the script made, not yet sent.
#[derive(Debug)]
struct Outgoing {
    script_id: f64,
    service: String,
    operation: String,
    payload: String,
}

type Queue = Rc<RefCell<VecDeque<Outgoing>>>;

pub struct Services {
    queue: Queue,
    /// Sent and not yet answered: the script's id and the SDK's.
    in_flight: VecDeque<(f64, RequestId)>,
    /// `{ corral, settle, deliver, serviceCode, ... }` from services.js.
    api: Persistent<Object<'static>>,
}

impl Services {
    /// Evaluates services.js and binds its one native function.
    pub fn install(ctx: &Ctx<'_>) -> rquickjs::Result<Services> {
        let queue: Queue = Rc::default();
        let sink = Rc::clone(&queue);
        let send = Function::new(
            ctx.clone(),
            move |ctx: Ctx<'_>,
                  script_id: f64,
                  service: String,
                  operation: String,
                  payload: String| {
                let mut queue = sink.borrow_mut();
                if queue.len() >= MAX_QUEUED {
                    return Err(rquickjs::Exception::throw_range(
                        &ctx,
                        &format!("more than {MAX_QUEUED} host requests are waiting to be sent"),
                    ));
                }
                queue.push_back(Outgoing {
                    script_id,
                    service,
                    operation,
                    payload,
                });
                Ok(())
            },
        )?;
        let factory: Function = ctx.eval(SOURCE)?;
        let api: Object = factory.call((send,))?;
        Ok(Services {
            queue,
            in_flight: VecDeque::new(),
            api: Persistent::save(ctx, api),
        })
    }

    /// The `corral` object, for the constructor and seed 001's `initialize`.
    pub fn corral<'js>(&self, ctx: &Ctx<'js>) -> rquickjs::Result<Value<'js>> {
        self.api.clone().restore(ctx)?.get("corral")
    }

    /// True while a request is queued or waits for its answer.
    pub fn busy(&self) -> bool {
        !self.in_flight.is_empty() || !self.queue.borrow().is_empty()
    }

    /// Sends what the script queued, then waits for the oldest answer and
    /// settles its Promise. False when nothing was settled (nothing to
    /// wait for); a request refused before it was sent counts as settled.
    pub fn pump(&mut self, js: &Ctx<'_>, sdk: &mut Context<'_>) -> rquickjs::Result<bool> {
        let api = self.api.clone().restore(js)?;
        let settle: Function = api.get("settle")?;
        let queued: Vec<Outgoing> = self.queue.borrow_mut().drain(..).collect();
        let mut settled = false;
        for out in queued {
            let payload = serde_json::from_str::<serde_json::Value>(&out.payload)
                .unwrap_or(serde_json::Value::Null);
            match sdk.send_request(&out.service, &out.operation, &payload) {
                Ok(id) => self.in_flight.push_back((out.script_id, id)),
                Err(e) => {
                    settle_err(&settle, out.script_id, &e)?;
                    settled = true;
                }
            }
        }
        if settled {
            return Ok(true); // the jobs that follow may settle the rest
        }
        let Some((script_id, id)) = self.in_flight.pop_front() else {
            return Ok(false);
        };
        match sdk.wait_response(id) {
            Ok(body) => settle.call::<_, ()>((script_id, body.to_string()))?,
            Err(e) => settle_err(&settle, script_id, &e)?,
        }
        Ok(true)
    }

    /// Hands one delivery to the subscribed handlers.
    pub fn deliver(&self, js: &Ctx<'_>, event: &Event) -> rquickjs::Result<()> {
        let api = self.api.clone().restore(js)?;
        let deliver: Function = api.get("deliver")?;
        let payload = String::from_utf8_lossy(&event.payload).into_owned();
        deliver.call((event.topic.as_str(), event.from.as_str(), payload))
    }

    /// `(code, message)` when `thrown` is a service's error the script left
    /// uncaught: the call is then answered with the service's code.
    pub fn service_code<'js>(
        &self,
        js: &Ctx<'js>,
        thrown: &Value<'js>,
    ) -> Option<(String, String)> {
        let api = self.api.clone().restore(js).ok()?;
        let code: Function = api.get("serviceCode").ok()?;
        let pair: Option<Vec<String>> = code.call((thrown.clone(),)).ok()?;
        match pair.as_deref() {
            Some([code, message]) => Some((code.clone(), message.clone())),
            _ => None,
        }
    }
}

fn settle_err(
    settle: &Function<'_>,
    script_id: f64,
    e: &corral_sdk::ServiceError,
) -> rquickjs::Result<()> {
    settle.call::<_, ()>((
        script_id,
        Value::new_null(settle.ctx().clone()),
        e.code.as_str(),
        e.message.as_str(),
        e.details.to_string(),
    ))
}
