'use strict';
// corral's Node.js runtime: `node <flags> bootstrap.js <ENTRY>`.
//
// The supervisor starts this script inside the plugin's sandbox with the
// child channel on fd 3. It speaks protocol/PROTOCOL.md (versions 1 and 2)
// for the plugin, which is an ordinary JavaScript class (seed 000's contract):
// ENTRY exports it (CommonJS `module.exports = Class` or `.default`, ESM
// `export default class`), it is instantiated once with the plugin's
// settings (Init's `config`), and each Call runs the method its path names
// on that instance (`greet`, `codeGeneration.generateCode`).
//
// The parts, in the order a start goes through them:
//   1. wire encoding: bincode 2, fixed-width little-endian (section 3);
//   2. frames: length-prefixed, bounded before any payload is buffered;
//   3. messages: the plugin's and the host's, by variant index (section 4);
//   4. the channel: fd 3, one batched write per turn of the event loop;
//   5. the plugin: loading ENTRY, instantiating it, resolving method paths;
//   6. logs: console.* become Log frames;
//   7. host services (version 2, section 9): requests to the host with their
//      responses, deliveries of subscribed events, and the `corral` object
//      plugins use (also in seed 001's shape: eventBus, getDependency), the
//      last two from services.js, which the embedded engine shares;
//   8. the conversation: Hello -> Init -> Ready, then Calls, Cancel, Ping,
//      Shutdown, Responses, Deliveries, end of stream (section 5).
//
// No npm dependency and no file besides ENTRY and services.js (beside this
// script): the sandbox grants this script's directory and node's own files,
// nothing else. The only environment it reads is CORRAL_PLUGIN_NAME /
// CORRAL_PLUGIN and CORRAL_PLUGIN_VERSION (for Hello).
//
// Exit statuses (sysexits.h, as the Rust SDK): 0 after Shutdown or at end of
// stream; 76 when the host breaks the protocol; 74 when the channel fails;
// 64 for a bad command line; 78 when fd 3 is not a socket; 1 when the
// plugin cannot start (ENTRY missing, a syntax error, no class exported,
// its constructor threw).

const { AsyncLocalStorage } = require('async_hooks');
const net = require('net');
const path = require('path');
const util = require('util');
const { pathToFileURL } = require('url');
const {
  createHostServices, errors: serviceErrors, serviceError, ServiceError, patternMatches,
} = require('./services.js');

const CHANNEL_FD = 3;
/** Versions offered in Hello: 2 adds host services (section 9). */
const PROTOCOL_VERSIONS = [1, 2];
const SERVICES_VERSION = 2;
const MAGIC = Buffer.from('CRRL', 'latin1');
/** Largest payload while the handshake runs (PROTOCOL.md section 2). */
const HANDSHAKE_MAX_FRAME = 1024 * 1024;
/** No peer may negotiate more. */
const HARD_MAX_FRAME = 16 * 1024 * 1024;
/** What Hello announces: the Rust SDK's default, which the host's default matches. */
const OUR_MAX_FRAME = 4 * 1024 * 1024;
const MIN_MAX_FRAME = 1024;
/** Error codes and messages longer than this are cut, so an error reply always fits. */
const MAX_ERROR_MESSAGE = 16 * 1024;
const MAX_ERROR_CODE = 256;
/** Pending output beyond this is written at once instead of at the end of the turn. */
const FLUSH_THRESHOLD = 256 * 1024;
/** setTimeout's largest delay; longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const EX_OK = 0;
const EX_START_FAILED = 1;
const EX_USAGE = 64;
const EX_IOERR = 74;
const EX_PROTOCOL = 76;
const EX_CONFIG = 78;

/** Codes this runtime puts in Err replies (the Rust SDK's, where it has one). */
const codes = Object.freeze({
  PLUGIN_ERROR: 'plugin_error',
  UNKNOWN_METHOD: 'unknown_method',
  INVALID_INPUT: 'invalid_input',
  INVALID_OUTPUT: 'invalid_output',
  REPLY_TOO_LARGE: 'reply_too_large',
  EVENT_TOO_LARGE: 'event_too_large',
  CANCELLED: 'cancelled',
  SHUTTING_DOWN: 'shutting_down',
});

const LogLevel = Object.freeze({ error: 0, warn: 1, info: 2, debug: 3, trace: 4 });

/** The peer broke the protocol: the plugin writes nothing more and exits 76. */
class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

// ---- 1. wire encoding ------------------------------------------------------

/**
 * Valid UTF-8 as Rust's `str` accepts it (shortest forms, no surrogates,
 * nothing above U+10FFFF). `buffer.isUtf8` (node >= 18.14) checks exactly
 * that; the WHATWG fatal decoder is the same check on older nodes.
 */
