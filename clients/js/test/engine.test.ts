// Seed 000's plugin-engine surface against a real corrald: the calls its
// users make, the errors they catch, and seed 000's own example plugin.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  ConfigurationError, CorralError, ExecutionError, InvalidInputError, MemoryLimitError, PluginError, PluginNotFoundError,
  TimeoutError,
  createPluginEngine, isMissingEndpoint, type PluginEngine,
} from '../src/index';
import { TestDaemon } from './daemon';

const FIXTURES = path.join(__dirname, '..', '..', 'test', 'fixtures');

let daemon: TestDaemon;
let engine: PluginEngine;

before(async () => {
  daemon = new TestDaemon(['hello']);
  await daemon.start();
  engine = createPluginEngine({ socketPath: daemon.socket, method: 'greet' });
});

after(async () => {
  await engine?.dispose();
  await daemon?.stop();
});

test('pluginExists is true for an installed plugin, false for others and for impossible names', async () => {
  assert.equal(await engine.pluginExists('hello'), true);
  assert.equal(await engine.pluginExists('no-such-plugin'), false);
  assert.equal(await engine.pluginExists('Not A Name'), false);
});

test('listAvailablePlugins returns sorted names, at most limit of them', async () => {
  const second = daemon.copyPackage('hello', path.join(daemon.scratchDir('more'), 'another'), 'another');
  await daemon.client.install(second);
  try {
    assert.deepEqual(await engine.listAvailablePlugins(), ['another', 'hello']);
    assert.deepEqual(await engine.listAvailablePlugins(1), ['another']);
    assert.deepEqual(await engine.listAvailablePlugins(0), []);
    await assert.rejects(engine.listAvailablePlugins(-1), ConfigurationError);
  } finally {
    await daemon.client.remove('another');
  }
});

test('getPluginMetadata tells version, entry, runtime, digest and memory limit', async () => {
  const meta = await engine.getPluginMetadata('hello');
  assert.equal(meta.name, 'hello');
  assert.equal(meta.version, '0.1.0');
  assert.equal(meta.entry, 'bin/hello');
  assert.equal(meta.runtime, 'native');
  assert.equal(meta.state, 'ready');
  assert.equal(meta.memoryLimitMB, 32);
  assert.match(meta.digest, /^[0-9a-f]{64}$/);
});

test("getPluginMetadata tells the entry file's size and time", async () => {
  const meta = await engine.getPluginMetadata('hello');
  const built = fs.statSync(path.join(daemon.packageDir('hello'), 'bin', 'hello'));
  assert.equal(meta.size, built.size);
  assert.ok(meta.lastModified instanceof Date && !Number.isNaN(meta.lastModified.getTime()));
  assert.ok(meta.files?.some((f) => f.path === 'plugin.toml'));
});

test("getPluginCode returns the entry file's contents", async () => {
  const code = await daemon.client.file('hello', 'bin/hello');
  assert.deepEqual(code, fs.readFileSync(path.join(daemon.packageDir('hello'), 'bin', 'hello')));
  assert.equal(await engine.getPluginCode('hello'), code.toString('utf8'));
});

test('package files outside the package, or missing, are refused as InvalidInputError', async () => {
  for (const bad of ['../../etc/passwd', 'bin/../plugin.toml', 'no-such-file']) {
    const err = await daemon.client.file('hello', bad).catch((e: unknown) => e);
    assert.ok(err instanceof InvalidInputError, `${bad}: ${String(err)}`);
    assert.equal(isMissingEndpoint(err), false);
  }
  await assert.rejects(daemon.client.files('no-such-plugin'), PluginNotFoundError);
});

test('getExecutionResult returns { code, metadata }', async () => {
  const result = await engine.getExecutionResult('hello', { name: 'Ada' });
  assert.equal(result.code, '{"greeting":"Hello, Ada!"}');
  assert.equal(result.metadata.pluginName, 'hello');
  assert.equal(result.metadata.method, 'greet');
  assert.deepEqual(result.metadata.output, { greeting: 'Hello, Ada!' });
  assert.equal(typeof result.metadata.executionTime, 'number');
  assert.ok(result.metadata.memoryUsed > 0);
  const text = createPluginEngine({ socketPath: daemon.socket, method: 'echo' });
  assert.equal((await text.getExecutionResult('hello', 'print("hi")')).code, 'print("hi")');
  await text.dispose();
});

