// The `corral` object of the embedded engine: host services (PROTOCOL.md
// section 9) with the same API as the Node runtime's (corral-plugin.d.ts).
// Evaluated once as a function of `send(id, service, operation, json)`, the
// one native binding, which only queues the request for the Rust side
// (src/services.rs); it answers through `settle` and hands events to
// `deliver`. Nothing here is global.
(function (send) {
  'use strict';

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
  const errors = { ServiceError };
  const CODES = {
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
  };
  for (const code of Object.keys(CODES)) {
    const name = CODES[code];
    errors[name] = ({ [name]: class extends ServiceError {
      constructor(message, details) { super(message, code, details); }
    } })[name];
  }
  Object.freeze(errors);

  const waiting = new Map();
  let nextId = 1;

  function request(service, operation, payload) {
    return new Promise((resolve, reject) => {
      const id = nextId++;
      waiting.set(id, { resolve, reject, what: `${service}.${operation}` });
      try {
        send(id, service, operation, JSON.stringify(payload));
      } catch (err) {
        waiting.delete(id);
        reject(err);
      }
    });
  }

  // The Rust side's answer to request `id`: the body's JSON, or an error.
  function settle(id, body, code, message, details) {
    const waiter = waiting.get(id);
    if (!waiter) return;
    waiting.delete(id);
    if (code !== undefined && code !== null) {
      let parsed = {};
      try {
        parsed = JSON.parse(details);
      } catch (_) {
        parsed = {};
      }
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) parsed = {};
      const name = CODES[code];
      waiter.reject(name ? new errors[name](message, parsed) : new ServiceError(message, code, parsed));
      return;
    }
    let value;
    try {
      value = JSON.parse(body);
    } catch (_) {
      value = null;
    }
    if (value === null || typeof value !== 'object') {
      waiter.reject(new ServiceError(`${waiter.what}: the host's response is not a JSON object`, 'invalid_response'));
      return;
    }
    waiter.resolve(value);
  }

  function patternMatches(pattern, topic) {
    const parts = pattern.split('*');
    if (parts.length === 1) return pattern === topic;
    const first = parts[0];
    const last = parts[parts.length - 1];
    if (topic.length < first.length + last.length || !topic.startsWith(first) || !topic.endsWith(last)) return false;
    let at = first.length;
    const end = topic.length - last.length;
    for (const middle of parts.slice(1, -1)) {
      const found = topic.indexOf(middle, at);
      if (found < 0 || found + middle.length > end) return false;
      at = found + middle.length;
    }
    return true;
  }

  const handlers = new Map(); // pattern -> [handler]

  function describe(err) {
    return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  }

  function deliver(topic, from, payloadJson) {
    let payload;
    try {
      payload = JSON.parse(payloadJson);
    } catch (_) {
      payload = payloadJson;
    }
    const delivery = Object.freeze({ topic, from, payload });
    for (const [pattern, list] of handlers) {
      if (!patternMatches(pattern, topic)) continue;
      for (const handler of list.slice()) {
        const failed = (err) => console.error(`the handler of ${JSON.stringify(topic)} threw ${describe(err)}`);
        try {
          const result = handler(payload, delivery);
          if (result && typeof result.then === 'function') Promise.resolve(result).catch(failed);
        } catch (err) {
          failed(err);
        }
      }
    }
  }

  // Base64 without the host's help (the engine has no atob/btoa).
  const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
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
      value = (value << 6) | v;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out[at++] = (value >> bits) & 0xff;
      }
    }
    return out.subarray(0, at);
  }
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
  function pick(options, keys, rename) {
    const out = {};
    for (const key of keys) {
      if (options && options[key] !== undefined) out[(rename && rename[key]) || key] = options[key];
    }
    return out;
  }
  const orNull = (v) => (v === undefined ? null : v);

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

  const corral = {
    errors,
    callPlugin(plugin, method, input, options) {
      const payload = { plugin, method, input: orNull(input) };
      if (options && options.timeoutMs !== undefined) payload.timeout_ms = options.timeoutMs;
      return request('plugins', 'call', payload).then((b) => orNull(b.output));
    },
    listPlugins() {
      return request('plugins', 'list', {}).then((b) => (Array.isArray(b.plugins) ? b.plugins : []));
    },
    publish(topic, payload) {
      return request('events', 'publish', { topic, payload: orNull(payload) });
    },
    subscribe,
    unsubscribe,
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
        .then((b) => Object.assign({}, b, { body: fromBase64(b.body) })),
      put: (bucket, key, body, options) => request('s3', 'put', Object.assign({ bucket, key, body: toBase64(toBytes(body)) },
        pick(options, ['contentType'], { contentType: 'content_type' }))).then((b) => b.etag),
      list: (bucket, options) => request('s3', 'list', Object.assign({ bucket }, pick(options, ['prefix', 'after', 'limit']))),
      delete: (bucket, key) => request('s3', 'delete', { bucket, key }).then(() => undefined),
    }),
    getDependency(name) {
      const metadata = Object.freeze({ name });
      return new Proxy(Object.freeze({}), {
        get(_, method) {
          if (method === 'metadata') return metadata;
          if (typeof method !== 'string' || method === 'then' || method === 'toJSON') return undefined;
          return (input) => corral.callPlugin(name, method, input);
        },
      });
    },
    async getDependencies() {
      const names = await corral.listPlugins();
      return new Map(names.map((name) => [name, corral.getDependency(name)]));
    },
  };
  // Seed 001's eventBus: a refusal nobody awaits is logged, never lost.
  const logged = (promise, what) => {
    promise.catch((err) => console.error(`${what} failed: ${describe(err)}`));
    return promise;
  };
  const onceWrappers = new Map();
  corral.eventBus = Object.freeze({
    emit: (event, data) => logged(corral.publish(event, data), `eventBus.emit(${JSON.stringify(event)})`),
    on: (event, listener) => logged(subscribe(event, listener), `eventBus.on(${JSON.stringify(event)})`),
    once: (event, listener) => {
      const once = (payload, delivery) => {
        onceWrappers.delete(listener);
        logged(unsubscribe(event, once), `eventBus.once(${JSON.stringify(event)})`);
        return listener(payload, delivery);
      };
      onceWrappers.set(listener, once);
      return logged(subscribe(event, once), `eventBus.once(${JSON.stringify(event)})`);
    },
    off: (event, listener) => {
      const handler = (listener && onceWrappers.get(listener)) || listener;
      if (listener) onceWrappers.delete(listener);
      return logged(unsubscribe(event, handler), `eventBus.off(${JSON.stringify(event)})`);
    },
  });
  Object.freeze(corral);

  // Whether an uncaught error is a service's: the call is then answered with its code.
  function serviceCode(err) {
    return err instanceof ServiceError ? [String(err.code), String(err.message)] : null;
  }

  return { corral, settle, deliver, serviceCode };
})