const isUtf8 = require('buffer').isUtf8 || ((bytes) => {
  try {
    new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
});

/** Builds one payload from fixed-width little-endian fields. */
class Encoder {
  constructor() {
    this.parts = [];
    this.length = 0;
  }

  raw(bytes) {
    this.parts.push(bytes);
    this.length += bytes.length;
    return this;
  }

  u16(v) {
    const b = Buffer.allocUnsafe(2);
    b.writeUInt16LE(v, 0);
    return this.raw(b);
  }

  u32(v) {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(v, 0);
    return this.raw(b);
  }

  i32(v) {
    const b = Buffer.allocUnsafe(4);
    b.writeInt32LE(v, 0);
    return this.raw(b);
  }

  u64(v) {
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64LE(BigInt(v), 0);
    return this.raw(b);
  }

  bytes(bytes) {
    return this.u64(bytes.length).raw(bytes);
  }

  /** JS strings may hold lone surrogates; Buffer.from writes U+FFFD for them, so the result is valid UTF-8. */
  string(s) {
    return this.bytes(Buffer.from(s, 'utf8'));
  }

  /** The payload with its u32 length prefix. */
  frame() {
    const out = Buffer.allocUnsafe(4 + this.length);
    out.writeUInt32LE(this.length, 0);
    let at = 4;
    for (const part of this.parts) {
      part.copy(out, at);
      at += part.length;
    }
    return out;
  }
}

/** Reads fields off one payload; every length is checked against what is left. */
class Decoder {
  constructor(payload) {
    this.buf = payload;
    this.pos = 0;
  }

  left() {
    return this.buf.length - this.pos;
  }

  take(n, what) {
    if (this.left() < n) {
      throw new ProtocolError(`${what} runs past the end of the payload`);
    }
    const start = this.pos;
    this.pos += n;
    return start;
  }

  u16(what) {
    return this.buf.readUInt16LE(this.take(2, what));
  }

  u32(what) {
    return this.buf.readUInt32LE(this.take(4, what));
  }

  u64(what) {
    return this.buf.readBigUInt64LE(this.take(8, what));
  }

  /** A length field is a claim: checked against the bytes left before use. */
  bytes(what) {
    const claimed = this.u64(`${what}'s length`);
    if (claimed > BigInt(this.left())) {
      throw new ProtocolError(`${what} claims ${claimed} bytes but ${this.left()} are left`);
    }
    const start = this.take(Number(claimed), what);
    return this.buf.subarray(start, this.pos);
  }

  string(what) {
    const bytes = this.bytes(what);
    if (!isUtf8(bytes)) {
      throw new ProtocolError(`${what} is not valid UTF-8`);
    }
    return bytes.toString('utf8');
  }

  end(what) {
    if (this.left() !== 0) {
      throw new ProtocolError(`${this.left()} bytes left over after ${what}`);
    }
  }
}

// ---- 2. frames -------------------------------------------------------------

/**
 * Takes whole frames out of a byte stream. The length prefix is checked
 * against the limit in force before the payload is buffered, so a peer
 * can never make this hold more than one limit's worth (plus one read).
 */
class FrameReader {
  constructor(maxFrame) {
    this.maxFrame = maxFrame;
    this.chunks = [];
    this.buffered = 0;
    this.expected = -1; // payload length of the frame being read, once its prefix is in
  }

  push(chunk) {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
  }

  /** True when part of a frame has arrived: end of stream now is a protocol error. */
  inFrame() {
    return this.buffered > 0 || this.expected >= 0;
  }

  /** The next whole payload, or null until more bytes arrive. */
  next() {
    if (this.expected < 0) {
      if (this.buffered < 4) return null;
      const length = this.consume(4).readUInt32LE(0);
      if (length > this.maxFrame) {
        throw new ProtocolError(
          `a frame of ${length} bytes exceeds the limit of ${this.maxFrame} bytes`);
      }
      this.expected = length;
    }
    if (this.buffered < this.expected) return null;
    const payload = this.consume(this.expected);
    this.expected = -1;
    return payload;
  }

  consume(n) {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    let out;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const chunk = this.chunks[0];
        const k = Math.min(chunk.length, n - at);
        chunk.copy(out, at, 0, k);
        at += k;
        if (k === chunk.length) this.chunks.shift();
        else this.chunks[0] = chunk.subarray(k);
      }
    }
    this.buffered -= n;
    return out;
  }
}

// ---- 3. messages -----------------------------------------------------------

/** PluginMessage variants (plugin to host). */
const P = Object.freeze({ Hello: 0, Ready: 1, Reply: 2, Log: 3, Event: 4, Pong: 5, Ping: 6, Request: 8 });
/** HostMessage variants (host to plugin). */
const H = Object.freeze({ Init: 0, Call: 1, Cancel: 2, Ping: 3, Shutdown: 4, Pong: 5, Response: 6, Deliver: 7 });

