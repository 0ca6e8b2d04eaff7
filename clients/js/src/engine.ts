// Seed 000's plugin-engine surface on corral: code written against
// `@tensorify.io/plugin-engine` switches by changing its import.
//
//   seed 000                          corral
//   createPluginEngine(s3, bucket, o) createPluginEngine(o) (the old form is accepted)
//   pluginExists(name)                GET /v1/plugins/{name}
//   listAvailablePlugins(limit)       GET /v1/plugins
//   getPluginMetadata(name)           GET /v1/plugins/{name} + GET .../files
//   getPluginCode(name)               GET /v1/plugins/{name}/files/{entry}
//   getExecutionResult(name, s)       POST /v1/plugins/{name}/call with method
//                                     codeGeneration.generateCode and input s
//   dispose()                         closes the connections
//
// Where plugins come from (a folder, an upload, a bucket) is corrald's
// configuration, and limits are its policy's: the engine's S3 settings and
// `memoryLimit` are accepted and not used.

import { CorralClient } from './client';
import { ConfigurationError, CorralError, InvalidInputError, PluginNotFoundError } from './errors';
import type { Json, PackageFile, PluginState, Usage } from './types';

/** The method seed 000 calls on every plugin, and corral's default for index.js-only packages. */
export const DEFAULT_METHOD = 'codeGeneration.generateCode';

export interface PluginEngineOptions {
  /** corrald's socket (default: $CORRAL_SOCKET, else /run/corral/corral.sock). */
  socketPath?: string;
  /** Per-call timeout in ms; corrald's policy caps it. Default: the plugin's policy timeout. */
  executionTimeout?: number;
  /** Accepted for seed 000 compatibility; memory limits are corrald's policy (see `getPluginMetadata().memoryLimitMB`). */
  memoryLimit?: number;
  /** Logs each request with console.debug. */
  debug?: boolean;
  /** The method getExecutionResult calls (default: the plugin's `default_method`, else `codeGeneration.generateCode`). */
  method?: string;
  /** Accepted for seed 000 compatibility; packages are found by corrald's configured sources. */
  basePath?: string;
  /** An existing client to share (its socket wins over `socketPath`). */
  client?: CorralClient;
}

/** What getExecutionResult returns: seed 000's shape. */
export interface ExecutionResult {
  /** The plugin's output: a string as it is, anything else as JSON text. */
  code: string;
  metadata: ExecutionMetadata;
}

export interface ExecutionMetadata {
  pluginName: string;
  method: string;
  /** Wall time of the call, ms. */
  executionTime: number;
  /** Peak memory charged to the plugin, MB (1024 * 1024 bytes). */
  memoryUsed: number;
  /** corrald's figures for the call. */
  usage: Usage;
  /** The output as corrald returned it (JSON, or a string). */
  output: Json;
  /** `"base64"` when the output was not UTF-8. */
  outputEncoding?: 'base64';
}

export interface PluginMetadata {
  name: string;
  version: string;
  description: string;
  author: string | undefined;
  license: string | undefined;
  state: PluginState;
  runtime: string;
  /** The entry file (index.js, plugin.py, bin/...). */
  entry: string;
  /** sha256 of the package contents. */
  digest: string;
  /** Where corrald got the package. */
  source: string;
  /** The memory limit of its sandbox, MB, when its policy compiles. */
  memoryLimitMB: number | undefined;
  /** The entry file's size in bytes (needs GET /v1/plugins/{name}/files). */
  size: number | undefined;
  /** The entry file's modification time (needs GET /v1/plugins/{name}/files). */
  lastModified: Date | undefined;
  /** Every file of the package (needs GET /v1/plugins/{name}/files). */
  files: PackageFile[] | undefined;
}

/** Seed 000's S3 configuration, accepted and not used. */
export type LegacyS3Config = Record<string, unknown>;

export class PluginEngine {
  readonly client: CorralClient;
  private readonly options: PluginEngineOptions;
  private readonly bucketName: string | undefined;
  private readonly ownsClient: boolean;
  private disposed = false;

  constructor(options: PluginEngineOptions = {}, bucketName?: string) {
    validateOptions(options);
    this.options = options;
    this.bucketName = bucketName;
    this.ownsClient = options.client === undefined;
    this.client = options.client ?? new CorralClient(options.socketPath ? { socketPath: options.socketPath } : {});
  }

  /** Whether a plugin of this name is installed. */
  async pluginExists(name: string): Promise<boolean> {
    this.checkOpen();
    try {
      await this.client.info(name);
      return true;
    } catch (err) {
      // A name that cannot be a plugin's is not installed either.
      if (err instanceof PluginNotFoundError || err instanceof InvalidInputError) return false;
      throw err;
    }
  }

