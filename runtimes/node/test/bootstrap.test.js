'use strict';
// The bootstrap driven by a fake host over a real socketpair on fd 3:
// the golden vectors of PROTOCOL.md byte for byte, the class contract
// (CommonJS, ESM, nested paths, async, errors), and the protocol's edges
// (Cancel, Ping, Shutdown, garbled frames, end of stream).

const test = require('node:test');
const assert = require('node:assert/strict');
const { FakeHost, hostFrame, goldenVectors, helloOffering2 } = require('./host');

const golden = goldenVectors();
const EX_PROTOCOL = 76;

/** Runs `body` with a host on `fixture`; the child is killed if the test fails midway. */
async function withHost(fixture, options, body) {
  const host = new FakeHost(fixture, options);
  try {
    return await body(host);
  } finally {
    host.kill();
  }
}

test('the handshake, a call, a ping and shutdown match PROTOCOL.md byte for byte', () =>
  withHost('greeter.js', { env: { CORRAL_PLUGIN_NAME: 'hello', CORRAL_PLUGIN_VERSION: '0.1.0' } }, async (host) => {
    assert.deepEqual(await host.frame(), helloOffering2(golden.hello), 'Hello');
    host.send(golden.init);
    assert.deepEqual(await host.frame(), golden.ready, 'Ready');
    host.send(golden.call);
    assert.deepEqual(await host.frame(), golden['reply-ok'], 'the reply to greet');
    host.send(golden.ping);
    assert.deepEqual(await host.frame(), golden.pong, 'Pong');
    host.send(golden.shutdown);
    assert.deepEqual(await host.exited, { code: 0, signal: null });
    assert.equal(await host.frame(), null, 'nothing after Shutdown');
  }));

test('a log record with fields and an event match PROTOCOL.md byte for byte', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake();
    host.send(hostFrame.call(7, 'structured', null));
    assert.deepEqual(await host.frame(), golden.log);
    assert.deepEqual(await host.frame(), golden.event);
    const reply = await host.message();
    assert.equal(reply.id, 7n);
    assert.equal(reply.json, null);
  }));

test('node flags a supervisor may pass (--jitless, a small heap, one V8 worker) change nothing', () =>
  withHost('greeter.js', {
    nodeFlags: ['--jitless', '--no-expose-wasm', '--max-old-space-size=24', '--v8-pool-size=1',
      '--disallow-code-generation-from-strings'],
    env: { CORRAL_PLUGIN_NAME: 'hello', CORRAL_PLUGIN_VERSION: '0.1.0' },
  }, async (host) => {
    assert.deepEqual(await host.frame(), helloOffering2(golden.hello));
    host.send(golden.init);
    assert.deepEqual(await host.frame(), golden.ready);
    host.send(golden.call);
    assert.deepEqual(await host.frame(), golden['reply-ok']);
    assert.deepEqual((await host.call(2, 'later', { ms: 1 })).json, { waited: 1 });
    host.send(golden.shutdown);
    assert.deepEqual(await host.exited, { code: 0, signal: null });
    // --jitless alone warns that it disables WebAssembly; --no-expose-wasm says so first.
    assert.equal(host.stderr, '');
  }));

test('Hello names the plugin from CORRAL_PLUGIN when CORRAL_PLUGIN_NAME is absent', () =>
  withHost('greeter.js', { env: { CORRAL_PLUGIN_NAME: '', CORRAL_PLUGIN: 'from-protocol-env' } }, async (host) => {
    const hello = await host.message();
    assert.equal(hello.magic, 'CRRL');
    assert.deepEqual(hello.versions, [1, 2]);
    assert.equal(hello.name, 'from-protocol-env');
    assert.equal(hello.version, '1.0.0');
    assert.equal(hello.maxFrame, 4 * 1024 * 1024);
  }));

test('the constructor receives the settings from Init', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake({ config: '{"prefix":"Hi","n":[1,2]}' });
    assert.deepEqual((await host.call(1, 'settingsSeen', null)).json, { prefix: 'Hi', n: [1, 2] });
    assert.deepEqual((await host.call(2, 'greet', { name: 'Bo' })).json, { greeting: 'Hi, Bo!' });
  }));

test('an ESM plugin (.mjs, export default class) is served', () =>
  withHost('esm-plugin.mjs', {}, async (host) => {
    await host.handshake({ config: '{"a":1}' });
    const reply = await host.call(1, 'greet', { name: 'Ada' });
    assert.deepEqual(reply.json, { greeting: 'ESM says hi to Ada', settings: { a: 1 } });
  }));

