'use strict';
// services.js on its own: the `corral` object both JavaScript runtimes
// share, driven through a fake `host` (what each engine gives it), and
// loaded once the way corral-js loads it, in a context with no Node API.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const vm = require('vm');
const services = require('../services.js');

const SOURCE_PATH = path.join(__dirname, '..', 'services.js');

/** A host that records what is sent and logged; ids come back from `sent`. */
function fakeHost(options = {}) {
  const sent = [];
  const logs = [];
  const host = {
    send(id, service, operation, json) {
      sent.push({ id, service, operation, payload: JSON.parse(json) });
      if (options.send) return options.send(id, service, operation, json);
      return options.call;
    },
    log(message, fields) {
      logs.push({ message, fields });
    },
  };
  return { api: services.createHostServices(host), sent, logs };
}

/** Lets pending Promise jobs run. */
const turn = () => new Promise((resolve) => setImmediate(resolve));

test('it runs where there is no Node API, loaded as corral-js loads it', async () => {
  // What corral-js does (runtimes/js/src/services.rs): a module/exports shim
  // around the file, in an engine with no require, Buffer, process, console, atob.
  const context = vm.createContext({});
  // V8 gives every context a console; QuickJS without corral-js's gives none.
  vm.runInContext('delete globalThis.console', context);
  for (const name of ['require', 'Buffer', 'process', 'console', 'atob', 'btoa', 'setTimeout', 'TextEncoder']) {
    assert.equal(vm.runInContext(`typeof ${name}`, context), 'undefined', name);
  }
  const source = fs.readFileSync(SOURCE_PATH, 'utf8');
  const factory = vm.runInContext(
    `(function (send, log) { const module = { exports: {} }; (function (module, exports) {${source}\n})(module, module.exports);\n` +
    'return module.exports.createHostServices({ send, log }); })', context, { filename: SOURCE_PATH });
  const sent = [];
  const logs = [];
  const api = factory((id, service, operation, json) => sent.push([id, `${service}.${operation}`, json]),
    (message) => logs.push(message));
  const c = api.corral;
  // Every operation, each settled with its body: nothing reaches for a Node API.
  const results = [
    c.callPlugin('dep', 'upper', 'a', { timeoutMs: 5 }), c.listPlugins(), c.publish('t', 1), c.settings(),
    c.kv.get('t', 'k'), c.kv.put('t', 'k', 1), c.kv.delete('t', 'k'), c.kv.list('t', { prefix: 'p' }),
    c.s3.get('b', 'k'), c.s3.put('b', 'k', 'h\u00e9\u{1F600}', { contentType: 'text/plain' }), c.s3.list('b'),
    c.s3.delete('b', 'k'), c.subscribe('a.*', (payload) => logs.push(`got ${payload}`)), c.getDependencies(),
  ];
  const bodies = [{ output: 'A' }, { plugins: ['dep'] }, { delivered: 1, dropped: 0 }, { s: 1 }, { value: 2 }, {},
    { deleted: true }, { keys: [], next: null }, { body: Buffer.from([0, 255, 7]).toString('base64'), size: 3 },
    { etag: 'e' }, { objects: [], next: null }, {}, {}, { plugins: ['dep'] }];
  bodies.forEach((body, at) => api.settle(at + 1, JSON.stringify(body)));
  const values = await Promise.all(results);
  assert.deepEqual(JSON.parse(JSON.stringify(values.slice(0, 8))),
    ['A', ['dep'], { delivered: 1, dropped: 0 }, { s: 1 }, 2, null, true, { keys: [], next: null }]);
  assert.deepEqual(Array.from(values[8].body), [0, 255, 7], 'an S3 body arrives as bytes');
  assert.equal(values[8].body.constructor.name, 'Uint8Array');
  const put = JSON.parse(sent[9][2]);
  assert.equal(put.body, Buffer.from('h\u00e9\u{1F600}', 'utf8').toString('base64'), 'a string goes out as UTF-8');
  assert.equal(put.content_type, 'text/plain');
  assert.equal(values[9], 'e');
  assert.deepEqual([...values[13].keys()], ['dep']);
  api.deliver('a.b', 'client', '7');
  api.deliver('a.c', 'client', 'not json');
  assert.deepEqual(logs, ['got 7', 'got not json']);
  // Its errors are its own realm's, and still typed by code.
  const refused = c.kv.get('secrets', 'k');
  api.settle(15, null, 'permission_denied', 'no', '{"permission":"kv.table secrets"}');
  const err = await refused.then(() => null, (e) => e);
  assert.equal(err.name, 'PermissionDeniedError');
  assert.equal(err.permission, 'kv.table secrets');
  assert.ok(err instanceof c.errors.ServiceError);
  assert.deepEqual([...api.serviceCode(err)], ['permission_denied', 'no']);
});

