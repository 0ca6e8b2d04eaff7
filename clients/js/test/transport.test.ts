// The transport against a small HTTP server on a Unix socket that answers
// what corrald never should: split characters, bodies that are not JSON,
// answers larger than allowed.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { CorralClient, ResponseError, PluginNotFoundError } from '../src/index';

let dir: string;
let socketPath: string;
let server: http.Server;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-client-transport-'));
  socketPath = path.join(dir, 'fake.sock');
  server = http.createServer((req, res) => {
    if (req.url?.startsWith('/v1/events')) {
      // "é" is c3 a9: the first event line ends in a split character.
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      const line = Buffer.from('{"seq":1,"time_ms":2,"type":"plugin","plugin":"p","topic":"café","payload":null}\n');
      const cut = line.indexOf(0xa9);
      res.write(line.subarray(0, cut));
      setTimeout(() => {
        res.write(line.subarray(cut));
        res.end('{"seq":2,"time_ms":3,"type":"unloaded","plugin":"p"}\n');
      }, 20);
    } else if (req.url === '/v1/health') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html>not corrald</html>');
    } else if (req.url === '/v1/plugins') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify([{ name: 'x'.repeat(4096) }]));
    } else {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'plugin_not_found', plugin: 'p', message: 'no plugin named p' } }));
    }
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
});

after(async () => {
  await new Promise((resolve) => server.close(resolve));
  fs.rmSync(dir, { recursive: true, force: true });
});

test('an event line split inside a character is decoded whole', async () => {
  const client = new CorralClient({ socketPath });
  const seen = [];
  for await (const event of client.events()) seen.push(event);
  assert.equal(seen.length, 2);
  assert.ok(seen[0]!.type === 'plugin' && seen[0]!.topic === 'café');
  assert.equal(seen[1]!.type, 'unloaded');
  client.close();
});

test('a success that is not JSON is a ResponseError', async () => {
  const client = new CorralClient({ socketPath });
  await assert.rejects(client.health(), (err: unknown) =>
    err instanceof ResponseError && err.code === 'bad_response' && /not JSON/.test(err.message));
  client.close();
});

test('an answer larger than maxResponseBytes is refused', async () => {
  const client = new CorralClient({ socketPath, maxResponseBytes: 1024 });
  await assert.rejects(client.list(), (err: unknown) => err instanceof ResponseError && /larger than 1024 bytes/.test(err.message));
  client.close();
});

test('an error answer is typed, and names the plugin asked about', async () => {
  const client = new CorralClient({ socketPath });
  await assert.rejects(client.info('p'), (err: unknown) =>
    err instanceof PluginNotFoundError && err.status === 404 && err.pluginName === 'p');
  client.close();
});

test('a request on a kept-alive connection the server closed is sent again on a fresh one', async () => {
  const rawSocket = path.join(dir, 'raw.sock');
  let connections = 0;
  // A server that answers the first request of its first connection and
  // drops that connection when the second request arrives on it.
  const raw = net.createServer((socket) => {
    const n = ++connections;
    let requests = 0;
    socket.on('data', (data) => {
      for (let i = data.indexOf('\r\n\r\n'); i >= 0; i = data.indexOf('\r\n\r\n', i + 4)) {
        requests++;
        if (n === 1 && requests === 2) {
          socket.destroy();
          return;
        }
        const body = JSON.stringify({ status: 'ok', connection: n });
        socket.write(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
      }
    });
  });
  await new Promise<void>((resolve) => raw.listen(rawSocket, resolve));
  try {
    const client = new CorralClient({ socketPath: rawSocket });
    const first = (await client.health()) as unknown as { connection: number };
    const second = (await client.health()) as unknown as { connection: number };
    assert.deepEqual([first.connection, second.connection], [1, 2]);
    client.close();
  } finally {
    await new Promise((resolve) => raw.close(resolve));
  }
});
