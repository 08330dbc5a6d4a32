/**
 * UDP through the Proxy. The datagrams of each remote address and port form a flow (an id on the
 * host's link, like a stream's but without offsets: UDP may lose datagrams, so nothing is kept).
 * Inbound: a published UDP port; the guest's replies go back from that port to the flow's remote.
 * Outbound: a guest sends to an outside address; the proxy sends from a socket of its own (the
 * paper's NAT) and carries the replies back on the flow. That socket outlives the flow while the
 * guest moves (or its host's link is down): the guest's next datagrams from the same port to the
 * same remote leave from the same public port, so the remote never sees the guest change address.
 */
import dgram from 'node:dgram';
import type { LinkSession } from '../link/session.js';
import type { OpenFrame } from '../wire/index.js';

/** Datagrams held for a flow while its host accepts it; beyond this they are dropped, as UDP may. */
const OPENING_QUEUE = 64;
/** A flow with no datagram either way for this long is forgotten. */
const FLOW_IDLE_MS = 60_000;

/**
 * The proxy's own socket for a guest's outbound datagrams from one guest port to one remote. `flow`
 * is the flow that uses it now; between flows (the guest moving), replies wait in `queue`.
 */
interface NatSocket {
  key: string;
  guestId: string;
  socket: dgram.Socket;
  flow: Flow | undefined;
  queue: Buffer[];
  timer: NodeJS.Timeout | undefined;
  closed: boolean;
}

interface Flow {
  id: number;
  guestId: string;
  remote: { address: string; port: number; family: 'IPv4' | 'IPv6' };
  session: LinkSession | undefined;
  queue: Buffer[] | undefined;
  lastActive: number;
  /** Where the guest's datagrams go out (inbound: the published socket; outbound: its NAT socket's). */
  socket: dgram.Socket;
  nat: NatSocket | undefined;
}

export interface UdpRouting {
  /** The link of the host that runs `guestId` now, if it is connected. */
  sessionFor(guestId: string): LinkSession | undefined;
  allocateId(): number;
}