test("without a method option, getExecutionResult calls the plugin's default_method, else generateCode", async () => {
  const dir = daemon.copyPackage('hello', path.join(daemon.scratchDir('defaults'), 'greeter'), 'greeter');
  const manifest = path.join(dir, 'plugin.toml');
  fs.writeFileSync(manifest, fs.readFileSync(manifest, 'utf8').replace(/^entry = /m, 'default_method = "greet"\nentry = '));
  await daemon.client.install(dir, { load: true });
  const plain = createPluginEngine({ socketPath: daemon.socket });
  try {
    const result = await plain.getExecutionResult('greeter', { name: 'Default' });
    assert.equal(result.metadata.method, 'greet');
    assert.equal(result.code, '{"greeting":"Hello, Default!"}');
    // hello names no default: seed 000's method, which it does not have.
    const err = await plain.getExecutionResult('hello', {}).catch((e: unknown) => e);
    assert.ok(err instanceof PluginError, String(err));
    assert.equal(err.pluginCode, 'unknown_method');
    assert.match(err.message, /codeGeneration\.generateCode/);
  } finally {
    await plain.dispose();
    await daemon.client.remove('greeter');
  }
});

test("seed 000's error classes catch what they used to", async () => {
  const legacy = createPluginEngine({ region: 'us-east-1' }, 'my-plugins-bucket',
    { socketPath: daemon.socket, method: 'fail', executionTimeout: 60_000 });
  const missing = await legacy.getExecutionResult('no-such-plugin', {}).catch((e: unknown) => e);
  assert.ok(missing instanceof PluginNotFoundError);
  assert.equal(missing.bucketName, 'my-plugins-bucket');
  const failed = await legacy.getExecutionResult('hello', null).catch((e: unknown) => e);
  assert.ok(failed instanceof ExecutionError && failed instanceof PluginError);
  assert.equal(failed.pluginCode, 'requested_failure');
  await legacy.dispose();

  const slow = createPluginEngine({ socketPath: daemon.socket, method: 'sleep', executionTimeout: 300 });
  const timedOut = await slow.getExecutionResult('hello', { ms: 10_000 }).catch((e: unknown) => e);
  assert.ok(timedOut instanceof TimeoutError, String(timedOut));
  assert.equal(timedOut.timeoutMs, 300);
  await slow.dispose();
  assert.equal((await engine.getExecutionResult('hello', { name: 'next' })).code, '{"greeting":"Hello, next!"}');
});

test('bad options are ConfigurationErrors naming the option', () => {
  for (const [options, field] of [
    [{ executionTimeout: -5 }, 'executionTimeout'],
    [{ executionTimeout: 1.5 }, 'executionTimeout'],
    [{ memoryLimit: 0 }, 'memoryLimit'],
    [{ method: '' }, 'method'],
  ] as const) {
    assert.throws(() => createPluginEngine(options), (err: unknown) =>
      err instanceof ConfigurationError && err.configField === field);
  }
});

test('dispose closes the engine; a shared client stays open', async () => {
  const own = createPluginEngine({ socketPath: daemon.socket });
  await own.dispose();
  await own.dispose();
  await assert.rejects(own.pluginExists('hello'), (err: unknown) => err instanceof CorralError && err.code === 'disposed');
  const shared = createPluginEngine({ client: daemon.client });
  await shared.dispose();
  assert.equal((await daemon.client.health()).status, 'ok');
});

/**
 * Installs seed 000's README plugin (or another fixture) from a folder
 * holding only index.js (`manifest` adds a plugin.toml). Returns why it cannot run here when
 * this corrald refuses such packages.
 */
