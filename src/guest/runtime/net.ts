/**
 * `node:net` for guests. Sockets are readable-stream Duplexes whose bytes cross the host door;
 * the host side (host/net.ts) maps each id onto a connection of the guest's VirtualNetwork.
 * Backpressure goes both ways: a write the host cannot take yet holds the stream's callback until
 * the host says `drain`, and data the guest is not reading pauses the connection at the host.
 */
import EventEmitter from 'events';
import { Buffer } from 'buffer';
import { Duplex } from 'readable-stream';
import { on } from './dispatch.js';
import { host, hostNumber, parseArg, toArrayBuffer } from './host.js';
import { clearTimeout, setTimeout, type Timeout } from './timers.js';

interface AddressInfo {
  address: string;
  family: string;
  port: number;
}
interface Endpoints {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  remoteFamily: string;
}
export interface NetErrorInfo {
  code: string;
  message: string;
  syscall?: string;
  address?: string;
  port?: number;
}

const sockets = new Map<number, Socket>();
const servers = new Map<number, Server>();

export function netError(info: NetErrorInfo): Error {
  return Object.assign(new Error(info.message), info);
}

type Callback = (...args: unknown[]) => void;

export interface SocketOptions {
  allowHalfOpen?: boolean;
}

export class Socket extends Duplex {
  id = 0;
  connecting = false;
  remoteAddress: string | undefined;
  remotePort: number | undefined;
  remoteFamily: string | undefined;
  localAddress: string | undefined;
  localPort: number | undefined;
  bytesRead = 0;
  bytesWritten = 0;
  server: Server | undefined;
  #hostPaused = false;
  #pendingWrite: (() => void) | undefined;
  #idleMs = 0;
  #idleTimer: Timeout | undefined;
  #closedByHost = false;

  constructor(options: SocketOptions = {}) {
    super({ allowHalfOpen: options.allowHalfOpen === true });
  }

  get pending(): boolean {
    return this.id === 0 || this.connecting;
  }
  get readyState(): string {
    if (this.connecting) return 'opening';
    if (this.readable && this.writable) return 'open';
    if (this.readable) return 'readOnly';
    if (this.writable) return 'writeOnly';
    return 'closed';
  }

  /** Binds this object to a host connection that already exists (accepted by a server). */
  attach(id: number, ends: Endpoints): this {
    this.id = id;
    Object.assign(this, ends);
    sockets.set(id, this);
    return this;
  }

  connect(...args: unknown[]): this {
    const [opts, cb] = normalizeConnectArgs(args);
    if (cb) this.once('connect', cb);
    this.connecting = true;
    this.id = hostNumber('net.id');
    sockets.set(this.id, this);
    host('net.connect', this.id, JSON.stringify({ host: opts.host ?? 'localhost', port: Number(opts.port) }));
    return this;
  }

  override _write(chunk: unknown, encoding: string, callback: (err?: Error | null) => void): void {
    if (this.connecting) {
      this.once('connect', () => this._write(chunk, encoding, callback));
      return;
    }
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, encoding as BufferEncoding) : (chunk as Uint8Array);
    this.bytesWritten += buf.length;
    this.touch();
    const more = host('net.write', this.id, toArrayBuffer(buf));
    if (more === false) this.#pendingWrite = () => callback();
    else callback();
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (this.connecting) {
      this.once('connect', () => this._final(callback));
      return;
    }
    if (!this.#closedByHost) host('net.end', this.id);
    callback();
  }

  override _read(): void {
    if (this.#hostPaused && this.id !== 0) {
      this.#hostPaused = false;
      host('net.resume', this.id);
    }
  }

