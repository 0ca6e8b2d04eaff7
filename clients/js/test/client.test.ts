// CorralClient against a real corrald serving the built `hello` and
// `hostile` packages: every endpoint, and the typed error of each failure.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  AlreadyExistsError, ConfigurationError, ConnectionError, CorralClient, CorralError, ExecutionError,
  InvalidInputError, MemoryLimitError, NotLoadedError, PluginError, PluginNotFoundError, TimeoutError,
  type EventRecord,
} from '../src/index';
import { TestDaemon } from './daemon';
import { packageTarGz } from './tar';

let daemon: TestDaemon;
let client: CorralClient;

before(async () => {
  daemon = new TestDaemon(['hello', 'hostile']);
  client = daemon.client;
  await daemon.start();
});

after(async () => {
  await daemon?.stop();
});

describe('reading the daemon', () => {
  test('health reports a serving daemon', async () => {
    const health = await client.health();
    assert.equal(health.status, 'ok');
    assert.match(health.version, /^\d+\.\d+\.\d+/);
    assert.equal(health.plugins_installed, 2);
    assert.equal(health.plugins_loaded, 2);
    assert.ok(Array.isArray(health.features_unavailable));
  });

  test('list names every installed plugin with its state', async () => {
    const plugins = await client.list();
    assert.deepEqual(plugins.map((p) => p.name).sort(), ['hello', 'hostile']);
    const hello = plugins.find((p) => p.name === 'hello');
    assert.equal(hello?.state, 'ready');
    assert.equal(hello?.version, '0.1.0');
  });

  test('info shows the manifest, digest and running processes', async () => {
    const info = await client.info('hello');
    assert.equal(info.manifest.plugin.entry, 'bin/hello');
    assert.match(info.digest, /^[0-9a-f]{64}$/);
    assert.equal(info.processes.length, 1);
    assert.ok(info.processes[0]!.pid > 0);
    assert.ok(info.policy, 'the compiled policy');
  });

  test('policy lists every rule with where it came from', async () => {
    const policy = await client.policy('hello');
    assert.equal(policy.plugin, 'hello');
    assert.ok(policy.provenance.some((r) => r.rule === 'limits.memory' && r.value === '32MiB'));
  });

  test('metrics are OpenMetrics text counting calls by plugin', async () => {
    await client.call('hello', 'greet', { name: 'metrics' });
    const text = await client.metrics();
    assert.match(text, /^corral_calls_total\{plugin="hello",outcome="ok"\} \d+$/m);
  });
});

