/**
 * The network half of a WebAssembly guest's WASI sockets: pre-opened listeners and the streams
 * they accept, over the guest's VirtualNetwork (real loopback sockets for `roam guest run`, the
 * proxy tunnel when the data path lands). The guest pulls bytes only when it calls sock_recv or
 * fd_read, so a guest that reads slowly leaves them in the kernel and its peer feels the
 * backpressure; a send that the stream refuses to buffer makes the next send wait for 'drain'.
 *
 * Every change of readiness (a connection arrives, bytes or an end or an error arrive, a stream
 * drains) calls `onChange`, so a guest waiting in sock_accept, sock_recv or poll_oneoff re-checks.
 */
import type { Duplex } from 'node:stream';
import type {
  AddressInfo,
  CarriedConnection,
  Endpoints,
  VirtualConnection,
  VirtualListener,
  VirtualNetwork,
} from '../../guest/network/types.js';
import { ERRNO, WasiError } from './errno.js';

export interface ListenerState {
  id: number;
  request: { port: number; host: string | null };
  address: AddressInfo | null;
}

export interface StreamState {
  id: number;
  endpoints: Endpoints | null;
  bytesIn: number;
  bytesOut: number;
  /** The connection as the network carries it across a restore (the proxy tunnel does). */
  link?: CarriedConnection;
  /**
   * Bytes already taken from the connection that the guest has not read (base64): the stream
   * counts them as consumed, so they travel here, not in the replay.
   */
  pending?: string;
  ended?: boolean;
  writeShut?: boolean;
}

export interface NetState {
  nextId: number;
  listeners: ListenerState[];
  streams: StreamState[];
}

interface Listener {
  state: ListenerState;
  listener: VirtualListener | undefined;
  backlog: VirtualConnection[];
}

interface Stream {
  state: StreamState;
  stream: Duplex | undefined;
  pending: Buffer | undefined;
  ended: boolean;
  /** Set when the connection is gone: reset by the peer, or lost in a restore. */
  reset: boolean;
  needDrain: boolean;
  writeShut: boolean;
}

/** Endpoints for a connection recorded without them (captureConnection reads only the stream). */
function emptyEndpoints(e: Endpoints | null): Endpoints {
  return e ?? { localAddress: '', localPort: 0, remoteAddress: '', remotePort: 0, remoteFamily: 'IPv4' };
}

/** Connections accepted but not yet taken by the guest, per listener: beyond it, new ones are refused. */
const MAX_BACKLOG = 128;

export class NetTable {
  private readonly listeners = new Map<number, Listener>();
  private readonly streams = new Map<number, Stream>();
  private nextId = 1;
  private closed = false;

  constructor(
    private readonly network: VirtualNetwork,
    private readonly onChange: () => void,
  ) {}

  /** Opens a listener (before the guest starts: WASI preview1 guests cannot listen themselves). */
  async listen(request: { port: number; host: string | null }, id = this.nextId++): Promise<number> {
    const entry: Listener = { state: { id, request, address: null }, listener: undefined, backlog: [] };
    this.listeners.set(id, entry);
    entry.listener = await this.network.listen(request, (conn) => {
      if (this.closed || entry.backlog.length >= MAX_BACKLOG) {
        conn.stream.destroy();
        return;
      }
      entry.backlog.push(conn);
      this.onChange();
    });
    entry.state.address = entry.listener.address;
    return id;
  }

  address(id: number): AddressInfo | null {
    return this.listeners.get(id)?.state.address ?? null;
  }

  isListener(id: number): boolean {
    return this.listeners.has(id);
  }

  acceptable(id: number): boolean {
    return (this.listeners.get(id)?.backlog.length ?? 0) > 0;
  }

  /** Takes the next connection, or undefined when none is waiting. */
  accept(id: number): number | undefined {
    const entry = this.listeners.get(id);
    if (!entry) throw new WasiError(ERRNO.NOTSOCK);
    const conn = entry.backlog.shift();
    if (!conn) return undefined;
    const sid = this.nextId++;
    this.adopt({
      state: { id: sid, endpoints: conn.endpoints, bytesIn: 0, bytesOut: 0 },
      stream: conn.stream,
      pending: undefined,
      ended: false,
      reset: false,
      needDrain: false,
      writeShut: false,
    });
    return sid;
  }

  /** Tracks a stream's connection: every change of its readiness wakes the guest. */
  private adopt(s: Stream): void {
    this.streams.set(s.state.id, s);
    const conn = s.stream;
    if (!conn) return;
    conn.on('readable', this.onChange);
    conn.on('end', () => {
      s.ended = true;
      this.onChange();
    });
    conn.on('error', () => {
      s.reset = true;
      this.onChange();
    });
    conn.on('close', this.onChange);
    conn.on('drain', () => {
      s.needDrain = false;
      this.onChange();
    });
  }

  private stream(id: number): Stream {
    const s = this.streams.get(id);
    if (!s) throw new WasiError(this.listeners.has(id) ? ERRNO.NOTCONN : ERRNO.NOTSOCK);
    return s;
  }

