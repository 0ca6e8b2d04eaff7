'use strict';
// A fake corral host for the bootstrap's tests: it spawns
// `node bootstrap.js <fixture>` with fd 3 as a Unix socketpair (node's
// stdio 'pipe'), writes host frames and reads plugin frames. Its encoder is
// written here from PROTOCOL.md, independently of the bootstrap's, and the
// golden vectors are read from PROTOCOL.md itself.

const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');

const BOOTSTRAP = path.join(__dirname, '..', 'bootstrap.js');
const FIXTURES = path.join(__dirname, 'fixtures');
const PROTOCOL_MD = path.join(__dirname, '..', '..', '..', 'protocol', 'PROTOCOL.md');

/** Every ```hex NAME block of PROTOCOL.md as a Buffer, by name. */
function goldenVectors() {
  const doc = fs.readFileSync(PROTOCOL_MD, 'utf8');
  const vectors = {};
  const block = /```hex ([a-z-]+)\n([\s\S]*?)```/g;
  for (let m = block.exec(doc); m; m = block.exec(doc)) {
    const hex = m[2].split('\n').map((line) => line.split('#')[0]).join(' ').trim().split(/\s+/);
    vectors[m[1]] = Buffer.from(hex.join(''), 'hex');
  }
  return vectors;
}

/**
 * The golden `hello` frame as a plugin offering versions 1 and 2 sends it:
 * the vector offers only 1, the rest is byte for byte the same.
 */
function helloOffering2(hello) {
  const payload = hello.subarray(4);
  const one = Buffer.from('01000000000000000100', 'hex');
  if (!payload.subarray(8, 18).equals(one)) throw new Error('the golden hello no longer offers [1]');
  return hostFrame.payload([payload.subarray(0, 8), Buffer.from('02000000000000000100' + '0200', 'hex'),
    payload.subarray(18)]);
}

/** Host-side frames, encoded by hand from PROTOCOL.md section 4. */
const hostFrame = {
  payload(parts) {
    const payload = Buffer.concat(parts);
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32LE(payload.length);
    return Buffer.concat([prefix, payload]);
  },
  u16(v) { const b = Buffer.alloc(2); b.writeUInt16LE(v); return b; },
  u32(v) { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; },
  u64(v) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return b; },
  bytes(b) { const buf = Buffer.isBuffer(b) ? b : Buffer.from(b, 'utf8'); return Buffer.concat([hostFrame.u64(buf.length), buf]); },
  init({ version = 1, maxFrame = 1 << 20, config = '{}' } = {}) {
    return hostFrame.payload([hostFrame.u32(0), hostFrame.u16(version), hostFrame.u32(maxFrame),
      hostFrame.bytes(config), hostFrame.u64(32 << 20), hostFrame.u64(10000), hostFrame.u64(4), hostFrame.u64(32)]);
  },
  call(id, method, input, timeoutMs = 10000) {
    const text = input === undefined ? Buffer.alloc(0) : Buffer.isBuffer(input) ? input : Buffer.from(JSON.stringify(input));
    return hostFrame.payload([hostFrame.u32(1), hostFrame.u64(id), hostFrame.bytes(method), hostFrame.bytes(text), hostFrame.u64(timeoutMs)]);
  },
  cancel(id) { return hostFrame.payload([hostFrame.u32(2), hostFrame.u64(id)]); },
  ping(nonce) { return hostFrame.payload([hostFrame.u32(3), hostFrame.u64(nonce)]); },
  shutdown(graceMs) { return hostFrame.payload([hostFrame.u32(4), hostFrame.u32(graceMs)]); },
  pong(nonce) { return hostFrame.payload([hostFrame.u32(5), hostFrame.u64(nonce)]); },
  /** Response: `body` (JSON) for Ok, or `{ code, message, details }` for Err. */
  response(id, body, error) {
    if (error) {
      const details = error.details === undefined ? { code: error.code, message: error.message } : error.details;
      return hostFrame.payload([hostFrame.u32(6), hostFrame.u64(id), hostFrame.u32(1), hostFrame.bytes(error.code),
        hostFrame.bytes(error.message), hostFrame.bytes(Buffer.isBuffer(details) ? details : JSON.stringify(details))]);
    }
    return hostFrame.payload([hostFrame.u32(6), hostFrame.u64(id), hostFrame.u32(0),
      hostFrame.bytes(JSON.stringify(body === undefined ? {} : body))]);
  },
  deliver(topic, from, payload) {
    return hostFrame.payload([hostFrame.u32(7), hostFrame.bytes(topic), hostFrame.bytes(from),
      hostFrame.bytes(JSON.stringify(payload))]);
  },
};