const encode = {
  hello(name, version, maxFrame) {
    const e = new Encoder().u32(P.Hello).raw(MAGIC).u64(PROTOCOL_VERSIONS.length);
    for (const v of PROTOCOL_VERSIONS) e.u16(v);
    return e.string(name).string(version).u32(maxFrame);
  },
  request(id, callId, service, operation, payload) {
    return new Encoder().u32(P.Request).u64(id).u64(callId)
      .string(service).string(operation).bytes(payload);
  },
  ready() {
    return new Encoder().u32(P.Ready);
  },
  replyOk(id, output) {
    return new Encoder().u32(P.Reply).u64(id).u32(0).bytes(output);
  },
  replyErr(id, code, message) {
    return new Encoder().u32(P.Reply).u64(id).u32(1).string(code).string(message);
  },
  log(level, message, fields) {
    const e = new Encoder().u32(P.Log).u32(level).string(message).u64(fields.length);
    for (const [key, value] of fields) e.string(key).string(value);
    return e;
  },
  event(topic, payload) {
    return new Encoder().u32(P.Event).string(topic).bytes(payload);
  },
  pong(nonce) {
    return new Encoder().u32(P.Pong).u64(nonce);
  },
};

/** One HostMessage from one payload, consumed exactly. */
function decodeHostMessage(payload) {
  const d = new Decoder(payload);
  const variant = d.u32('the message variant');
  let message;
  switch (variant) {
    case H.Init:
      message = {
        type: 'Init',
        version: d.u16('Init.version'),
        maxFrame: d.u32('Init.max_frame'),
        config: d.bytes('Init.config'),
        limits: {
          memoryBytes: d.u64('Init.limits.memory_bytes'),
          callTimeoutMs: d.u64('Init.limits.call_timeout_ms'),
          pids: d.u64('Init.limits.pids'),
          openFiles: d.u64('Init.limits.open_files'),
        },
      };
      break;
    case H.Call:
      message = {
        type: 'Call',
        id: d.u64('Call.id'),
        method: d.string('Call.method'),
        input: d.bytes('Call.input'),
        timeoutMs: d.u64('Call.timeout_ms'),
      };
      break;
    case H.Cancel:
      message = { type: 'Cancel', id: d.u64('Cancel.id') };
      break;
    case H.Ping:
      message = { type: 'Ping', nonce: d.u64('Ping.nonce') };
      break;
    case H.Shutdown:
      message = { type: 'Shutdown', graceMs: d.u32('Shutdown.grace_ms') };
      break;
    case H.Pong:
      message = { type: 'Pong', nonce: d.u64('Pong.nonce') };
      break;
    case H.Response: {
      const id = d.u64('Response.id');
      const result = d.u32('ServiceResult variant');
      if (result === 0) {
        message = { type: 'Response', id, body: d.bytes('Ok.body') };
      } else if (result === 1) {
        message = {
          type: 'Response', id, code: d.string('Err.code'), message: d.string('Err.message'),
          details: d.bytes('Err.details'),
        };
      } else {
        throw new ProtocolError(`unknown ServiceResult variant ${result}`);
      }
      break;
    }
    case H.Deliver:
      message = {
        type: 'Deliver', topic: d.string('Deliver.topic'), from: d.string('Deliver.from'),
        payload: d.bytes('Deliver.payload'),
      };
      break;
    default:
      throw new ProtocolError(`unknown host message variant ${variant}`);
  }
  d.end(message.type);
  return message;
}

/** The longest prefix of `bytes` of at most `max` bytes that ends between characters. */
function cutUtf8(bytes, max) {
  if (bytes.length <= max) return bytes;
  let end = max;
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

function cutText(text, max) {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= max) return text;
  return `${cutUtf8(bytes, max).toString('utf8')} [truncated]`;
}

// ---- 4. the channel --------------------------------------------------------

/**
 * fd 3. Frames queued during one turn of the event loop go out in one
 * write (replies that resolve together are batched, as the protocol asks).
 */
class Channel {
  constructor(fd, onData, onEnd) {
    this.pending = [];
    this.pendingBytes = 0;
    this.flushScheduled = false;
    this.dead = false; // a protocol violation or exit: nothing more is written
    this.sendLimit = HANDSHAKE_MAX_FRAME;
    this.socket = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    this.socket.on('data', onData);
    this.socket.on('end', onEnd);
    this.socket.on('error', (err) => {
      // PROTOCOL.md section 5: ECONNRESET on read and EPIPE/ECONNRESET on
      // write mean the host is gone, like end of stream.
      if (err.code === 'EPIPE' || err.code === 'ECONNRESET') onEnd();
      else fatal(EX_IOERR, `the channel on fd ${fd} failed: ${err.message}`);
    });
  }

