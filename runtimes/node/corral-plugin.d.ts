// Types for corral plugins written in JavaScript or TypeScript: the class
// contract that runtimes/node/bootstrap.js (runtime = "node") serves.
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
  new (settings: Settings): Instance;
}