  /** Installed plugin names, sorted, at most `limit` of them. */
  async listAvailablePlugins(limit?: number): Promise<string[]> {
    this.checkOpen();
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 0)) {
      throw new ConfigurationError(`limit must be a whole number, not ${limit}`,
        { code: 'invalid_option', details: { field: 'limit' } });
    }
    const names = (await this.client.list()).map((p) => p.name).sort();
    return limit === undefined ? names : names.slice(0, limit);
  }

  /** What corrald knows of the plugin, with the entry file's size and time where corrald serves them. */
  async getPluginMetadata(name: string): Promise<PluginMetadata> {
    this.checkOpen();
    const detail = await this.withBucket(this.client.info(name));
    const files = await this.filesIfServed(name);
    const entry = detail.manifest.plugin.entry;
    const entryFile = files?.find((f) => f.path === entry);
    const memoryMax = (detail.policy?.resources as { memory_max?: number } | undefined)?.memory_max;
    return {
      name: detail.name,
      version: detail.version,
      description: detail.description,
      author: detail.manifest.plugin.author,
      license: detail.manifest.plugin.license,
      state: detail.state,
      runtime: detail.manifest.plugin.runtime ?? 'native',
      entry,
      digest: detail.digest,
      source: detail.source,
      memoryLimitMB: typeof memoryMax === 'number' ? memoryMax / (1024 * 1024) : undefined,
      size: entryFile?.size,
      lastModified: entryFile ? new Date(entryFile.modified_ms) : undefined,
      files,
    };
  }

  /** The plugin's entry file as text (its index.js). */
  async getPluginCode(name: string): Promise<string> {
    this.checkOpen();
    const detail = await this.withBucket(this.client.info(name));
    try {
      return (await this.client.file(name, detail.manifest.plugin.entry)).toString('utf8');
    } catch (err) {
      if (isMissingEndpoint(err)) {
        throw new CorralError(
          'this corrald does not serve package files (GET /v1/plugins/{name}/files/{path}); upgrade corrald',
          { code: 'unsupported', pluginName: name, cause: err });
      }
      throw err;
    }
  }

  /**
   * Runs the `method` option, else the plugin's `default_method`, else
   * `codeGeneration.generateCode`, with `settings` as its input. Failures throw the typed errors:
   * PluginNotFoundError, TimeoutError, MemoryLimitError, ExecutionError, ...
   */
  async getExecutionResult(name: string, settings: unknown = {}): Promise<ExecutionResult> {
    this.checkOpen();
    const method = this.options.method ?? await this.defaultMethod(name);
    const callOptions = this.options.executionTimeout === undefined ? {} : { timeoutMs: this.options.executionTimeout };
    this.debug(`calling ${name}.${method}`);
    const response = await this.withBucket(this.client.call(name, method, settings, callOptions));
    const text = response.output_encoding === 'base64'
      ? Buffer.from(String(response.output), 'base64').toString('utf8')
      : typeof response.output === 'string' ? response.output : JSON.stringify(response.output);
    const metadata: ExecutionMetadata = {
      pluginName: name,
      method,
      executionTime: response.usage.wall_ms,
      memoryUsed: Math.round((response.usage.peak_memory_bytes / (1024 * 1024)) * 100) / 100,
      usage: response.usage,
      output: response.output,
    };
    if (response.output_encoding) metadata.outputEncoding = response.output_encoding;
    this.debug(`${name}.${method} answered in ${response.usage.wall_ms} ms`);
    return { code: text, metadata };
  }

  /** Closes the engine's connections; calls after it fail. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    if (this.ownsClient) this.client.close();
  }

  /** The plugin's `default_method`, else seed 000's `codeGeneration.generateCode`. */
  private async defaultMethod(name: string): Promise<string> {
    const detail = await this.withBucket(this.client.info(name));
    return detail.manifest.plugin.default_method ?? DEFAULT_METHOD;
  }

  private checkOpen(): void {
    if (this.disposed) {
      throw new CorralError('the plugin engine was disposed', { code: 'disposed' });
    }
  }

  /** Adds the engine's bucket name to a PluginNotFoundError, as seed 000 reported it. */
  private async withBucket<T>(promise: Promise<T>): Promise<T> {
    try {
      return await promise;
    } catch (err) {
      if (err instanceof PluginNotFoundError) err.bucketName = this.bucketName;
      throw err;
    }
  }

  private async filesIfServed(name: string): Promise<PackageFile[] | undefined> {
    try {
      return await this.client.files(name);
    } catch (err) {
      if (isMissingEndpoint(err)) {
        this.debug('this corrald does not serve GET /v1/plugins/{name}/files: no size or lastModified');
        return undefined;
      }
      throw err;
    }
  }

  private debug(message: string): void {
    if (this.options.debug) console.debug(`[corral] ${message}`);
  }
}

/** corrald's answer to a route it does not have: 404 `invalid_input` "no such endpoint". */
export function isMissingEndpoint(err: unknown): boolean {
  return err instanceof InvalidInputError && err.status === 404 && /no such endpoint/.test(err.message);
}

function validateOptions(options: PluginEngineOptions): void {
  const t = options.executionTimeout;
  if (t !== undefined && (!Number.isInteger(t) || t <= 0)) {
    throw new ConfigurationError(`executionTimeout must be a positive whole number of ms, not ${t}`,
      { code: 'invalid_option', details: { field: 'executionTimeout' } });
  }
  const m = options.memoryLimit;
  if (m !== undefined && (typeof m !== 'number' || !(m > 0))) {
    throw new ConfigurationError(`memoryLimit must be a positive number of MB, not ${m}`,
      { code: 'invalid_option', details: { field: 'memoryLimit' } });
  }
  if (options.method !== undefined && (typeof options.method !== 'string' || options.method === '')) {
    throw new ConfigurationError('method must be a method path such as codeGeneration.generateCode',
      { code: 'invalid_option', details: { field: 'method' } });
  }
}

/**
 * The engine on corrald: `createPluginEngine(options)`, or seed 000's
 * `createPluginEngine(s3Config, bucketName, options)` (the S3 settings are
 * accepted and not used: corrald's sources decide where packages come from).
 */
export function createPluginEngine(options?: PluginEngineOptions): PluginEngine;
export function createPluginEngine(s3Config: LegacyS3Config, bucketName: string, options?: PluginEngineOptions): PluginEngine;
export function createPluginEngine(
  first?: PluginEngineOptions | LegacyS3Config,
  bucketName?: string,
  options?: PluginEngineOptions,
): PluginEngine {
  if (typeof bucketName === 'string') return new PluginEngine(options ?? {}, bucketName);
  return new PluginEngine((first as PluginEngineOptions | undefined) ?? {});
}