  /** Queues one frame; throws RangeError when its payload exceeds the limit in force. */
  send(encoder) {
    if (this.dead) return;
    if (encoder.length > this.sendLimit) {
      throw new RangeError(
        `a frame of ${encoder.length} bytes exceeds the limit of ${this.sendLimit} bytes`);
    }
    const frame = encoder.frame();
    this.pending.push(frame);
    this.pendingBytes += frame.length;
    if (this.pendingBytes >= FLUSH_THRESHOLD) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush() {
    this.flushScheduled = false;
    if (this.dead || this.pending.length === 0) return;
    const data = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    this.socket.write(data);
  }

  /** Writes what is queued, then exits with `status`. */
  flushAndExit(status) {
    this.flush();
    this.dead = true;
    if (this.socket.writableLength === 0) process.exit(status);
    this.socket.once('drain', () => process.exit(status));
    this.socket.once('close', () => process.exit(status));
  }
}

// ---- 5. the plugin ---------------------------------------------------------

/** Loads ENTRY as CommonJS or ESM and returns what it exports as the plugin. */
async function loadEntry(entry) {
  let exported;
  try {
    exported = require(entry);
  } catch (err) {
    // node >= 20.19 loads ESM through require() too; older ones (and ESM
    // with top-level await) need import(), which takes CommonJS as well.
    const needsImport = err && (err.code === 'ERR_REQUIRE_ESM' ||
      err.code === 'ERR_REQUIRE_ASYNC_MODULE' || err instanceof SyntaxError);
    if (!needsImport) throw err;
    try {
      exported = await import(pathToFileURL(entry).href);
    } catch (importErr) {
      // A SyntaxError that import() does not cure is the module's own.
      throw err instanceof SyntaxError ? err : importErr;
    }
  }
  return pluginExport(exported, entry);
}

/** The class (or, failing that, a ready object) among a module's exports. */
function pluginExport(exported, entry) {
  let value = exported;
  // ESM namespace or `exports.default`, possibly nested by transpilers.
  for (let i = 0; i < 3 && value !== null && typeof value === 'object' && 'default' in value; i++) {
    value = value.default;
  }
  if (typeof value === 'function') return value;
  if (value !== null && typeof value === 'object' && Object.keys(value).length > 0) return value;
  throw new Error(
    `${entry} exports no plugin class: write \`module.exports = class MyPlugin { ... }\` ` +
    'or `export default class MyPlugin { ... }`');
}

/** One instance per child, built with the plugin's settings and the host's services. */
function instantiate(exported, settings, corral) {
  if (typeof exported !== 'function') return exported;
  const instance = new exported(settings, corral);
  if (instance === null || typeof instance !== 'object') {
    throw new Error('the plugin class did not construct an object');
  }
  return instance;
}

/** Properties a method path never walks through: they reach the class or the engine. */
const BLOCKED_NAMES = new Set(['constructor', '__proto__', 'prototype', 'caller', 'callee', 'arguments']);

/** Prototypes of the built-ins: their methods are not the plugin's (`toString`, `call`, ...). */
const BUILTIN_PROTOTYPES = new Set([
  Object.prototype, Function.prototype, Array.prototype, String.prototype, Number.prototype,
  Boolean.prototype, Symbol.prototype, BigInt.prototype, Promise.prototype, Map.prototype,
  Set.prototype, WeakMap.prototype, WeakSet.prototype, Date.prototype, RegExp.prototype,
  Error.prototype, ArrayBuffer.prototype, Object.getPrototypeOf(Uint8Array.prototype),
  Object.getPrototypeOf(async function () {}), Object.getPrototypeOf(function* () {}),
  Object.getPrototypeOf(async function* () {}),
]);

/** Whether `key` is the plugin's own (found before any built-in prototype). */
function isPluginProperty(object, key) {
  for (let o = object; o !== null && o !== undefined; o = Object.getPrototypeOf(o)) {
    if (BUILTIN_PROTOTYPES.has(o)) return false;
    if (Object.prototype.hasOwnProperty.call(o, key)) return true;
  }
  return false;
}

/**
 * `a.b.c` on the instance: each dot walks a property; the last one must be
 * a function, called with `this` bound to the object holding it.
 */
function resolveMethod(instance, methodPath) {
  let holder = null;
  let value = instance;
  for (const name of methodPath.split('.')) {
    if (name === '' || BLOCKED_NAMES.has(name)) return null;
    if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return null;
    if (!isPluginProperty(value, name)) return null;
    holder = value;
    value = value[name];
  }
  return typeof value === 'function' ? { fn: value, holder } : null;
}

/** The method paths an instance serves, for the unknown-method message (two levels deep). */
function methodPaths(instance, prefix = '', depth = 0, out = []) {
  const seen = new Set();
  for (let o = instance; o && !BUILTIN_PROTOTYPES.has(o) && out.length < 50; o = Object.getPrototypeOf(o)) {
    for (const name of Object.getOwnPropertyNames(o)) {
      if (seen.has(name) || BLOCKED_NAMES.has(name)) continue;
      seen.add(name);
      const descriptor = Object.getOwnPropertyDescriptor(o, name);
      const value = descriptor && 'value' in descriptor ? descriptor.value : undefined;
      if (typeof value === 'function') out.push(prefix + name);
      else if (depth < 1 && value !== null && typeof value === 'object') {
        methodPaths(value, `${prefix}${name}.`, depth + 1, out);
      }
    }
  }
  return out;
}

/** "<Name>: <message>" for whatever a method threw; never throws itself. */
function describeThrown(thrown) {
  try {
    return describeValue(thrown);
  } catch {
    return 'Error: (a thrown value that cannot be described)';
  }
}

function describeValue(thrown) {
  if (thrown instanceof Error || (thrown !== null && typeof thrown === 'object' && 'message' in thrown)) {
    let name = typeof thrown.name === 'string' && thrown.name ? thrown.name : 'Error';
    // `class MyError extends Error {}` keeps the name "Error"; its class says more.
    const ctor = thrown.constructor && thrown.constructor.name;
    if (name === 'Error' && typeof ctor === 'string' && ctor && ctor !== 'Object') name = ctor;
    const message = String(thrown.message);
    return message ? `${name}: ${message}` : name;
  }
  if (typeof thrown === 'string') return `Error: ${thrown}`;
  return `Error: ${util.inspect(thrown, { depth: 2, breakLength: Infinity })}`;
}

/** A method's result as reply bytes: bytes as they are, anything else as JSON (undefined: null). */
function outputBytes(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  const text = JSON.stringify(value);
  return Buffer.from(text === undefined ? 'null' : text, 'utf8');
}

/** A method's input: the JSON the caller sent (empty input: null). */
function parseInput(bytes) {
  if (bytes.length === 0) return null;
  if (!isUtf8(bytes)) throw new TypeError('the input is not UTF-8 JSON');
  return JSON.parse(bytes.toString('utf8'));
}

// ---- 6. logs ---------------------------------------------------------------

/** Where console.* goes: Log frames once the channel exists. */
let logSink = null;

function sendLog(level, message, fields = []) {
  if (!logSink) {
    process.stderr.write(`${message}\n`);
    return;
  }
  logSink(level, message, fields);
}

/** console.log/info/warn/error/debug/trace (and dir, assert) become Log frames. */
function redirectConsole() {
  const levels = { log: 'info', info: 'info', warn: 'warn', error: 'error', debug: 'debug', trace: 'trace' };
  for (const [method, level] of Object.entries(levels)) {
    console[method] = (...args) => sendLog(LogLevel[level], util.format(...args));
  }
  console.dir = (value, options) => sendLog(LogLevel.info, util.inspect(value, options));
  console.assert = (condition, ...args) => {
    if (!condition) {
      sendLog(LogLevel.error, `Assertion failed${args.length ? `: ${util.format(...args)}` : ''}`);
    }
  };
}

// ---- 7. host services --------------------------------------------------------
//
// The `corral` object, its error classes and the settling of requests are
// services.js (beside this file, shared with the embedded engine). What is
// Node's stays here: the frames, the id of the call a request serves
// (AsyncLocalStorage), requests made before Ready, and protocol version 1.

/** The call a request serves (its id travels with it: the host bounds the request by the call's time). */
const currentCall = new AsyncLocalStorage();

/** S3 bodies as Buffers: what goes out may be a string, a Buffer, a Uint8Array or an ArrayBuffer. */
const bufferBytes = Object.freeze({
  encode: (body) => toBuffer(body).toString('base64'),
  decode: (text) => Buffer.from(String(text || ''), 'base64'),
});

function toBuffer(body) {
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (Buffer.isBuffer(body)) return body;
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  throw new TypeError('an S3 body is a string, a Buffer, a Uint8Array or an ArrayBuffer');
}

/**
 * The session's half of services: services.js's requests as Request
 * frames, the host's Responses and Deliveries back to it. Requests made
 * before Ready (in the constructor or seed 001's `initialize`) wait and go
 * out right after it: the host reads requests only from a ready plugin.
 */
class Services {
  constructor(session) {
    this.session = session;
    this.version = 1;
    this.early = []; // requests made before Ready: [send]
    this.api = createHostServices({
      send: (id, service, operation, json) => this.send(id, service, operation, json),
      log: (message, fields) => session.log(LogLevel.error, message, Object.entries(fields || {})),
      bytes: bufferBytes,
      describe: describeThrown,
    });
  }

