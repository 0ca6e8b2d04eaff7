// Types for corral plugins written in JavaScript or TypeScript: the class
// contract that runtimes/node/bootstrap.js (runtime = "node") and the
// embedded engine (runtime = "js", runtimes/js) serve, and the host's
// services (protocol version 2) they hand the plugin as `corral` (one
// implementation for both: runtimes/node/services.js).
//
// In TypeScript:
//
//   import type { CallContext, PluginClass } from './corral-plugin';
//   export default class Greeter {
//     constructor(private settings: { prefix?: string }) {}
//     greet(input: { name: string }, ctx: CallContext) { ... }
//   }
//
// In JavaScript, with checkJs or an editor that reads JSDoc:
//
//   /** @param {{ name: string }} input @param {import('./corral-plugin').CallContext} ctx */
//   greet(input, ctx) { ... }

/** Any JSON value: what a method receives, and what it should return. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Log levels, as the host records them. */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'trace';

/** What the sandbox enforces, from the host's Init (0 memory: unlimited). */
export interface PluginLimits {
  readonly memoryBytes: number;
  readonly callTimeoutMs: number;
  readonly pids: number;
  readonly openFiles: number;
}

/**
 * The second argument of every method (runtime = "node"; the embedded
 * `js` runtime passes the input alone). Methods that ignore it work in both.
 */
export interface CallContext {
  /** The host's id of this call, in decimal. */
  readonly id: string;
  /** The method path called (`codeGeneration.generateCode`). */
  readonly method: string;
  /** Aborted when the host cancels the call (its caller left, or its timeout passed). */
  readonly signal: AbortSignal;
  /** When the host stops waiting, ms since the epoch (`Date.now()` scale); null for no limit. */
  readonly deadline: number | null;
  readonly limits: PluginLimits;
  /** A structured record in the plugin's log; field values are turned into strings. */
  log(level: LogLevel, message: string, fields?: Record<string, string | number | boolean>): void;
  /**
   * Publishes an event to corrald's subscribers (`GET /v1/events`): a
   * string or bytes as they are, anything else as JSON. Throws (code
   * `event_too_large`) when it does not fit in a frame.
   */
  emit(topic: string, payload: unknown): void;
  /** The host's services (the same object the constructor receives). */
  readonly corral: Corral;
}

/**
 * A method: the caller's JSON input first. Its return value, or what its
 * Promise resolves to, is the output: JSON (undefined becomes null), or a
 * Buffer / Uint8Array / ArrayBuffer sent as raw bytes. What it throws (or
 * rejects with) reaches the caller as `plugin_error` "<Name>: <message>".
 */
export type PluginMethod<Input = Json, Output = unknown> =
  (input: Input, context: CallContext) => Output | Promise<Output>;

/**
 * What the entry exports (`module.exports = Class`, `exports.default =
 * Class` or `export default class`): constructed once per plugin process
 * with the plugin's settings (`{}` when it has none). Methods are found by
 * path on the instance: `greet`, or `codeGeneration.generateCode` for
 * objects held in properties; `this` is the object holding the method.
 */
export interface PluginClass<Settings = { [key: string]: Json }, Instance extends object = object> {
  new (settings: Settings, corral: Corral): Instance;
}

// ---- host services (PROTOCOL.md section 9) -------------------------------

/** What a delivered event says besides its payload. */
export interface Delivery {
  /** The topic, as this plugin names it. */
  readonly topic: string;
  /** The publishing plugin's name, or `client` for an API publisher. */
  readonly from: string;
  readonly payload: Json;
}

/** Runs for each event on a topic the subscription's pattern matches. */
export type EventHandler = (payload: Json, delivery: Delivery) => void | Promise<void>;

export interface KvList { keys: string[]; next: string | null }
export interface S3Object { body: Uint8Array; size: number; etag: string; content_type?: string }
export interface S3List {
  objects: { key: string; size: number; etag: string; last_modified_ms: number }[];
  next: string | null;
}
export interface ListOptions { prefix?: string; after?: string; limit?: number }

/**
 * A host service's refusal or failure: `code` and `message` are the API's,
 * `details` its whole error object (its keys, such as `permission` or
 * `quota_bytes`, are properties too). Left uncaught in a method, the call is
 * answered with this code.
 */
