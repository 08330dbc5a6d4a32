/**
 * The network a guest is handed. The sandbox never opens a host socket itself: every listen,
 * connect and datagram goes through a VirtualNetwork. The loopback implementation maps guests onto
 * real local sockets; the proxy tunnel (the data path) carries the same calls to the Proxy.
 */
import type { Duplex } from 'node:stream';

export interface AddressInfo {
  address: string;
  family: 'IPv4' | 'IPv6';
  port: number;
}

export interface Endpoints {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  remoteFamily: string;
}

/** A byte stream between the guest and one remote peer. */
export interface VirtualConnection {
  readonly endpoints: Endpoints;
  /** Bytes from the peer are read from it, bytes to the peer written to it; it obeys backpressure. */
  readonly stream: Duplex;
}

export interface VirtualListener {
  readonly address: AddressInfo;
  close(): void;
}

export interface RemoteInfo {
  address: string;
  family: 'IPv4' | 'IPv6';
  port: number;
  size: number;
}

export interface VirtualDatagramSocket {
  readonly address: AddressInfo;
  send(bytes: Uint8Array, port: number, address: string): Promise<void>;
  close(): void;
}

/** An error from the network, with the code Node would give (EADDRINUSE, ECONNREFUSED, ...). */
export interface NetworkErrorInfo {
  code: string;
  message: string;
  syscall?: string;
  address?: string;
  port?: number;
}

export interface VirtualNetwork {
  listen(
    request: { port: number; host: string | null },
    onConnection: (connection: VirtualConnection) => void,
  ): Promise<VirtualListener>;
  connect(request: { host: string; port: number }): Promise<VirtualConnection>;
  bindDatagram(
    request: { type: 'udp4' | 'udp6'; port: number; host: string | null },
    onMessage: (bytes: Uint8Array, remote: RemoteInfo) => void,
    onError: (err: NetworkErrorInfo) => void,
  ): Promise<VirtualDatagramSocket>;
  /** Can connections survive a restore of the guest in another process? (Loopback: no.) */
  readonly carriesConnectionsAcrossRestore: boolean;
  /** When it does not: why the guest's connections ended at its restore (the guest sees it). */
  readonly whyConnectionsEnd?: string;
  /** What a checkpoint keeps of a connection, for networks that carry connections across a restore. */
  captureConnection?(connection: VirtualConnection): CarriedConnection | undefined;
  /** The connection again, from what `captureConnection` kept (on another host, maybe). */
  restoreConnection?(carried: CarriedConnection, endpoints: Endpoints): VirtualConnection;
}

/** A connection as an image carries it: its stream id, offsets and unacknowledged output. */
export interface CarriedConnection {
  streamId: number;
  received: number;
  sent: number;
  acked: number;
  /** Base64 of the bytes in [acked, sent). */
  unacked: string;
  ended: boolean;
}

export function networkErrorInfo(err: unknown, fallbackCode = 'EIO'): NetworkErrorInfo {
  const e = err as { code?: unknown; message?: unknown; syscall?: unknown; address?: unknown; port?: unknown };
  const info: NetworkErrorInfo = {
    code: typeof e?.code === 'string' ? e.code : fallbackCode,
    message: typeof e?.message === 'string' ? e.message : String(err),
  };
  if (typeof e?.syscall === 'string') info.syscall = e.syscall;
  if (typeof e?.address === 'string') info.address = e.address;
  if (typeof e?.port === 'number') info.port = e.port;
  return info;
}