  /** The `corral` object the plugin gets. */
  get corral() {
    return this.api.corral;
  }

  /** Sends request `id` now, or after Ready; returns the call it serves. */
  send(id, service, operation, json) {
    const store = currentCall.getStore();
    const callId = store === undefined ? 0n : store;
    const send = () => this.transmit(id, callId, `${service}.${operation}`, service, operation, json);
    if (this.session.phase === 'ready' || this.session.phase === 'shutdown') send();
    else this.early.push(send);
    return callId;
  }

  transmit(id, callId, what, service, operation, json) {
    if (this.version < SERVICES_VERSION) {
      this.api.fail(id, new serviceErrors.ServiceUnavailableError(
        `${what}: the host speaks protocol version ${this.version}, which has no host services`, { service }));
      return;
    }
    try {
      this.session.channel.send(encode.request(BigInt(id), callId, service, operation, Buffer.from(json, 'utf8')));
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      this.api.fail(id, new serviceErrors.PayloadTooLargeError(`${what}: ${err.message}`));
    }
  }

  /** After Ready: what waited goes out. */
  ready(version) {
    this.version = version;
    const early = this.early;
    this.early = [];
    for (const send of early) send();
  }

  onResponse(response) {
    // Ids are services.js's counter (a Number): one it cannot hold exactly answers nothing.
    if (response.id > BigInt(Number.MAX_SAFE_INTEGER)) return;
    const id = Number(response.id);
    if (response.code !== undefined) {
      this.api.settle(id, null, response.code, response.message, response.details.toString('utf8'));
    } else {
      this.api.settle(id, response.body.toString('utf8'));
    }
  }