export interface ServiceError extends Error {
  readonly code: string;
  readonly details: { [key: string]: Json };
  readonly [detail: string]: unknown;
}

/** One error class (`err instanceof corral.errors.TimeoutError`). */
export type ServiceErrorClass = new (message: string, details?: { [key: string]: Json }) => ServiceError;

/** The error classes, by the names corral's JavaScript client uses. */
export interface ServiceErrors {
  ServiceError: ServiceErrorClass;
  /** `permission`: e.g. `kv.table secrets`, `plugins.call text-utils`. */
  PermissionDeniedError: ServiceErrorClass;
  /** `quota_bytes`, `used_bytes`: a kv put past the plugin's storage quota. */
  QuotaExceededError: ServiceErrorClass;
  RateLimitedError: ServiceErrorClass;
  PayloadTooLargeError: ServiceErrorClass;
  /** The host has no such service here (`corral run`, no S3, protocol version 1). */
  ServiceUnavailableError: ServiceErrorClass;
  OverloadedError: ServiceErrorClass;
  InvalidInputError: ServiceErrorClass;
  ConfigurationError: ServiceErrorClass;
  PluginNotFoundError: ServiceErrorClass;
  NotLoadedError: ServiceErrorClass;
  NotFoundError: ServiceErrorClass;
  TimeoutError: ServiceErrorClass;
  CrashedError: ServiceErrorClass;
  /** The dependency answered with its own error (`plugin_code`). */
  PluginError: ServiceErrorClass;
  /** The host cancelled the call while the request waited. */
  CancelledError: ServiceErrorClass;
}

/** A dependency as seed 001 offers it: each property is a method of it. */
export type Dependency = { readonly metadata: { name: string } } & {
  readonly [method: string]: (input?: Json) => Promise<Json>;
};

/**
 * The host's services: the constructor's second argument and
 * `context.corral`. Every request carries the id of the call it serves (the
 * host bounds it by that call's time); each returns a Promise. Requests made
 * in the constructor go out once the plugin is ready.
 */
export interface Corral {
  /** Calls `method` of a dependency the policy grants; resolves to its output. */
  callPlugin(plugin: string, method: string, input?: Json, options?: { timeoutMs?: number }): Promise<Json>;
  /** The dependencies this plugin may call. */
  listPlugins(): Promise<string[]>;
  publish(topic: string, payload?: Json): Promise<{ delivered: number; dropped: number }>;
  /** `*` in a pattern matches any run of characters (`data:*`). */
  subscribe(pattern: string, handler: EventHandler): Promise<void>;
  /** Removes `handler` (or every handler) of `pattern`. */
  unsubscribe(pattern: string, handler?: EventHandler): Promise<boolean>;
  readonly kv: {
    get(table: string, key: string): Promise<Json>;
    put(table: string, key: string, value: Json): Promise<void>;
    delete(table: string, key: string): Promise<boolean>;
    list(table: string, options?: ListOptions): Promise<KvList>;
  };
  readonly s3: {
    get(bucket: string, key: string): Promise<S3Object>;
    put(bucket: string, key: string, body: string | Uint8Array | ArrayBuffer, options?: { contentType?: string }): Promise<string>;
    list(bucket: string, options?: ListOptions): Promise<S3List>;
    delete(bucket: string, key: string): Promise<void>;
  };
  /** The plugin's current settings, from the host. */
  settings(): Promise<{ [key: string]: Json }>;
  readonly errors: ServiceErrors;

  // Seed 001's PluginContext, for its plugins (an exported object or class
  // with `initialize(context)` gets this object as the context, once the
  // plugin is ready; `cleanup()` runs at shutdown).

  readonly eventBus: {
    /** Publishes; a refusal nobody awaits is logged. */
    emit(event: string, data?: Json): Promise<{ delivered: number; dropped: number }>;
    on(event: string, listener: EventHandler): Promise<void>;
    once(event: string, listener: EventHandler): Promise<void>;
    off(event: string, listener?: EventHandler): Promise<boolean>;
  };
  /** A dependency whose methods call it; a dependency not granted fails on call with PermissionDeniedError. */
  getDependency(name: string): Dependency;
  getDependencies(): Promise<Map<string, Dependency>>;
}
