// A real corrald for the tests, started the way corral's own daemon tests
// start theirs (tests/daemon/src/setup.rs): a directory of its own under
// /var/tmp with its configuration, socket, state and source folder, a
// cgroup base and a uid range of its own (so runs in parallel never touch
// each other's plugins), the built packages copied into the source folder.
//
// It needs what `cargo xtask test` provides: CORRAL_BIN_DIR (corrald),
// CORRAL_SANDBOX (the trampoline) and CORRAL_TEST_PACKAGES (the built
// plugin packages). Without them every test fails, saying so.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CorralClient } from '../src/index';

const HOW = 'run these tests through `cargo xtask test` (it builds corrald, the trampoline and the plugin ' +
  'packages and sets CORRAL_BIN_DIR, CORRAL_SANDBOX and CORRAL_TEST_PACKAGES), or set them by hand from ' +
  '`cargo xtask package`: CORRAL_BIN_DIR=target/debug CORRAL_SANDBOX=<the static trampoline it prints> ' +
  'CORRAL_TEST_PACKAGES=target/corral-packages npm test';

/** How long corrald gets to answer /v1/health (it loads every package first). */
const READY_WAIT_MS = 120_000;
/** How long a stopped corrald gets to exit: its 5 s shutdown grace, with room. */
const EXIT_WAIT_MS = 30_000;
/** uids per daemon, and where these tests' ranges start (apart from the Rust suites'). */
const UIDS_PER_DAEMON = 1024;
const UID_BASE = 2_000_000;
const CGROUP_ROOT = '/sys/fs/cgroup';

export interface TestEnv {
  binDir: string;
  sandbox: string;
  packages: string;
}

/** The variables `cargo xtask test` sets; throws naming what is missing. */
export function testEnv(): TestEnv {
  const get = (name: string, what: string, check: (p: string) => boolean): string => {
    const value = process.env[name];
    if (!value) throw new Error(`${name} is not set, so the tests cannot find ${what}: ${HOW}`);
    if (!check(value)) throw new Error(`${name}=${value} does not point at ${what}: ${HOW}`);
    return value;
  };
  const isDir = (p: string) => fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;
  const isFile = (p: string) => fs.statSync(p, { throwIfNoEntry: false })?.isFile() ?? false;
  const env = {
    binDir: get('CORRAL_BIN_DIR', 'the directory of corrald', isDir),
    sandbox: get('CORRAL_SANDBOX', 'the corral-sandbox trampoline', isFile),
    packages: get('CORRAL_TEST_PACKAGES', 'the plugin packages', isDir),
  };
  if (!isFile(path.join(env.binDir, 'corrald'))) {
    throw new Error(`${path.join(env.binDir, 'corrald')} does not exist: ${HOW}`);
  }
  return env;
}

let started = 0;

export class TestDaemon {
  readonly root: string;
  readonly socket: string;
  readonly sources: string;
  readonly cgroupBase: string;
  readonly uidFirst: number;
  readonly uidLast: number;
  readonly env: TestEnv;
  readonly client: CorralClient;
  private readonly packages: string[];
  private child: ChildProcess | undefined;
  private exited: Promise<number | null> | undefined;

  /** Lays out the directory; `packages` are copied from CORRAL_TEST_PACKAGES into the source folder. */
  constructor(packages: string[]) {
    this.env = testEnv();
    const id = `${process.pid}-${started++}`;
    this.root = fs.mkdtempSync(`/var/tmp/corral-js-${id}-`);
    // Plugins run as other uids and read their packages below this directory.
    fs.chmodSync(this.root, 0o755);
    this.socket = path.join(this.root, 'corral.sock');
    this.sources = path.join(this.root, 'sources');
    this.cgroupBase = `corral-js-${id}`;
    this.uidFirst = UID_BASE + ((process.pid * 4 + started) % 900) * UIDS_PER_DAEMON;
    this.uidLast = this.uidFirst + UIDS_PER_DAEMON - 1;
    for (const dir of ['sources', 'policy.d', 'state']) fs.mkdirSync(path.join(this.root, dir), { mode: 0o755 });
    fs.writeFileSync(path.join(this.root, 'policy.toml'), '');
    fs.writeFileSync(path.join(this.root, 'policy.d', '00-test-uids.toml'),
      `# this daemon's own uids\n[sandbox]\nuid_range = "${this.uidFirst}-${this.uidLast}"\n`);
    fs.writeFileSync(path.join(this.root, 'corrald.toml'), [
      '# written by the @corral/client tests',
      `socket = ${JSON.stringify(this.socket)}`,
      'socket_mode = "0660"',
      'socket_group = "root"',
      `state_dir = ${JSON.stringify(path.join(this.root, 'state'))}`,
      `policy = ${JSON.stringify(path.join(this.root, 'policy.toml'))}`,
      `policy_dir = ${JSON.stringify(path.join(this.root, 'policy.d'))}`,
      'admin_groups = []',
      'caller_groups = []',
      `cgroup_base = ${JSON.stringify(this.cgroupBase)}`,
      'shutdown_grace = "5s"',
      '',
      '[[sources]]',
      `path = ${JSON.stringify(this.sources)}`,
      'load = true',
      'watch = false',
      '',
    ].join('\n'));
    this.packages = packages;
    for (const name of packages) this.copyPackage(name, path.join(this.sources, name));
    this.client = new CorralClient({ socketPath: this.socket });
  }

