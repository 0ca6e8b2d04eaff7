// Every corrald error code (README, "Error codes") to its class, with its
// details readable by name. No daemon needed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as errors from '../src/errors';

const {
  errorFromResponse, CorralError, ExecutionError, ConfigurationError, ResponseError,
} = errors;

/** The README's table: code, status, the class, and details corrald sends with it. */
const TABLE: [string, number, new (...args: never[]) => errors.CorralError, Record<string, unknown>][] = [
  ['invalid_input', 400, errors.InvalidInputError, { reason: 'bad' }],
  ['invalid_manifest', 400, errors.ConfigurationError, { file: 'plugin.toml', key: 'limits.memory', reason: 'r' }],
  ['invalid_policy', 400, errors.ConfigurationError, { file: 'policy.toml', key: 'caps.memory', reason: 'r' }],
  ['invalid_config', 400, errors.ConfigurationError, { file: 'corrald.toml', key: 'socket', reason: 'r' }],
  ['invalid_package', 400, errors.ConfigurationError, { reason: 'not a package' }],
  ['dependency_missing', 400, errors.ConfigurationError, { dependency: 'text-utils', requirement: '^1' }],
  ['permission_denied', 403, errors.PermissionDeniedError, { permission: 'net' }],
  ['plugin_not_found', 404, errors.PluginNotFoundError, { plugin: 'p' }],
  ['not_loaded', 409, errors.NotLoadedError, { plugin: 'p' }],
  ['already_exists', 409, errors.AlreadyExistsError, { plugin: 'p', installed_version: '1.0.0', installed_digest: 'ab' }],
  ['version_in_use', 409, errors.VersionInUseError, { plugin: 'p', version: '1.0.0', needed_by: ['app'] }],
  ['quarantined', 409, errors.QuarantinedError, { plugin: 'p', failures: 5, window_ms: 60000 }],
  ['plugin_error', 422, errors.PluginError, { plugin_code: 'bad_csv' }],
  ['overloaded', 429, errors.OverloadedError, { limit: 64 }],
  ['cancelled', 499, errors.CancelledError, {}],
  ['internal', 500, errors.InternalError, {}],
  ['feature_unavailable', 501, errors.ConfigurationError, { feature: 'landlock_net' }],
  ['crashed', 502, errors.CrashedError, { signal: 11, signal_name: 'SIGSEGV' }],
  ['memory_limit_exceeded', 502, errors.MemoryLimitError, { limit_bytes: 67108864, peak_bytes: 67125248 }],
  ['pids_limit_exceeded', 502, errors.PidsLimitError, { limit: 4 }],
  ['seccomp_violation', 502, errors.SeccompViolationError, { syscall: 'socket' }],
  ['protocol_violation', 502, errors.ProtocolViolationError, { reason: 'garbled' }],
  ['sandbox_setup_failed', 502, errors.SandboxSetupError, { step: 'seccomp', errno: 22 }],
  ['shutting_down', 503, errors.ShuttingDownError, {}],
  ['timeout', 504, errors.TimeoutError, { limit_ms: 300 }],
  ['start_timeout', 504, errors.TimeoutError, { limit_ms: 5000 }],
];

test('every code of the table maps to its class, keeping code, status, message and details', () => {
  for (const [code, status, Class, details] of TABLE) {
    const err = errorFromResponse(status, { error: { code, message: `m-${code}`, ...details } }, 'p');
    assert.ok(err instanceof Class, `${code} -> ${err.constructor.name}`);
    assert.ok(err instanceof CorralError && err instanceof Error);
    assert.equal(err.code, code);
    assert.equal(err.status, status);
    assert.equal(err.message, `m-${code}`);
    assert.equal(err.name, Class.name);
    assert.deepEqual(err.details, details);
  }
  assert.equal(Object.keys(errors.ERROR_CLASSES).length, TABLE.length);
});

