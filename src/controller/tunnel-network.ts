/**
 * The VirtualNetwork of a guest placed by the Proxy: its servers are reached through the proxy's
 * published ports (each remote connection arrives as a link stream), and its outgoing connections
 * are made by the proxy from the proxy's address. Streams survive the controller's reconnects
 * (they re-attach from their offsets), so connections can be carried across a restore too.
 */
import { isIP } from 'node:net';
import type {
  AddressInfo,
  CarriedConnection,
  Endpoints,
  RemoteInfo,
  VirtualConnection,
  VirtualDatagramSocket,
  VirtualListener,
  VirtualNetwork,
} from '../guest/network/types.js';
import { reach } from '../common/failpoints.js';
import { LinkStream } from '../link/stream.js';
import type { OpenFrame } from '../wire/index.js';

export interface TunnelLink {
  /** Opens an outbound stream through the proxy (rejects with the proxy's error code). */
  openOutbound(guestId: string, remote: { address: string; port: number }): Promise<LinkStream>;
  /** Opens an outbound UDP flow through the proxy; resolves with its id. */
  openFlow(
    guestId: string,
    remote: { address: string; port: number },
    localPort: number,
    network: TunnelNetwork,
  ): Promise<number>;
  /** Sends one datagram on a flow (false: dropped, the link is backed up or down). */
  sendDatagram(flowId: number, payload: Uint8Array): boolean;
}

interface UdpBinding {
  onMessage: (bytes: Uint8Array, remote: RemoteInfo) => void;
  /** Flow ids by remote "address:port". */
  flows: Map<string, number>;
  /** Flows being opened, by remote "address:port". */
  opening: Map<string, Promise<number>>;
}

interface FlowInfo {
  port: number;
  remote: { address: string; port: number; family: 'IPv4' | 'IPv6' };
}

/** Ports a guest gets when it binds UDP port 0. */
const EPHEMERAL_FIRST = 49152;

export class TunnelNetwork implements VirtualNetwork {
  /** False for a guest resumed from a backup image: its connections ended with its lost host. */
  readonly carriesConnectionsAcrossRestore: boolean;
  readonly whyConnectionsEnd: string | undefined;
  private readonly listeners = new Map<number, (connection: VirtualConnection) => void>();
  private readonly udp = new Map<number, UdpBinding>();
  private readonly flows = new Map<number, FlowInfo>();
  private nextEphemeral = EPHEMERAL_FIRST;
  /** The guest's live streams (a move lets go of them without a reset). */
  private readonly streams = new Set<LinkStream>();
  /** Streams brought back from a move, waiting to be attached once the proxy commits it. */
  private restored: LinkStream[] = [];

  constructor(
    private readonly guestId: string,
    private readonly link: TunnelLink,
    options: { fromBackup?: boolean } = {},
  ) {
    this.carriesConnectionsAcrossRestore = options.fromBackup !== true;
    this.whyConnectionsEnd = options.fromBackup
      ? 'the guest resumed from its backup image on another host: its host was lost, and the connection with it'
      : undefined;
  }

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
    this.own(stream);
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
    await reach('tunnel.connect.beforeOpen');
    const stream = await this.link.openOutbound(this.guestId, { address: request.host, port: request.port });
    this.own(stream);
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

  captureConnection(connection: VirtualConnection): CarriedConnection | undefined {
    if (!(connection.stream instanceof LinkStream)) return undefined;
    const s = connection.stream.snapshot();
    return {
      streamId: s.id,
      received: s.received,
      sent: s.sent,
      acked: s.acked,
      unacked: Buffer.from(s.unacked).toString('base64'),
      ended: s.ended,
    };
  }

  restoreConnection(carried: CarriedConnection, endpoints: Endpoints): VirtualConnection {
    const stream = LinkStream.restore({
      id: carried.streamId,
      received: carried.received,
      sent: carried.sent,
      acked: carried.acked,
      unacked: Buffer.from(carried.unacked, 'base64'),
      ended: carried.ended,
    });
    this.own(stream);
    this.restored.push(stream);
    return { endpoints, stream };
  }

