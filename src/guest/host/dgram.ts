/**
 * The host half of the guest's `node:dgram`: UDP sockets of the guest's VirtualNetwork. Datagrams
 * that arrive while the guest is frozen are held (bounded, like a socket's receive buffer: the
 * excess is dropped, as UDP may) and delivered when it runs again.
 */
import type { HostValue } from '../sandbox/sandbox.js';
import {
  networkErrorInfo,
  type AddressInfo,
  type VirtualDatagramSocket,
  type VirtualNetwork,
} from '../network/types.js';
import type { HostBinding, HostOp } from './binding.js';
import type { Deliver, IdAllocator } from './net.js';

interface Request {
  type: 'udp4' | 'udp6';
  port: number;
  host: string | null;
}

interface Entry {
  id: number;
  request: Request;
  socket: VirtualDatagramSocket | undefined;
  address: AddressInfo | undefined;
  ref: boolean;
  pendingSends: number;
}

export interface DgramState {
  sockets: Array<{ id: number; request: Request; address: AddressInfo | null; ref: boolean }>;
}

export class DgramHost implements HostBinding {
  private readonly entries = new Map<number, Entry>();
  private pendingOps = 0;

  constructor(
    private readonly network: VirtualNetwork,
    private readonly ids: IdAllocator,
    private readonly deliver: Deliver,
  ) {}

  get refCount(): number {
    let n = this.pendingOps;
    for (const e of this.entries.values()) if (e.ref) n++;
    return n;
  }

  ops(): Record<string, HostOp> {
    return {
      'udp.bind': ([id, json]) => this.bind(Number(id), JSON.parse(String(json)) as Request, false),
      'udp.send': ([id, seq, bytes, port, address]) =>
        this.send(Number(id), Number(seq), bytes as Uint8Array, Number(port), String(address)),
      'udp.close': ([id]) => {
        const e = this.entries.get(Number(id));
        this.entries.delete(Number(id));
        e?.socket?.close();
      },
      'udp.ref': ([id, on]) => {
        const e = this.entries.get(Number(id));
        if (e) e.ref = on === true;
      },
    };
  }

  capture(): DgramState {
    return {
      sockets: [...this.entries.values()].map((e) => ({
        id: e.id,
        request: e.request,
        address: e.address ?? null,
        ref: e.ref,
      })),
    };
  }

  restore(state: DgramState): void {
    for (const s of state.sockets) {
      const request = s.address ? { ...s.request, port: s.address.port } : s.request;
      this.bind(s.id, request, s.address !== null);
      const e = this.entries.get(s.id);
      if (e) e.ref = s.ref;
    }
  }

  close(): void {
    for (const e of this.entries.values()) e.socket?.close();
    this.entries.clear();
  }

  private bind(id: number, request: Request, quiet: boolean): void {
    const entry: Entry = { id, request, socket: undefined, address: undefined, ref: true, pendingSends: 0 };
    this.entries.set(id, entry);
    this.pendingOps++;
    this.network
      .bindDatagram(
        request,
        (bytes, remote) => {
          if (this.entries.get(id) === entry) this.deliver('udp.message', id, bytes, JSON.stringify(remote));
        },
        (err) => {
          if (this.entries.get(id) === entry) this.deliver('udp.error', id, JSON.stringify(err));
        },
      )
      .then(
        (socket) => {
          if (this.entries.get(id) !== entry) {
            socket.close();
            return;
          }
          entry.socket = socket;
          entry.address = socket.address;
          if (!quiet) this.deliver('udp.listening', id, JSON.stringify(socket.address));
        },
        (err: unknown) => {
          if (this.entries.get(id) !== entry) return;
          this.entries.delete(id);
          this.deliver('udp.error', id, JSON.stringify(networkErrorInfo(err, 'EADDRINUSE')));
        },
      )
      .finally(() => this.pendingOps--);
  }

  private send(id: number, seq: number, bytes: Uint8Array, port: number, address: string): HostValue {
    const entry = this.entries.get(id);
    if (!entry?.socket) {
      queueMicrotask(() =>
        this.deliver(
          'udp.sent',
          id,
          seq,
          JSON.stringify({ code: 'ERR_SOCKET_DGRAM_NOT_RUNNING', message: 'Not running' }),
        ),
      );
      return undefined;
    }
    this.pendingOps++;
    entry.socket
      .send(bytes, port, address)
      .then(
        () => this.deliver('udp.sent', id, seq, undefined),
        (err: unknown) => this.deliver('udp.sent', id, seq, JSON.stringify(networkErrorInfo(err))),
      )
      .finally(() => this.pendingOps--);
    return undefined;
  }
}