test('limits, crashes and the plugin error are ExecutionErrors; package problems are ConfigurationErrors', () => {
  for (const code of ['plugin_error', 'timeout', 'memory_limit_exceeded', 'crashed', 'seccomp_violation',
    'pids_limit_exceeded', 'protocol_violation', 'sandbox_setup_failed', 'cancelled']) {
    assert.ok(errorFromResponse(502, { error: { code, message: 'x' } }) instanceof ExecutionError, code);
  }
  for (const code of ['plugin_not_found', 'not_loaded', 'invalid_input', 'invalid_manifest']) {
    assert.ok(!(errorFromResponse(400, { error: { code, message: 'x' } }) instanceof ExecutionError), code);
  }
});

test('details are readable by name', () => {
  const mem = errorFromResponse(502, { error: { code: 'memory_limit_exceeded', message: 'm', limit_bytes: 67108864, peak_bytes: 70254592 } });
  assert.ok(mem instanceof errors.MemoryLimitError);
  assert.deepEqual([mem.limitMB, mem.usedMB, mem.limitBytes, mem.peakBytes], [64, 67, 67108864, 70254592]);
  const timeout = errorFromResponse(504, { error: { code: 'timeout', message: 'm', limit_ms: 250 } });
  assert.ok(timeout instanceof errors.TimeoutError);
  assert.equal(timeout.timeoutMs, 250);
  const crash = errorFromResponse(502, { error: { code: 'crashed', message: 'm', exit_code: 76 } });
  assert.ok(crash instanceof errors.CrashedError);
  assert.deepEqual([crash.exitCode, crash.signal], [76, undefined]);
  const manifest = errorFromResponse(400, { error: { code: 'invalid_manifest', message: 'm', file: 'f', key: 'limits.cpu', reason: 'r' } });
  assert.ok(manifest instanceof ConfigurationError);
  assert.deepEqual([manifest.configField, manifest.file, manifest.reason], ['limits.cpu', 'f', 'r']);
  const inUse = errorFromResponse(409, { error: { code: 'version_in_use', message: 'm', plugin: 'p', version: '1.0.0', needed_by: ['app'] } });
  assert.ok(inUse instanceof errors.VersionInUseError);
  assert.deepEqual([inUse.pluginName, inUse.version, inUse.neededBy], ['p', '1.0.0', ['app']]);
  const plugin = errorFromResponse(422, { error: { code: 'plugin_error', message: '', plugin_code: 'empty_name' } });
  assert.ok(plugin instanceof errors.PluginError);
  assert.equal(plugin.pluginCode, 'empty_name');
  assert.equal(plugin.message, 'plugin_error', 'an empty message falls back to the code');
});

test('an unknown code stays a CorralError carrying it; a body that is not an error is a ResponseError', () => {
  const future = errorFromResponse(418, { error: { code: 'teapot', message: 'short and stout' } });
  assert.equal(future.constructor, CorralError);
  assert.equal(future.code, 'teapot');
  const html = errorFromResponse(502, '<html>bad gateway</html>');
  assert.ok(html instanceof ResponseError);
  assert.equal(html.code, 'bad_response');
  assert.match(String(html.details.body), /bad gateway/);
  assert.ok(errorFromResponse(500, { error: 'nope' }) instanceof ResponseError);
});

test('ESM code imports the classes by name', () => {
  const index = pathToFileURL(path.join(__dirname, '..', 'src', 'index.js')).href;
  const names = ['createPluginEngine', 'CorralClient', 'PluginNotFoundError', 'ExecutionError', 'TimeoutError',
    'MemoryLimitError', 'ConfigurationError'];
  const out = execFileSync(process.execPath, ['--input-type=module', '-e',
    `import { ${names.join(', ')} } from ${JSON.stringify(index)};\n` +
    `console.log([${names.join(', ')}].map((v) => typeof v).join(' '));`]).toString().trim();
  assert.equal(out, names.map(() => 'function').join(' '));
});