async function installSeedPlugin(name: string, manifest?: string, fixture = 'my-plugin'): Promise<string | undefined> {
  const dir = path.join(daemon.scratchDir('seed'), name);
  fs.mkdirSync(dir, { mode: 0o755 });
  fs.copyFileSync(path.join(FIXTURES, fixture, 'index.js'), path.join(dir, 'index.js'));
  fs.chmodSync(path.join(dir, 'index.js'), 0o644);
  if (manifest) fs.writeFileSync(path.join(dir, 'plugin.toml'), manifest, { mode: 0o644 });
  try {
    await daemon.client.install(dir, { load: true });
    return undefined;
  } catch (err) {
    if (err instanceof ConfigurationError && /plugin\.toml|runtime|index\.js/.test(err.message)) {
      return `this corrald does not run this package yet (#9): ${err.code}: ${err.message}`;
    }
    throw err;
  }
}

async function checkSeedPlugin(name: string): Promise<void> {
  const seed = createPluginEngine({ socketPath: daemon.socket });
  try {
    assert.equal(await seed.pluginExists(name), true);
    const result = await seed.getExecutionResult(name, { dataset: 'users.csv', rows: 5 });
    assert.match(result.code, /^import pandas as pd/);
    assert.match(result.code, /data = pd\.read_csv\('users\.csv'\)/);
    assert.match(result.code, /result = data\.head\(5\)/);
    assert.equal(result.metadata.method, 'codeGeneration.generateCode');
  } finally {
    await seed.dispose();
    await daemon.client.remove(name);
  }
}

test("seed 000's README plugin (a folder with only index.js) runs through getExecutionResult", async (t) => {
  const refused = await installSeedPlugin('my-plugin');
  if (refused) return t.skip(refused);
  await checkSeedPlugin('my-plugin');
  return undefined;
});

test("seed 000's README plugin runs under runtime = \"node\"", async (t) => {
  const refused = await installSeedPlugin('my-node-plugin', [
    '[plugin]', 'name = "my-node-plugin"', 'version = "1.0.0"', 'entry = "index.js"', 'runtime = "node"',
    'default_method = "codeGeneration.generateCode"', '',
  ].join('\n'));
  if (refused) return t.skip(refused);
  await checkSeedPlugin('my-node-plugin');
  return undefined;
});

test("a Node.js plugin's error, endless loop and memory bomb are typed, and the next call works", async (t) => {
  const refused = await installSeedPlugin('node-limits', [
    '[plugin]', 'name = "node-limits"', 'version = "1.0.0"', 'entry = "index.js"', 'runtime = "node"', '',
    '[limits]', 'memory = "128MiB"', 'timeout = "5s"', '',
  ].join('\n'), 'node-limits');
  if (refused) return t.skip(refused);
  const client = daemon.client;
  const greet = () => client.invoke('node-limits', 'greet', { name: 'again' });
  try {
    assert.deepEqual(await greet(), { greeting: 'Hello, again!' });

    const failed = await client.call('node-limits', 'fail').catch((e: unknown) => e);
    assert.ok(failed instanceof PluginError, String(failed));
    assert.equal(failed.message, 'TypeError: not today');
    assert.deepEqual(await greet(), { greeting: 'Hello, again!' });

    const spun = await client.call('node-limits', 'spin', null, { timeoutMs: 300 }).catch((e: unknown) => e);
    assert.ok(spun instanceof TimeoutError, String(spun));
    assert.equal(spun.timeoutMs, 300);
    assert.deepEqual(await greet(), { greeting: 'Hello, again!' });

    const bombed = await client.call('node-limits', 'bomb').catch((e: unknown) => e);
    assert.ok(bombed instanceof MemoryLimitError, String(bombed));
    assert.equal(bombed.limitMB, 128);
    assert.deepEqual(await greet(), { greeting: 'Hello, again!' });

    // Host services (protocol version 2): the request reaches corrald and
    // comes back as the body or a typed error, never a hang or a crash.
    const served = (await client.invoke('node-limits', 'service', null)) as Record<string, unknown>;
    assert.ok('ok' in served || ['PermissionDeniedError', 'ServiceUnavailableError'].includes(String(served.error)),
      JSON.stringify(served));
    assert.deepEqual(await greet(), { greeting: 'Hello, again!' });
  } finally {
    await client.remove('node-limits');
  }
  return undefined;
});