test('ESM syntax in a .js file without package.json is served (seed 000 buckets)', () =>
  withHost('typeless/index.js', {}, async (host) => {
    await host.handshake();
    assert.equal((await host.call(1, 'kind', null)).json, 'esm without a package.json');
  }));

test('a CommonJS module with exports.default (transpiled TypeScript) is served', () =>
  withHost('default-export.js', {}, async (host) => {
    await host.handshake();
    assert.equal((await host.call(1, 'hello', null)).json, 'from exports.default');
  }));

test("seed 000's README plugin answers codeGeneration.generateCode", () =>
  withHost('seed-000.js', {}, async (host) => {
    await host.handshake();
    const reply = await host.call(1, 'codeGeneration.generateCode', { dataset: 'users.csv', rows: 5 });
    assert.match(reply.json, /^import pandas as pd/);
    assert.match(reply.json, /pd\.read_csv\('users\.csv'\)/);
    assert.match(reply.json, /data\.head\(5\)/);
  }));

test('a nested method path is called with this bound to the object holding it', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake({ config: '{"prefix":"Hey"}' });
    const reply = await host.call(1, 'codeGeneration.generateCode', { name: 'Ada' });
    assert.equal(reply.json, 'print("Hey, Ada")');
  }));

test('async methods resolve, and concurrent calls are answered in any order', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake();
    assert.deepEqual((await host.call(1, 'later', { ms: 5 })).json, { waited: 5 });
    host.send(hostFrame.call(2, 'waitForRelease', null));
    host.send(hostFrame.call(3, 'releaseNow', 'go'));
    const first = await host.message();
    const second = await host.message();
    assert.deepEqual([first.id, first.json], [3n, 'released']);
    assert.deepEqual([second.id, second.json], [2n, { released: 'go' }]);
  }));

test('undefined is null, bytes are sent as they are', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake();
    assert.deepEqual((await host.call(1, 'nothing', null)).ok, Buffer.from('null'));
    assert.deepEqual((await host.call(2, 'bytes', null)).ok, Buffer.from([0xff, 0x00, 0x01]));
  }));

test('thrown errors and rejections are plugin_error "<Name>: <message>"', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake();
    const cases = [
      [{}, 'RangeError: out of range'],
      [{ kind: 'custom' }, 'NotFriendly: go away'],
      [{ kind: 'string' }, 'Error: plain string'],
      [{ kind: 'undefined' }, 'Error: undefined'],
      [{ kind: 'empty' }, 'SyntaxError'],
      [{ kind: 'hostile' }, 'Error: (a thrown value that cannot be described)'],
    ];
    let id = 1;
    for (const [input, message] of cases) {
      const reply = await host.call(id++, 'fail', input);
      assert.deepEqual([reply.code, reply.message], ['plugin_error', message]);
    }
    const typeError = await host.call(id++, 'fail', { kind: 'type' });
    assert.equal(typeError.code, 'plugin_error');
    assert.match(typeError.message, /^TypeError: Cannot read properties of null/);
    const rejected = await host.call(id++, 'failLater', null);
    assert.deepEqual([rejected.code, rejected.message], ['plugin_error', 'Error: async failure']);
    // The plugin goes on serving.
    assert.deepEqual((await host.call(id++, 'greet', { name: 'still here' })).json, { greeting: 'Hello, still here!' });
  }));

test('unknown methods, built-ins and the class itself are unknown_method', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake();
    const paths = ['nope', 'toString', 'constructor', '__proto__.greet', 'greet.call', 'codeGeneration.prefix',
      'codeGeneration.hasOwnProperty', '', 'greet.', 'settings.prefix'];
    let id = 1;
    for (const method of paths) {
      const reply = await host.call(id++, method, null);
      assert.equal(reply.code, 'unknown_method', `${JSON.stringify(method)}: ${reply.code} ${reply.message}`);
    }
    const reply = await host.call(id++, 'nope', null);
    assert.match(reply.message, /no method `nope`; it serves: .*codeGeneration\.generateCode.*greet/);
  }));

test('input that is not JSON is invalid_input; output that is not JSON is invalid_output', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake();
    assert.equal((await host.call(1, 'greet', Buffer.from('{not json'))).code, 'invalid_input');
    assert.equal((await host.call(2, 'greet', Buffer.from([0xff]))).code, 'invalid_input');
    const circular = await host.call(3, 'circular', null);
    assert.equal(circular.code, 'invalid_output');
    assert.match(circular.message, /circular/i);
  }));