  /** The host cancelled `callId`: its requests stop waiting. */
  cancelCall(callId) {
    this.api.cancelCall(callId);
  }

  /** Handlers run outside any call: what they request serves no call. */
  onDeliver(message) {
    currentCall.run(0n, () =>
      this.api.deliver(message.topic, message.from, message.payload.toString('utf8'), message.payload));
  }
}

// ---- 8. the conversation ---------------------------------------------------

/** Ends the process at once: a start failure, a broken channel. */
function fatal(status, message) {
  process.stderr.write(`corral node runtime: ${message}\n`);
  if (session && session.channel) session.channel.dead = true;
  process.exit(status);
}

class Session {
  constructor(entry, name, version) {
    this.entry = entry;
    this.name = name;
    this.version = version;
    this.phase = 'hello'; // hello -> init -> ready -> shutdown
    this.maxFrame = HANDSHAKE_MAX_FRAME;
    this.instance = null;
    this.inFlight = new Map(); // call id (bigint) -> AbortController
    this.reader = new FrameReader(HANDSHAKE_MAX_FRAME);
    this.channel = null;
    this.services = new Services(this);
    this.corral = this.services.corral;
    /** Seed 001's `initialize(context)` while it runs: calls wait for it. */
    this.initializing = null;
    /** Seed 001's `cleanup()` once Shutdown started it. */
    this.cleaning = null;
  }

  start() {
    try {
      this.channel = new Channel(CHANNEL_FD, (chunk) => this.onData(chunk), () => this.onEnd());
    } catch (err) {
      fatal(EX_CONFIG, `fd ${CHANNEL_FD} is not a channel to corral (${err.message}): ` +
        'corrald starts this script with its socket there');
    }
    logSink = (level, message, fields) => this.log(level, message, fields);
    this.channel.send(encode.hello(this.name, this.version, OUR_MAX_FRAME));
    this.channel.flush();
    // Loading runs while Init travels; a failure ends the start at once.
    this.loaded = loadEntry(this.entry);
    this.loaded.catch((err) => this.startFailed(`cannot load ${this.entry}`, err));
  }

  startFailed(what, err) {
    const detail = err instanceof Error ? (err.stack || String(err)) : describeThrown(err);
    process.stderr.write(`corral node runtime: ${what}: ${detail}\n`);
    this.log(LogLevel.error, `${what}: ${describeThrown(err)}`, []);
    this.channel.flushAndExit(EX_START_FAILED);
  }

  onData(chunk) {
    if (this.channel.dead) return;
    this.reader.push(chunk);
    try {
      for (let payload = this.reader.next(); payload; payload = this.reader.next()) {
        this.dispatch(decodeHostMessage(payload));
        if (this.channel.dead) return;
      }
    } catch (err) {
      if (err instanceof ProtocolError) fatal(EX_PROTOCOL, `the host broke the protocol: ${err.message}`);
      throw err;
    }
  }

  onEnd() {
    if (this.reader.inFrame()) {
      fatal(EX_PROTOCOL, 'the host broke the protocol: end of stream inside a frame');
    }
    // The host is gone or done with us (section 5): exit at once.
    this.channel.dead = true;
    process.exit(EX_OK);
  }

  dispatch(message) {
    if (this.phase === 'hello') {
      if (message.type !== 'Init') {
        throw new ProtocolError(`expected Init as the host's first message, got ${message.type}`);
      }
      return this.onInit(message);
    }
    if (this.phase === 'init') {
      throw new ProtocolError(`the host sent ${message.type} before Ready`);
    }
    switch (message.type) {
      case 'Call': return this.onCall(message);
      case 'Cancel': return this.onCancel(message.id);
      case 'Ping': return this.channel.send(encode.pong(message.nonce));
      case 'Pong': return undefined; // this runtime never pings: nothing to match
      case 'Shutdown': return this.onShutdown(message.graceMs);
      case 'Response': return this.services.onResponse(message);
      case 'Deliver': return this.services.onDeliver(message);
      default: throw new ProtocolError(`the host sent a second ${message.type}`);
    }
  }