describe('calls', () => {
  test('a call returns the output and what it cost', async () => {
    const response = await client.call<{ greeting: string }>('hello', 'greet', { name: 'Ada' });
    assert.deepEqual(response.output, { greeting: 'Hello, Ada!' });
    assert.equal(typeof response.usage.wall_ms, 'number');
    assert.ok(response.usage.peak_memory_bytes > 0);
  });

  test('invoke returns the output alone', async () => {
    assert.deepEqual(await client.invoke('hello', 'echo', { a: [1, 'two'] }), { a: [1, 'two'] });
  });

  test("the plugin's own error is a PluginError with its code", async () => {
    const err = await rejection(client.call('hello', 'fail'));
    assert.ok(err instanceof PluginError);
    assert.ok(err instanceof ExecutionError);
    assert.equal(err.code, 'plugin_error');
    assert.equal(err.pluginCode, 'requested_failure');
    assert.equal(err.status, 422);
    assert.match(err.message, /always fails/);
    assert.equal(err.pluginName, 'hello');
  });

  test('an unknown method is a PluginError with code unknown_method', async () => {
    const err = await rejection(client.call('hello', 'nope'));
    assert.ok(err instanceof PluginError);
    assert.equal(err.pluginCode, 'unknown_method');
  });

  test('an unknown plugin is PluginNotFoundError; a malformed name is InvalidInputError', async () => {
    const missing = await rejection(client.call('no-such-plugin', 'greet'));
    assert.ok(missing instanceof PluginNotFoundError);
    assert.equal(missing.status, 404);
    assert.equal(missing.pluginName, 'no-such-plugin');
    const malformed = await rejection(client.info('Not A Name'));
    assert.ok(malformed instanceof InvalidInputError);
    assert.equal(malformed.status, 400);
  });

  test('a call past its timeout is a TimeoutError with the limit, and the next call works', async () => {
    const err = await rejection(client.call('hello', 'sleep', { ms: 10_000 }, { timeoutMs: 300 }));
    assert.ok(err instanceof TimeoutError, String(err));
    assert.ok(err instanceof ExecutionError);
    assert.equal(err.timeoutMs, 300);
    assert.equal(err.status, 504);
    assert.deepEqual(await client.invoke('hello', 'greet', { name: 'after' }), { greeting: 'Hello, after!' });
  });

  test('a memory bomb is a MemoryLimitError with the limit and peak in MB, and the next call works', async () => {
    const err = await rejection(client.call('hostile', 'memory_bomb', { max_mib: 512 }));
    assert.ok(err instanceof MemoryLimitError, String(err));
    assert.ok(err instanceof ExecutionError);
    assert.equal(err.limitBytes, 64 * 1024 * 1024);
    assert.equal(err.limitMB, 64);
    assert.ok((err.usedMB ?? 0) > 0, `usedMB ${err.usedMB}`);
    assert.equal(err.status, 502);
    const whoami = await client.invoke<{ attempted?: string }>('hostile', 'whoami');
    assert.ok(whoami !== null && typeof whoami === 'object');
  });

  test('a negative timeout is refused before any request', async () => {
    const err = await rejection(client.call('hello', 'greet', {}, { timeoutMs: -1 }));
    assert.ok(err instanceof ConfigurationError);
    assert.equal(err.configField, 'timeoutMs');
  });

  test('aborting a call rejects it and leaves the plugin serving', async () => {
    const controller = new AbortController();
    const pending = client.call('hello', 'sleep', { ms: 5000 }, { signal: controller.signal });
    setTimeout(() => controller.abort(), 100);
    const err = await rejection(pending);
    assert.equal(err.name, 'AbortError');
    assert.deepEqual(await client.invoke('hello', 'greet', { name: 'x' }), { greeting: 'Hello, x!' });
  });
});

describe('lifecycle', () => {
  test('unload, load and reload change the state; a call to an unloaded plugin is NotLoadedError', async () => {
    const unloaded = await client.unload('hello');
    assert.equal(unloaded.state, 'installed');
    const err = await rejection(client.call('hello', 'greet', { name: 'x' }));
    assert.ok(err instanceof NotLoadedError);
    assert.equal(err.status, 409);
    const loaded = await client.load('hello');
    assert.equal(loaded.state, 'ready');
    const reloaded = await client.reload('hello');
    assert.equal(reloaded.name, 'hello');
    assert.deepEqual(await client.invoke('hello', 'greet', { name: 'back' }), { greeting: 'Hello, back!' });
  });

  test('events stream as an async iterator, filtered by plugin, and end on break', async () => {
    const events = client.events({ plugin: 'hello' });
    const seen: EventRecord[] = [];
    const reading = (async () => {
      for await (const event of events) {
        seen.push(event);
        if (event.type === 'ready') break;
      }
    })();
    // The subscription is open once the request is; give it a moment, then cause events.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await client.reload('hello');
    await reading;
    assert.ok(seen.length > 0);
    assert.ok(seen.every((e) => 'plugin' in e && e.plugin === 'hello'), JSON.stringify(seen));
    const ready = seen.find((e) => e.type === 'ready');
    assert.ok(ready && ready.type === 'ready' && ready.pid > 0 && ready.seq > 0);
  });

  test('an events stream ends when its signal aborts', async () => {
    const controller = new AbortController();
    const events = client.events({ signal: controller.signal });
    setTimeout(() => controller.abort(), 100);
    const seen = [];
    for await (const event of events) seen.push(event);
    assert.ok(Array.isArray(seen));
    assert.equal(controller.signal.aborted, true);
  });

  test('reloadConfiguration reports what changed', async () => {
    const report = await client.reloadConfiguration();
    assert.deepEqual(report.policy_changed, []);
    assert.deepEqual(report.unloaded, []);
    assert.ok(Array.isArray(report.restart_needed));
  });
});