test('a request goes out as JSON with a fresh id and settles with its body', async () => {
  const { api, sent } = fakeHost();
  const first = api.corral.kv.get('users', 'u1');
  const second = api.corral.callPlugin('dep', 'm');
  assert.deepEqual(sent.map((s) => [s.id, s.service, s.operation, s.payload]), [
    [1, 'kv', 'get', { table: 'users', key: 'u1' }],
    [2, 'plugins', 'call', { plugin: 'dep', method: 'm', input: null }],
  ]);
  api.settle(2, '{"output":{"x":1}}');
  api.settle(1, '{}');
  assert.deepEqual(await second, { x: 1 });
  assert.equal(await first, null, 'a missing value is null');
  api.settle(1, '{"value":"late"}'); // settled already: ignored
  api.settle(99, '{}'); // for no request: ignored
});

test('an answer that is not a JSON object is a ServiceError, not a crash', async () => {
  const { api, sent } = fakeHost();
  for (const body of ['nope', '3', 'null', '"text"', '', '[1]'.slice(0, 2)]) {
    const pending = api.corral.settings();
    api.settle(sent[sent.length - 1].id, body);
    await assert.rejects(pending, (err) => err instanceof services.ServiceError &&
      err.code === 'invalid_response' && /config\.get/.test(err.message), body);
  }
});

test('refusals are typed by code and carry their details as properties', async () => {
  const { api } = fakeHost();
  const cases = [
    // The API's whole error object is the details; its code and message are not properties again.
    ['permission_denied', 'PermissionDeniedError', '{"code":"x","message":"y","permission":"kv.table s"}',
      { code: 'x', message: 'y', permission: 'kv.table s' }],
    ['quota_exceeded', 'QuotaExceededError', '{"quota_bytes":10,"used_bytes":9}', { quota_bytes: 10, used_bytes: 9 }],
    ['brand_new', 'ServiceError', '[nope', {}],
    ['timeout', 'TimeoutError', '[1,2]', {}],
    ['cancelled', 'CancelledError', 'null', {}],
    ['not_found', 'NotFoundError', '{"name":"shadowed","stack":"kept"}', { name: 'shadowed', stack: 'kept' }],
  ];
  let id = 0;
  for (const [code, name, details, expected] of cases) {
    const pending = api.corral.kv.get('t', 'k');
    id += 1;
    api.settle(id, null, code, `refused: ${code}`, details);
    const err = await pending.then(() => assert.fail('resolved'), (e) => e);
    assert.equal(err.name, name);
    assert.equal(err.code, code);
    assert.equal(err.message, `refused: ${code}`);
    assert.deepEqual(err.details, expected);
    assert.ok(err instanceof services.errors.ServiceError);
    assert.ok(err instanceof (services.errors[name] || services.ServiceError));
    for (const [key, value] of Object.entries(expected)) {
      // A detail never replaces what an Error already has (`name`, `stack`).
      if (!['name', 'stack', 'code', 'message'].includes(key)) assert.equal(err[key], value, key);
    }
    assert.deepEqual(api.serviceCode(err), [code, `refused: ${code}`]);
    assert.notEqual(err.stack, 'kept', 'a detail never replaces the stack');
  }
  assert.equal(api.serviceCode(new Error('plain')), null);
  assert.equal(api.serviceCode('thrown string'), null);
});

test('every code has its class, and the classes cannot be replaced', () => {
  for (const [code, name] of Object.entries(services.SERVICE_ERROR_CODES)) {
    const err = services.serviceError(code, 'm', { a: 1 });
    assert.equal(err.constructor, services.errors[name]);
    assert.equal(err.name, name);
    assert.equal(err.a, 1);
    assert.equal(new services.errors[name]('m').code, code);
  }
  assert.ok(Object.isFrozen(services.errors));
  assert.ok(Object.isFrozen(services));
  assert.throws(() => { 'use strict'; services.errors.TimeoutError = Error; }, TypeError);
});

test('a payload that is not JSON is InvalidInputError and nothing is sent', async () => {
  const { api, sent } = fakeHost();
  const cyclic = {};
  cyclic.self = cyclic;
  await assert.rejects(api.corral.kv.put('t', 'k', cyclic), services.errors.InvalidInputError);
  await assert.rejects(api.corral.publish('t', 10n), (err) => err instanceof services.errors.InvalidInputError &&
    /events\.publish: the payload is not JSON/.test(err.message));
  assert.equal(sent.length, 0);
});

