// CorralClient: every endpoint of corrald's API, one method each.

import * as fs from 'node:fs/promises';
import { ConfigurationError } from './errors';
import { Transport } from './transport';
import type {
  CallResponse, EventRecord, Health, InstallResponse, Json, PackageFile, PluginDetail,
  PluginSummary, ReloadReport, RemoveResponse, SandboxPolicy,
} from './types';

/** Where corrald listens unless told otherwise. */
export const DEFAULT_SOCKET = '/run/corral/corral.sock';
/** The environment variable naming the socket, shared with the `corral` CLI. */
export const SOCKET_ENV = 'CORRAL_SOCKET';

export interface ClientOptions {
  /** corrald's socket: this, else $CORRAL_SOCKET, else /run/corral/corral.sock. */
  socketPath?: string;
  /** Keep connections open between requests (default true). */
  keepAlive?: boolean;
  /** Largest answer body read, bytes (default 256 MiB). */
  maxResponseBytes?: number;
}

export interface CallOptions {
  /** A shorter timeout than the plugin's policy allows, milliseconds. */
  timeoutMs?: number;
  /** Aborting closes the request; corrald then cancels the call in the plugin. */
  signal?: AbortSignal;
}

export interface InstallOptions {
  /** Load (and enable) the plugin once installed. */
  load?: boolean;
  /** Replace another package installed under the same name. */
  replace?: boolean;
}

export interface EventsOptions {
  /** Only this plugin's events. */
  plugin?: string;
  /** Ends the stream. */
  signal?: AbortSignal;
}

/** The socket a client uses when none is given. */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  return env[SOCKET_ENV] || DEFAULT_SOCKET;
}

export class CorralClient {
  readonly socketPath: string;
  private readonly transport: Transport;

  constructor(options: ClientOptions = {}) {
    this.socketPath = options.socketPath ?? defaultSocketPath();
    const transport: ConstructorParameters<typeof Transport>[0] = { socketPath: this.socketPath };
    if (options.keepAlive !== undefined) transport.keepAlive = options.keepAlive;
    if (options.maxResponseBytes !== undefined) transport.maxResponseBytes = options.maxResponseBytes;
    this.transport = new Transport(transport);
  }

  /** `GET /v1/health`. */
  health(): Promise<Health> {
    return this.transport.json({ method: 'GET', path: '/v1/health' });
  }

  /** `GET /v1/plugins`: every installed plugin. */
  list(): Promise<PluginSummary[]> {
    return this.transport.json({ method: 'GET', path: '/v1/plugins' });
  }

  /** `GET /v1/plugins/{name}`: manifest, compiled policy, processes, last error. */
  info(name: string): Promise<PluginDetail> {
    return this.transport.json({ method: 'GET', path: pluginPath(name), pluginName: name });
  }

  /** `GET /v1/plugins/{name}/policy`: the compiled sandbox, rule by rule (admin). */
  policy(name: string): Promise<SandboxPolicy> {
    return this.transport.json({ method: 'GET', path: `${pluginPath(name)}/policy`, pluginName: name });
  }

  /** `POST /v1/plugins/{name}/load` (admin). */
  load(name: string): Promise<PluginSummary> {
    return this.transport.json({ method: 'POST', path: `${pluginPath(name)}/load`, pluginName: name });
  }

  /** `POST /v1/plugins/{name}/unload` (admin). */
  unload(name: string): Promise<PluginSummary> {
    return this.transport.json({ method: 'POST', path: `${pluginPath(name)}/unload`, pluginName: name });
  }

  /** `POST /v1/plugins/{name}/reload`: a fresh start, and out of quarantine (admin). */
  reload(name: string): Promise<PluginSummary> {
    return this.transport.json({ method: 'POST', path: `${pluginPath(name)}/reload`, pluginName: name });
  }

  /**
   * `POST /v1/plugins/{name}/call`: runs `method` with `input` (any JSON;
   * omitted is null) and returns the reply with what it cost. A failure
   * throws its typed error (PluginError, TimeoutError, MemoryLimitError, ...).
   */
  async call<T = Json>(name: string, method: string, input?: unknown, options: CallOptions = {}): Promise<CallResponse<T>> {
    const body: { method: string; input: unknown; timeout_ms?: number } = {
      method, input: input === undefined ? null : input,
    };
    if (options.timeoutMs !== undefined) {
      if (!Number.isInteger(options.timeoutMs) || options.timeoutMs < 0) {
        throw new ConfigurationError(`timeoutMs must be a whole number of milliseconds, not ${options.timeoutMs}`,
          { code: 'invalid_option', details: { field: 'timeoutMs' } });
      }
      body.timeout_ms = options.timeoutMs;
    }
    const request: Parameters<Transport['json']>[0] = {
      method: 'POST', path: `${pluginPath(name)}/call`, json: body, pluginName: name,
    };
    if (options.signal) request.signal = options.signal;
    return this.transport.json(request);
  }

