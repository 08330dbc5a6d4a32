/**
 * The client: a `ClientRequest` takes a socket from an `Agent` (reusing an idle keep-alive one
 * when it can) and parses the response.
 */
import EventEmitter from 'events';
import { Buffer } from 'buffer';
import { connect as netConnect, type Socket } from '../net.js';
import { BODYLESS_METHODS, DEFAULT_MAX_HEADER_SIZE, codedError, connResetError, validateHeaderName } from './common.js';
import { IncomingMessage, headersFrom } from './incoming.js';
import type { Listener, OutgoingHeaderValue } from './outgoing.js';
import { OutgoingMessage } from './outgoing.js';
import type { Parser, ParserInfo } from './parser.js';
import { asParseError, checkFraming, isParseError, newParser, parseError } from './parser.js';

export interface AgentOptions {
  keepAlive?: boolean;
  keepAliveMsecs?: number;
  maxSockets?: number;
  maxFreeSockets?: number;
  maxTotalSockets?: number;
  timeout?: number;
  scheduling?: 'lifo' | 'fifo';
}

interface ConnectOptions {
  host: string;
  port: number;
  localAddress?: string;
  family?: number;
}

/**
 * A small `http.Agent`: sockets are made on demand (no queueing under maxSockets), and with
 * `keepAlive` one idle socket per host:port is kept (unref'd) for the next request.
 */
export class Agent extends EventEmitter {
  keepAlive: boolean;
  keepAliveMsecs: number;
  maxSockets: number;
  maxFreeSockets: number;
  maxTotalSockets: number;
  timeout: number | undefined;
  scheduling: 'lifo' | 'fifo';
  defaultPort = 80;
  protocol = 'http:';
  readonly options: AgentOptions;
  readonly sockets: Record<string, Socket[]> = Object.create(null) as Record<string, Socket[]>;
  readonly freeSockets: Record<string, Socket[]> = Object.create(null) as Record<string, Socket[]>;
  readonly requests: Record<string, ClientRequest[]> = Object.create(null) as Record<string, ClientRequest[]>;
  readonly #freeCleanup = new WeakMap<Socket, () => void>();

  constructor(options: AgentOptions = {}) {
    super();
    this.options = { ...options };
    this.keepAlive = options.keepAlive === true;
    this.keepAliveMsecs = options.keepAliveMsecs ?? 1000;
    this.maxSockets = options.maxSockets ?? Infinity;
    this.maxFreeSockets = options.maxFreeSockets ?? 256;
    this.maxTotalSockets = options.maxTotalSockets ?? Infinity;
    this.timeout = options.timeout;
    this.scheduling = options.scheduling ?? 'lifo';
  }

  getName(options: Partial<ConnectOptions> = {}): string {
    let name = `${options.host ?? 'localhost'}:`;
    if (options.port) name += String(options.port);
    name += ':';
    if (options.localAddress) name += options.localAddress;
    if (options.family === 4 || options.family === 6) name += `:${options.family}`;
    return name;
  }

  createConnection(options: ConnectOptions, cb?: () => void): Socket {
    return netConnect({ host: options.host, port: options.port }, cb);
  }

  keepSocketAlive(socket: Socket): boolean {
    socket.setKeepAlive();
    socket.unref();
    return true;
  }

  reuseSocket(socket: Socket, _req: ClientRequest): void {
    socket.ref();
  }

