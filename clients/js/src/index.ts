// @corral/client: talk to corrald over its Unix socket.
//
//   import { CorralClient } from '@corral/client';          // the whole API
//   import { createPluginEngine } from '@corral/client';    // seed 000's surface

export { CorralClient, DEFAULT_SOCKET, SOCKET_ENV, defaultSocketPath } from './client';
export type { CallOptions, ClientOptions, EventsOptions, InstallOptions } from './client';
export { PluginEngine, createPluginEngine, DEFAULT_METHOD, isMissingEndpoint } from './engine';
export type {
  ExecutionMetadata, ExecutionResult, LegacyS3Config, PluginEngineOptions, PluginMetadata,
} from './engine';
export * from './errors';
export type * from './types';