  onInit(init) {
    if (!PROTOCOL_VERSIONS.includes(init.version)) {
      throw new ProtocolError(`the host chose protocol version ${init.version}; this runtime speaks ${PROTOCOL_VERSIONS.join(', ')}`);
    }
    if (init.maxFrame < MIN_MAX_FRAME || init.maxFrame > OUR_MAX_FRAME) {
      throw new ProtocolError(
        `the host's maximum frame of ${init.maxFrame} bytes is outside ${MIN_MAX_FRAME}..=${OUR_MAX_FRAME}`);
    }
    this.phase = 'init';
    this.maxFrame = Math.min(init.maxFrame, HARD_MAX_FRAME);
    this.reader.maxFrame = this.maxFrame;
    // Until Ready the host reads under the handshake limit too.
    this.channel.sendLimit = Math.min(this.maxFrame, HANDSHAKE_MAX_FRAME);
    this.limits = init.limits;
    let settings;
    try {
      settings = init.config.length === 0 ? {} : JSON.parse(init.config.toString('utf8'));
    } catch (err) {
      return this.startFailed('the plugin settings (Init.config) are not JSON', err);
    }
    this.loaded.then((exported) => {
      try {
        this.instance = instantiate(exported, settings, this.corral);
      } catch (err) {
        return this.startFailed('the plugin class threw while being constructed', err);
      }
      this.phase = 'ready';
      this.channel.send(encode.ready());
      this.channel.sendLimit = this.maxFrame;
      this.services.ready(init.version);
      this.initializeSeed001();
      this.channel.flush();
      return undefined;
    }, () => { /* startFailed already reports it */ });
    return undefined;
  }

  /**
   * Seed 001's plugins set themselves up in `initialize(context)` (subscribe,
   * find dependencies) with the `corral` object as the context. It runs
   * once the plugin is ready, since it may wait for the host's services;
   * calls wait for it. If it throws, the plugin exits: a failed start.
   */
  initializeSeed001() {
    const init = this.instance && resolveMethod(this.instance, 'initialize');
    if (!init) return;
    this.initializing = currentCall.run(0n, async () => init.fn.call(init.holder, this.corral)).then(
      () => { this.initializing = null; },
      (err) => this.startFailed('initialize(context) failed', err));
  }

  onCall(call) {
    if (this.initializing && this.phase !== 'shutdown') {
      this.initializing.then(() => this.onCall(call));
      return undefined;
    }
    if (this.phase === 'shutdown') {
      return this.reply(call.id, null, {
        code: codes.SHUTTING_DOWN, message: 'the plugin is shutting down and takes no new calls',
      });
    }
    if (this.inFlight.has(call.id)) {
      throw new ProtocolError(`call id ${call.id} is already in flight`);
    }
    const method = resolveMethod(this.instance, call.method);
    if (!method) {
      const served = methodPaths(this.instance);
      return this.reply(call.id, null, {
        code: codes.UNKNOWN_METHOD,
        message: `this plugin has no method \`${call.method}\`; it serves: ${served.join(', ') || '(nothing)'}`,
      });
    }
    let input;
    try {
      input = parseInput(call.input);
    } catch (err) {
      return this.reply(call.id, null, { code: codes.INVALID_INPUT, message: `the input is not JSON: ${err.message}` });
    }
    const controller = new AbortController();
    this.inFlight.set(call.id, controller);
    const context = this.context(call, controller.signal);
    let result;
    try {
      result = currentCall.run(call.id, () => method.fn.call(method.holder, input, context));
    } catch (err) {
      return this.finish(call.id, { thrown: err });
    }
    if (result !== null && (typeof result === 'object' || typeof result === 'function') &&
        typeof result.then === 'function') {
      Promise.resolve(result).then((value) => this.finish(call.id, { value }),
        (err) => this.finish(call.id, { thrown: err }));
      return undefined;
    }
    return this.finish(call.id, { value: result });
  }

  /** The second argument of every method: what this runtime adds to seed 000's contract. */
  context(call, signal) {
    const session = this;
    return {
      id: String(call.id),
      method: call.method,
      signal,
      deadline: call.timeoutMs > 0n ? Date.now() + Number(call.timeoutMs) : null,
      limits: {
        memoryBytes: Number(this.limits.memoryBytes),
        callTimeoutMs: Number(this.limits.callTimeoutMs),
        pids: Number(this.limits.pids),
        openFiles: Number(this.limits.openFiles),
      },
      log(level, message, fields = {}) {
        const number = LogLevel[level];
        if (number === undefined) throw new TypeError(`unknown log level ${level}: use ${Object.keys(LogLevel).join(', ')}`);
        session.log(number, String(message), Object.entries(fields).map(([k, v]) => [k, String(v)]));
      },
      emit(topic, payload) {
        session.emit(String(topic), payload);
      },
      corral: this.corral,
    };
  }

  /** A call's outcome (`{ value }` or `{ thrown }`): replied unless the call was cancelled meanwhile. */
  finish(id, outcome) {
    if (!this.inFlight.delete(id)) return; // cancelled: its reply went out already
    if ('thrown' in outcome && outcome.thrown instanceof ServiceError) {
      // A service's refusal left uncaught: the caller sees its code.
      this.reply(id, null, { code: String(outcome.thrown.code), message: String(outcome.thrown.message) });
    } else if ('thrown' in outcome) {
      this.reply(id, null, { code: codes.PLUGIN_ERROR, message: describeThrown(outcome.thrown) });
    } else {
      let output;
      try {
        output = outputBytes(outcome.value);
      } catch (err) {
        this.reply(id, null, { code: codes.INVALID_OUTPUT, message: `the result is not JSON: ${describeThrown(err)}` });
        return this.maybeExit();
      }
      this.reply(id, output, null);
    }
    return this.maybeExit();
  }