/** Decodes a plugin frame (prefix included) into a plain object. */
function decodePluginFrame(frame) {
  let pos = 4;
  const u32 = () => { const v = frame.readUInt32LE(pos); pos += 4; return v; };
  const u64 = () => { const v = frame.readBigUInt64LE(pos); pos += 8; return v; };
  const bytes = () => { const n = Number(u64()); const b = frame.subarray(pos, pos + n); pos += n; return b; };
  const str = () => bytes().toString('utf8');
  const variant = u32();
  let m;
  switch (variant) {
    case 0: {
      const magic = frame.subarray(pos, pos + 4).toString('latin1'); pos += 4;
      const versions = []; for (let n = Number(u64()); n > 0; n--) { versions.push(frame.readUInt16LE(pos)); pos += 2; }
      m = { type: 'Hello', magic, versions, name: str(), version: str(), maxFrame: u32() };
      break;
    }
    case 1: m = { type: 'Ready' }; break;
    case 2: {
      const id = u64();
      m = u32() === 0 ? { type: 'Reply', id, ok: bytes() } : { type: 'Reply', id, code: str(), message: str() };
      if (m.ok) {
        try {
          m.json = JSON.parse(m.ok.toString('utf8'));
        } catch {
          m.json = undefined; // not JSON: the raw bytes are in `ok`
        }
      }
      break;
    }
    case 3: {
      const level = ['error', 'warn', 'info', 'debug', 'trace'][u32()];
      const message = str();
      const fields = []; for (let n = Number(u64()); n > 0; n--) fields.push([str(), str()]);
      m = { type: 'Log', level, message, fields };
      break;
    }
    case 4: m = { type: 'Event', topic: str(), payload: bytes() }; break;
    case 5: m = { type: 'Pong', nonce: u64() }; break;
    case 6: m = { type: 'Ping', nonce: u64() }; break;
    case 8: {
      m = { type: 'Request', id: u64(), callId: u64(), service: str(), operation: str() };
      m.payload = JSON.parse(bytes().toString('utf8'));
      break;
    }
    default: throw new Error(`unknown plugin variant ${variant}`);
  }
  if (pos !== frame.length) throw new Error(`${frame.length - pos} bytes left over in ${m.type}`);
  return m;
}

class FakeHost {
  /** Spawns `node <nodeFlags> bootstrap.js <fixture>` (a path under test/fixtures, or `args` instead). */
  constructor(fixture, { env = {}, args, nodeFlags = [], channel = 'pipe' } = {}) {
    const entry = path.isAbsolute(fixture) ? fixture : path.join(FIXTURES, fixture);
    this.child = spawn(process.execPath, [...nodeFlags, BOOTSTRAP, ...(args || [entry])], {
      stdio: ['ignore', 'pipe', 'pipe', channel],
      env: { PATH: process.env.PATH, CORRAL_PLUGIN_NAME: 'greeter', CORRAL_PLUGIN_VERSION: '1.0.0', ...env },
    });
    this.channel = this.child.stdio[3] || new (require('stream').PassThrough)();
    this.stderr = '';
    this.child.stderr.on('data', (d) => { this.stderr += d; });
    this.child.stdout.resume();
    this.buffer = Buffer.alloc(0);
    this.waiters = [];
    this.ended = false;
    this.channel.on('data', (d) => { this.buffer = Buffer.concat([this.buffer, d]); this.wake(); });
    this.channel.on('end', () => { this.ended = true; this.wake(); });
    this.channel.on('error', () => { this.ended = true; this.wake(); });
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** The next whole frame the plugin sent, prefix included; null at end of stream. */
  async frame() {
    for (;;) {
      if (this.buffer.length >= 4) {
        const len = this.buffer.readUInt32LE(0);
        if (this.buffer.length >= 4 + len) {
          const frame = this.buffer.subarray(0, 4 + len);
          this.buffer = this.buffer.subarray(4 + len);
          return frame;
        }
      }
      if (this.ended) return null;
      await new Promise((resolve) => this.waiters.push(resolve));
    }
  }

  /** The next message, decoded; Log frames are collected in `logs` and skipped unless asked for. */
  async message({ logs = false } = {}) {
    for (;;) {
      const frame = await this.frame();
      if (frame === null) return null;
      const m = decodePluginFrame(frame);
      if (m.type === 'Log' && !logs) {
        (this.logs ||= []).push(m);
        continue;
      }
      return m;
    }
  }

  send(buf) {
    this.channel.write(buf);
  }

  /** Hello, Init (with `init` options), Ready. */
  async handshake(init = {}) {
    const hello = await this.message();
    if (!hello || hello.type !== 'Hello') throw new Error(`expected Hello, got ${JSON.stringify(hello)}; stderr: ${this.stderr}`);
    this.send(hostFrame.init(init));
    const ready = await this.message();
    if (!ready || ready.type !== 'Ready') throw new Error(`expected Ready, got ${JSON.stringify(ready)}; stderr: ${this.stderr}`);
    return hello;
  }

  async call(id, method, input) {
    this.send(hostFrame.call(id, method, input));
    const reply = await this.message();
    if (!reply || reply.type !== 'Reply') throw new Error(`expected a Reply, got ${JSON.stringify(reply)}; stderr: ${this.stderr}`);
    return reply;
  }

  /** The next Request (Logs collected). */
  async request() {
    const m = await this.message();
    if (!m || m.type !== 'Request') throw new Error(`expected a Request, got ${JSON.stringify(m, (k, v) => (typeof v === 'bigint' ? String(v) : v))}; stderr: ${this.stderr}`);
    return m;
  }

  respond(request, body, error) {
    this.send(hostFrame.response(request.id, body, error));
  }

  close() {
    this.channel.end();
  }

  kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

module.exports = { FakeHost, hostFrame, goldenVectors, helloOffering2, decodePluginFrame, BOOTSTRAP, FIXTURES };
