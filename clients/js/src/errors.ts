// Typed errors, one class per corrald error code (README, "Error codes"),
// grouped so that seed 000's five classes catch what they used to:
//
//   CorralError                      every error this library throws
//   ├─ PluginNotFoundError           plugin_not_found
//   ├─ ExecutionError                the call ran (or tried to) and failed
//   │  ├─ PluginError                plugin_error: the plugin's own error
//   │  ├─ TimeoutError               timeout, start_timeout
//   │  ├─ MemoryLimitError           memory_limit_exceeded
//   │  ├─ CrashedError               crashed
//   │  ├─ SeccompViolationError      seccomp_violation
//   │  ├─ PidsLimitError             pids_limit_exceeded
//   │  ├─ ProtocolViolationError     protocol_violation
//   │  ├─ SandboxSetupError          sandbox_setup_failed
//   │  └─ CancelledError             cancelled
//   ├─ ConfigurationError            invalid_manifest, invalid_policy, invalid_config,
//   │                                invalid_package, dependency_missing,
//   │                                feature_unavailable; bad client options
//   ├─ NotLoadedError, QuarantinedError, OverloadedError, AlreadyExistsError, VersionInUseError,
//   │  PermissionDeniedError, InvalidInputError, ShuttingDownError, InternalError
//   └─ ConnectionError (corrald unreachable), ResponseError (not corrald's JSON)

import type { Json } from './types';

/** Bytes in a MB as seed 000 (isolated-vm) counts them: 1 MB = 1024 * 1024 bytes. */
export const BYTES_PER_MB = 1024 * 1024;

export interface ErrorInit {
  /** corrald's error code (`memory_limit_exceeded`), or this library's (`unreachable`). */
  code: string;
  /** The HTTP status it came with (0 when no answer came). */
  status?: number;
  /** The details next to `code` and `message` in the answer. */
  details?: Record<string, Json>;
  /** The plugin the request was about, when there was one. */
  pluginName?: string;
  cause?: unknown;
}

/** Every error this library throws. */
export class CorralError extends Error {
  readonly code: string;
  readonly status: number;
  readonly details: Record<string, Json>;
  readonly pluginName: string | undefined;

  constructor(message: string, init: ErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = init.code;
    this.status = init.status ?? 0;
    this.details = init.details ?? {};
    this.pluginName = init.pluginName ?? stringDetail(this.details, 'plugin');
  }
}

/** No such plugin is installed (`plugin_not_found`). */
export class PluginNotFoundError extends CorralError {
  /** Seed 000 named the bucket; corrald's sources are its own configuration, so this is the engine's `bucketName` option, if any. */
  bucketName: string | undefined;
}

/** The call failed: the plugin's error, a limit, a crash (the subclasses say which). */
export class ExecutionError extends CorralError {}

/** The plugin's handler returned (or threw) an error (`plugin_error`). */
export class PluginError extends ExecutionError {
  /** The plugin's own code: `plugin_error` for a thrown JS error, `unknown_method`, ... */
  get pluginCode(): string | undefined {
    return stringDetail(this.details, 'plugin_code');
  }
}

/** The call (or the plugin's start) ran past its limit (`timeout`, `start_timeout`). */
export class TimeoutError extends ExecutionError {
  get timeoutMs(): number | undefined {
    return numberDetail(this.details, 'limit_ms');
  }
}

/** The plugin was OOM-killed at its memory limit (`memory_limit_exceeded`). */
export class MemoryLimitError extends ExecutionError {
  get limitBytes(): number | undefined {
    return numberDetail(this.details, 'limit_bytes');
  }

  get peakBytes(): number | undefined {
    return numberDetail(this.details, 'peak_bytes');
  }

  /** The limit in MB (1024 * 1024 bytes), as seed 000 reported it. */
  get limitMB(): number | undefined {
    return toMB(this.limitBytes);
  }

  /** The peak memory charged to the plugin, in MB. */
  get usedMB(): number | undefined {
    return toMB(this.peakBytes);
  }
}

/** The plugin died by a signal or an exit (`crashed`). */
export class CrashedError extends ExecutionError {
  get signal(): number | undefined {
    return numberDetail(this.details, 'signal');
  }

  get signalName(): string | undefined {
    return stringDetail(this.details, 'signal_name');
  }

  get exitCode(): number | undefined {
    return numberDetail(this.details, 'exit_code');
  }
}

/** Killed for a system call outside its allow-list (`seccomp_violation`). */
export class SeccompViolationError extends ExecutionError {
  get syscall(): string | undefined {
    return stringDetail(this.details, 'syscall');
  }
}

/** Died having hit its task limit (`pids_limit_exceeded`). */
export class PidsLimitError extends ExecutionError {
  get limit(): number | undefined {
    return numberDetail(this.details, 'limit');
  }
}

/** The plugin broke the wire protocol (`protocol_violation`). */
export class ProtocolViolationError extends ExecutionError {
  get reason(): string | undefined {
    return stringDetail(this.details, 'reason');
  }
}

/** A confinement step failed before the plugin ran (`sandbox_setup_failed`). */
export class SandboxSetupError extends ExecutionError {
  get step(): string | undefined {
    return stringDetail(this.details, 'step');
  }

  get errno(): number | undefined {
    return numberDetail(this.details, 'errno');
  }
}

/** The call was cancelled: by an unload, a reload, a shutdown, or the caller (`cancelled`). */
export class CancelledError extends ExecutionError {}

/**
 * A package, policy or configuration is wrong (`invalid_manifest`,
 * `invalid_policy`, `invalid_config`, `invalid_package`,
 * `dependency_missing`, `feature_unavailable`), or an option given to
 * this library is.
 */
