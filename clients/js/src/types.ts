// The JSON bodies of corrald's API, as protocol/src/api.rs defines them.
// Field names are the API's own (snake_case): what you read here is what
// `curl --unix-socket` shows.

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** `GET /v1/health`. */
export interface Health {
  /** `"ok"`, or `"draining"` while corrald shuts down. */
  status: string;
  version: string;
  uptime_ms: number;
  plugins_installed: number;
  plugins_loaded: number;
  children_alive: number;
  /** `"v1"`, `"v2"` or `"none"`. */
  cgroup: string;
  /** Landlock ABI in use (0: none). */
  landlock_abi: number;
  /** Kernel features corral cannot use here, by their policy names. */
  features_unavailable: string[];
  /** A cgroup hierarchy is mounted with `favordynmods`: starts do not wait for an RCU grace period. */
  cgroup_favordynmods?: boolean;
}

export type PluginState = 'installed' | 'starting' | 'ready' | 'restarting' | 'quarantined' | 'stopping';

/** One plugin in `GET /v1/plugins`; also what load, unload and reload answer. */
export interface PluginSummary {
  name: string;
  version: string;
  description: string;
  state: PluginState;
  /** Loaded at daemon start and kept loaded. */
  enabled: boolean;
  /** Instances the policy allows. */
  instances: number;
  /** Children alive now. */
  children: number;
  in_flight: number;
  calls_ok: number;
  calls_failed: number;
  restarts: number;
  /** Memory charged to its cgroups now, bytes. */
  memory_bytes: number;
}

/** One running child in `GET /v1/plugins/{name}`. */
export interface ChildInfo {
  instance: number;
  pid: number;
  uid: number;
  start_ms: number;
  in_flight: number;
  memory_bytes: number;
  memory_peak_bytes: number;
  pids: number;
  cpu_ms: number;
}

/** `plugin.toml` (or its equivalent) as corrald read it. */
export interface Manifest {
  plugin: {
    name: string;
    version: string;
    description?: string;
    author?: string;
    license?: string;
    entry: string;
    /** `native`, `js`, `node` or `python`. */
    runtime?: string;
    default_method?: string;
    engine?: string;
    instances?: number;
    [key: string]: unknown;
  };
  dependencies?: Record<string, string>;
  permissions?: { [key: string]: Json };
  limits?: { [key: string]: Json };
  config?: Json;
  [key: string]: unknown;
}

/** The typed error corrald answers with (`{"error": {...}}`). */
export interface ApiError {
  code: string;
  message: string;
  [detail: string]: Json;
}

/** `GET /v1/plugins/{name}`. */
export interface PluginDetail extends PluginSummary {
  /** Where the package came from (a source folder, a path, an upload). */
  source: string;
  /** sha256 of the package contents, hex. */
  digest: string;
  manifest: Manifest;
  /** The compiled sandbox policy; null when it does not compile (see `policy_error`). */
  policy: SandboxPolicy | null;
  policy_error: ApiError | null;
  processes: ChildInfo[];
  /** The most recent failure of any instance. */
  last_error: ApiError | null;
  /** Its instances run under the learning policy now (`corral learn --daemon`); absent from older corralds. */
  learning?: boolean;
  /** Every installed version, the current one first; absent from older corralds. */
  versions?: InstalledVersion[];
}

/** One installed version of a plugin (several can be installed side by side, one current). */
export interface InstalledVersion {
  version: string;
  digest: string;
  /** The one `version` in the detail names, loaded or not. */
  current: boolean;
  loaded: boolean;
}

/** The compiled sandbox (`GET /v1/plugins/{name}/policy`): every rule with where it came from. */
export interface SandboxPolicy {
  plugin: string;
  version: string;
  provenance: { rule: string; value: string; source: string }[];
  warnings: string[];
  [key: string]: Json;
}

/** What one call cost. */
export interface Usage {
  wall_ms: number;
  cpu_ms: number;
  peak_memory_bytes: number;
}

/** `POST /v1/plugins/{name}/call`: the plugin's reply. */
export interface CallResponse<T = Json> {
  /** The reply: JSON when the plugin replied with JSON, else a string (see `output_encoding`). */
  output: T;
  /** `"base64"` when the reply was not UTF-8 and `output` holds it base64-encoded. */
  output_encoding?: 'base64';
  usage: Usage;
}

/** Answer to an install. */
export interface InstallResponse {
  plugin: string;
  version: string;
  digest: string;
  /** True when this exact package was already installed. */
  unchanged: boolean;
  state: PluginState;
}

export interface RemoveResponse {
  removed: string;
}

/** One plugin and the error that stopped something happening to it. */
export interface PluginFailure {
  plugin: string;
  error: ApiError;
}

/** `POST /v1/reload`: what re-reading the configuration and policy changed. */
export interface ReloadReport {
  policy_changed: string[];
  unloaded: PluginFailure[];
  not_swapped: PluginFailure[];
  restart_needed: string[];
}

/** One line of `GET /v1/events`. */
export type CorralEvent =
  | { type: 'loaded'; plugin: string; version: string }
  | { type: 'ready'; plugin: string; instance: number; pid: number; start_ms: number }
  | { type: 'call_failed'; plugin: string; method: string; code: string; message: string }
  | { type: 'crashed'; plugin: string; instance: number; code: string; message: string }
  | { type: 'restarted'; plugin: string; instance: number; attempt: number; delay_ms: number }
  | { type: 'quarantined'; plugin: string; failures: number; window_ms: number }
  | { type: 'unloaded'; plugin: string }
  | { type: 'policy_changed'; plugin: string }
  | { type: 'lagged'; missed: number }
  | { type: 'plugin'; plugin: string; topic: string; payload: Json };

/** An event with its sequence number and time (milliseconds since the epoch). */
export type EventRecord = CorralEvent & { seq: number; time_ms: number };

/**
 * One file of an installed package (`GET /v1/plugins/{name}/files`).
 */
export interface PackageFile {
  /** Relative to the package root, `/`-separated. */
  path: string;
  size: number;
  /** Last modification, milliseconds since the epoch. */
  modified_ms: number;
}