  override _destroy(err: Error | null, callback: (err: Error | null) => void): void {
    this.clearIdle();
    if (this.id !== 0 && sockets.get(this.id) === this) {
      sockets.delete(this.id);
      if (!this.#closedByHost) host('net.destroy', this.id);
    }
    this.server?.connectionClosed();
    callback(err);
  }

  setNoDelay(noDelay = true): this {
    if (this.id !== 0) host('net.nodelay', this.id, noDelay);
    return this;
  }
  setKeepAlive(): this {
    return this;
  }
  setTimeout(ms: number, cb?: Callback): this {
    this.#idleMs = ms;
    if (cb) {
      if (ms === 0) this.off('timeout', cb);
      else this.once('timeout', cb);
    }
    this.touch();
    return this;
  }
  ref(): this {
    if (this.id !== 0) host('net.ref', this.id, true);
    return this;
  }
  unref(): this {
    if (this.id !== 0) host('net.ref', this.id, false);
    return this;
  }
  address(): AddressInfo | Record<string, never> {
    if (this.localAddress === undefined) return {};
    return { address: this.localAddress, family: family(this.localAddress), port: this.localPort ?? 0 };
  }
  resetAndDestroy(): this {
    return this.destroy();
  }

  // --- events from the host ---

  onConnect(ends: Endpoints): void {
    this.connecting = false;
    Object.assign(this, ends);
    this.touch();
    this.emit('connect');
    this.emit('ready');
  }
  onData(bytes: ArrayBuffer): void {
    const buf = Buffer.from(bytes);
    this.bytesRead += buf.length;
    this.touch();
    if (!this.push(buf)) {
      this.#hostPaused = true;
      host('net.pause', this.id);
    }
  }
  onEnd(): void {
    this.push(null);
  }
  onDrain(): void {
    const done = this.#pendingWrite;
    this.#pendingWrite = undefined;
    done?.();
  }
  onHostClose(err: Error | undefined): void {
    this.#closedByHost = true;
    sockets.delete(this.id);
    this.connecting = false;
    if (err) this.destroy(err);
    else {
      this.push(null);
      this.destroy();
    }
  }

  private touch(): void {
    this.clearIdle();
    if (this.#idleMs <= 0) return;
    this.#idleTimer = setTimeout(() => this.emit('timeout'), this.#idleMs).unref();
  }
  private clearIdle(): void {
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }
}

function family(address: string): string {
  return address.includes(':') ? 'IPv6' : 'IPv4';
}

function normalizeConnectArgs(args: unknown[]): [{ port?: unknown; host?: string }, Callback | undefined] {
  const cb = typeof args[args.length - 1] === 'function' ? (args.pop() as Callback) : undefined;
  const first = args[0];
  if (first !== null && typeof first === 'object') return [first, cb];
  return [{ port: first, host: typeof args[1] === 'string' ? args[1] : undefined }, cb];
}

export interface ServerOptions {
  allowHalfOpen?: boolean;
  pauseOnConnect?: boolean;
}

export class Server extends EventEmitter {
  id = 0;
  maxConnections = Infinity;
  #address: AddressInfo | undefined;
  #connections = 0;
  #closing = false;
  #closeCallbacks: Callback[] = [];

  constructor(
    readonly options: ServerOptions = {},
    connectionListener?: (socket: Socket) => void,
  ) {
    super();
    if (connectionListener) this.on('connection', connectionListener);
  }

  get listening(): boolean {
    return this.#address !== undefined;
  }

  listen(...args: unknown[]): this {
    const cb = typeof args[args.length - 1] === 'function' ? (args.pop() as Callback) : undefined;
    const first = args[0];
    let port: unknown;
    let hostname: unknown;
    if (first !== null && typeof first === 'object') {
      ({ port, host: hostname } = first as { port?: unknown; host?: unknown });
    } else {
      port = first;
      hostname = typeof args[1] === 'string' ? args[1] : undefined;
    }
    if (cb) this.once('listening', cb);
    this.id = hostNumber('net.id');
    this.#closing = false;
    servers.set(this.id, this);
    host(
      'net.listen',
      this.id,
      JSON.stringify({ port: port === undefined || port === null ? 0 : Number(port), host: hostname ?? null }),
    );
    return this;
  }

  address(): AddressInfo | null {
    return this.#address ?? null;
  }

  close(cb?: Callback): this {
    if (!this.#address) {
      if (cb)
        queueMicrotask(() =>
          cb(Object.assign(new Error('Server is not running.'), { code: 'ERR_SERVER_NOT_RUNNING' })),
        );
      return this;
    }
    if (cb) this.#closeCallbacks.push(cb);
    this.#closing = true;
    servers.delete(this.id);
    host('net.unlisten', this.id);
    this.#address = undefined;
    this.maybeClosed();
    return this;
  }

  getConnections(cb: (err: Error | null, n: number) => void): this {
    queueMicrotask(() => cb(null, this.#connections));
    return this;
  }
  ref(): this {
    if (this.id !== 0) host('net.ref', this.id, true);
    return this;
  }
  unref(): this {
    if (this.id !== 0) host('net.ref', this.id, false);
    return this;
  }

  onListening(address: AddressInfo): void {
    this.#address = address;
    this.emit('listening');
  }
  onConnection(socketId: number, ends: Endpoints): void {
    const socket = new Socket({ allowHalfOpen: this.options.allowHalfOpen === true }).attach(socketId, ends);
    if (this.#connections >= this.maxConnections) {
      socket.destroy();
      return;
    }
    socket.server = this;
    this.#connections++;
    if (this.options.pauseOnConnect) socket.pause();
    this.emit('connection', socket);
  }
  onError(err: Error): void {
    servers.delete(this.id);
    this.emit('error', err);
  }
  connectionClosed(): void {
    this.#connections = Math.max(0, this.#connections - 1);
    this.maybeClosed();
  }
  private maybeClosed(): void {
    if (!this.#closing || this.#connections > 0) return;
    this.#closing = false;
    const cbs = this.#closeCallbacks;
    this.#closeCallbacks = [];
    queueMicrotask(() => {
      this.emit('close');
      for (const cb of cbs) cb();
    });
  }
}

on('net.listening', (id, json) => servers.get(Number(id))?.onListening(parseArg<AddressInfo>(json)));
on('net.connection', (serverId, socketId, json) =>
  servers.get(Number(serverId))?.onConnection(Number(socketId), parseArg<Endpoints>(json)),
);
on('net.connect', (id, json) => sockets.get(Number(id))?.onConnect(parseArg<Endpoints>(json)));
on('net.data', (id, bytes) => sockets.get(Number(id))?.onData(bytes as ArrayBuffer));
on('net.end', (id) => sockets.get(Number(id))?.onEnd());
on('net.drain', (id) => sockets.get(Number(id))?.onDrain());
on('net.close', (id, json) => {
  const info = json ? parseArg<NetErrorInfo>(json) : undefined;
  sockets.get(Number(id))?.onHostClose(info ? netError(info) : undefined);
});
on('net.error', (id, json) => {
  const err = netError(parseArg<NetErrorInfo>(json));
  const server = servers.get(Number(id));
  if (server) server.onError(err);
  else sockets.get(Number(id))?.onHostClose(err);
});

export function createServer(...args: unknown[]): Server {
  const listener = typeof args[args.length - 1] === 'function' ? (args.pop() as (s: Socket) => void) : undefined;
  const options = (args[0] ?? {}) as ServerOptions;
  return new Server(options, listener);
}

export function connect(...args: unknown[]): Socket {
  const first = args[0];
  const options = first !== null && typeof first === 'object' ? (first as SocketOptions) : {};
  return new Socket(options).connect(...args);
}

export function isIP(input: string): number {
  if (/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(input)) {
    return input.split('.').every((p) => Number(p) <= 255) ? 4 : 0;
  }
  return /^[0-9a-fA-F:]+$/.test(input) && input.includes(':') ? 6 : 0;
}

export const netModule = {
  Socket,
  Stream: Socket,
  Server,
  createServer,
  connect,
  createConnection: connect,
  isIP,
  isIPv4: (s: string) => isIP(s) === 4,
  isIPv6: (s: string) => isIP(s) === 6,
};
