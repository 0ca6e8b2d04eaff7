// The `corral` object: the host's services (PROTOCOL.md section 9) as both
// JavaScript runtimes give them to a plugin, with the one contract of
// corral-plugin.d.ts. Loaded by the Node runtime (bootstrap.js requires it
// from its own directory, which the sandbox grants read-only) and embedded
// in corral-js (runtimes/js/src/services.rs includes this file and
// evaluates it with a `module`/`exports` shim).
//
// It is environment-neutral so that one copy serves both engines: plain
// ECMAScript only (no Buffer, no require, no AsyncLocalStorage, no atob,
// no console), and nothing global. What differs between the engines comes
// in through `host` (see createHostServices): how a request goes out, where
// a log line goes, and how S3 bodies become bytes.
//
// The parts:
//   1. errors: one class per code the host answers with;
//   2. pattern matching of deliveries (the host's rule);
//   3. bytes: base64 for S3 bodies without the engine's help;
//   4. createHostServices: requests and their settling, cancel, deliveries
//      to handlers, and the `corral` object (with seed 001's eventBus and
//      getDependency).
'use strict';

// ---- 1. errors ---------------------------------------------------------------

/**
 * A host service's refusal or failure: the class names of corral's
 * JavaScript client (`PermissionDeniedError`, `TimeoutError`, ...). Each
 * carries `code`, `message` and `details` (the API's whole error object,
 * whose keys, such as `permission` or `quota_bytes`, are also properties).
 */
class ServiceError extends Error {
  constructor(message, code, details) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.details = details || {};
    for (const key of Object.keys(this.details)) {
      if (key !== 'code' && key !== 'message' && !(key in this)) this[key] = this.details[key];
    }
  }
}

/** The class each code the host answers with stands for. */
const SERVICE_ERROR_CODES = Object.freeze({
  permission_denied: 'PermissionDeniedError',
  quota_exceeded: 'QuotaExceededError',
  rate_limited: 'RateLimitedError',
  payload_too_large: 'PayloadTooLargeError',
  service_unavailable: 'ServiceUnavailableError',
  overloaded: 'OverloadedError',
  invalid_input: 'InvalidInputError',
  invalid_config: 'ConfigurationError',
  plugin_not_found: 'PluginNotFoundError',
  not_loaded: 'NotLoadedError',
  not_found: 'NotFoundError',
  timeout: 'TimeoutError',
  crashed: 'CrashedError',
  plugin_error: 'PluginError',
  cancelled: 'CancelledError',
});

const errors = { ServiceError };
for (const code of Object.keys(SERVICE_ERROR_CODES)) {
  const name = SERVICE_ERROR_CODES[code];
  // A named class per code, so `err instanceof PermissionDeniedError` and
  // `err.name` both work.
  errors[name] = ({ [name]: class extends ServiceError {
    constructor(message, details) { super(message, code, details); }
  } })[name];
}
Object.freeze(errors);

/** The error an Err response stands for: its code's class, or a ServiceError keeping an unknown code. */
function serviceError(code, message, details) {
  const name = SERVICE_ERROR_CODES[code];
  return name ? new errors[name](message, details) : new ServiceError(message, code, details);
}

/** Whether an uncaught error is a service's: `[code, message]`, so the call is answered with its code. */
function serviceCode(err) {
  return err instanceof ServiceError ? [String(err.code), String(err.message)] : null;
}

// ---- 2. pattern matching -----------------------------------------------------

/** `*` matches any run of characters (`data:*` matches `data:saved`): the host's rule. */
function patternMatches(pattern, topic) {
  const parts = pattern.split('*');
  if (parts.length === 1) return pattern === topic;
  const first = parts[0];
  const last = parts[parts.length - 1];
  if (topic.length < first.length + last.length || !topic.startsWith(first) || !topic.endsWith(last)) {
    return false;
  }
  let at = first.length;
  const end = topic.length - last.length;
  for (const middle of parts.slice(1, -1)) {
    const found = topic.indexOf(middle, at);
    if (found < 0 || found + middle.length > end) return false;
    at = found + middle.length;
  }
  return true;
}

