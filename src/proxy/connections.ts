/**
 * The Proxy's connection manager (paper section III-B): remote connections to a guest's published
 * ports, and the guest's own outbound connections, carried as streams on the link of whichever
 * host runs the guest. A stream outlives its host's link and a move: it is detached (the remote
 * peer paused, its bytes kept) until the guest's host, old or new, attaches it again.
 *
 * While a guest is frozen for a move, new remote connections are held, in order, and opened once
 * the move is over, wherever the guest then runs.
 */
import net from 'node:net';
import type { LinkSession } from '../link/session.js';
import type { LinkStream } from '../link/stream.js';
import type { AttachFrame, OpenFrame } from '../wire/index.js';
import { adoptWithOwnReads } from '../common/own-reads.js';
import { relay } from './relay.js';
import { RemoteReads } from './remote-reads.js';
import type { GuestState, PublishedPort } from './store.js';
import { UdpFlows } from './udp.js';
import { RoamError } from '../errors.js';
import type { StreamView } from './view.js';

/** Remote connections held per guest while it is frozen for a move; beyond this they are refused. */
const MAX_HELD_CONNECTIONS = 1024;

/** What the connection manager needs to know of a guest. */
export interface RoutedGuest {
  id: string;
  name: string;
  state: GuestState;
  hostId: string | null;
  publish: PublishedPort[];
}

export interface ConnectionRouting {
  guest(guestId: string): RoutedGuest | undefined;
  /** The link of a host, if it is connected. */
  session(hostId: string): LinkSession | undefined;
  /** Whether a move of the guest is under way, and whether the guest is frozen for it. */
  move(guestId: string): { frozen: boolean } | undefined;
  event(kind: string, message: string, ids: { guestId?: string }, data?: unknown): void;
  /** The address published ports listen on and outbound connections leave from. */
  bind: string;
  /** How long a detached stream waits to be attached again. */
  reattachGraceMs: number;
}

interface StreamEntry {
  id: number;
  guestId: string;
  protocol: 'tcp' | 'udp';
  direction: 'inbound' | 'outbound';
  remote: string;
  guestPort: number;
  since: number;
  link: LinkStream;
  socket: net.Socket;
  stats: { bytesIn: number; bytesOut: number };
  state: 'open' | 'detached' | 'closing';
  graceTimer: NodeJS.Timeout | undefined;
}

export class Connections {
  private readonly streams = new Map<number, StreamEntry>();
  private readonly listeners = new Map<string, net.Server[]>();
  /** Remote connections that arrived while their guest was frozen for a move, in order. */
  private readonly held = new Map<string, Array<{ port: PublishedPort; socket: net.Socket }>>();
  /** How remote sockets that read into buffers of their own (remote-reads.ts) hand on what they read. */
  private readonly remoteReads = new WeakMap<net.Socket, RemoteReads>();
  private readonly sockets = new Set<net.Socket>();
  private nextStreamId = 1;
  readonly udp: UdpFlows;
  /** Where stream opens and closes are logged (the daemon sets it; at debug level: they are many). */
  log: ((fields: Record<string, unknown>, message: string) => void) | undefined;

  constructor(private readonly routing: ConnectionRouting) {
    this.udp = new UdpFlows({
      sessionFor: (guestId) => {
        const guest = routing.guest(guestId);
        return guest?.state === 'running' && guest.hostId ? routing.session(guest.hostId) : undefined;
      },
      allocateId: () => this.allocateId(),
    });
  }

  /** Stream and flow ids the proxy opens are odd; those a controller opens are even. */
  allocateId(): number {
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    return id;
  }

  list(guestName: (guestId: string) => string): StreamView[] {
    return [...this.streams.values()].map((s) => ({
      id: s.id,
      guestId: s.guestId,
      guestName: guestName(s.guestId),
      protocol: s.protocol,
      direction: s.direction,
      remote: s.remote,
      guestPort: s.guestPort,
      bytesIn: s.stats.bytesIn,
      bytesOut: s.stats.bytesOut,
      since: s.since,
      state: s.state,
    }));
  }

  count(guestId: string): number {
    let n = 0;
    for (const s of this.streams.values()) if (s.guestId === guestId) n++;
    return n;
  }

  // --- published ports ---

