/**
 * The host half of the guest's `node:net`: one entry per guest socket or server id, bound to a
 * connection or listener of the guest's VirtualNetwork. Counts bytes each way per socket (the
 * offsets the data path will resume streams from) and holds events that arrive while the guest is
 * frozen until it runs again.
 */
import type { HostValue } from '../sandbox/sandbox.js';
import type { HostBinding, HostOp } from './binding.js';
import {
  networkErrorInfo,
  type AddressInfo,
  type CarriedConnection,
  type Endpoints,
  type NetworkErrorInfo,
  type VirtualConnection,
  type VirtualListener,
  type VirtualNetwork,
} from '../network/types.js';

export type Deliver = (kind: string, ...args: HostValue[]) => void;

interface SocketEntry {
  kind: 'socket';
  id: number;
  conn: VirtualConnection | undefined;
  endpoints: Endpoints | undefined;
  bytesIn: number;
  bytesOut: number;
  ref: boolean;
  error: NetworkErrorInfo | undefined;
  paused: boolean;
  /** The guest was told the peer ended its side. */
  ended: boolean;
}

interface ServerEntry {
  kind: 'server';
  id: number;
  request: { port: number; host: string | null };
  listener: VirtualListener | undefined;
  address: AddressInfo | undefined;
  ref: boolean;
}

export interface SocketState {
  id: number;
  endpoints: Endpoints | null;
  bytesIn: number;
  bytesOut: number;
  ref: boolean;
  paused?: boolean;
  ended?: boolean;
  /** The connection itself, when the network carries connections across a restore. */
  link?: CarriedConnection;
}

export interface ServerState {
  id: number;
  request: { port: number; host: string | null };
  address: AddressInfo | null;
  ref: boolean;
}

export interface NetState {
  nextId: number;
  sockets: SocketState[];
  servers: ServerState[];
}

/** Ids for every network object a guest owns (sockets, servers, datagram sockets). */
export class IdAllocator {
  constructor(public next = 1) {}
  take(): number {
    return this.next++;
  }
}

export class NetHost implements HostBinding {
  private readonly entries = new Map<number, SocketEntry | ServerEntry>();
  private pendingOps = 0;
  /** Outbound connects still opening: a move waits for them after the freeze (see `settle`). */
  private readonly connecting = new Set<Promise<void>>();
  private frozen = false;

  constructor(
    private readonly network: VirtualNetwork,
    private readonly ids: IdAllocator,
    private readonly deliver: Deliver,
  ) {}

  /** Sockets, servers and operations in flight that keep the guest alive. */
  get refCount(): number {
    let n = this.pendingOps;
    for (const e of this.entries.values()) if (e.ref) n++;
    return n;
  }

  ops(): Record<string, HostOp> {
    return {
      'net.id': () => this.ids.take(),
      'net.listen': ([id, json]) => this.listen(Number(id), JSON.parse(String(json)) as ServerEntry['request']),
      'net.unlisten': ([id]) => this.unlisten(Number(id)),
      'net.connect': ([id, json]) =>
        this.connect(Number(id), JSON.parse(String(json)) as { host: string; port: number }),
      'net.write': ([id, bytes]) => this.write(Number(id), bytes as Uint8Array),
      'net.end': ([id]) => {
        this.socket(id)?.conn?.stream.end();
      },
      'net.destroy': ([id]) => this.destroy(Number(id)),
      'net.pause': ([id]) => this.setPaused(Number(id), true),
      'net.resume': ([id]) => this.setPaused(Number(id), false),
      'net.nodelay': ([id, on]) => {
        const s = this.socket(id)?.conn?.stream as { setNoDelay?: (b: boolean) => void } | undefined;
        s?.setNoDelay?.(on === true);
      },
      'net.ref': ([id, on]) => {
        const e = this.entries.get(Number(id));
        if (e) e.ref = on === true;
      },
    };
  }

  /** Stops reading from every connection (the guest is about to be captured or stopped). */
  freeze(): void {
    this.frozen = true;
    for (const e of this.entries.values()) if (e.kind === 'socket') e.conn?.stream.pause();
  }

  thaw(): void {
    this.frozen = false;
    for (const e of this.entries.values()) if (e.kind === 'socket' && !e.paused) e.conn?.stream.resume();
  }