test('a reply larger than Init.max_frame is reply_too_large, and the next call works', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake({ maxFrame: 1024 });
    const fits = await host.call(1, 'big', { bytes: 1024 - 24 - 2 });
    assert.equal(fits.json.length, 1024 - 24 - 2);
    const tooLarge = await host.call(2, 'big', { bytes: 1024 });
    assert.equal(tooLarge.code, 'reply_too_large');
    // An error message longer than the frame is cut between characters to fit.
    const long = await host.call(4, 'fail', { kind: 'long', chars: 5000 });
    assert.equal(long.code, 'plugin_error');
    assert.match(long.message, /^Error: (é)+ \[truncated\]$/);
    assert.ok(Buffer.byteLength(long.message) <= 1024 - 32 - 'plugin_error'.length);
    assert.equal((await host.call(3, 'greet', { name: 'x' })).json.greeting, 'Hello, x!');
  }));

test('console.* become Log frames at their levels; an oversized one is cut to fit', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake({ maxFrame: 4096 });
    host.send(hostFrame.call(1, 'chatty', { n: 3 }));
    const seen = [];
    for (let m = await host.message({ logs: true }); m.type === 'Log'; m = await host.message({ logs: true })) {
      seen.push([m.level, m.message]);
    }
    assert.deepEqual(seen, [['info', 'log 3'], ['info', 'info'], ['warn', 'warn'], ['error', 'error'], ['debug', 'debug']]);
    host.send(hostFrame.call(2, 'hugeLog', { bytes: 10000 }));
    const log = await host.message({ logs: true });
    assert.equal(log.type, 'Log');
    assert.ok(log.message.endsWith(' [truncated]'));
    assert.ok(log.message.length < 4096);
    assert.equal((await host.message()).json, 'logged');
  }));

test('Cancel aborts the call, answers it at once, and unknown ids are ignored', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake();
    host.send(hostFrame.call(5, 'untilCancelled', null));
    host.send(hostFrame.cancel(5));
    const reply = await host.message();
    assert.deepEqual([reply.id, reply.code], [5n, 'cancelled']);
    // A Cancel for an unknown or answered id changes nothing: the next
    // frame is the answer to the Ping, not a stray reply.
    host.send(Buffer.concat([hostFrame.cancel(5), hostFrame.cancel(99), hostFrame.ping(3)]));
    assert.deepEqual(await host.message(), { type: 'Pong', nonce: 3n });
    assert.equal((await host.call(6, 'greet', { name: 'z' })).json.greeting, 'Hello, z!');
  }));

test('Ping is answered while an async call is in flight; a host Pong is ignored', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake();
    host.send(hostFrame.call(1, 'waitForRelease', null));
    host.send(Buffer.concat([hostFrame.pong(1), hostFrame.ping(0x0102030405060708n)]));
    assert.deepEqual(await host.frame(), golden.pong);
    host.send(hostFrame.call(2, 'releaseNow', 1));
    const ids = [(await host.message()).id, (await host.message()).id].sort();
    assert.deepEqual(ids, [1n, 2n]);
  }));

test('Shutdown lets calls in flight finish, refuses new ones, then exits 0', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake();
    host.send(hostFrame.call(1, 'later', { ms: 50 }));
    host.send(hostFrame.shutdown(5000));
    host.send(hostFrame.call(2, 'greet', { name: 'late' }));
    const refused = await host.message();
    assert.deepEqual([refused.id, refused.code], [2n, 'shutting_down']);
    const finished = await host.message();
    assert.deepEqual([finished.id, finished.json], [1n, { waited: 50 }]);
    assert.deepEqual(await host.exited, { code: 0, signal: null });
  }));

test('Shutdown exits when its grace runs out even with a call still running', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake();
    host.send(hostFrame.call(1, 'waitForRelease', null));
    host.send(hostFrame.shutdown(20));
    assert.deepEqual(await host.exited, { code: 0, signal: null });
  }));

test('end of stream between frames exits 0', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.handshake();
    host.close();
    assert.deepEqual(await host.exited, { code: 0, signal: null });
  }));