describe('installing', () => {
  test('install from a path, again unchanged, then remove', async () => {
    const dir = daemon.copyPackage('hello', path.join(daemon.scratchDir('installs'), 'greeter'), 'greeter');
    const installed = await client.install(dir, { load: true });
    assert.deepEqual([installed.plugin, installed.version, installed.unchanged], ['greeter', '0.1.0', false]);
    assert.deepEqual(await client.invoke('greeter', 'greet', { name: 'G' }), { greeting: 'Hello, G!' });
    assert.equal((await client.install(dir)).unchanged, true);
    assert.deepEqual(await client.remove('greeter'), { removed: 'greeter' });
    assert.ok((await rejection(client.info('greeter'))) instanceof PluginNotFoundError);
  });

  test('upload a .tar.gz; a different package under the name needs replace', async () => {
    const base = daemon.scratchDir('uploads');
    const first = daemon.copyPackage('hello', path.join(base, 'first'), 'uploaded');
    const installed = await client.installArchive(packageTarGz(first, 'uploaded'), { load: true });
    assert.equal(installed.plugin, 'uploaded');
    assert.equal(installed.state, 'ready');

    const second = daemon.copyPackage('hello', path.join(base, 'second'), 'uploaded');
    fs.appendFileSync(path.join(second, 'plugin.toml'), '\n# a rebuild\n');
    const clash = await rejection(client.installArchive(packageTarGz(second, 'uploaded')));
    assert.ok(clash instanceof AlreadyExistsError, String(clash));
    assert.equal(clash.installedDigest, installed.digest);
    assert.equal(clash.installedVersion, '0.1.0');
    const archive = path.join(base, 'second.tar.gz');
    fs.writeFileSync(archive, packageTarGz(second, 'uploaded'));
    const replaced = await client.installArchiveFile(archive, { replace: true, load: true });
    assert.notEqual(replaced.digest, installed.digest);
    assert.deepEqual(await client.invoke('uploaded', 'greet', { name: 'U' }), { greeting: 'Hello, U!' });
    await client.remove('uploaded');
  });

  test('a package with a bad manifest is a ConfigurationError naming the key', async () => {
    const dir = daemon.copyPackage('hello', path.join(daemon.scratchDir('bad'), 'bad'), 'bad-limits');
    fs.writeFileSync(path.join(dir, 'plugin.toml'),
      fs.readFileSync(path.join(dir, 'plugin.toml'), 'utf8').replace('memory = "32MiB"', 'memory = "lots"'));
    const err = await rejection(client.install(dir));
    assert.ok(err instanceof ConfigurationError, String(err));
    assert.equal(err.code, 'invalid_manifest');
    assert.equal(err.status, 400);
    assert.ok(err.configField, 'the key at fault');
    assert.ok((await client.list()).every((p) => p.name !== 'bad-limits'), 'nothing installed');
  });
});

test('a socket nobody listens on is a ConnectionError', async () => {
  const lonely = new CorralClient({ socketPath: path.join(daemon.root, 'nobody.sock') });
  const err = await rejection(lonely.health());
  assert.ok(err instanceof ConnectionError);
  assert.equal(err.code, 'unreachable');
  assert.match(err.message, /cannot reach corrald/);
  lonely.close();
});

test('a closed client refuses requests', async () => {
  const closed = new CorralClient({ socketPath: daemon.socket });
  closed.close();
  const err = await rejection(closed.health());
  assert.ok(err instanceof CorralError);
  assert.equal(err.code, 'disposed');
});

async function rejection(promise: Promise<unknown>): Promise<CorralError & Error> {
  try {
    await promise;
  } catch (err) {
    return err as CorralError;
  }
  assert.fail('expected the promise to reject');
}