test('a send that throws fails its request, which then waits for nothing', async () => {
  const tooBig = new services.errors.PayloadTooLargeError('too big');
  const { api } = fakeHost({ send: () => { throw tooBig; } });
  await assert.rejects(api.corral.publish('t', 'x'), (err) => err === tooBig);
  assert.equal(api.fail(1, new Error('again')), false, 'the request no longer waits');
  api.settle(1, '{}'); // an answer for it changes nothing
});

test('a request the host fails later (not sent) rejects with that error; its answer is dropped', async () => {
  const { api } = fakeHost();
  const pending = api.corral.callPlugin('dep', 'm');
  const refusal = new services.errors.ServiceUnavailableError('version 1', { service: 'plugins' });
  assert.equal(api.fail(1, refusal), true);
  await assert.rejects(pending, (err) => err === refusal && err.service === 'plugins');
  api.settle(1, '{"output":"late"}');
});

test('cancelCall ends only the requests of that call, as CancelledError', async () => {
  let call = 5n;
  const { api } = fakeHost({ send: () => call });
  const ofFive = api.corral.kv.get('t', 'a');
  const alsoFive = api.corral.callPlugin('dep', 'slow');
  call = 6n;
  const ofSix = api.corral.kv.get('t', 'b');
  api.cancelCall(5n);
  await assert.rejects(ofFive, (err) => err instanceof services.errors.CancelledError &&
    /while it waited for kv\.get/.test(err.message));
  await assert.rejects(alsoFive, services.errors.CancelledError);
  api.settle(1, '{"value":"late"}'); // a late answer for a cancelled request: dropped
  api.settle(3, '{"value":"b"}');
  assert.equal(await ofSix, 'b');
  api.cancelCall(7n); // a call with nothing waiting: nothing happens
});

test('deliveries reach the handlers whose pattern matches; a failing handler is logged', async () => {
  const { api, logs } = fakeHost();
  const seen = [];
  const subscribed = Promise.all([
    api.corral.subscribe('data:*', (payload, delivery) => seen.push(['all', payload, delivery])),
    api.corral.subscribe('data:saved', () => { throw new TypeError('boom'); }),
    api.corral.subscribe('data:saved', async () => { throw 'async boom'; }),
    api.corral.subscribe('other', () => seen.push(['other'])),
  ]);
  for (let id = 1; id <= 4; id++) api.settle(id, '{}');
  await subscribed;
  api.deliver('data:saved', 'writer', '{"n":1}');
  api.deliver('nothing', 'writer', '1');
  api.deliver('data:raw', 'client', 'not json', 'the bytes');
  api.deliver('data:text', 'client', 'not json');
  await turn();
  assert.deepEqual(seen.map(([which, payload]) => [which, payload]),
    [['all', { n: 1 }], ['all', 'the bytes'], ['all', 'not json']]);
  const delivery = seen[0][2];
  assert.deepEqual({ ...delivery }, { topic: 'data:saved', from: 'writer', payload: { n: 1 } });
  assert.ok(Object.isFrozen(delivery));
  assert.deepEqual(logs, [
    { message: 'the handler of "data:saved" threw TypeError: boom', fields: { topic: 'data:saved', from: 'writer' } },
    { message: 'the handler of "data:saved" threw Error: async boom', fields: { topic: 'data:saved', from: 'writer' } },
  ]);
});

test('a handler counts once subscribed; unsubscribing the last one asks the host', async () => {
  const { api, sent } = fakeHost();
  await assert.rejects(api.corral.subscribe('a', 'not a function'), TypeError);
  assert.equal(sent.length, 0, 'a refused handler sends nothing');
  const seen = [];
  const one = () => seen.push(1);
  const two = () => seen.push(2);
  const first = api.corral.subscribe('a', one);
  api.deliver('a', 'c', '0'); // before the host agreed: no handler yet
  api.settle(1, '{}');
  await first;
  const second = api.corral.subscribe('a', two);
  api.settle(2, '{}');
  await second;
  api.deliver('a', 'c', '0');
  assert.deepEqual(seen, [1, 2]);
  assert.equal(await api.corral.unsubscribe('a', one), true, 'another handler remains');
  assert.equal(sent.length, 2, 'so the host is not asked');
  const last = api.corral.unsubscribe('a');
  assert.deepEqual(sent[2].payload, { pattern: 'a' });
  api.settle(3, '{"removed":true}');
  assert.equal(await last, true);
  api.deliver('a', 'c', '0');
  assert.deepEqual(seen, [1, 2]);
});

