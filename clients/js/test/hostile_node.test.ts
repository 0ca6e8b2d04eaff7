// The escape suite for Node.js plugins: tests/plugins/hostile-node asks for
// nothing and tries the files, network, processes and host bindings it
// must not reach. Each attempt is refused inside the sandbox, as an error
// the plugin saw or as corrald's typed seccomp_violation, and the plugin
// serves the next call.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SeccompViolationError } from '../src';
import { TestDaemon } from './daemon';

const HOSTILE = path.join(__dirname, '..', '..', '..', '..', 'tests', 'plugins', 'hostile-node');

let daemon: TestDaemon;

before(async () => {
  daemon = new TestDaemon([]);
  // Kills are provoked on purpose, one after the other: restarts come
  // quickly and many of them before a quarantine.
  fs.writeFileSync(path.join(daemon.root, 'policy.d', '50-restart.toml'),
    '[restart]\nbackoff_initial = "10ms"\nbackoff_max = "100ms"\ncrash_loop_failures = 50\n');
  await daemon.start();
  const dir = path.join(daemon.scratchDir('hostile'), 'hostile-node');
  fs.mkdirSync(dir, { mode: 0o755 });
  for (const file of ['plugin.toml', 'index.js']) {
    fs.copyFileSync(path.join(HOSTILE, file), path.join(dir, file));
    fs.chmodSync(path.join(dir, file), 0o644);
  }
  await daemon.client.install(dir, { load: true });
});

after(async () => {
  await daemon?.stop();
});

interface Attempt { ok: boolean; error?: string; code?: string; message?: string; result?: unknown }

async function whoami(): Promise<{ pid: number; uid: number }> {
  return await daemon.client.invoke('hostile-node', 'whoami') as { pid: number; uid: number };
}

/** Runs `method`; what happened: the plugin's report, or the typed error. */
async function attack(method: string, input: unknown = null): Promise<Attempt | SeccompViolationError> {
  try {
    return await daemon.client.invoke('hostile-node', method, input) as Attempt;
  } catch (err) {
    if (err instanceof SeccompViolationError) return err;
    throw err;
  }
}

test('the plugin runs as pid 1 of its own namespace, not as root', async () => {
  const me = await whoami();
  assert.equal(me.pid, 1);
  assert.notEqual(me.uid, 0);
});

test('host files are out of reach: absent from its root or refused', async () => {
  for (const [method, input] of [
    ['readFile', null], ['readFile', { path: '/etc/passwd' }], ['writeFile', null], ['listRoot', null],
  ] as const) {
    const r = await attack(method, input);
    assert.ok(!(r instanceof SeccompViolationError), `${method}: ${String(r)}`);
    assert.equal(r.ok, false, `${method}: ${JSON.stringify(r)}`);
    assert.ok(['ENOENT', 'EACCES', 'EPERM', 'EROFS'].includes(String(r.code)), `${method}: ${JSON.stringify(r)}`);
  }
  assert.equal(fs.existsSync('/var/tmp/corral-escaped-by-node'), false);
  const procs = await attack('listProcesses');
  assert.ok(!(procs instanceof SeccompViolationError));
  assert.deepEqual(procs.result, [1], 'only its own pid namespace');
  // The host's interfaces: the netlink socket that lists them is refused
  // (typed), or only the namespace's own loopback is there.
  const interfaces = await attack('interfaces');
  if (interfaces instanceof SeccompViolationError) {
    assert.match(interfaces.message, /socket/);
  } else {
    assert.ok(Array.isArray(interfaces.result) && (interfaces.result as string[]).every((i) => i === 'lo'),
      `none of the host's interfaces: ${JSON.stringify(interfaces)}`);
  }
  assert.equal((await whoami()).pid, 1);
});

test('network, processes, the internal binding and root are refused, typed, and the next call works', async () => {
  for (const method of ['connect', 'spawn', 'binding', 'setuid']) {
    const r = await attack(method);
    if (r instanceof SeccompViolationError) {
      assert.equal(r.code, 'seccomp_violation');
    } else {
      assert.equal(r.ok, false, `${method} succeeded: ${JSON.stringify(r)}`);
      assert.ok(r.code || r.error, `${method}: the refusal is named: ${JSON.stringify(r)}`);
    }
    assert.equal((await whoami()).pid, 1, `${method}: the next call is served`);
  }
});