  addRequest(req: ClientRequest, options: ConnectOptions): void {
    const name = this.getName(options);
    const free = this.freeSockets[name];
    while (free && free.length > 0) {
      const socket = (this.scheduling === 'lifo' ? free.pop() : free.shift()) as Socket;
      this.#freeCleanup.get(socket)?.();
      this.#freeCleanup.delete(socket);
      if (socket.destroyed) continue;
      if (free.length === 0) delete this.freeSockets[name];
      (this.sockets[name] ??= []).push(socket);
      this.reuseSocket(socket, req);
      req.onSocket(socket, true, name);
      return;
    }
    delete this.freeSockets[name];
    const socket = this.createConnection(options);
    (this.sockets[name] ??= []).push(socket);
    socket.once('close', () => this.#forget(name, socket));
    req.onSocket(socket, false, name);
  }

  /** @internal A request is done with `socket`: keep it for the next one, or close it. */
  _release(socket: Socket, name: string, idleMs: number | undefined): void {
    remove(this.sockets, name, socket);
    const free = this.freeSockets[name] ?? [];
    if (!this.keepAlive || socket.destroyed || !socket.writable || free.length >= this.maxFreeSockets) {
      socket.destroy();
      return;
    }
    if (!this.keepSocketAlive(socket)) {
      socket.destroy();
      return;
    }
    this.freeSockets[name] = free;
    free.push(socket);
    // While idle, anything from the server (data, end, an error) ends the socket.
    const drop = (): void => {
      socket.destroy();
    };
    const ignore = (): void => {};
    socket.on('data', drop);
    socket.on('end', drop);
    socket.on('timeout', drop);
    socket.on('error', ignore);
    const ms = idleMs ?? this.timeout;
    if (ms !== undefined && ms > 0) socket.setTimeout(ms);
    this.#freeCleanup.set(socket, () => {
      socket.off('data', drop);
      socket.off('end', drop);
      socket.off('timeout', drop);
      socket.off('error', ignore);
      socket.setTimeout(0);
    });
    this.emit('free', socket, name);
  }

  #forget(name: string, socket: Socket): void {
    remove(this.sockets, name, socket);
    remove(this.freeSockets, name, socket);
  }

  destroy(): void {
    for (const list of [...Object.values(this.sockets), ...Object.values(this.freeSockets)]) {
      for (const socket of [...list]) socket.destroy();
    }
  }
}

function remove(lists: Record<string, Socket[]>, name: string, socket: Socket): void {
  const list = lists[name];
  if (!list) return;
  const i = list.indexOf(socket);
  if (i >= 0) list.splice(i, 1);
  if (list.length === 0) delete lists[name];
}

export const agents = { global: new Agent({ keepAlive: true, scheduling: 'lifo', timeout: 5000 }) };

export interface RequestOptions {
  protocol?: string;
  host?: string;
  hostname?: string;
  port?: number | string;
  defaultPort?: number;
  path?: string;
  method?: string;
  headers?: Record<string, OutgoingHeaderValue | undefined> | string[];
  auth?: string;
  agent?: Agent | false | null;
  timeout?: number;
  setHost?: boolean;
  createConnection?: (options: ConnectOptions) => Socket;
  signal?: { aborted: boolean; reason?: unknown; addEventListener(type: string, fn: () => void): void };
  localAddress?: string;
  family?: number;
  maxHeaderSize?: number;
}

interface UrlLike {
  href: string;
  protocol: string;
  hostname: string;
  port: string;
  pathname: string;
  search: string;
  hash: string;
  username: string;
  password: string;
}

function isURL(value: unknown): value is UrlLike {
  const v = value as UrlLike | null;
  return (
    v !== null &&
    typeof v === 'object' &&
    typeof v.href === 'string' &&
    typeof v.protocol === 'string' &&
    typeof v.hostname === 'string' &&
    typeof v.pathname === 'string'
  );
}

function urlToHttpOptions(url: UrlLike): RequestOptions {
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const options: RequestOptions = {
    protocol: url.protocol,
    hostname,
    path: `${url.pathname || ''}${url.search || ''}`,
  };
  if (url.port !== '') options.port = Number(url.port);
  if (url.username || url.password) {
    options.auth = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
  }
  return options;
}

export class ClientRequest extends OutgoingMessage {
  method: string;
  path: string;
  host: string;
  protocol = 'http:';
  agent: Agent | undefined;
  reusedSocket = false;
  aborted = false;
  res: IncomingMessage | null = null;
  maxHeadersCount: number | null = null;
  readonly #maxHeaderSize: number;
  #agentName = '';
  #parser: Parser | undefined;
  #listeners: Array<[string, (...args: never[]) => void]> = [];
  #timeoutMs = 0;
  #paused = false;
  #informational = false;
  #upgrading = false;
  #responseKeepAlive = false;
  #responseDone = false;
  #junk = false;
  #keepAliveHintMs: number | undefined;
  #released = false;
  #closed = false;
  #hadError = false;
  #destroyCalled = false;
  #destroyError: Error | undefined;