test("seed 001's eventBus: once runs once, off finds once's listener, refusals are logged", async () => {
  const { api, sent, logs } = fakeHost();
  const bus = api.corral.eventBus;
  const seen = [];
  const listener = (payload) => seen.push(payload);
  const once = bus.once('e', listener);
  api.settle(1, '{}');
  await once;
  api.deliver('e', 'c', '1');
  api.deliver('e', 'c', '2');
  assert.deepEqual(seen, [1], 'once ran once');
  assert.deepEqual([sent[1].operation, sent[1].payload], ['unsubscribe', { pattern: 'e' }]);
  api.settle(2, '{"removed":true}');
  const on = bus.once('f', listener);
  api.settle(3, '{}');
  await on;
  const off = bus.off('f', listener);
  assert.deepEqual([sent[3].operation, sent[3].payload], ['unsubscribe', { pattern: 'f' }], 'off found the wrapper');
  api.settle(4, '{"removed":true}');
  assert.equal(await off, true);
  const emitted = bus.emit('g', { x: 1 });
  api.settle(5, null, 'permission_denied', 'grant events.publish g', '{}');
  await assert.rejects(emitted, services.errors.PermissionDeniedError);
  assert.deepEqual(logs.map((l) => l.message),
    ['eventBus.emit("g") failed: PermissionDeniedError: grant events.publish g']);
});

test('getDependency: methods call the dependency; then and toJSON stay undefined', async () => {
  const { api, sent } = fakeHost();
  const dep = api.corral.getDependency('text-utils');
  assert.equal(dep.then, undefined, 'awaiting it must not call it');
  assert.equal(dep.toJSON, undefined);
  assert.equal(dep[Symbol.iterator], undefined);
  assert.deepEqual(dep.metadata, { name: 'text-utils' });
  assert.ok(Object.isFrozen(dep.metadata));
  assert.equal(await dep, dep);
  const upper = dep.upper({ text: 'a' });
  assert.deepEqual(sent[0].payload, { plugin: 'text-utils', method: 'upper', input: { text: 'a' } });
  api.settle(1, '{"output":"A"}');
  assert.equal(await upper, 'A');
  assert.throws(() => { 'use strict'; dep.upper = 1; }, TypeError);
});

test('the corral object and its parts are frozen, with the same shape in every instance', () => {
  const { api } = fakeHost();
  const c = api.corral;
  for (const part of [c, c.kv, c.s3, c.eventBus, c.errors]) assert.ok(Object.isFrozen(part));
  assert.equal(c.errors, services.errors, 'one set of classes');
  assert.deepEqual(Object.keys(c).sort(), ['callPlugin', 'errors', 'eventBus', 'getDependencies', 'getDependency',
    'kv', 'listPlugins', 'publish', 's3', 'settings', 'subscribe', 'unsubscribe']);
  assert.deepEqual(Object.keys(c.kv), ['get', 'put', 'delete', 'list']);
  assert.deepEqual(Object.keys(c.s3), ['get', 'put', 'list', 'delete']);
  assert.deepEqual(Object.keys(c.eventBus), ['emit', 'on', 'once', 'off']);
  // Methods need no `this`: a plugin may pass them around.
  const { callPlugin } = c;
  assert.ok(callPlugin('dep', 'm') instanceof Promise);
});

test('S3 bodies: the portable bytes agree with Buffer; a body that is not bytes throws before sending', async () => {
  const { encode, decode } = services.portableBytes;
  for (let n = 0; n < 40; n++) {
    const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n * 11) % 256);
    const expected = Buffer.from(bytes).toString('base64');
    assert.equal(encode(bytes), expected, `${n} bytes`);
    assert.equal(encode(bytes.buffer), expected, `${n} bytes as an ArrayBuffer`);
    assert.deepEqual(Array.from(decode(expected)), Array.from(bytes), `${n} bytes back`);
  }
  assert.equal(encode('h\u00e9llo \u{1F600}'), Buffer.from('h\u00e9llo \u{1F600}').toString('base64'));
  assert.deepEqual(Array.from(decode(undefined)), []);
  assert.throws(() => decode('a*b='), TypeError);
  const { api, sent } = fakeHost();
  assert.throws(() => api.corral.s3.put('b', 'k', 42), /an S3 body is a string, a Uint8Array or an ArrayBuffer/);
  assert.equal(sent.length, 0);
  const got = api.corral.s3.get('b', 'k');
  api.settle(1, '{"body":"not*base64","size":1}');
  await assert.rejects(got, /not base64/);
});

test('pattern matching is the host\'s rule', () => {
  const m = services.patternMatches;
  assert.ok(m('data:*', 'data:saved') && m('*', '') && m('a*b*c', 'a-b-b-c') && m('**', 'x') && m('a*', 'a'));
  assert.ok(!m('orders', 'orders.x') && !m('data:*', 'user:data:x') && !m('a*b*c', 'a-c') && !m('ab*ba', 'aba'));
  assert.ok(m('a*b*a', 'aba') && !m('a*a', 'a'), 'the first and last parts may not overlap');
});