  /** A built package's directory. */
  packageDir(name: string): string {
    const dir = path.join(this.env.packages, name);
    if (!fs.existsSync(path.join(dir, 'plugin.toml'))) {
      throw new Error(`package ${name} is missing from ${this.env.packages} (CORRAL_TEST_PACKAGES): ${HOW}`);
    }
    return dir;
  }

  /** Copies built package `name` to `dest`, renamed to `as` in its manifest when given. */
  copyPackage(name: string, dest: string, as?: string): string {
    fs.cpSync(this.packageDir(name), dest, { recursive: true, preserveTimestamps: true });
    if (as !== undefined) {
      const manifest = path.join(dest, 'plugin.toml');
      const text = fs.readFileSync(manifest, 'utf8').replace(/^name = ".*"$/m, `name = ${JSON.stringify(as)}`);
      fs.writeFileSync(manifest, text);
    }
    return dest;
  }

  /** A directory below the daemon's root, readable by the plugins. */
  scratchDir(name: string): string {
    const dir = path.join(this.root, name);
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    return dir;
  }

  get log(): string {
    try {
      return fs.readFileSync(path.join(this.root, 'corrald.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** Starts corrald and waits until /v1/health answers. */
  async start(): Promise<void> {
    const log = fs.openSync(path.join(this.root, 'corrald.log'), 'a');
    const child = spawn(path.join(this.env.binDir, 'corrald'), ['--config', path.join(this.root, 'corrald.toml')], {
      stdio: ['ignore', log, log],
      env: { ...withoutCorralVars(process.env), CORRAL_SANDBOX: this.env.sandbox, RUST_LOG: 'info' },
    });
    fs.closeSync(log);
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    const deadline = Date.now() + READY_WAIT_MS;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`corrald exited (${child.exitCode ?? child.signalCode}) before it was ready; its log:\n${this.log}`);
      }
      if (Date.now() > deadline) throw new Error(`corrald did not answer within ${READY_WAIT_MS} ms; its log:\n${this.log}`);
      try {
        // corrald answers before it installs its signal handlers; its log
        // says when startup is complete (tests/daemon/src/daemon.rs).
        const health = await this.client.health();
        if (health.status === 'ok' && this.log.includes('corrald ready')) break;
      } catch {
        // Not listening yet.
      }
      await sleep(50);
    }
    await this.checkLoaded();
  }

  /**
   * Every package of the source folder is loaded once corrald is ready; a
   * test then fails here, with the reason, rather than later and vaguely
   * (a trampoline older than corrald, say: rebuild with `cargo xtask package`).
   */
  private async checkLoaded(): Promise<void> {
    const notReady = (await this.client.list()).filter((p) => this.packages.includes(p.name) && p.state !== 'ready');
    if (notReady.length === 0) return;
    const reasons = await Promise.all(notReady.map(async (p) => {
      const info = await this.client.info(p.name);
      return `${p.name} is ${p.state}: ${info.last_error ? `${info.last_error.code}: ${info.last_error.message}` : '?'}`;
    }));
    throw new Error(`corrald did not load its packages (${reasons.join('; ')}); its log:\n${this.log}`);
  }

  /** Stops corrald (SIGTERM, SIGKILL past EXIT_WAIT_MS) and removes everything it made. */
  async stop(): Promise<void> {
    this.client.close();
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const late = setTimeout(() => child.kill('SIGKILL'), EXIT_WAIT_MS);
      await this.exited;
      clearTimeout(late);
    }
    killUidRange(this.uidFirst, this.uidLast);
    await removeCgroupBase(this.cgroupBase);
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}

function withoutCorralVars(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const copy = { ...env };
  for (const key of ['CORRAL_CONFIG', 'CORRAL_SOCKET', 'NOTIFY_SOCKET', 'WATCHDOG_USEC', 'JOURNAL_STREAM', 'CORRAL_MASK_FEATURES']) {
    delete copy[key];
  }
  return copy;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Kills any process left running as one of this daemon's plugin uids. */
function killUidRange(first: number, last: number): void {
  for (const pid of fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
      const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
      if (uid >= first && uid <= last) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
}

/** Removes the daemon's cgroup base in every hierarchy (its empty spare leaves included). */
async function removeCgroupBase(base: string): Promise<void> {
  const bases = fs.readdirSync(CGROUP_ROOT).map((h) => path.join(CGROUP_ROOT, h, base)).filter((d) => fs.existsSync(d));
  for (let attempt = 0; attempt < 50; attempt++) {
    let left = false;
    for (const dir of bases) {
      for (const leaf of fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory())) {
        const leafPath = path.join(dir, leaf.name);
        try {
          for (const pid of fs.readFileSync(path.join(leafPath, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
            process.kill(Number(pid), 'SIGKILL');
          }
          fs.rmdirSync(leafPath);
        } catch {
          left = true;
        }
      }
    }
    if (!left) break;
    await sleep(20);
  }
  for (const dir of bases) {
    try {
      fs.rmdirSync(dir);
    } catch {
      // Left for the next run's cleanup; the name is this run's own.
    }
  }
}