  reply(id, output, error) {
    const room = this.maxFrame - (4 + 8 + 4 + 8);
    if (output && output.length > room) {
      error = {
        code: codes.REPLY_TOO_LARGE,
        message: `the output is ${output.length} bytes but the maximum frame is ${this.maxFrame} bytes`,
      };
    }
    if (error) {
      // Cut to fit: a frame may be as small as 1024 bytes (variant, id,
      // result, two lengths: 32 bytes; " [truncated]": 12).
      const code = cutText(error.code, Math.min(MAX_ERROR_CODE, Math.floor(this.maxFrame / 4)));
      const room = this.maxFrame - 32 - Buffer.byteLength(code) - 12;
      const message = cutText(error.message, Math.min(MAX_ERROR_MESSAGE, room));
      this.channel.send(encode.replyErr(id, code, message));
    } else {
      this.channel.send(encode.replyOk(id, output));
    }
  }

  onCancel(id) {
    const controller = this.inFlight.get(id);
    // Unknown or finished: the Cancel crossed the reply on the wire.
    if (!controller) return;
    this.inFlight.delete(id);
    controller.abort();
    this.services.cancelCall(id);
    // Answered now, so the host need not wait out its grace: a method still
    // running has its result dropped.
    this.reply(id, null, { code: codes.CANCELLED, message: 'the host cancelled the call' });
    this.maybeExit();
  }

  onShutdown(graceMs) {
    if (this.phase !== 'shutdown') {
      this.phase = 'shutdown';
      setTimeout(() => this.channel.flushAndExit(EX_OK), Math.min(graceMs, MAX_TIMER_MS));
      // Seed 001's `cleanup()` (of a plugin that has `initialize`) runs within the grace.
      const cleanup = this.instance && resolveMethod(this.instance, 'initialize') &&
        resolveMethod(this.instance, 'cleanup');
      if (cleanup) {
        this.cleaning = Promise.resolve().then(() => cleanup.fn.call(cleanup.holder)).catch((err) =>
          this.log(LogLevel.error, `cleanup() failed: ${describeThrown(err)}`, [])).then(() => {
          this.cleaning = null;
          this.maybeExit();
        });
      }
    }
    this.maybeExit();
  }

  /** After Shutdown, exits once every call received has been answered (and cleanup ran). */
  maybeExit() {
    if (this.phase === 'shutdown' && this.inFlight.size === 0 && !this.cleaning) {
      this.channel.flushAndExit(EX_OK);
    }
  }

  log(level, message, fields) {
    if (this.channel.dead) return;
    try {
      this.channel.send(encode.log(level, message, fields));
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      // Too large for a frame: the start of a message usually says what happened.
      const keep = Math.floor(this.channel.sendLimit / 2);
      this.channel.send(encode.log(level, cutText(message, keep), []));
    }
  }

  emit(topic, payload) {
    if (this.phase !== 'ready' && this.phase !== 'shutdown') {
      throw new Error('events can be emitted only once the plugin is ready');
    }
    const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : outputBytes(payload);
    try {
      this.channel.send(encode.event(topic, bytes));
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      const tooLarge = new Error(`the event does not fit in a frame: ${err.message}`);
      tooLarge.code = codes.EVENT_TOO_LARGE;
      throw tooLarge;
    }
  }
}

let session = null;

function main(argv) {
  const entry = argv[2];
  if (!entry || argv.length > 3) {
    process.stderr.write('usage: node bootstrap.js <ENTRY>  (the channel on fd 3)\n');
    process.exit(EX_USAGE);
  }
  const resolved = path.resolve(entry);
  const env = process.env;
  const name = env.CORRAL_PLUGIN_NAME || env.CORRAL_PLUGIN || path.basename(path.dirname(resolved));
  const version = env.CORRAL_PLUGIN_VERSION || '0.0.0';
  redirectConsole();
  // A host service's refusal nobody awaited (`corral.subscribe(...)` in a
  // constructor) is logged; any other unhandled rejection still ends the
  // process, as node does by default.
  process.on('unhandledRejection', (reason) => {
    if (!(reason instanceof ServiceError)) throw reason;
    sendLog(LogLevel.error, `a host request nobody awaited failed: ${describeThrown(reason)}`);
  });
  session = new Session(resolved, name, version);
  session.start();
}

if (require.main === module) {
  main(process.argv);
} else {
  // Required (by tests): the codec and the pure helpers, nothing started.
  module.exports = {
    Encoder, Decoder, FrameReader, ProtocolError, encode, decodeHostMessage,
    resolveMethod, methodPaths, describeThrown, outputBytes, cutUtf8, isUtf8,
    codes, LogLevel, HANDSHAKE_MAX_FRAME, HARD_MAX_FRAME, OUR_MAX_FRAME,
    serviceErrors, serviceError, patternMatches, PROTOCOL_VERSIONS,
  };
}
