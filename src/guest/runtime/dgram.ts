/** `node:dgram` for guests: UDP sockets over the host's VirtualNetwork. */
import EventEmitter from 'events';
import { Buffer } from 'buffer';
import { on } from './dispatch.js';
import { host, hostNumber, parseArg, toArrayBuffer } from './host.js';
import { netError, type NetErrorInfo } from './net.js';

interface AddressInfo {
  address: string;
  family: string;
  port: number;
}
type SendCallback = (err: Error | null, bytes?: number) => void;

const sockets = new Map<number, Socket>();

export class Socket extends EventEmitter {
  id = 0;
  readonly type: 'udp4' | 'udp6';
  #address: AddressInfo | undefined;
  #sends = new Map<number, { cb: SendCallback | undefined; size: number }>();
  #nextSeq = 1;
  #queued: Array<() => void> = [];
  #closed = false;

  constructor(type: 'udp4' | 'udp6') {
    super();
    this.type = type;
  }

  bind(...args: unknown[]): this {
    const cb = typeof args[args.length - 1] === 'function' ? (args.pop() as () => void) : undefined;
    let port: unknown = args[0];
    let address: unknown = args[1];
    if (port !== null && typeof port === 'object') ({ port, address } = port as { port?: unknown; address?: unknown });
    if (cb) this.once('listening', cb);
    this.id = hostNumber('net.id');
    sockets.set(this.id, this);
    host('udp.bind', this.id, JSON.stringify({ type: this.type, port: Number(port ?? 0), host: address ?? null }));
    return this;
  }

  send(msg: unknown, ...rest: unknown[]): void {
    const cb = typeof rest[rest.length - 1] === 'function' ? (rest.pop() as SendCallback) : undefined;
    let buf: Buffer;
    let port: number;
    let address: string;
    if (typeof rest[0] === 'number' && typeof rest[1] === 'number' && rest.length >= 3) {
      // send(msg, offset, length, port, address)
      const whole = typeof msg === 'string' ? Buffer.from(msg) : Buffer.from(msg as Uint8Array);
      buf = whole.subarray(rest[0], rest[0] + rest[1]);
      port = Number(rest[2]);
      address = typeof rest[3] === 'string' ? rest[3] : '127.0.0.1';
    } else {
      buf = Array.isArray(msg)
        ? Buffer.concat(
            msg.map((m: unknown) => (typeof m === 'string' ? Buffer.from(m) : Buffer.from(m as Uint8Array))),
          )
        : typeof msg === 'string'
          ? Buffer.from(msg)
          : Buffer.from(msg as Uint8Array);
      port = Number(rest[0]);
      address = typeof rest[1] === 'string' ? rest[1] : '127.0.0.1';
    }
    if (address === 'localhost') address = this.type === 'udp6' ? '::1' : '127.0.0.1';
    const go = (): void => {
      const seq = this.#nextSeq++;
      this.#sends.set(seq, { cb, size: buf.length });
      host('udp.send', this.id, seq, toArrayBuffer(buf), port, address);
    };
    if (this.id === 0) {
      // Node binds an unbound socket implicitly on first send.
      this.bind(0);
      this.#queued.push(go);
    } else if (!this.#address) this.#queued.push(go);
    else go();
  }

  close(cb?: () => void): this {
    if (this.#closed) return this;
    this.#closed = true;
    if (cb) this.once('close', cb);
    sockets.delete(this.id);
    if (this.id !== 0) host('udp.close', this.id);
    queueMicrotask(() => this.emit('close'));
    return this;
  }

  address(): AddressInfo {
    if (!this.#address) throw Object.assign(new Error('getsockname EBADF'), { code: 'EBADF' });
    return this.#address;
  }
  ref(): this {
    if (this.id !== 0) host('udp.ref', this.id, true);
    return this;
  }
  unref(): this {
    if (this.id !== 0) host('udp.ref', this.id, false);
    return this;
  }
  setBroadcast(): void {}
  setTTL(ttl: number): number {
    return ttl;
  }

  onListening(address: AddressInfo): void {
    this.#address = address;
    this.emit('listening');
    const queued = this.#queued.splice(0);
    for (const go of queued) go();
  }
  onMessage(bytes: ArrayBuffer, rinfo: AddressInfo & { size: number }): void {
    this.emit('message', Buffer.from(bytes), rinfo);
  }
  onSent(seq: number, err: Error | undefined): void {
    const s = this.#sends.get(seq);
    this.#sends.delete(seq);
    if (!s) return;
    if (s.cb) s.cb(err ?? null, err ? undefined : s.size);
    else if (err) this.emit('error', err);
  }
  onError(err: Error): void {
    this.emit('error', err);
  }
}

on('udp.listening', (id, json) => sockets.get(Number(id))?.onListening(parseArg<AddressInfo>(json)));
on('udp.message', (id, bytes, json) =>
  sockets.get(Number(id))?.onMessage(bytes as ArrayBuffer, parseArg<AddressInfo & { size: number }>(json)),
);
on('udp.sent', (id, seq, json) =>
  sockets.get(Number(id))?.onSent(Number(seq), json ? netError(parseArg<NetErrorInfo>(json)) : undefined),
);
on('udp.error', (id, json) => sockets.get(Number(id))?.onError(netError(parseArg<NetErrorInfo>(json))));

export function createSocket(type: unknown, listener?: (msg: Buffer, rinfo: unknown) => void): Socket {
  const kind = typeof type === 'object' && type !== null ? (type as { type: string }).type : type;
  if (kind !== 'udp4' && kind !== 'udp6') {
    throw Object.assign(new TypeError(`Bad socket type specified. Valid types are: udp4, udp6`), {
      code: 'ERR_SOCKET_BAD_TYPE',
    });
  }
  const socket = new Socket(kind);
  if (listener) socket.on('message', listener);
  return socket;
}

export const dgramModule = { createSocket, Socket };