  readable(id: number): boolean {
    const s = this.streams.get(id);
    if (!s) return this.acceptable(id);
    if (s.pending === undefined && !s.ended && s.stream && !s.stream.destroyed) {
      // Take what is there: at the end of the stream, only a read() makes it emit 'end' (which
      // sets `ended` and wakes the guest); 'readable' alone says nothing we could check.
      const chunk = s.stream.read() as Buffer | string | null;
      if (chunk !== null) s.pending = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    }
    return s.reset || s.ended || s.pending !== undefined || (s.stream?.readableLength ?? 0) > 0;
  }

  writable(id: number): boolean {
    const s = this.streams.get(id);
    return s === undefined || !s.needDrain;
  }

  /**
   * Up to `max` bytes from the stream: an empty array at the end of the stream, undefined when the
   * guest would have to wait. Throws ECONNRESET when the connection is gone.
   */
  recv(id: number, max: number): Uint8Array | undefined {
    const s = this.stream(id);
    if (s.pending === undefined && s.stream) {
      const chunk = s.stream.read() as Buffer | string | null;
      if (chunk !== null) s.pending = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    }
    const pending = s.pending;
    if (pending !== undefined) {
      const out = pending.subarray(0, max);
      s.pending = out.length < pending.length ? pending.subarray(out.length) : undefined;
      s.state.bytesIn += out.length;
      return out;
    }
    if (s.reset) throw new WasiError(ERRNO.CONNRESET);
    if (s.ended || !s.stream) return new Uint8Array(0);
    return undefined;
  }

  /** Writes the bytes and returns their count, or undefined when the guest must wait for 'drain'. */
  send(id: number, bytes: Uint8Array): number | undefined {
    const s = this.stream(id);
    if (s.reset || !s.stream || s.stream.destroyed) throw new WasiError(ERRNO.PIPE);
    if (s.writeShut) throw new WasiError(ERRNO.PIPE);
    if (s.needDrain) return undefined;
    // The stream keeps the buffer until written: hand it a copy, not a view of guest memory.
    if (!s.stream.write(Buffer.from(bytes))) s.needDrain = true;
    s.state.bytesOut += bytes.length;
    return bytes.length;
  }

  /** how: bit 0 read, bit 1 write (WASI sdflags). */
  shutdown(id: number, how: number): void {
    const s = this.stream(id);
    if (how & 2 && !s.writeShut) {
      s.writeShut = true;
      s.stream?.end();
    }
    if (how & 1) {
      s.ended = true;
      s.pending = undefined;
    }
  }

  close(id: number): void {
    const l = this.listeners.get(id);
    if (l) {
      this.listeners.delete(id);
      l.listener?.close();
      for (const conn of l.backlog) conn.stream.destroy();
      return;
    }
    const s = this.streams.get(id);
    if (s) {
      this.streams.delete(id);
      // A graceful end: what the guest wrote is still delivered.
      if (s.stream && !s.stream.destroyed) s.stream.end();
    }
  }

  /** The table's state; call it only while the guest is frozen (nothing reads or writes then). */
  capture(): NetState {
    return {
      nextId: this.nextId,
      listeners: [...this.listeners.values()].map((l) => ({ ...l.state })),
      streams: [...this.streams.values()].map((s) => {
        const link =
          s.stream && !s.reset && !s.stream.destroyed
            ? this.network.captureConnection?.({ endpoints: emptyEndpoints(s.state.endpoints), stream: s.stream })
            : undefined;
        return {
          ...s.state,
          ...(link ? { link } : {}),
          ...(link && s.pending?.length ? { pending: s.pending.toString('base64') } : {}),
          ...(s.ended ? { ended: true } : {}),
          ...(s.writeShut ? { writeShut: true } : {}),
        };
      }),
    };
  }

  /**
   * Rebuilds the table from an image: listeners listen again on the port they had (so clients
   * find the guest where it was); connections the network carries across a restore (the proxy
   * tunnel) carry on from their offsets, the bytes the guest had not read yet first; the others
   * come back reset (the guest sees ECONNRESET, as after a peer's reset).
   */
  async restore(state: NetState): Promise<void> {
    this.nextId = state.nextId;
    for (const l of state.listeners) {
      const request = l.address ? { port: l.address.port, host: l.request.host } : l.request;
      await this.listen(request, l.id);
      const entry = this.listeners.get(l.id);
      if (entry) entry.state.request = l.request;
    }
    for (const st of state.streams) {
      const { link, pending, ended, writeShut, ...rest } = st;
      const carried =
        link && st.endpoints && this.network.carriesConnectionsAcrossRestore && this.network.restoreConnection
          ? this.network.restoreConnection(link, st.endpoints)
          : undefined;
      this.adopt({
        state: { ...rest },
        stream: carried?.stream,
        pending: carried && pending ? Buffer.from(pending, 'base64') : undefined,
        ended: ended === true,
        // A connection nobody carried is gone: the guest sees a reset.
        reset: !carried,
        needDrain: false,
        writeShut: writeShut === true,
      });
    }
  }

  /** Closes everything, now (the guest is gone). Idempotent. */
  destroy(): void {
    this.closed = true;
    for (const l of this.listeners.values()) {
      l.listener?.close();
      for (const conn of l.backlog) conn.stream.destroy();
    }
    for (const s of this.streams.values()) s.stream?.destroy();
    this.listeners.clear();
    this.streams.clear();
  }
}