/** Frames the host must never send; each makes the plugin exit 76 writing nothing more. */
const garbled = {
  'an unknown variant': () => hostFrame.payload([hostFrame.u32(9)]),
  'a Call with bytes left over': () => {
    const call = hostFrame.call(1, 'greet', { name: 'x' });
    const longer = Buffer.concat([call, Buffer.from([0])]);
    longer.writeUInt32LE(call.length - 4 + 1, 0);
    return longer;
  },
  'a method name that is not UTF-8 (a surrogate)': () => hostFrame.payload([hostFrame.u32(1), hostFrame.u64(1),
    hostFrame.bytes(Buffer.from([0xed, 0xa0, 0x80])), hostFrame.bytes('null'), hostFrame.u64(0)]),
  'a method name that is not UTF-8 (an overlong /)': () => hostFrame.payload([hostFrame.u32(1), hostFrame.u64(1),
    hostFrame.bytes(Buffer.from([0xc0, 0xaf])), hostFrame.bytes('null'), hostFrame.u64(0)]),
  'a string length past the payload': () => hostFrame.payload([hostFrame.u32(1), hostFrame.u64(1),
    hostFrame.u64(2n ** 63n), Buffer.from('greet')]),
  'a frame longer than Init.max_frame': () => {
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32LE(2048);
    return prefix; // the length alone: the plugin must refuse before the payload
  },
  'a second Init': () => hostFrame.init(),
  'end of stream inside a frame': () => Buffer.from([10, 0, 0]),
};

for (const [what, frame] of Object.entries(garbled)) {
  test(`${what} is a protocol violation: exit 76, nothing more written`, () =>
    withHost('greeter.js', {}, async (host) => {
      await host.handshake({ maxFrame: 1024 });
      host.send(frame());
      if (what.startsWith('end of stream')) host.close();
      assert.deepEqual(await host.exited, { code: EX_PROTOCOL, signal: null }, host.stderr);
      assert.equal(await host.message(), null);
      assert.match(host.stderr, /broke the protocol/);
    }));
}

test('a message other than Init first is a protocol violation', () =>
  withHost('greeter.js', {}, async (host) => {
    assert.equal((await host.message()).type, 'Hello');
    host.send(hostFrame.call(1, 'greet', { name: 'x' }));
    assert.deepEqual(await host.exited, { code: EX_PROTOCOL, signal: null });
    assert.match(host.stderr, /expected Init/);
  }));

test('an Init frame above the handshake limit is refused from its length alone', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.message();
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32LE(1024 * 1024 + 1);
    host.send(prefix);
    assert.deepEqual(await host.exited, { code: EX_PROTOCOL, signal: null });
  }));

for (const [what, init] of [
  ['a max_frame above Hello.max_frame', { maxFrame: 4 * 1024 * 1024 + 1 }],
  ['a max_frame below 1024', { maxFrame: 1023 }],
  ['a version it did not offer', { version: 3 }],
]) {
  test(`Init with ${what} ends the start with 76 and no Ready`, () =>
    withHost('greeter.js', {}, async (host) => {
      await host.message();
      host.send(hostFrame.init(init));
      assert.deepEqual(await host.exited, { code: EX_PROTOCOL, signal: null });
      assert.equal(await host.message(), null);
    }));
}

for (const [fixture, complaint] of [
  ['missing.js', /cannot load .*missing\.js/],
  ['no-class.js', /exports no plugin class/],
  ['syntax-error.js', /SyntaxError/],
]) {
  test(`a start failure (${fixture}) is reported on stderr and exits non-zero without Ready`, () =>
    withHost(fixture, {}, async (host) => {
      assert.equal((await host.message()).type, 'Hello');
      host.send(hostFrame.init());
      const { code } = await host.exited;
      assert.notEqual(code, 0);
      assert.match(host.stderr, complaint);
      const after = await host.message();
      assert.equal(after, null, 'no Ready');
    }));
}

test('a constructor that throws fails the start after Init, with the error logged', () =>
  withHost('throws-in-constructor.js', {}, async (host) => {
    await host.message();
    host.send(hostFrame.init());
    assert.equal((await host.exited).code, 1);
    assert.match(host.stderr, /Error: cannot start/);
    assert.equal(await host.message(), null);
    assert.ok(host.logs.some((l) => l.level === 'error' && /cannot start/.test(l.message)));
  }));

test('settings that are not JSON fail the start', () =>
  withHost('greeter.js', {}, async (host) => {
    await host.message();
    host.send(hostFrame.init({ config: '{oops' }));
    assert.equal((await host.exited).code, 1);
    assert.match(host.stderr, /Init\.config/);
  }));

test('a bad command line exits 64', () =>
  withHost('greeter.js', { args: [] }, async (host) => {
    assert.equal((await host.exited).code, 64);
    assert.match(host.stderr, /usage/);
  }));

test('without a socket on fd 3 it says so and exits 78', () =>
  withHost('greeter.js', { channel: 'ignore' }, async (host) => {
    assert.equal((await host.exited).code, 78);
    assert.match(host.stderr, /fd 3 is not a channel to corral/);
  }));