export class UdpFlows {
  private readonly byId = new Map<number, Flow>();
  private readonly published = new Map<string, { socket: dgram.Socket; byRemote: Map<string, Flow> }>();
  /** Outbound NAT sockets no flow uses now, by guest, guest port and remote: kept for the next flow. */
  private readonly parked = new Map<string, NatSocket>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly routing: UdpRouting) {
    this.sweeper = setInterval(() => this.sweep(), FLOW_IDLE_MS / 4).unref();
  }

  /** Publishes a guest's UDP port on the proxy. */
  publish(guestId: string, bind: string, publicPort: number, guestPort: number): Promise<void> {
    const socket = dgram.createSocket(bind.includes(':') ? 'udp6' : 'udp4');
    const byRemote = new Map<string, Flow>();
    socket.on('message', (msg, rinfo) => this.inbound(guestId, guestPort, socket, byRemote, msg, rinfo));
    return new Promise((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(publicPort, bind, () => {
        socket.off('error', reject);
        socket.on('error', () => {}); // ICMP errors from remotes that went away: nothing to do
        this.published.set(`${guestId}:${publicPort}`, { socket, byRemote });
        resolve();
      });
    });
  }

  unpublish(guestId: string): void {
    for (const [key, entry] of this.published) {
      if (!key.startsWith(`${guestId}:`)) continue;
      entry.socket.close();
      for (const flow of entry.byRemote.values()) this.byId.delete(flow.id);
      this.published.delete(key);
    }
    // The guest is gone: nothing will send from its NAT sockets again.
    for (const flow of [...this.byId.values()]) if (flow.guestId === guestId) this.forget(flow, false);
    for (const nat of [...this.parked.values()]) if (nat.guestId === guestId) this.closeNat(nat);
  }

  /**
   * A guest opens an outbound flow: the proxy sends from a socket of its own and carries replies
   * back; the socket this guest port used for this remote before (it moved) if there is one.
   */
  openOutbound(session: LinkSession, frame: OpenFrame, bind: string): void {
    const family = frame.remote.family;
    const key = `${frame.guest}|${frame.port}|${frame.remote.address}|${frame.remote.port}`;
    const use = (nat: NatSocket): void => {
      if (nat.closed) return;
      const flow: Flow = {
        id: frame.streamId,
        guestId: frame.guest,
        remote: frame.remote,
        session,
        queue: undefined,
        lastActive: Date.now(),
        socket: nat.socket,
        nat,
      };
      nat.flow = flow;
      this.byId.set(flow.id, flow);
      session.acceptFlow(frame);
      const waiting = nat.queue;
      nat.queue = [];
      for (const msg of waiting) session.sendDatagram(flow.id, msg);
    };
    const parked = this.parked.get(key);
    if (parked) {
      this.parked.delete(key);
      clearTimeout(parked.timer);
      parked.timer = undefined;
      use(parked);
      return;
    }
    const nat: NatSocket = {
      key,
      guestId: frame.guest,
      socket: dgram.createSocket(family === 'IPv6' ? 'udp6' : 'udp4'),
      flow: undefined,
      queue: [],
      timer: undefined,
      closed: false,
    };
    nat.socket.on('message', (msg, rinfo) => {
      // Only the flow's own remote answers on it (a NAT does the same).
      if (rinfo.address !== frame.remote.address || rinfo.port !== frame.remote.port) return;
      const current = nat.flow;
      if (!current) {
        if (nat.queue.length < OPENING_QUEUE) nat.queue.push(msg);
        return;
      }
      current.lastActive = Date.now();
      current.session?.sendDatagram(current.id, msg);
    });
    nat.socket.on('error', () => {});
    nat.socket.bind(0, family === 'IPv6' ? '::' : bind.includes(':') ? '0.0.0.0' : bind, () => use(nat));
  }

  /** A datagram from a host on flow `id`: send it to the flow's remote. */
  fromHost(id: number, payload: Uint8Array): void {
    const flow = this.byId.get(id);
    if (!flow) return;
    flow.lastActive = Date.now();
    flow.socket.send(payload, flow.remote.port, flow.remote.address);
  }

  /** The guest closed its socket (the host reset the flow): its NAT socket goes too. */
  reset(id: number): void {
    const flow = this.byId.get(id);
    if (!flow) return;
    this.forget(flow, false);
  }

  /**
   * A guest moved: its flows end here, and its next datagrams open flows to the new host (outbound
   * ones through the same NAT sockets).
   */
  resetGuest(guestId: string): void {
    for (const flow of [...this.byId.values()]) if (flow.guestId === guestId) this.forget(flow, true);
  }

  /** The host's link went away: its flows end (UDP keeps nothing; new datagrams make new flows). */
  sessionClosed(session: LinkSession): void {
    for (const flow of [...this.byId.values()]) if (flow.session === session) this.forget(flow, true);
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const entry of this.published.values()) entry.socket.close();
    for (const flow of this.byId.values()) if (flow.nat) this.closeNat(flow.nat);
    for (const nat of this.parked.values()) this.closeNat(nat);
    this.published.clear();
    this.byId.clear();
    this.parked.clear();
  }

  private inbound(
    guestId: string,
    guestPort: number,
    socket: dgram.Socket,
    byRemote: Map<string, Flow>,
    msg: Buffer,
    rinfo: dgram.RemoteInfo,
  ): void {
    const key = `${rinfo.address}:${rinfo.port}`;
    let flow = byRemote.get(key);
    if (!flow) {
      const session = this.routing.sessionFor(guestId);
      if (!session) return; // the guest's host is away: the datagram is lost, as UDP allows
      const created: Flow = {
        id: this.routing.allocateId(),
        guestId,
        remote: { address: rinfo.address, port: rinfo.port, family: rinfo.family === 'IPv6' ? 'IPv6' : 'IPv4' },
        session,
        queue: [],
        lastActive: Date.now(),
        socket,
        nat: undefined,
      };
      flow = created;
      byRemote.set(key, created);
      this.byId.set(created.id, created);
      session
        .openFlow(created.id, {
          guest: guestId,
          protocol: 'udp',
          direction: 'inbound',
          port: guestPort,
          remote: created.remote,
        })
        .then(
          () => {
            const queued = created.queue ?? [];
            created.queue = undefined;
            for (const m of queued) session.sendDatagram(created.id, m);
          },
          () => {
            byRemote.delete(key);
            this.byId.delete(created.id);
          },
        );
    }
    flow.lastActive = Date.now();
    if (flow.queue) {
      if (flow.queue.length < OPENING_QUEUE) flow.queue.push(msg);
      return;
    }
    flow.session?.sendDatagram(flow.id, msg);
  }

  /** Ends a flow; its NAT socket is kept for the guest's next flow (`park`) or closed. */
  private forget(flow: Flow, park: boolean): void {
    this.byId.delete(flow.id);
    const nat = flow.nat;
    if (nat && nat.flow === flow) {
      nat.flow = undefined;
      if (!park) this.closeNat(nat);
      else {
        // Kept as long as an idle flow would be: long enough for any move, bounded all the same.
        nat.timer = setTimeout(() => this.closeNat(nat), FLOW_IDLE_MS).unref();
        const older = this.parked.get(nat.key);
        if (older) this.closeNat(older);
        this.parked.set(nat.key, nat);
      }
    }
    for (const entry of this.published.values()) {
      const key = `${flow.remote.address}:${flow.remote.port}`;
      if (entry.byRemote.get(key) === flow) entry.byRemote.delete(key);
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const flow of [...this.byId.values()]) {
      if (now - flow.lastActive > FLOW_IDLE_MS) {
        flow.session?.sendRst(flow.id, 'ROAM_FLOW_IDLE', 'the flow was idle');
        this.forget(flow, false);
      }
    }
  }

  private closeNat(nat: NatSocket): void {
    if (nat.closed) return;
    nat.closed = true;
    clearTimeout(nat.timer);
    if (this.parked.get(nat.key) === nat) this.parked.delete(nat.key);
    if (nat.flow) this.byId.delete(nat.flow.id);
    nat.flow = undefined;
    nat.socket.close();
  }
}