  constructor(input: unknown, options?: unknown, cb?: unknown) {
    super({ emitClose: false, autoDestroy: false });
    let base: RequestOptions | undefined;
    if (typeof input === 'string') base = urlToHttpOptions(new URL(input));
    else if (isURL(input)) base = urlToHttpOptions(input);
    else {
      cb = options;
      options = input;
    }
    let opts: RequestOptions;
    if (typeof options === 'function') {
      cb = options;
      opts = { ...(base ?? {}) };
    } else opts = { ...(base ?? {}), ...((options ?? {}) as RequestOptions) };

    let agent: Agent | undefined;
    if (opts.agent === false) agent = new Agent();
    else if (opts.agent === undefined || opts.agent === null) {
      agent = typeof opts.createConnection === 'function' ? undefined : agents.global;
    } else agent = opts.agent;
    this.agent = agent;
    const defaultPort = opts.defaultPort ?? agent?.defaultPort ?? 80;
    const protocol = opts.protocol ?? agent?.protocol ?? 'http:';
    if (protocol !== 'http:') {
      throw codedError('ERR_INVALID_PROTOCOL', `Protocol "${protocol}" not supported. Expected "http:"`, TypeError);
    }
    const host = opts.hostname || opts.host || 'localhost';
    const port = Number(opts.port ?? defaultPort) || defaultPort;
    const path = opts.path ?? '/';
    if (/[^\u0021-\u00ff]/.test(path)) {
      throw codedError('ERR_UNESCAPED_CHARACTERS', 'Request path contains unescaped characters', TypeError);
    }
    const method = (opts.method ?? 'GET').toUpperCase();
    validateHeaderName(method, 'Method');
    this.method = method;
    this.path = path;
    this.host = host;
    this.#maxHeaderSize = opts.maxHeaderSize ?? DEFAULT_MAX_HEADER_SIZE;
    if (typeof cb === 'function') this.once('response', cb as (res: IncomingMessage) => void);

    const headers = opts.headers;
    if (Array.isArray(headers)) {
      for (let i = 0; i + 1 < headers.length; i += 2) this.appendHeader(String(headers[i]), String(headers[i + 1]));
    } else if (headers) {
      for (const [k, v] of Object.entries(headers)) if (v !== undefined) this.setHeader(k, v);
    }
    if (opts.setHost !== false && !this.hasHeader('host')) {
      let hostHeader = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
      if (port !== defaultPort) hostHeader += `:${port}`;
      this.setHeader('Host', hostHeader);
    }
    if (opts.auth && !this.hasHeader('authorization')) {
      this.setHeader('Authorization', `Basic ${Buffer.from(opts.auth).toString('base64')}`);
    }
    this.useChunkedEncodingByDefault = !BODYLESS_METHODS.has(method);
    this.shouldKeepAlive = agent?.keepAlive === true;
    if (opts.timeout !== undefined) this.setTimeout(opts.timeout);

    const signal = opts.signal;
    if (signal) {
      const abortWith = (): void => {
        this.destroy(Object.assign(new Error('The operation was aborted'), { name: 'AbortError', code: 'ABORT_ERR' }));
      };
      if (signal.aborted) queueMicrotask(abortWith);
      else signal.addEventListener('abort', abortWith);
    }

    const connect: ConnectOptions = { host, port };
    if (opts.localAddress) connect.localAddress = opts.localAddress;
    if (opts.family) connect.family = opts.family;
    if (agent) agent.addRequest(this, connect);
    else this.onSocket((opts.createConnection as (o: ConnectOptions) => Socket)(connect), false, '');
  }

  override _implicitHeader(): void {
    this._storeHeader(`${this.method} ${this.path} HTTP/1.1\r\n`);
  }
  override _lengthForEnd(n: number): number | null {
    // GET and friends announce no length for an empty body, as Node.
    return n > 0 || this.useChunkedEncodingByDefault ? n : null;
  }
  override _delimitsWithoutLength(): boolean {
    return true;
  }
  override _destroy(err: Error | null, callback: (err: Error | null) => void): void {
    callback(err);
  }

