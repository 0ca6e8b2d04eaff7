'use strict';
// Host services (PROTOCOL.md section 9) through the bootstrap: a fake host
// answers the plugin's Requests and delivers events.

const test = require('node:test');
const assert = require('node:assert/strict');
const { FakeHost, hostFrame, goldenVectors } = require('./host');
const bootstrap = require('../bootstrap');

const golden = goldenVectors();

async function withHost(fixture, body) {
  const host = new FakeHost(fixture);
  try {
    return await body(host);
  } finally {
    host.kill();
  }
}

test('Request encodes as section 9 says; Response and Deliver decode', () => {
  const frame = bootstrap.encode.request(7n, 3n, 'kv', 'get', Buffer.from('{"k":1}')).frame();
  const expected = Buffer.concat([Buffer.from([0x38, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]),
    Buffer.from([2, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('kv'), Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('get'),
    Buffer.from([7, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{"k":1}')]);
  assert.deepEqual(frame, expected);
  const ok = bootstrap.decodeHostMessage(hostFrame.response(9, { a: 1 }).subarray(4));
  assert.deepEqual(ok, { type: 'Response', id: 9n, body: Buffer.from('{"a":1}') });
  const err = bootstrap.decodeHostMessage(hostFrame.response(9, null, { code: 'timeout', message: 'late', details: {} }).subarray(4));
  assert.deepEqual(err, { type: 'Response', id: 9n, code: 'timeout', message: 'late', details: Buffer.from('{}') });
  const deliver = bootstrap.decodeHostMessage(hostFrame.deliver('a.b', 'client', 1).subarray(4));
  assert.deepEqual(deliver, { type: 'Deliver', topic: 'a.b', from: 'client', payload: Buffer.from('1') });
  assert.throws(() => bootstrap.decodeHostMessage(Buffer.from([6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0])),
    /unknown ServiceResult variant 2/);
});

test('pattern matching is the host\'s: `*` is any run', () => {
  const m = bootstrap.patternMatches;
  assert.ok(m('data:*', 'data:saved') && m('*', 'x') && m('a*b*c', 'a-b-b-c') && m('orders', 'orders'));
  assert.ok(!m('orders', 'orders.x') && !m('data:*', 'user:data:x') && !m('a*b*c', 'a-c') && !m('ab*ba', 'aba'));
});

test('at version 1 a request is service_unavailable and never sent', () =>
  withHost('services.js', async (host) => {
    await host.handshake({ version: 1 });
    const reply = await host.call(1, 'uncaught', null);
    assert.equal(reply.code, 'service_unavailable');
    assert.match(reply.message, /version 1/);
    assert.deepEqual((await host.call(2, 'echo', 'next')).json, 'next');
  }));

test('a dependency call carries the call id and resolves to the output', () =>
  withHost('services.js', async (host) => {
    await host.handshake({ version: 2 });
    host.send(hostFrame.call(5, 'call', { plugin: 'dep', method: 'upper', input: { t: 'a' }, timeoutMs: 50 }));
    const req = await host.request();
    assert.deepEqual([req.callId, req.service, req.operation], [5n, 'plugins', 'call']);
    assert.deepEqual(req.payload, { plugin: 'dep', method: 'upper', input: { t: 'a' }, timeout_ms: 50 });
    host.respond(req, { output: { T: 'A' }, usage: { wall_ms: 1 } });
    const reply = await host.message();
    assert.deepEqual([reply.id, reply.json], [5n, { T: 'A' }]);
  }));

test('every operation sends its payload and resolves to its body', () =>
  withHost('services.js', async (host) => {
    await host.handshake({ version: 2 });
    host.send(hostFrame.call(1, 'everything', null));
    const expected = [
      ['plugins', 'list', {}, { plugins: ['dep'] }],
      ['events', 'publish', { topic: 'orders.created', payload: { id: 1 } }, { delivered: 2, dropped: 0 }],
      ['kv', 'get', { table: 'users', key: 'u1' }, { value: null }],
      ['kv', 'put', { table: 'users', key: 'u1', value: { n: 1 } }, {}],
      ['kv', 'delete', { table: 'users', key: 'u1' }, { deleted: true }],
      ['kv', 'list', { table: 'users', prefix: 'u', limit: 10 }, { keys: ['u2'], next: null }],
      ['s3', 'get', { bucket: 'data', key: 'a.txt' }, { body: 'AGhp', size: 3, etag: 'e1', content_type: 'text/plain' }],
      ['s3', 'put', { bucket: 'data', key: 'a.txt', body: 'AGhp', content_type: 'text/plain' }, { etag: 'e2' }],
      ['s3', 'list', { bucket: 'data', after: 'a' }, { objects: [], next: null }],
      ['s3', 'delete', { bucket: 'data', key: 'a.txt' }, {}],
      ['config', 'get', {}, { greeting: 'hi' }],
    ];
    for (const [service, operation, payload, body] of expected) {
      const req = await host.request();
      assert.deepEqual([req.service, req.operation, req.callId, req.payload], [service, operation, 1n, payload]);
      host.respond(req, body);
    }
    const reply = await host.message();
    assert.deepEqual(reply.json, {
      plugins: ['dep'], published: { delivered: 2, dropped: 0 }, get: null, deleted: true,
      list: { keys: ['u2'], next: null }, s3get: 'AGhp', etag: 'e2', s3list: { objects: [], next: null },
      settings: { greeting: 'hi' },
    });
  }));

test('errors are typed by code with their details; uncaught ones answer with the code', () =>
  withHost('services.js', async (host) => {
    await host.handshake({ version: 2 });
    host.send(hostFrame.call(1, 'typedError', null));
    host.respond(await host.request(), null, {
      code: 'permission_denied', message: 'grant kv.table secrets',
      details: { code: 'permission_denied', message: 'grant kv.table secrets', permission: 'kv.table secrets' },
    });
    assert.deepEqual((await host.message()).json, {
      name: 'PermissionDeniedError', code: 'permission_denied', permission: 'kv.table secrets',
      message: 'grant kv.table secrets', isClass: true, isService: true,
    });
    host.send(hostFrame.call(2, 'uncaught', null));
    host.respond(await host.request(), null, { code: 'service_unavailable', message: 'no daemon' });
    const reply = await host.message();
    assert.deepEqual([reply.id, reply.code, reply.message], [2n, 'service_unavailable', 'no daemon']);
    // An unknown code keeps its code; details that are not JSON are dropped.
    host.send(hostFrame.call(3, 'uncaught', null));
    host.respond(await host.request(), null, { code: 'brand_new', message: 'later', details: Buffer.from('[nope') });
    const unknown = await host.message();
    assert.deepEqual([unknown.code, unknown.message], ['brand_new', 'later']);
  }));

test('responses in any order, between calls, pings and deliveries', () =>
  withHost('services.js', async (host) => {
    await host.handshake({ version: 2 });
    host.send(hostFrame.call(1, 'call', { plugin: 'dep', method: 'a' }));
    host.send(hostFrame.call(2, 'call', { plugin: 'dep', method: 'b' }));
    const first = await host.request();
    const second = await host.request();
    host.send(hostFrame.ping(4));
    assert.deepEqual(await host.message(), { type: 'Pong', nonce: 4n });
    host.send(hostFrame.response(999, {})); // for no request: ignored
    // Ids far beyond any the plugin counts to: ignored too, the replies unchanged.
    host.send(hostFrame.response(2n ** 64n - 1n, { output: 'wrong' }));
    host.send(hostFrame.response(2n ** 53n + 1n, { output: 'wrong' }));
    host.respond(second, { output: 'B' });
    host.respond(first, { output: 'A' });
    const replies = [await host.message(), await host.message()].map((r) => [r.id, r.json]);
    assert.deepEqual(replies, [[2n, 'B'], [1n, 'A']]);
  }));

test('Cancel ends the wait with CancelledError and a late response is dropped', () =>
  withHost('services.js', async (host) => {
    await host.handshake({ version: 2 });
    host.send(hostFrame.call(4, 'waitCancel', null));
    const req = await host.request();
    host.send(hostFrame.cancel(4));
    const reply = await host.message();
    assert.deepEqual([reply.id, reply.code], [4n, 'cancelled']);
    host.respond(req, { output: 'too late' });
    assert.deepEqual((await host.call(5, 'echo', 'alive')).json, 'alive');
    assert.ok(host.logs.some((l) => l.message === 'waiting ended: CancelledError'), JSON.stringify(host.logs));
  }));

test('subscriptions route deliveries by pattern; handlers may use services', () =>
  withHost('services.js', async (host) => {
    await host.handshake({ version: 2 });
    host.send(hostFrame.call(1, 'subscribe', 'data:*'));
    const sub = await host.request();
    assert.deepEqual([sub.operation, sub.payload, sub.callId], ['subscribe', { pattern: 'data:*' }, 1n]);
    host.respond(sub, {});
    assert.deepEqual((await host.message()).json, 'subscribed');
    host.send(hostFrame.deliver('other', 'client', 'nobody listens'));
    host.send(hostFrame.deliver('data:saved', 'writer', [1]));
    const echo = await host.request();
    assert.deepEqual([echo.service, echo.operation, echo.callId, echo.payload], ['events', 'publish', 0n, { topic: 'echo', payload: [1] }]);
    host.respond(echo, { delivered: 0, dropped: 0 });
    assert.deepEqual((await host.call(2, 'seenEvents', 1)).json, [{ payload: [1], topic: 'data:saved', from: 'writer' }]);
    host.send(hostFrame.call(3, 'unsubscribe', 'data:*'));
    const unsub = await host.request();
    assert.deepEqual([unsub.operation, unsub.payload], ['unsubscribe', { pattern: 'data:*' }]);
    host.respond(unsub, { removed: true });
    assert.equal((await host.message()).json, true);
  }));

test('a request over the frame limit is PayloadTooLargeError and nothing is sent', () =>
  withHost('services.js', async (host) => {
    await host.handshake({ version: 2, maxFrame: 1024 });
    const reply = await host.call(1, 'bigPublish', 2000);
    assert.equal(reply.code, 'payload_too_large');
    assert.deepEqual((await host.call(2, 'echo', 3)).json, 3);
  }));

test("seed 001's shape: initialize(context) with eventBus and getDependency, cleanup at shutdown", () =>
  withHost('seed-001.js', async (host) => {
    await host.handshake({ version: 2 });
    const on = await host.request();
    assert.deepEqual([on.service, on.operation, on.callId, on.payload], ['events', 'subscribe', 0n, { pattern: 'user:*' }]);
    const emit = await host.request();
    assert.deepEqual([emit.operation, emit.payload], ['publish', { topic: 'plugin:ready', payload: { name: 'my-plugin' } }]);
    host.respond(on, {});
    host.respond(emit, { delivered: 0, dropped: 0 });
    host.send(hostFrame.call(1, 'execute', 'abc'));
    const dep = await host.request();
    assert.deepEqual([dep.callId, dep.payload], [1n, { plugin: 'other-plugin', method: 'upper', input: { text: 'abc' } }]);
    host.respond(dep, { output: 'ABC' });
    const processed = await host.request();
    assert.deepEqual(processed.payload, { topic: 'data:processed', payload: { input: 'abc' } });
    // A refused publish nobody awaited is logged, not an unhandled rejection.
    host.respond(processed, null, { code: 'permission_denied', message: 'grant events.publish data:processed' });
    assert.deepEqual((await host.message()).json, 'Processed: ABC');
    host.send(hostFrame.deliver('user:created', 'client', { id: 7 }));
    assert.deepEqual((await host.call(2, 'receivedEvents', null)).json, [{ id: 7 }]);
    // The log may follow the reply that came in the same batch: a ping collects it.
    host.send(hostFrame.ping(1));
    assert.deepEqual(await host.message(), { type: 'Pong', nonce: 1n });
    assert.ok(host.logs.some((l) => /data:processed.*failed: PermissionDeniedError/.test(l.message)), JSON.stringify(host.logs));
    host.send(hostFrame.shutdown(5000));
    assert.deepEqual(await host.exited, { code: 0, signal: null });
    assert.equal(await host.message(), null, 'only logs after Shutdown');
    assert.ok(host.logs.some((l) => l.message === 'cleaned up'), JSON.stringify(host.logs));
  }));

test('a refusal nobody awaited is logged; another unhandled rejection still ends the process', () =>
  withHost('services.js', async (host) => {
    await host.handshake({ version: 2 });
    host.send(hostFrame.call(1, 'notAwaited', null));
    const req = await host.request();
    assert.deepEqual((await host.message()).json, 'asked');
    host.respond(req, null, { code: 'permission_denied', message: 'grant events.subscribe secret:*' });
    // Node reports the rejection a tick later: the Log comes when it comes.
    const log = await host.message({ logs: true });
    assert.equal(log.type, 'Log');
    assert.match(log.message, /nobody awaited failed: PermissionDeniedError/);
    host.send(hostFrame.call(3, 'rejectOther', null));
    assert.notEqual((await host.exited).code, 0);
  }));

test('the golden conversation still holds at version 1', () =>
  withHost('greeter.js', async (host) => {
    await host.frame();
    host.send(golden.init);
    assert.deepEqual(await host.frame(), golden.ready);
  }));
