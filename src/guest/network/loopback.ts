/**
 * The loopback VirtualNetwork: guest servers listen on real ports of a local address, and guest
 * connections reach real servers on local addresses only. It is what `roam guest run` uses; a
 * guest placed on a host by the Proxy gets the proxy tunnel instead.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type {
  AddressInfo,
  Endpoints,
  RemoteInfo,
  VirtualConnection,
  VirtualDatagramSocket,
  VirtualListener,
  VirtualNetwork,
} from './types.js';

export interface LoopbackOptions {
  /** Where guest servers listen (default 127.0.0.1: a guest is not exposed beyond this machine). */
  bindAddress?: string;
  /** Maps a guest's requested port to the host port (default: the same number). */
  portMap?: (guestPort: number) => number;
}

function isLocal(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function endpointsOf(socket: net.Socket): Endpoints {
  return {
    localAddress: socket.localAddress ?? '127.0.0.1',
    localPort: socket.localPort ?? 0,
    remoteAddress: socket.remoteAddress ?? '127.0.0.1',
    remotePort: socket.remotePort ?? 0,
    remoteFamily: socket.remoteFamily ?? 'IPv4',
  };
}

function addressOf(a: net.AddressInfo | string | null): AddressInfo {
  if (a === null || typeof a === 'string') return { address: '127.0.0.1', family: 'IPv4', port: 0 };
  return { address: a.address, family: a.family === 'IPv6' ? 'IPv6' : 'IPv4', port: a.port };
}

export class LoopbackNetwork implements VirtualNetwork {
  readonly carriesConnectionsAcrossRestore = false;
  readonly whyConnectionsEnd =
    'the guest was restored from a checkpoint, and its network (loopback) cannot carry connections across a restart';
  private readonly bindAddress: string;
  private readonly portMap: (p: number) => number;

  constructor(options: LoopbackOptions = {}) {
    this.bindAddress = options.bindAddress ?? '127.0.0.1';
    this.portMap = options.portMap ?? ((p) => p);
  }

  listen(
    request: { port: number; host: string | null },
    onConnection: (connection: VirtualConnection) => void,
  ): Promise<VirtualListener> {
    return new Promise((resolve, reject) => {
      const server = net.createServer({ pauseOnConnect: true }, (socket) => {
        onConnection({ endpoints: endpointsOf(socket), stream: socket });
      });
      server.once('error', reject);
      const port = request.port === 0 ? 0 : this.portMap(request.port);
      server.listen({ port, host: this.bindAddress }, () => {
        server.off('error', reject);
        resolve({
          address: addressOf(server.address()),
          close: () => server.close(),
        });
      });
    });
  }

  connect(request: { host: string; port: number }): Promise<VirtualConnection> {
    return new Promise((resolve, reject) => {
      if (!isLocal(request.host)) {
        reject(
          Object.assign(
            new Error(
              `connect EACCES ${request.host}:${request.port}: this guest's network (loopback) reaches only local addresses`,
            ),
            { code: 'EACCES', syscall: 'connect', address: request.host, port: request.port },
          ),
        );
        return;
      }
      const socket = net.connect({ host: request.host, port: request.port });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        socket.pause();
        resolve({ endpoints: endpointsOf(socket), stream: socket });
      });
    });
  }

  bindDatagram(
    request: { type: 'udp4' | 'udp6'; port: number; host: string | null },
    onMessage: (bytes: Uint8Array, remote: RemoteInfo) => void,
    onError: (err: { code: string; message: string }) => void,
  ): Promise<VirtualDatagramSocket> {
    return new Promise((resolve, reject) => {
      const socket = dgram.createSocket(request.type);
      socket.once('error', reject);
      socket.bind(request.port === 0 ? 0 : this.portMap(request.port), this.bindAddress, () => {
        socket.off('error', reject);
        socket.on('error', (err: NodeJS.ErrnoException) => onError({ code: err.code ?? 'EIO', message: err.message }));
        socket.on('message', (msg, rinfo) =>
          onMessage(msg, {
            address: rinfo.address,
            family: rinfo.family === 'IPv6' ? 'IPv6' : 'IPv4',
            port: rinfo.port,
            size: rinfo.size,
          }),
        );
        resolve({
          address: addressOf(socket.address()),
          send: (bytes, port, address) =>
            new Promise<void>((done, fail) => {
              if (!isLocal(address)) {
                fail(Object.assign(new Error(`send EACCES ${address}:${port}`), { code: 'EACCES' }));
                return;
              }
              socket.send(bytes, port, address, (err) => (err ? fail(err) : done()));
            }),
          close: () => socket.close(),
        });
      });
    });
  }
}
