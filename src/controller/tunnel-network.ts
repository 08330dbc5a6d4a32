/**
 * The VirtualNetwork of a guest placed by the Proxy: its servers are reached through the proxy's
 * published ports (each remote connection arrives as a link stream), and its outgoing connections
 * are made by the proxy from the proxy's address. Streams survive the controller's reconnects
 * (they re-attach from their offsets), so connections can be carried across a restore too.
 */
import { isIP } from 'node:net';
import { RoamError } from '../errors.js';
import type {
  AddressInfo,
  VirtualConnection,
  VirtualDatagramSocket,
  VirtualListener,
  VirtualNetwork,
} from '../guest/network/types.js';
import type { LinkStream } from '../link/stream.js';
import type { OpenFrame } from '../wire/index.js';

export interface TunnelLink {
  /** Opens an outbound stream through the proxy (rejects with the proxy's error code). */
  openOutbound(guestId: string, remote: { address: string; port: number }): Promise<LinkStream>;
}

export class TunnelNetwork implements VirtualNetwork {
  readonly carriesConnectionsAcrossRestore = true;
  private readonly listeners = new Map<number, (connection: VirtualConnection) => void>();

  constructor(
    private readonly guestId: string,
    private readonly link: TunnelLink,
  ) {}

  listen(
    request: { port: number; host: string | null },
    onConnection: (connection: VirtualConnection) => void,
  ): Promise<VirtualListener> {
    if (this.listeners.has(request.port)) {
      return Promise.reject(
        Object.assign(new Error(`listen EADDRINUSE: address already in use :::${request.port}`), {
          code: 'EADDRINUSE',
          syscall: 'listen',
          port: request.port,
        }),
      );
    }
    this.listeners.set(request.port, onConnection);
    const address: AddressInfo = { address: '0.0.0.0', family: 'IPv4', port: request.port };
    return Promise.resolve({ address, close: () => this.listeners.delete(request.port) });
  }

  /** A remote client reached one of this guest's ports (through a published port of the proxy). */
  accepts(port: number): boolean {
    return this.listeners.has(port);
  }

  deliver(frame: OpenFrame, stream: LinkStream): void {
    const onConnection = this.listeners.get(frame.port);
    if (!onConnection) {
      stream.destroy();
      return;
    }
    onConnection({
      endpoints: {
        localAddress: '0.0.0.0',
        localPort: frame.port,
        remoteAddress: frame.remote.address,
        remotePort: frame.remote.port,
        remoteFamily: frame.remote.family,
      },
      stream,
    });
  }

  async connect(request: { host: string; port: number }): Promise<VirtualConnection> {
    const stream = await this.link.openOutbound(this.guestId, { address: request.host, port: request.port });
    return {
      endpoints: {
        localAddress: '0.0.0.0',
        localPort: 0,
        remoteAddress: request.host,
        remotePort: request.port,
        remoteFamily: isIP(request.host) === 6 ? 'IPv6' : 'IPv4',
      },
      stream,
    };
  }

  bindDatagram(): Promise<VirtualDatagramSocket> {
    return Promise.reject(
      new RoamError(
        'ROAM_ERR_USAGE',
        'UDP through the proxy is not carried yet: guests placed by the proxy cannot use dgram',
      ),
    );
  }
}