export class ConfigurationError extends CorralError {
  /** The key at fault (`limits.memory`), the dependency, or the option. */
  get configField(): string | undefined {
    return stringDetail(this.details, 'key') ?? stringDetail(this.details, 'dependency') ??
      stringDetail(this.details, 'feature') ?? stringDetail(this.details, 'field');
  }

  get file(): string | undefined {
    return stringDetail(this.details, 'file');
  }

  get reason(): string | undefined {
    return stringDetail(this.details, 'reason');
  }
}

/** Installed but not loaded (`not_loaded`). */
export class NotLoadedError extends CorralError {}

/** Held down after a crash loop until `load` or `reload` (`quarantined`). */
export class QuarantinedError extends CorralError {
  get failures(): number | undefined {
    return numberDetail(this.details, 'failures');
  }

  get windowMs(): number | undefined {
    return numberDetail(this.details, 'window_ms');
  }
}

/** Too many calls in flight for the plugin (`overloaded`). */
export class OverloadedError extends CorralError {
  get limit(): number | undefined {
    return numberDetail(this.details, 'limit');
  }
}

/** Another package has the name; install with `replace` (`already_exists`). */
export class AlreadyExistsError extends CorralError {
  get installedVersion(): string | undefined {
    return stringDetail(this.details, 'installed_version');
  }

  get installedDigest(): string | undefined {
    return stringDetail(this.details, 'installed_digest');
  }
}

/** A version that cannot be removed: the current one, or one loaded plugins need (`version_in_use`). */
export class VersionInUseError extends CorralError {
  get version(): string | undefined {
    return stringDetail(this.details, 'version');
  }

  /** The loaded plugins that need it (empty: it is the current version). */
  get neededBy(): string[] {
    const v = this.details?.needed_by;
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  }
}

/** The caller may not, or the policy does not grant what the manifest asks (`permission_denied`). */
export class PermissionDeniedError extends CorralError {
  get permission(): string | undefined {
    return stringDetail(this.details, 'permission');
  }
}

/** A malformed request (`invalid_input`). */
export class InvalidInputError extends CorralError {
  get reason(): string | undefined {
    return stringDetail(this.details, 'reason');
  }
}

/** corrald is draining (`shutting_down`). */
export class ShuttingDownError extends CorralError {}

/** A fault in corrald itself (`internal`). */
export class InternalError extends CorralError {}

/** corrald could not be reached on its socket (code `unreachable`). */
export class ConnectionError extends CorralError {
  readonly socketPath: string;

  constructor(message: string, socketPath: string, cause: unknown) {
    super(message, { code: 'unreachable', cause });
    this.socketPath = socketPath;
  }
}

/** An answer that is not corrald's JSON (code `bad_response`). */
export class ResponseError extends CorralError {}

type ErrorClass = new (message: string, init: ErrorInit) => CorralError;

/** corrald's codes, each to its class. */
export const ERROR_CLASSES: Readonly<Record<string, ErrorClass>> = Object.freeze({
  plugin_not_found: PluginNotFoundError,
  plugin_error: PluginError,
  timeout: TimeoutError,
  start_timeout: TimeoutError,
  memory_limit_exceeded: MemoryLimitError,
  crashed: CrashedError,
  seccomp_violation: SeccompViolationError,
  pids_limit_exceeded: PidsLimitError,
  protocol_violation: ProtocolViolationError,
  sandbox_setup_failed: SandboxSetupError,
  cancelled: CancelledError,
  invalid_manifest: ConfigurationError,
  invalid_policy: ConfigurationError,
  invalid_config: ConfigurationError,
  invalid_package: ConfigurationError,
  dependency_missing: ConfigurationError,
  feature_unavailable: ConfigurationError,
  not_loaded: NotLoadedError,
  quarantined: QuarantinedError,
  overloaded: OverloadedError,
  already_exists: AlreadyExistsError,
  version_in_use: VersionInUseError,
  permission_denied: PermissionDeniedError,
  invalid_input: InvalidInputError,
  shutting_down: ShuttingDownError,
  internal: InternalError,
});

/**
 * The typed error for an error answer. A code this library does not know
 * (from a newer corrald) is a plain CorralError carrying it.
 */
export function errorFromResponse(status: number, body: unknown, pluginName?: string): CorralError {
  const error = isObject(body) && isObject(body.error) ? body.error : undefined;
  if (!error || typeof error.code !== 'string') {
    return new ResponseError(`corrald answered ${status} without an error body`, {
      code: 'bad_response', status, details: { body: describe(body) },
    });
  }
  const { code, message, ...details } = error as Record<string, Json>;
  const text = typeof message === 'string' && message ? message : String(code);
  const Class = ERROR_CLASSES[code as string] ?? CorralError;
  const init: ErrorInit = { code: code as string, status, details };
  if (pluginName !== undefined) init.pluginName = pluginName;
  return new Class(text, init);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function stringDetail(details: Record<string, Json>, key: string): string | undefined {
  const v = details[key];
  return typeof v === 'string' ? v : undefined;
}

function numberDetail(details: Record<string, Json>, key: string): number | undefined {
  const v = details[key];
  return typeof v === 'number' ? v : undefined;
}

function toMB(bytes: number | undefined): number | undefined {
  return bytes === undefined ? undefined : Math.round((bytes / BYTES_PER_MB) * 100) / 100;
}

function describe(body: unknown): string {
  const text = typeof body === 'string' ? body : JSON.stringify(body) ?? String(body);
  return text.length > 500 ? `${text.slice(0, 500)}...` : text;
}