  /** Outbound connects still opening. */
  get connectsInFlight(): number {
    return this.connecting.size;
  }

  /**
   * Waits (at most `limitMs`) until no outbound connect is still opening; true if none is. A frozen
   * guest starts no new ones, and one that completes now is captured as an open connection whose
   * 'connect' event the guest gets where it resumes: a capture in the middle of a connect would
   * lose it. Resolves false when the limit comes first (those connects then end with an error).
   */
  async settle(limitMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), limitMs)));
    try {
      while (this.connecting.size > 0) {
        const all = Promise.allSettled([...this.connecting]).then(() => true);
        if (!(await Promise.race([all, limit]))) return false;
      }
      return true;
    } finally {
      clearTimeout(timer);
    }
  }

  capture(): NetState {
    const sockets: SocketState[] = [];
    const servers: ServerState[] = [];
    for (const e of this.entries.values()) {
      if (e.kind === 'socket') {
        const link = e.conn ? this.network.captureConnection?.(e.conn) : undefined;
        sockets.push({
          id: e.id,
          endpoints: e.endpoints ?? null,
          bytesIn: e.bytesIn,
          bytesOut: e.bytesOut,
          ref: e.ref,
          paused: e.paused,
          ended: e.ended,
          ...(link ? { link } : {}),
        });
      } else {
        servers.push({ id: e.id, request: e.request, address: e.address ?? null, ref: e.ref });
      }
    }
    return { nextId: this.ids.next, sockets, servers };
  }

  /**
   * Brings back what the image recorded. Servers listen again on the port they had. Connections
   * that the network cannot carry across a restore end with an error the guest can see.
   */
  restore(state: NetState): void {
    this.ids.next = state.nextId;
    for (const s of state.servers) {
      const request = s.address ? { port: s.address.port, host: s.request.host } : s.request;
      this.entries.set(s.id, {
        kind: 'server',
        id: s.id,
        request,
        listener: undefined,
        address: undefined,
        ref: s.ref,
      });
      this.startListening(s.id, request, s.address !== null);
    }
    for (const s of state.sockets) {
      if (s.link && s.endpoints && this.network.carriesConnectionsAcrossRestore && this.network.restoreConnection) {
        const conn = this.network.restoreConnection(s.link, s.endpoints);
        this.track(s.id, conn, {
          kind: 'socket',
          id: s.id,
          conn,
          endpoints: s.endpoints,
          bytesIn: s.bytesIn,
          bytesOut: s.bytesOut,
          ref: s.ref,
          error: undefined,
          paused: s.paused === true,
          ended: s.ended === true,
        });
        continue;
      }
      const info: NetworkErrorInfo = this.network.carriesConnectionsAcrossRestore
        ? {
            code: 'ECONNRESET',
            message: 'connection lost: it was still being set up when the guest was checkpointed',
          }
        : {
            code: 'ECONNRESET',
            message: `connection lost: ${this.network.whyConnectionsEnd ?? 'the guest was restored from a checkpoint, and its network cannot carry connections across a restart'}`,
          };
      this.pendingOps++;
      queueMicrotask(() => {
        this.pendingOps--;
        this.deliver('net.close', s.id, JSON.stringify(info));
      });
    }
  }

  close(): void {
    for (const e of this.entries.values()) {
      if (e.kind === 'socket') e.conn?.stream.destroy();
      else e.listener?.close();
    }
    this.entries.clear();
  }

  private socket(id: HostValue): SocketEntry | undefined {
    const e = this.entries.get(Number(id));
    return e?.kind === 'socket' ? e : undefined;
  }

  private listen(id: number, request: ServerEntry['request']): void {
    this.entries.set(id, { kind: 'server', id, request, listener: undefined, address: undefined, ref: true });
    this.startListening(id, request, false);
  }

  private startListening(id: number, request: ServerEntry['request'], quiet: boolean): void {
    this.pendingOps++;
    this.network
      .listen(request, (conn) => this.accept(id, conn))
      .then(
        (listener) => {
          const entry = this.entries.get(id);
          if (entry?.kind !== 'server') {
            listener.close(); // closed by the guest while we were binding
            return;
          }
          entry.listener = listener;
          entry.address = listener.address;
          if (!quiet) this.deliver('net.listening', id, JSON.stringify(listener.address));
        },
        (err: unknown) => {
          this.entries.delete(id);
          this.deliver('net.error', id, JSON.stringify(networkErrorInfo(err, 'EADDRINUSE')));
        },
      )
      .finally(() => this.pendingOps--);
  }

  private unlisten(id: number): void {
    const e = this.entries.get(id);
    if (e?.kind !== 'server') return;
    this.entries.delete(id);
    e.listener?.close();
  }

  private accept(serverId: number, conn: VirtualConnection): void {
    const server = this.entries.get(serverId);
    if (server?.kind !== 'server') {
      conn.stream.destroy();
      return;
    }
    const id = this.ids.take();
    this.track(id, conn);
    this.deliver('net.connection', serverId, id, JSON.stringify(conn.endpoints));
  }

  private connect(id: number, request: { host: string; port: number }): void {
    const entry: SocketEntry = {
      kind: 'socket',
      id,
      conn: undefined,
      endpoints: undefined,
      bytesIn: 0,
      bytesOut: 0,
      ref: true,
      error: undefined,
      paused: false,
      ended: false,
    };
    this.entries.set(id, entry);
    this.pendingOps++;
    const opening = this.network
      .connect(request)
      .then(
        (conn) => {
          if (this.entries.get(id) !== entry) {
            conn.stream.destroy(); // destroyed by the guest while connecting
            return;
          }
          this.track(id, conn, entry);
          this.deliver('net.connect', id, JSON.stringify(conn.endpoints));
        },
        (err: unknown) => {
          if (this.entries.get(id) !== entry) return;
          this.entries.delete(id);
          this.deliver('net.error', id, JSON.stringify(networkErrorInfo(err, 'ECONNREFUSED')));
        },
      )
      .finally(() => {
        this.pendingOps--;
        this.connecting.delete(opening);
      });
    this.connecting.add(opening);
  }

  private track(id: number, conn: VirtualConnection, existing?: SocketEntry): void {
    const entry: SocketEntry = existing ?? {
      kind: 'socket',
      id,
      conn,
      endpoints: conn.endpoints,
      bytesIn: 0,
      bytesOut: 0,
      ref: true,
      error: undefined,
      paused: false,
      ended: false,
    };
    entry.conn = conn;
    entry.endpoints = conn.endpoints;
    this.entries.set(id, entry);
    const { stream } = conn;
    stream.on('data', (chunk: Buffer) => {
      entry.bytesIn += chunk.length;
      this.deliver('net.data', id, chunk);
    });
    // Opened while the guest is frozen (a move settling its connects): it reads nothing until thawed.
    if (this.frozen) stream.pause();
    stream.on('end', () => {
      if (entry.ended) return; // told before a move; the peer's end came again after it
      entry.ended = true;
      this.deliver('net.end', id);
    });
    stream.on('error', (err) => {
      entry.error = networkErrorInfo(err, 'ECONNRESET');
    });
    stream.on('close', () => {
      if (this.entries.get(id) !== entry) return; // the guest destroyed it first
      this.entries.delete(id);
      this.deliver('net.close', id, entry.error ? JSON.stringify(entry.error) : undefined);
    });
    if (!entry.paused) stream.resume();
  }

  private write(id: number, bytes: Uint8Array): boolean {
    const entry = this.socket(id);
    const stream = entry?.conn?.stream;
    if (!entry || !stream || stream.destroyed) return true;
    entry.bytesOut += bytes.length;
    const more = stream.write(bytes);
    if (!more) stream.once('drain', () => this.deliver('net.drain', id));
    return more;
  }

  private setPaused(id: number, paused: boolean): void {
    const entry = this.socket(id);
    if (!entry?.conn) return;
    entry.paused = paused;
    if (paused) entry.conn.stream.pause();
    else entry.conn.stream.resume();
  }

  private destroy(id: number): void {
    const entry = this.entries.get(id);
    if (!entry) return;
    this.entries.delete(id);
    if (entry.kind === 'socket') entry.conn?.stream.destroy();
    else entry.listener?.close();
  }
}
