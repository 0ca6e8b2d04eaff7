// The escape suite's Node.js plugin: asks for nothing, so every attack
// must fail inside the sandbox. Each method tries one thing and reports
// what happened ({ ok, error, code, message }); the suite asserts that it
// was refused: an error the plugin saw, or the typed error corrald reports
// when the kernel killed it (seccomp_violation).
'use strict';

function attempt(action) {
  try {
    return { ok: true, result: action() };
  } catch (err) {
    return { ok: false, error: err && err.name, code: err && err.code, message: String(err && err.message) };
  }
}

async function attemptAsync(action) {
  try {
    return { ok: true, result: await action() };
  } catch (err) {
    return { ok: false, error: err && err.name, code: err && err.code, message: String(err && err.message) };
  }
}

class Hostile {
  whoami() {
    return { pid: process.pid, uid: process.getuid(), cwd: process.cwd() };
  }

  /** A host file outside the package (default /etc/shadow). */
  readFile(input) {
    const fs = require('node:fs');
    return attempt(() => fs.readFileSync((input && input.path) || '/etc/shadow').length);
  }

  /** Writes outside the scratch directory. */
  writeFile(input) {
    const fs = require('node:fs');
    const target = (input && input.path) || '/var/tmp/corral-escaped-by-node';
    return attempt(() => { fs.writeFileSync(target, 'escaped'); return target; });
  }

  /** The host's directories by name. */
  listRoot() {
    const fs = require('node:fs');
    return attempt(() => fs.readdirSync('/etc'));
  }

  /** Only the plugin's own pid namespace is visible in /proc. */
  listProcesses() {
    const fs = require('node:fs');
    return attempt(() => fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number).sort((a, b) => a - b));
  }

  /** A TCP connection without network permission. */
  connect(input) {
    const net = require('node:net');
    const port = (input && input.port) || 80;
    return attemptAsync(() => new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port }, () => { socket.destroy(); resolve('connected'); });
      socket.on('error', reject);
    }));
  }

  /** A program run without exec permission. */
  spawn() {
    const cp = require('node:child_process');
    return attempt(() => {
      const r = cp.spawnSync('/bin/true');
      if (r.error) throw r.error;
      return r.status;
    });
  }

  /** The same through the internal binding, around the public module. */
  binding() {
    return attempt(() => {
      const spawnSync = process.binding('spawn_sync');
      const r = spawnSync.spawn({ file: '/bin/true', args: ['/bin/true'], envPairs: [], stdio: [] });
      if (r.error) throw Object.assign(new Error(`spawn_sync: ${r.error}`), { code: r.error });
      return r.status;
    });
  }

  /** The host's network interfaces and addresses. */
  interfaces() {
    const os = require('node:os');
    return attempt(() => Object.keys(os.networkInterfaces()));
  }

  /** Root's identity. */
  setuid() {
    return attempt(() => { process.setuid(0); return process.getuid(); });
  }
}

module.exports = Hostile;