  /** @internal The agent hands over a socket (new and connecting, or an idle kept-alive one). */
  onSocket(socket: Socket, reused: boolean, name: string): void {
    this.socket = socket;
    this.reusedSocket = reused;
    this.#agentName = name;
    if (this.#destroyCalled) {
      socket.destroy();
      return;
    }
    this.#parser = newParser('RESPONSE', this.#maxHeaderSize, {
      headers: (info) => this.#onHeaders(info),
      body: (chunk) => this.#onBody(chunk),
      complete: () => this.#onComplete(),
      trailers: (raw) => this.res?._setTrailers(raw),
    });
    this.#listen(socket, 'data', (buf: Buffer) => this.#onData(buf));
    this.#listen(socket, 'end', () => this.#onEnd());
    this.#listen(socket, 'error', (err: Error) => this.#onError(err));
    this.#listen(socket, 'close', () => this.#onClose());
    this.#listen(socket, 'timeout', () => {
      if (this.res && !this.res.complete) this.res.emit('timeout');
      this.emit('timeout');
    });
    if (this.#timeoutMs > 0) socket.setTimeout(this.#timeoutMs);
    this.assignSocket(socket);
    queueMicrotask(() => this.emit('socket', socket));
  }

  setTimeout(ms: number, cb?: () => void): this {
    if (cb) this.once('timeout', cb);
    this.#timeoutMs = ms;
    if (this.socket && !this.#released) this.socket.setTimeout(ms);
    return this;
  }
  setNoDelay(noDelay = true): void {
    this.socket?.setNoDelay(noDelay);
  }
  setSocketKeepAlive(): void {}

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    queueMicrotask(() => this.emit('abort'));
    this.destroy();
  }

  override destroy(err?: Error): this {
    if (this.#destroyCalled) return this;
    this.#destroyCalled = true;
    this.#destroyError = err;
    this.res?._dump();
    if (this.socket && !this.#released) this.socket.destroy();
    else if (!this.socket) {
      queueMicrotask(() => {
        if (!this.aborted && !this.#hadError) {
          this.#hadError = true;
          this.emit('error', err ?? connResetError('socket hang up'));
        }
        this.#emitClose();
      });
    } else if (err) queueMicrotask(() => this.emit('error', err));
    super.destroy();
    return this;
  }

  #listen(socket: Socket, event: string, fn: (...args: never[]) => void): void {
    socket.on(event, fn as Listener);
    this.#listeners.push([event, fn]);
  }

  #detach(): void {
    const socket = this.socket;
    if (!socket) return;
    for (const [event, fn] of this.#listeners) socket.off(event, fn as Listener);
    this.#listeners = [];
    socket.setTimeout(0);
  }

  #emitClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    queueMicrotask(() => this.emit('close'));
  }

  #onData(buf: Buffer): void {
    const parser = this.#parser;
    if (!parser || this.#released) return;
    if (this.#responseDone) {
      this.#junk = true;
      return;
    }
    let offset = 0;
    while (offset < buf.length) {
      let consumed: number | Error;
      try {
        consumed = parser.execute(offset === 0 ? buf : buf.subarray(offset));
      } catch (err) {
        if (!isParseError(err)) {
          this.socket?.destroy();
          throw err;
        }
        consumed = err;
      }
      if (consumed instanceof Error) {
        this.#parseFailed(asParseError(consumed));
        return;
      }
      if (this.#upgrading) {
        this.#handOver(buf.subarray(offset + consumed));
        return;
      }
      if (!(consumed > 0)) break;
      offset += consumed;
      if (this.#responseDone) break;
    }
    if (parser.line.length > this.#maxHeaderSize && !this.#responseDone) {
      this.#parseFailed(parseError('HPE_HEADER_OVERFLOW', 'Header overflow'));
    }
  }

  #onHeaders(info: ParserInfo): number {
    if (this.#responseDone) {
      this.#junk = true;
      return 1;
    }
    checkFraming(info.headers, false);
    const status = info.statusCode ?? 0;
    if (status >= 100 && status < 200 && status !== 101) {
      this.#informational = true;
      const headers = headersFrom(info.headers);
      if (status === 100) this.emit('continue');
      this.emit('information', {
        statusCode: status,
        statusMessage: info.statusMessage ?? '',
        httpVersion: `${info.versionMajor}.${info.versionMinor}`,
        httpVersionMajor: info.versionMajor,
        httpVersionMinor: info.versionMinor,
        headers,
        rawHeaders: info.headers,
      });
      return 0;
    }
    const socket = this.socket;
    const res = new IncomingMessage(socket);
    res._setHead(info, this.maxHeadersCount);
    res.statusCode = status;
    res.statusMessage = info.statusMessage ?? '';
    res.req = this;
    this.res = res;
    this.#responseKeepAlive = info.shouldKeepAlive;
    const hint = /timeout=(\d+)/.exec(String(res.headers['keep-alive'] ?? ''));
    // As Node: leave a second before the server's announced idle timeout, and do not reuse a
    // socket the server keeps for less than that.
    if (hint?.[1]) this.#keepAliveHintMs = Math.max(0, Number(hint[1]) * 1000 - 1000);
    res._onRead = () => {
      if (this.#paused && !this.#released && socket) {
        this.#paused = false;
        socket.resume();
      }
    };
    if (status === 101) {
      if (this.listenerCount('upgrade') > 0) {
        this.#upgrading = true;
        return 0;
      }
      socket?.destroy();
      return 1;
    }
    // No body, whatever the headers say, for HEAD and for 204 and 304.
    const skipBody = this.method === 'HEAD' || status === 204 || status === 304 ? 1 : 0;
    if (!this.emit('response', res)) res._dump();
    return skipBody;
  }

  #onBody(chunk: Buffer): void {
    const res = this.res;
    if (!res || this.#responseDone || res.destroyed) return;
    if (!res.push(chunk) && !this.#paused) {
      this.#paused = true;
      this.socket?.pause();
    }
  }

  #onComplete(): void {
    if (this.#informational) {
      this.#informational = false;
      return;
    }
    const res = this.res;
    if (!res || this.#responseDone) return;
    this.#responseDone = true;
    res.complete = true;
    if (this.#paused) {
      this.#paused = false;
      this.socket?.resume();
    }
    res.once('end', () => this.#release());
    res.once('close', () => this.#release());
    res.push(null);
  }

  /** The response was read to its end (or dropped): the socket goes back to the agent or closes. */
  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#detach();
    const socket = this.socket;
    if (socket) {
      const reuse =
        this.agent !== undefined &&
        this.shouldKeepAlive &&
        !this._last &&
        this.#responseKeepAlive &&
        this.writableFinished &&
        this.res?.readableEnded === true &&
        !this.#junk &&
        this.#keepAliveHintMs !== 0 &&
        !socket.destroyed;
      if (reuse && this.agent) this.agent._release(socket, this.#agentName, this.#keepAliveHintMs);
      else socket.destroy();
    }
    this.#emitClose();
  }

  #onEnd(): void {
    if (this.#released || !this.#parser) return;
    if (!this.#responseDone) {
      const err = this.#parser.finish();
      if (err instanceof Error && this.res) {
        this.#parseFailed(asParseError(err));
        return;
      }
    }
    if (!this.#responseDone) this.socket?.destroy();
  }

  #onError(err: Error): void {
    if (this.#released || this.#hadError) return;
    this.#hadError = true;
    if (!this.aborted) this.emit('error', err);
  }

  #parseFailed(err: Error): void {
    if (!this.#hadError) {
      this.#hadError = true;
      if (!this.aborted) this.emit('error', err);
    }
    this.socket?.destroy();
  }

  #onClose(): void {
    if (this.#released) return;
    if (this.#responseDone) {
      // Complete: the reader may still be busy with it; the socket is released when it is done.
      return;
    }
    this.#released = true;
    this.#detach();
    const res = this.res;
    if (res) {
      if (!res.complete) res.destroy(connResetError('aborted'));
    } else if (!this.#hadError) {
      this.#hadError = true;
      if (!this.aborted) this.emit('error', this.#destroyError ?? connResetError('socket hang up'));
    }
    this.#emitClose();
  }

  #handOver(head: Buffer): void {
    const socket = this.socket;
    const res = this.res;
    this.#released = true;
    this.#detach();
    if (!socket || !res) return;
    res.complete = true;
    res.push(null);
    this.emit('upgrade', res, socket, Buffer.from(head));
    this.#emitClose();
  }
}

export function request(...args: unknown[]): ClientRequest {
  return new ClientRequest(args[0], args[1], args[2]);
}

export function get(...args: unknown[]): ClientRequest {
  const req = request(...args);
  req.end();
  return req;
}