  /** The output alone: `call(...).output`. */
  async invoke<T = Json>(name: string, method: string, input?: unknown, options?: CallOptions): Promise<T> {
    return (await this.call<T>(name, method, input, options)).output;
  }

  /** `POST /v1/plugins` with a path on corrald's host: a package folder or a .tar.gz of one (admin). */
  install(path: string, options: InstallOptions = {}): Promise<InstallResponse> {
    return this.transport.json({
      method: 'POST', path: '/v1/plugins',
      json: { path, load: options.load ?? false, replace: options.replace ?? false },
    });
  }

  /** `POST /v1/plugins` with a .tar.gz of a package as the body: an upload (admin). */
  installArchive(archive: Buffer | Uint8Array, options: InstallOptions = {}): Promise<InstallResponse> {
    const query = new URLSearchParams();
    if (options.load) query.set('load', 'true');
    if (options.replace) query.set('replace', 'true');
    const text = query.toString();
    const suffix = text ? `?${text}` : '';
    return this.transport.json({
      method: 'POST', path: `/v1/plugins${suffix}`,
      body: Buffer.isBuffer(archive) ? archive : Buffer.from(archive), contentType: 'application/gzip',
    });
  }

  /** Reads a local .tar.gz and uploads it (for a corrald that cannot read the file itself). */
  async installArchiveFile(file: string, options: InstallOptions = {}): Promise<InstallResponse> {
    return this.installArchive(await fs.readFile(file), options);
  }

  /** `DELETE /v1/plugins/{name}`: unloads and removes the package (admin). */
  remove(name: string): Promise<RemoveResponse> {
    return this.transport.json({ method: 'DELETE', path: pluginPath(name), pluginName: name });
  }

  /** `POST /v1/reload`: re-reads the configuration and policy, as SIGHUP does, and says what changed (admin). */
  reloadConfiguration(): Promise<ReloadReport> {
    return this.transport.json({ method: 'POST', path: '/v1/reload' });
  }

  /**
   * `GET /v1/events`: lifecycle events as they happen, as an async
   * iterator. Breaking out of the loop (or aborting `signal`) closes it.
   *
   *     for await (const event of client.events({ plugin: 'hello' })) { ... }
   */
  events(options: EventsOptions = {}): AsyncGenerator<EventRecord, void, undefined> {
    const query = options.plugin === undefined ? '' : `?${new URLSearchParams({ plugin: options.plugin })}`;
    const request: Parameters<Transport['lines']>[0] = { method: 'GET', path: `/v1/events${query}` };
    if (options.signal) request.signal = options.signal;
    return this.transport.lines<EventRecord>(request);
  }

  /** `GET /metrics`: OpenMetrics text, as Prometheus scrapes it. */
  metrics(): Promise<string> {
    return this.transport.text({ method: 'GET', path: '/metrics' });
  }

  /**
   * `GET /v1/plugins/{name}/files`: the files of the installed package.
   * Older corralds answer `no such endpoint` (see the README, "Package files").
   */
  async files(name: string): Promise<PackageFile[]> {
    const answer = await this.transport.json<{ files: PackageFile[] }>({
      method: 'GET', path: `${pluginPath(name)}/files`, pluginName: name,
    });
    return answer.files;
  }

  /**
   * `GET /v1/plugins/{name}/files/{path}`: one file of the installed
   * package, as bytes (at most 16 MiB).
   */
  file(name: string, path: string): Promise<Buffer> {
    const encoded = path.split('/').map(encodeURIComponent).join('/');
    return this.transport.bytes({ method: 'GET', path: `${pluginPath(name)}/files/${encoded}`, pluginName: name });
  }

  /** Closes the connections it keeps; every request after it fails. */
  close(): void {
    this.transport.close();
  }
}

function pluginPath(name: string): string {
  return `/v1/plugins/${encodeURIComponent(name)}`;
}