  /** Listens on the guest's published ports (all or none: a port that fails closes the others). */
  async publish(guest: RoutedGuest): Promise<void> {
    for (const p of guest.publish) {
      if (p.protocol === 'udp') {
        await this.udp.publish(guest.id, this.routing.bind, p.public, p.guest).catch((err: unknown) => {
          this.unpublish(guest.id);
          throw new RoamError('ROAM_ERR_CONFLICT', `cannot publish port ${p.public}/udp: ${(err as Error).message}`, {
            cause: err,
          });
        });
        continue;
      }
      const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (accepted) => {
        const reads = new RemoteReads();
        const socket = adoptWithOwnReads(accepted, reads, { allowHalfOpen: true, pauseOnCreate: true });
        if (socket) this.remoteReads.set(socket, reads);
        this.openInbound(guest.id, p, socket ?? accepted);
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err) => {
          reject(new RoamError('ROAM_ERR_CONFLICT', `cannot publish port ${p.public}: ${err.message}`, { cause: err }));
        });
        server.listen(p.public, this.routing.bind, () => resolve());
      }).catch((err: unknown) => {
        this.unpublish(guest.id);
        throw err;
      });
      const servers = this.listeners.get(guest.id) ?? [];
      servers.push(server);
      this.listeners.set(guest.id, servers);
    }
  }

  unpublish(guestId: string): void {
    for (const server of this.listeners.get(guestId) ?? []) server.close();
    this.listeners.delete(guestId);
    this.udp.unpublish(guestId);
  }

  // --- streams ---

  /** A remote client connected to a published port: carry it to the guest's host as a stream. */
  private openInbound(guestId: string, port: PublishedPort, socket: net.Socket): void {
    this.own(socket);
    const guest = this.routing.guest(guestId);
    if (guest && (this.routing.move(guestId)?.frozen || this.held.has(guestId))) {
      this.hold(guestId, port, socket);
      return;
    }
    const session = guest?.hostId ? this.routing.session(guest.hostId) : undefined;
    if (!guest || !session || guest.state !== 'running') {
      socket.destroy();
      return;
    }
    const id = this.allocateId();
    const remote = {
      address: socket.remoteAddress ?? '0.0.0.0',
      port: socket.remotePort ?? 0,
      family: socket.remoteFamily === 'IPv6' ? ('IPv6' as const) : ('IPv4' as const),
    };
    session.open(id, { guest: guest.id, protocol: 'tcp', direction: 'inbound', port: port.guest, remote }).then(
      (link) => this.track(id, guest, 'inbound', port.guest, `${remote.address}:${remote.port}`, link, socket),
      (err: Error & { code?: string }) => {
        // The guest froze for a move: hold the connection until it runs again, here or there.
        if (err.code === 'ROAM_ERR_MOVING' && this.routing.move(guestId)) this.hold(guestId, port, socket);
        else socket.destroy();
      },
    );
  }

  private hold(guestId: string, port: PublishedPort, socket: net.Socket): void {
    const held = this.held.get(guestId) ?? [];
    if (held.length >= MAX_HELD_CONNECTIONS) {
      socket.destroy();
      return;
    }
    held.push({ port, socket });
    this.held.set(guestId, held);
    // Settled by the move's outcome; if the guest is never found again, close() ends them.
  }

  /** The move is over (either way): the held connections go to wherever the guest runs. */
  releaseHeld(guestId: string): void {
    const held = this.held.get(guestId) ?? [];
    this.held.delete(guestId);
    for (const { port, socket } of held) {
      if (!socket.destroyed) this.openInbound(guestId, port, socket);
    }
  }

  /** The guest connects out: the proxy makes the connection from its own address (the paper's NAT). */
  openOutbound(hostId: string, session: LinkSession, frame: OpenFrame): void {
    const guest = this.routing.guest(frame.guest);
    if (guest && guest.hostId === hostId && frame.direction === 'outbound' && frame.protocol === 'udp') {
      this.udp.openOutbound(session, frame, this.routing.bind);
      return;
    }
    if (!guest || guest.hostId !== hostId || frame.direction !== 'outbound' || frame.protocol !== 'tcp') {
      session.reject(frame, 'EACCES', 'no such guest on this host, or not an outbound TCP stream');
      return;
    }
    if (this.streams.has(frame.streamId)) {
      session.reject(frame, 'ROAM_STREAM_EXISTS', `stream ${frame.streamId} is in use; open it with another id`);
      return;
    }
    // Half-open allowed: a remote that ends its side may still read the guest's answer.
    const socket = net.connect({ host: frame.remote.address, port: frame.remote.port, allowHalfOpen: true });
    this.own(socket);
    socket.pause();
    const onError = (err: NodeJS.ErrnoException): void => {
      session.reject(frame, err.code ?? 'ECONNREFUSED', err.message);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      if (!session.isOpen) {
        socket.destroy();
        return;
      }
      const link = session.accept(frame);
      const remote = `${frame.remote.address}:${frame.remote.port}`;
      this.track(frame.streamId, guest, 'outbound', frame.port, remote, link, socket);
    });
  }

  private track(
    id: number,
    guest: RoutedGuest,
    direction: 'inbound' | 'outbound',
    guestPort: number,
    remote: string,
    link: LinkStream,
    socket: net.Socket,
  ): void {
    const entry: StreamEntry = {
      id,
      guestId: guest.id,
      protocol: 'tcp',
      direction,
      remote,
      guestPort,
      since: Date.now(),
      link,
      socket,
      stats: { bytesIn: 0, bytesOut: 0 },
      state: 'open',
      graceTimer: undefined,
    };
    this.streams.set(id, entry);
    const fields = { streamId: id, guestId: guest.id, guest: guest.name, direction, remote };
    this.log?.(fields, 'stream opened');
    entry.stats = relay(socket, link, this.remoteReads.get(socket), (stats) => {
      clearTimeout(entry.graceTimer);
      this.streams.delete(id);
      this.log?.({ ...fields, bytesIn: stats.bytesIn, bytesOut: stats.bytesOut }, 'stream closed');
    });
    socket.resume();
  }

  /** A host attaches a stream again (after its link came back, or as a move's target). */
  reattach(hostId: string, session: LinkSession, frame: AttachFrame): void {
    const s = this.streams.get(frame.streamId);
    if (!s || this.routing.guest(s.guestId)?.hostId !== hostId) {
      session.sendRst(frame.streamId, 'ROAM_STREAM_UNKNOWN', `no stream ${frame.streamId} for this host`);
      return;
    }
    clearTimeout(s.graceTimer);
    s.graceTimer = undefined;
    s.state = 'open';
    session.resume(s.link, frame);
  }

  /**
   * The commit point of a move (the guest now lives on its new host): the streams in the image
   * wait for the target to attach them; the others cannot carry on.
   */
  moved(guestId: string, carried: number[]): void {
    const keep = new Set(carried);
    for (const s of this.streams.values()) {
      if (s.guestId !== guestId) continue;
      // Not in the image (it was still opening at the freeze): it cannot carry on.
      if (!keep.has(s.id)) this.end(s);
      else this.detach(s);
    }
    // UDP keeps nothing: the next datagram opens a flow to the new host.
    this.udp.resetGuest(guestId);
    this.releaseHeld(guestId);
  }

  /** A host's link dropped: its guests' streams wait for it to come back. */
  hostDisconnected(hostId: string): void {
    for (const s of this.streams.values()) if (this.routing.guest(s.guestId)?.hostId === hostId) this.detach(s);
  }

  /** A host is gone for good: its guests' streams end. */
  hostGone(hostId: string): void {
    for (const s of this.streams.values()) if (this.routing.guest(s.guestId)?.hostId === hostId) this.end(s);
  }

  /** A guest stopped: its streams end. */
  guestGone(guestId: string): void {
    for (const s of this.streams.values()) if (s.guestId === guestId) this.end(s);
  }

  close(): void {
    this.udp.close();
    for (const guestId of [...this.listeners.keys()]) this.unpublish(guestId);
    for (const s of this.streams.values()) this.end(s);
    for (const socket of this.sockets) socket.destroy();
  }

  private detach(s: StreamEntry): void {
    s.state = 'detached';
    clearTimeout(s.graceTimer);
    s.graceTimer = setTimeout(() => {
      this.routing.event(
        'stream.dropped',
        `stream ${s.id} of ${this.routing.guest(s.guestId)?.name ?? s.guestId} was not re-attached in time`,
        { guestId: s.guestId },
        { streamId: s.id, remote: s.remote },
      );
      this.end(s);
    }, this.routing.reattachGraceMs);
  }

  private end(s: StreamEntry): void {
    s.socket.destroy();
    s.link.destroy();
  }

  private own(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }
}
