'use strict';
// The bootstrap's codec on its own, against every golden vector of
// PROTOCOL.md it can produce or must read.

const test = require('node:test');
const assert = require('node:assert/strict');
const bootstrap = require('../bootstrap');
const { goldenVectors, helloOffering2 } = require('./host');

const golden = goldenVectors();
const { encode, decodeHostMessage, FrameReader, ProtocolError } = bootstrap;

/** The payload of a golden frame (its length prefix checked and dropped). */
function payloadOf(frame) {
  assert.equal(frame.readUInt32LE(0), frame.length - 4);
  return frame.subarray(4);
}

test('plugin messages encode to the golden bytes', () => {
  assert.deepEqual(encode.hello('hello', '0.1.0', 4 << 20).frame(), helloOffering2(golden.hello));
  assert.deepEqual(encode.ready().frame(), golden.ready);
  assert.deepEqual(encode.replyOk(1n, Buffer.from('{"greeting":"Hello, Ada!"}')).frame(), golden['reply-ok']);
  assert.deepEqual(encode.replyErr(2n, 'empty_name', 'say who').frame(), golden['reply-err']);
  assert.deepEqual(encode.pong(0x0102030405060708n).frame(), golden.pong);
  assert.deepEqual(encode.log(2, 'started', [['call', '1']]).frame(), golden.log);
  assert.deepEqual(encode.event('progress', Buffer.from('20')).frame(), golden.event);
  assert.deepEqual(encode.request(1n, 7n, 'kv', 'get', Buffer.from('{"table":"users","key":"u1"}')).frame(), golden.request);
});

test('version 2 host messages decode from the golden bytes', () => {
  assert.deepEqual(decodeHostMessage(payloadOf(golden['response-ok'])),
    { type: 'Response', id: 1n, body: Buffer.from('{"value":{"n":1}}') });
  assert.deepEqual(decodeHostMessage(payloadOf(golden['response-err'])), {
    type: 'Response', id: 2n, code: 'permission_denied', message: 'not granted',
    details: Buffer.from('{"code":"permission_denied","message":"not granted","permission":"kv.table secrets"}'),
  });
  assert.deepEqual(decodeHostMessage(payloadOf(golden.deliver)),
    { type: 'Deliver', topic: 'user:1', from: 'accounts', payload: Buffer.from('{"n":1}') });
});

test('host messages decode from the golden bytes', () => {
  const init = decodeHostMessage(payloadOf(golden.init));
  assert.equal(init.type, 'Init');
  assert.equal(init.version, 1);
  assert.equal(init.maxFrame, 1 << 20);
  assert.equal(init.config.toString(), '{}');
  assert.deepEqual(init.limits, { memoryBytes: 32n << 20n, callTimeoutMs: 10000n, pids: 4n, openFiles: 32n });
  assert.deepEqual(decodeHostMessage(payloadOf(golden.call)), {
    type: 'Call', id: 1n, method: 'greet', input: Buffer.from('{"name":"Ada"}'), timeoutMs: 10000n,
  });
  assert.deepEqual(decodeHostMessage(payloadOf(golden.cancel)), { type: 'Cancel', id: 3n });
  assert.deepEqual(decodeHostMessage(payloadOf(golden.ping)), { type: 'Ping', nonce: 0x0102030405060708n });
  assert.deepEqual(decodeHostMessage(payloadOf(golden['host-pong'])), { type: 'Pong', nonce: 42n });
  assert.deepEqual(decodeHostMessage(payloadOf(golden.shutdown)), { type: 'Shutdown', graceMs: 5000 });
});

test('every truncation of a golden host message is refused', () => {
  for (const name of ['init', 'call', 'cancel', 'ping', 'host-pong', 'shutdown']) {
    const payload = payloadOf(golden[name]);
    for (let n = 0; n < payload.length; n++) {
      assert.throws(() => decodeHostMessage(payload.subarray(0, n)), ProtocolError, `${name} cut at ${n}`);
    }
  }
});

test('plugin messages are not host messages: unknown variants are refused', () => {
  assert.throws(() => decodeHostMessage(Buffer.from([8, 0, 0, 0])), /unknown host message variant 8/);
});

test('strings must be valid UTF-8 as Rust defines it', () => {
  const bad = [[0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf], [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80, 0x80, 0x80],
    [0xe2, 0x82], [0x80], [0xff]];
  for (const bytes of bad) assert.equal(bootstrap.isUtf8(Buffer.from(bytes)), false, Buffer.from(bytes).toString('hex'));
  for (const text of ['', '\u0000', 'é', '€', '\u{10FFFF}', 'plain']) assert.equal(bootstrap.isUtf8(Buffer.from(text)), true);
});

test('strings the plugin sends are valid UTF-8 even with lone surrogates', () => {
  const frame = encode.replyErr(1n, 'plugin_error', 'bad \uD800 half').frame();
  assert.equal(bootstrap.isUtf8(frame.subarray(4 + 4 + 8 + 4 + 8 + 12 + 8)), true);
});

test('the frame reader takes frames split and batched, and checks the length first', () => {
  const reader = new FrameReader(64);
  const both = Buffer.concat([golden.cancel, golden.ping]);
  for (const byte of both) reader.push(Buffer.from([byte]));
  assert.deepEqual(reader.next(), payloadOf(golden.cancel));
  assert.deepEqual(reader.next(), payloadOf(golden.ping));
  assert.equal(reader.next(), null);
  assert.equal(reader.inFrame(), false);
  reader.push(Buffer.from([65, 0, 0, 0]));
  assert.throws(() => reader.next(), /65 bytes exceeds the limit of 64/);
});

test('text is cut between characters, never inside one', () => {
  const bytes = Buffer.from('aé€');
  assert.deepEqual(bootstrap.cutUtf8(bytes, 2), Buffer.from('a'));
  assert.deepEqual(bootstrap.cutUtf8(bytes, 3), Buffer.from('aé'));
  assert.deepEqual(bootstrap.cutUtf8(bytes, 5), Buffer.from('aé'));
  assert.deepEqual(bootstrap.cutUtf8(bytes, 6), bytes);
});