// ---- 3. bytes ----------------------------------------------------------------

// S3 bodies travel as base64 in the JSON payloads. The embedded engine has
// no atob/btoa and no Buffer, so these are the bytes helpers a host that
// offers nothing better gets (Node passes Buffer's instead).
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** A string (as UTF-8), a Uint8Array or an ArrayBuffer as bytes. */
function toBytes(body) {
  if (typeof body === 'string') {
    const utf8 = unescape(encodeURIComponent(body));
    const out = new Uint8Array(utf8.length);
    for (let i = 0; i < utf8.length; i++) out[i] = utf8.charCodeAt(i);
    return out;
  }
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new TypeError('an S3 body is a string, a Uint8Array or an ArrayBuffer');
}

function toBase64(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] || 0) << 8) | (bytes[i + 2] || 0);
    out += ALPHABET[(n >> 18) & 63] + ALPHABET[(n >> 12) & 63] +
      (i + 1 < bytes.length ? ALPHABET[(n >> 6) & 63] : '=') + (i + 2 < bytes.length ? ALPHABET[n & 63] : '=');
  }
  return out;
}

function fromBase64(text) {
  const clean = String(text || '').replace(/=+$/, '');
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let bits = 0;
  let value = 0;
  let at = 0;
  for (const ch of clean) {
    const v = ALPHABET.indexOf(ch);
    if (v < 0) throw new TypeError('the host sent an S3 body that is not base64');
    value = ((value << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[at++] = (value >> bits) & 0xff;
    }
  }
  return out.subarray(0, at);
}

/** S3 bodies as Uint8Array, in pure JavaScript. */
const portableBytes = Object.freeze({
  encode: (body) => toBase64(toBytes(body)),
  decode: (text) => fromBase64(text),
});

// ---- 4. the host's services ----------------------------------------------------

/** `options`' keys among `keys`, renamed by `rename`, without undefined values. */
function pick(options, keys, rename) {
  const out = {};
  for (const key of keys) {
    if (options && options[key] !== undefined) out[(rename && rename[key]) || key] = options[key];
  }
  return out;
}

const orNull = (value) => (value === undefined ? null : value);

/** "<Name>: <message>" for a failure to log; never throws. */
function describe(err) {
  try {
    return err instanceof Error ? `${err.name}: ${err.message}` : `Error: ${String(err)}`;
  } catch (_) {
    return 'Error: (a thrown value that cannot be described)';
  }
}

/** JSON text as a value, or `fallback` when it is not JSON. */
function parseJson(text, fallback) {
  try {
    return JSON.parse(text);
  } catch (_) {
    return fallback;
  }
}

/**
 * The services of one plugin process. `host` is what differs between the
 * engines:
 *   send(id, service, operation, payloadJson): sends (or queues) request
 *     `id`; what it returns tags the request with the call it serves (for
 *     cancelCall). It may throw (the request then fails with what it
 *     threw) or fail the request later with `fail(id, error)`;
 *   log(message, fields): an error worth the plugin's log (a failing event
 *     handler, an eventBus refusal nobody awaited); `fields` is an object
 *     of strings or undefined;
 *   bytes (optional): `{ encode(body) -> base64, decode(base64) -> bytes }`
 *     for S3 bodies; portable Uint8Array helpers by default;
 *   describe (optional): "<Name>: <message>" of a thrown value, for logs.
 * Returns the `corral` object and the functions the engine answers through.
 */
function createHostServices(host) {
  const bytes = host.bytes || portableBytes;
  const describeThrown = host.describe || describe;
  const waiting = new Map(); // request id -> { resolve, reject, what, call }
  const handlers = new Map(); // pattern -> [handler]
  let nextId = 1;

  function request(service, operation, payload) {
    return new Promise((resolve, reject) => {
      const what = `${service}.${operation}`;
      let json;
      try {
        json = JSON.stringify(payload);
      } catch (err) {
        reject(new errors.InvalidInputError(`${what}: the payload is not JSON: ${err.message}`));
        return;
      }
      const id = nextId++;
      const waiter = { resolve, reject, what, call: undefined };
      waiting.set(id, waiter);
      try {
        waiter.call = host.send(id, service, operation, json);
      } catch (err) {
        fail(id, err);
      }
    });
  }

  /** Ends request `id` with `error` (not sent, or refused before an answer); false when it no longer waits. */
  function fail(id, error) {
    const waiter = waiting.get(id);
    if (!waiter) return false;
    waiting.delete(id);
    waiter.reject(error);
    return true;
  }

  /**
   * The host's answer to request `id`: `bodyJson`, the body's JSON text,
   * or (with `code`) an error whose `detailsJson` is the API's error
   * object. An answer for no waiting request is dropped (its call was
   * cancelled).
   */
  function settle(id, bodyJson, code, message, detailsJson) {
    const waiter = waiting.get(id);
    if (!waiter) return;
    waiting.delete(id);
    if (code !== undefined && code !== null) {
      const details = parseJson(detailsJson, {});
      waiter.reject(serviceError(code, message,
        details !== null && typeof details === 'object' && !Array.isArray(details) ? details : {}));
      return;
    }
    const body = parseJson(bodyJson, null);
    if (body === null || typeof body !== 'object') {
      waiter.reject(new ServiceError(`${waiter.what}: the host's response is not a JSON object`, 'invalid_response'));
      return;
    }
    waiter.resolve(body);
  }

  /** The host cancelled the call `host.send` tagged as `call`: its requests stop waiting. */
  function cancelCall(call) {
    for (const [id, waiter] of waiting) {
      if (waiter.call !== call) continue;
      fail(id, new errors.CancelledError(`the host cancelled the call while it waited for ${waiter.what}`));
    }
  }

  /**
   * Runs every handler whose pattern matches `topic`; a failing handler is
   * logged and the plugin goes on. A payload that is not JSON reaches the
   * handlers as `undecoded` (the text itself unless the engine says).
   */
  function deliver(topic, from, payloadJson, undecoded) {
    const payload = parseJson(payloadJson, undecoded === undefined ? payloadJson : undecoded);
    const delivery = Object.freeze({ topic, from, payload });
    for (const [pattern, list] of handlers) {
      if (!patternMatches(pattern, topic)) continue;
      for (const handler of list.slice()) {
        const failed = (err) => host.log(`the handler of ${JSON.stringify(topic)} threw ${describeThrown(err)}`,
          { topic, from });
        try {
          const result = handler(payload, delivery);
          if (result && typeof result.then === 'function') Promise.resolve(result).catch(failed);
        } catch (err) {
          failed(err);
        }
      }
    }
  }

  async function subscribe(pattern, handler) {
    if (typeof handler !== 'function') throw new TypeError('subscribe(pattern, handler): the handler is not a function');
    await request('events', 'subscribe', { pattern });
    if (!handlers.has(pattern)) handlers.set(pattern, []);
    handlers.get(pattern).push(handler);
  }

  async function unsubscribe(pattern, handler) {
    const list = handlers.get(pattern) || [];
    if (handler) {
      const at = list.indexOf(handler);
      if (at >= 0) list.splice(at, 1);
    } else {
      list.length = 0;
    }
    if (list.length > 0) return true;
    handlers.delete(pattern);
    const body = await request('events', 'unsubscribe', { pattern });
    return Boolean(body.removed);
  }

  /**
   * The `corral` object: the constructor's second argument, `context.corral`
   * in a method, and (seed 001's shape) what `initialize(context)` receives.
   * Every method returns a Promise settled by the host's answer.
   */
  const corral = {
    errors,
    /** Calls `method` of the dependency `plugin`; resolves to its output. */
    callPlugin(plugin, method, input, options) {
      const payload = { plugin, method, input: orNull(input) };
      if (options && options.timeoutMs !== undefined) payload.timeout_ms = options.timeoutMs;
      return request('plugins', 'call', payload).then((b) => orNull(b.output));
    },
    /** The dependencies this plugin may call. */
    listPlugins() {
      return request('plugins', 'list', {}).then((b) => (Array.isArray(b.plugins) ? b.plugins : []));
    },
    /** Publishes `payload` (JSON) to `topic`; resolves to `{ delivered, dropped }`. */
    publish(topic, payload) {
      return request('events', 'publish', { topic, payload: orNull(payload) });
    },
    /** Runs `handler(payload, { topic, from, payload })` for each event on a topic `pattern` matches. */
    subscribe,
    /** Removes `handler` (or every handler) of `pattern`; resolves true once the host stopped delivering. */
    unsubscribe,
    /** The plugin's current settings, from the host. */
    settings() {
      return request('config', 'get', {});
    },
    kv: Object.freeze({
      get: (table, key) => request('kv', 'get', { table, key }).then((b) => orNull(b.value)),
      put: (table, key, value) => request('kv', 'put', { table, key, value }).then(() => undefined),
      delete: (table, key) => request('kv', 'delete', { table, key }).then((b) => Boolean(b.deleted)),
      list: (table, options) => request('kv', 'list', Object.assign({ table }, pick(options, ['prefix', 'after', 'limit']))),
    }),
    s3: Object.freeze({
      get: (bucket, key) => request('s3', 'get', { bucket, key })
        .then((b) => Object.assign({}, b, { body: bytes.decode(b.body) })),
      // A body that is not bytes throws at once (TypeError), before any request.
      put: (bucket, key, body, options) => request('s3', 'put', Object.assign({ bucket, key, body: bytes.encode(body) },
        pick(options, ['contentType'], { contentType: 'content_type' }))).then((b) => b.etag),
      list: (bucket, options) => request('s3', 'list', Object.assign({ bucket }, pick(options, ['prefix', 'after', 'limit']))),
      delete: (bucket, key) => request('s3', 'delete', { bucket, key }).then(() => undefined),
    }),
    /** Seed 001: an object whose methods call the dependency (`await dep.upper(input)`). */
    getDependency(name) {
      const metadata = Object.freeze({ name });
      return new Proxy(Object.freeze({}), {
        get(_, method) {
          if (method === 'metadata') return metadata;
          // `then` must stay undefined, or awaiting the proxy would call it.
          if (typeof method !== 'string' || method === 'then' || method === 'toJSON') return undefined;
          return (input) => corral.callPlugin(name, method, input);
        },
      });
    },
    /** Seed 001: every dependency this plugin may call, by name. */
    async getDependencies() {
      const names = await corral.listPlugins();
      return new Map(names.map((name) => [name, corral.getDependency(name)]));
    },
  };
  corral.eventBus = seed001EventBus(corral, host, describeThrown);
  Object.freeze(corral);

  return { corral, settle, fail, deliver, cancelCall, serviceCode, ServiceError, errors, patternMatches };
}

/** Seed 001's `context.eventBus`: emit/on/off/once over publish/subscribe; a refusal nobody awaits is logged. */
function seed001EventBus(corral, host, describeThrown) {
  const logged = (promise, what) => {
    promise.catch((err) => host.log(`${what} failed: ${describeThrown(err)}`));
    return promise;
  };
  const wrappers = new Map(); // listener -> the handler `once` made of it
  return Object.freeze({
    emit: (event, data) => logged(corral.publish(event, data), `eventBus.emit(${JSON.stringify(event)})`),
    on: (event, listener) => logged(corral.subscribe(event, listener), `eventBus.on(${JSON.stringify(event)})`),
    once: (event, listener) => {
      const once = (payload, delivery) => {
        wrappers.delete(listener);
        logged(corral.unsubscribe(event, once), `eventBus.once(${JSON.stringify(event)})`);
        return listener(payload, delivery);
      };
      wrappers.set(listener, once);
      return logged(corral.subscribe(event, once), `eventBus.once(${JSON.stringify(event)})`);
    },
    off: (event, listener) => {
      const handler = (listener && wrappers.get(listener)) || listener;
      if (listener) wrappers.delete(listener);
      return logged(corral.unsubscribe(event, handler), `eventBus.off(${JSON.stringify(event)})`);
    },
  });
}

module.exports = Object.freeze({
  createHostServices, ServiceError, errors, serviceError, serviceCode, patternMatches,
  SERVICE_ERROR_CODES, portableBytes,
});
