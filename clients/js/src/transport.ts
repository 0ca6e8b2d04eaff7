// HTTP/1.1 over corrald's Unix socket, with node's own `http` module:
// JSON requests and answers, raw bodies (uploads, metrics), and the
// newline-delimited event stream.

import * as http from 'node:http';
import { ConnectionError, CorralError, ResponseError, errorFromResponse } from './errors';

export interface TransportOptions {
  socketPath: string;
  /** Keep connections open between requests (default true). */
  keepAlive?: boolean;
  /** Largest answer body read, bytes (default 256 MiB): a call's output can be up to 16 MiB, JSON-escaped. */
  maxResponseBytes?: number;
}

export interface RequestOptions {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  /** A JSON body (serialised here) or raw bytes with `contentType`. */
  json?: unknown;
  body?: Buffer;
  contentType?: string;
  signal?: AbortSignal;
  /** The plugin the request is about, for the errors. */
  pluginName?: string;
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** Host header value: the socket is what is addressed, the name is conventional. */
const HOST = 'corral';

export class Transport {
  readonly socketPath: string;
  private readonly agent: http.Agent;
  private readonly maxResponseBytes: number;
  private closed = false;

  constructor(options: TransportOptions) {
    this.socketPath = options.socketPath;
    this.maxResponseBytes = options.maxResponseBytes ?? 256 * 1024 * 1024;
    this.agent = new http.Agent({ keepAlive: options.keepAlive ?? true });
  }

  /** Sends a request and returns the answer whatever its status. */
  async raw(options: RequestOptions): Promise<RawResponse> {
    const response = await this.open(options);
    const body = await readBody(response, this.maxResponseBytes, options.signal);
    return { status: response.statusCode ?? 0, headers: response.headers, body };
  }

  /** Sends a request and parses its JSON answer; an error answer throws its typed error. */
  async json<T>(options: RequestOptions): Promise<T> {
    const response = await this.raw(options);
    const parsed = parseJson(response);
    if (response.status >= 400) throw errorFromResponse(response.status, parsed, options.pluginName);
    return parsed as T;
  }

  /** Sends a request and returns its answer's body as text; an error answer throws its typed error. */
  async text(options: RequestOptions): Promise<string> {
    const response = await this.raw(options);
    if (response.status >= 400) throw errorFromResponse(response.status, parseJson(response), options.pluginName);
    return response.body.toString('utf8');
  }

  /** Sends a request and returns its answer's body as bytes; an error answer throws its typed error. */
  async bytes(options: RequestOptions): Promise<Buffer> {
    const response = await this.raw(options);
    if (response.status >= 400) throw errorFromResponse(response.status, parseJson(response), options.pluginName);
    return response.body;
  }

  /**
   * A streamed answer of one JSON value per line (`GET /v1/events`). The
   * request ends when the iteration does (break, return, throw) or when
   * `signal` aborts.
   */
  async *lines<T>(options: RequestOptions): AsyncGenerator<T, void, undefined> {
    const response = await this.open(options);
    const status = response.statusCode ?? 0;
    if (status >= 400) {
      const body = await readBody(response, this.maxResponseBytes, options.signal);
      throw errorFromResponse(status, parseJson({ status, headers: response.headers, body }), options.pluginName);
    }
    let pending = '';
    // Decoded as a stream: a character split between two chunks stays whole.
    response.setEncoding('utf8');
    try {
      for await (const chunk of response as AsyncIterable<string>) {
        pending += chunk;
        if (pending.length > this.maxResponseBytes) {
          throw new ResponseError('an event line is longer than maxResponseBytes', { code: 'bad_response', status });
        }
        let newline = pending.indexOf('\n');
        while (newline >= 0) {
          const line = pending.slice(0, newline).trim();
          pending = pending.slice(newline + 1);
          if (line) yield parseLine<T>(line, status);
          newline = pending.indexOf('\n');
        }
      }
    } catch (err) {
      if (options.signal?.aborted) return;
      throw err;
    } finally {
      response.destroy();
    }
  }

  /** Closes idle connections; requests after it fail. */
  close(): void {
    this.closed = true;
    this.agent.destroy();
  }

  /**
   * Sends the request. A kept-alive connection that corrald closed while
   * idle can fail the request written on it before corrald read a byte
   * (ECONNRESET on a reused socket): that one is sent again, once, on a
   * fresh connection.
   */
  private async open(options: RequestOptions): Promise<http.IncomingMessage> {
    try {
      return await this.openOnce(options);
    } catch (err) {
      if (err instanceof StaleConnection) return this.openOnce(options);
      throw err;
    }
  }

  private openOnce(options: RequestOptions): Promise<http.IncomingMessage> {
    if (this.closed) {
      return Promise.reject(new CorralError('this client was disposed', { code: 'disposed' }));
    }
    const headers: http.OutgoingHttpHeaders = { host: HOST, accept: 'application/json' };
    let body: Buffer | undefined;
    if (options.json !== undefined) {
      body = Buffer.from(JSON.stringify(options.json), 'utf8');
      headers['content-type'] = 'application/json';
    } else if (options.body !== undefined) {
      body = options.body;
      headers['content-type'] = options.contentType ?? 'application/octet-stream';
    }
    if (body !== undefined) headers['content-length'] = body.length;
    return new Promise((resolve, reject) => {
      const request = http.request({
        socketPath: this.socketPath,
        agent: this.agent,
        method: options.method,
        path: options.path,
        headers,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      request.once('response', resolve);
      request.once('error', (err: NodeJS.ErrnoException) => {
        if (request.reusedSocket && err.code === 'ECONNRESET') reject(new StaleConnection());
        else reject(this.requestError(err, options));
      });
      request.end(body);
    });
  }

  private requestError(err: NodeJS.ErrnoException, options: RequestOptions): Error {
    if (err.name === 'AbortError') return err;
    if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'EACCES') {
      return new ConnectionError(
        `cannot reach corrald at ${this.socketPath} (${err.code}): is it running, and may this user open its socket?`,
        this.socketPath, err);
    }
    return new ConnectionError(`${options.method} ${options.path} on ${this.socketPath} failed: ${err.message}`,
      this.socketPath, err);
  }
}

/** A reused connection was closed under the request: send it again. */
class StaleConnection extends Error {}

function readBody(response: http.IncomingMessage, max: number, signal?: AbortSignal): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onAbort = () => {
      response.destroy();
      reject(signal?.reason ?? new Error('aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    response.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        response.destroy();
        reject(new ResponseError(`corrald's answer is larger than ${max} bytes (maxResponseBytes)`,
          { code: 'bad_response', status: response.statusCode ?? 0 }));
        return;
      }
      chunks.push(chunk);
    });
    response.once('end', () => {
      signal?.removeEventListener('abort', onAbort);
      resolve(Buffer.concat(chunks));
    });
    response.once('error', (err) => {
      signal?.removeEventListener('abort', onAbort);
      reject(err);
    });
  });
}

function parseJson(response: RawResponse): unknown {
  const text = response.body.toString('utf8');
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    if (response.status >= 400) return text;
    throw new ResponseError(`corrald answered ${response.status} with a body that is not JSON: ${text.slice(0, 200)}`,
      { code: 'bad_response', status: response.status });
  }
}

function parseLine<T>(line: string, status: number): T {
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new ResponseError(`an event line is not JSON: ${line.slice(0, 200)}`, { code: 'bad_response', status });
  }
}
