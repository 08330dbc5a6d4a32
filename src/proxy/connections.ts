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
import type { AttachFrame, OpenFrame, StreamOpenInfo } from '../wire/index.js';
import { adoptWithOwnReads } from '../common/own-reads.js';
import { relay } from './relay.js';
import { RemoteReads } from './remote-reads.js';
import type { GuestState, PublishedPort } from './store.js';
import { UdpFlows } from './udp.js';
import { RoamError } from '../errors.js';
import { StreamResetError } from '../link/stream.js';
import type { StreamView } from './view.js';

/** Remote connections held per guest while it is frozen for a move; beyond this they are refused. */
const MAX_HELD_CONNECTIONS = 1024;
/**
 * A stream its host refused because the guest is moving, with no move known here (the host froze
 * the guest before the proxy heard of the move, or resumes it a moment after the proxy heard the
 * move is over): it is opened again this much later, this many times at most.
 */
const MOVING_RETRY_MS = 25;
const MOVING_RETRIES = 80;

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
  /**
   * Whether a move of the guest is under way (until `releaseHeld`), and whether the guest runs
   * nowhere for now (frozen for it, or not yet running again where the move left it).
   */
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
  /** 'opening': its OPEN is unanswered, or was refused while the guest moved and waits for the move. */
  state: 'opening' | 'open' | 'detached';
  /** Its one timer: the grace of a detached stream, or the next try of one refused while moving. */
  graceTimer: NodeJS.Timeout | undefined;
  /** What its OPEN says (an inbound stream is opened again after a refusal). */
  open: StreamOpenInfo | undefined;
  /** Times it was refused because its guest was moving. */
  refusals: number;
}

/** A remote connection held while its guest is frozen for a move: not yet a stream, or one refused. */
type Held = { port: PublishedPort; socket: net.Socket } | { entry: StreamEntry };

export class Connections {
  private readonly streams = new Map<number, StreamEntry>();
  private readonly listeners = new Map<string, net.Server[]>();
  /** Remote connections that arrived while their guest was frozen for a move, in order. */
  private readonly held = new Map<string, Held[]>();
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

  /**
   * A remote client connected to a published port: carry it to the guest's host as a stream. The
   * stream starts relaying at once: the client's first bytes go right behind the OPEN.
   */
  private openInbound(guestId: string, port: PublishedPort, socket: net.Socket): void {
    this.own(socket);
    const guest = this.routing.guest(guestId);
    if (guest && (this.routing.move(guestId)?.frozen || this.held.has(guestId))) {
      this.hold(guestId, { port, socket });
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
    const open: StreamOpenInfo = { guest: guest.id, protocol: 'tcp', direction: 'inbound', port: port.guest, remote };
    const link = session.newStream(id);
    const entry = this.track(id, guest, 'inbound', port.guest, `${remote.address}:${remote.port}`, link, socket, open);
    this.openOn(session, entry, open);
  }

  /** Sends a stream's OPEN; a refusal because the guest is moving holds it for wherever it lands. */
  private openOn(session: LinkSession, entry: StreamEntry, open: StreamOpenInfo): void {
    session.openStream(entry.link, open).then(
      () => {
        if (entry.state === 'opening') entry.state = 'open';
      },
      (err: Error & { code?: string }) => {
        if (entry.link.destroyed) return;
        if (err.code !== 'ROAM_ERR_MOVING') {
          entry.link.destroy(new StreamResetError(err.code ?? 'ROAM_STREAM_REFUSED', err.message));
        } else if (this.routing.move(entry.guestId) || this.held.has(entry.guestId)) {
          this.hold(entry.guestId, { entry });
        } else if (++entry.refusals > MOVING_RETRIES) {
          entry.link.destroy(new StreamResetError(err.code, err.message));
        } else {
          entry.graceTimer = setTimeout(() => this.reopen(entry), MOVING_RETRY_MS);
        }
      },
    );
  }

  /** Opens a stream refused during a move again, with every byte it had sent. */
  private reopen(entry: StreamEntry): void {
    entry.graceTimer = undefined;
    if (entry.link.destroyed) return;
    const guest = this.routing.guest(entry.guestId);
    const session = guest?.hostId ? this.routing.session(guest.hostId) : undefined;
    if (!guest || !session || guest.state !== 'running' || !entry.open) {
      this.end(entry);
      return;
    }
    this.openOn(session, entry, entry.open);
  }

  private hold(guestId: string, item: Held): void {
    const held = this.held.get(guestId) ?? [];
    if (held.length >= MAX_HELD_CONNECTIONS) {
      if ('entry' in item) this.end(item.entry);
      else item.socket.destroy();
      return;
    }
    held.push(item);
    this.held.set(guestId, held);
    // Settled by the move's outcome; if the guest is never found again, close() ends them.
  }

  /** The move is over (either way): the held connections go to wherever the guest runs. */
  releaseHeld(guestId: string): void {
    const held = this.held.get(guestId) ?? [];
    this.held.delete(guestId);
    for (const item of held) {
      if ('entry' in item) {
        if (!item.entry.link.destroyed) this.reopen(item.entry);
      } else if (!item.socket.destroyed) this.openInbound(guestId, item.port, item.socket);
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
      this.track(frame.streamId, guest, 'outbound', frame.port, remote, link, socket, undefined);
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
    open: StreamOpenInfo | undefined,
  ): StreamEntry {
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
      state: open ? 'opening' : 'open',
      graceTimer: undefined,
      open,
      refusals: 0,
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
    return entry;
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
      // Still opening: its answer decides (a refusal opens it again at the guest's new host).
      if (s.state === 'opening') continue;
      // Not in the image (it was opened as the guest froze): it cannot carry on.
      if (!keep.has(s.id)) this.end(s);
      else this.detach(s);
    }
    // UDP keeps nothing: the next datagram opens a flow to the new host.
    this.udp.resetGuest(guestId);
    // (Connections held for the move wait for its end: the new host takes the guest in after this.)
  }

  /**
   * A host's link dropped: its guests' streams wait for it to come back. (One still opening there
   * fails with the link; one refused during a move waits for the move, not for the link.)
   */
  hostDisconnected(hostId: string): void {
    for (const s of this.streams.values()) {
      if (s.state !== 'opening' && this.routing.guest(s.guestId)?.hostId === hostId) this.detach(s);
    }
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