  /** Ids of the streams a move brought here (what the target tells the proxy it carries on). */
  restoredStreamIds(): number[] {
    return this.restored.map((s) => s.id);
  }

  /** The streams a move brought here, for the controller to attach (once). */
  takeRestored(): LinkStream[] {
    const taken = this.restored.filter((s) => !s.destroyed);
    this.restored = [];
    return taken;
  }

  /** The guest moved away: its streams stop here without a reset (they carry on at the target). */
  release(): number[] {
    for (const stream of this.streams) stream.detach();
    return [...this.streams].map((s) => s.id);
  }

  /** Whether this guest has a stream with this id (a moved-in stream keeps the id it had). */
  hasStream(id: number): boolean {
    for (const s of this.streams) if (s.id === id) return true;
    return false;
  }

  private own(stream: LinkStream): void {
    this.streams.add(stream);
    stream.once('close', () => this.streams.delete(stream));
  }

  bindDatagram(
    request: { type: 'udp4' | 'udp6'; port: number; host: string | null },
    onMessage: (bytes: Uint8Array, remote: RemoteInfo) => void,
  ): Promise<VirtualDatagramSocket> {
    let port = request.port;
    if (port === 0) {
      while (this.udp.has(this.nextEphemeral)) this.nextEphemeral++;
      port = this.nextEphemeral++;
    } else if (this.udp.has(port)) {
      return Promise.reject(
        Object.assign(new Error(`bind EADDRINUSE 0.0.0.0:${port}`), { code: 'EADDRINUSE', syscall: 'bind', port }),
      );
    }
    const binding: UdpBinding = { onMessage, flows: new Map(), opening: new Map() };
    this.udp.set(port, binding);
    const localPort = port;
    return Promise.resolve({
      address: { address: '0.0.0.0', family: request.type === 'udp6' ? 'IPv6' : 'IPv4', port },
      send: async (bytes: Uint8Array, toPort: number, toAddress: string) => {
        const key = `${toAddress}:${toPort}`;
        let flow = binding.flows.get(key);
        if (flow === undefined) {
          // Datagrams sent while the flow opens wait for that one open: each opening its own would
          // make the remote see the guest's port behind several of the proxy's.
          let opening = binding.opening.get(key);
          if (!opening) {
            opening = this.link
              .openFlow(this.guestId, { address: toAddress, port: toPort }, localPort, this)
              .then((id) => {
                binding.flows.set(key, id);
                this.flows.set(id, {
                  port: localPort,
                  remote: { address: toAddress, port: toPort, family: isIP(toAddress) === 6 ? 'IPv6' : 'IPv4' },
                });
                return id;
              })
              .finally(() => binding.opening.delete(key));
            binding.opening.set(key, opening);
          }
          flow = await opening;
        }
        this.link.sendDatagram(flow, bytes);
      },
      close: () => {
        for (const id of binding.flows.values()) this.flows.delete(id);
        this.udp.delete(localPort);
      },
    });
  }

  /** A remote's first datagram to one of this guest's UDP ports: a new inbound flow. */
  acceptsFlow(frame: OpenFrame): boolean {
    const binding = this.udp.get(frame.port);
    if (!binding) return false;
    binding.flows.set(`${frame.remote.address}:${frame.remote.port}`, frame.streamId);
    this.flows.set(frame.streamId, { port: frame.port, remote: frame.remote });
    return true;
  }

  deliverDatagram(flowId: number, payload: Uint8Array): void {
    const flow = this.flows.get(flowId);
    const binding = flow ? this.udp.get(flow.port) : undefined;
    if (!flow || !binding) return;
    binding.onMessage(payload, { ...flow.remote, size: payload.length });
  }

  /** A flow ended (idle, or its link went away): the next datagram makes a new one. */
  forgetFlow(flowId: number): void {
    const flow = this.flows.get(flowId);
    if (!flow) return;
    this.flows.delete(flowId);
    const binding = this.udp.get(flow.port);
    binding?.flows.delete(`${flow.remote.address}:${flow.remote.port}`);
  }

  forgetAllFlows(): void {
    for (const id of [...this.flows.keys()]) this.forgetFlow(id);
  }
}
