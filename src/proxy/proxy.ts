/**
 * The Proxy (paper section III-B): every guest's fixed public address, the roaming table of hosts,
 * and the connection manager that carries remote connections to whichever host runs the guest.
 *
 * Hosts join over the control port with the join token; each joined host is one link session
 * (link/session.ts) carrying control messages and the streams of its guests' connections (the
 * connection manager, connections.ts). Moves are coordinated in migrations.ts, backup images kept
 * in backups.ts, and the control plane's decisions made in control-plane.ts; this class holds the
 * roaming table they share and answers the API.
 */
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import { tokenMatches } from '../common/secrets.js';
import { RoamError, type RoamErrorCode } from '../errors.js';
import { IMAGE_TIMEOUT_MS, writeImage } from '../link/image-stream.js';
import { LinkSession } from '../link/session.js';
import { ROAM_VERSION } from '../version.js';
import type {
  AttachFrame,
  ConnectionFrame,
  ControlMessage,
  JoinMessage,
  LogsResultMessage,
  ImageOpenFrame,
  OpenFrame,
  ReportMessage,
} from '../wire/index.js';
import type { ProxyConfig } from './config.js';
import { BackupImages } from './backups.js';
import { ControlPlane, type PolicyStatus } from './control-plane.js';
import { Migrations } from './migrations.js';
import { Connections } from './connections.js';
import { Store, type GuestKind, type GuestState, type PublishedPort } from './store.js';
import type {
  DeployRequest,
  DrainView,
  EventView,
  GuestView,
  HostView,
  LogRecordView,
  MigrateRequest,
  MigrationView,
  ProxyOperations,
  StreamView,
} from './view.js';

const HANDSHAKE_TIMEOUT_MS = 5000;
const DEPLOY_TIMEOUT_MS = 30_000;
/**
 * A WebAssembly module is instrumented by the host before it starts (binaryen: seconds of CPU for
 * a large module, more on a busy host), unless the host has it cached: it gets longer, still less
 * than `roam run`'s 120 s wait for the API.
 */
const WASM_DEPLOY_TIMEOUT_MS = 100_000;
const LOGS_TIMEOUT_MS = 5000;
/** Control frames before a host authenticated are small (a HELLO is a few hundred bytes). */
const UNAUTHENTICATED_CONTROL_LIMIT = 16 * 1024;
const AUTHENTICATED_CONTROL_LIMIT = 64 * 1024 * 1024;
/** Each step of a move (an ack, a peer's answer) must come within this. */
const MIGRATION_STEP_TIMEOUT_MS = 5000;
/** A whole move, at most. */
const MIGRATION_DEADLINE_MS = 120_000;

interface HostEntry {
  id: string;
  name: string;
  state: 'up' | 'left' | 'evicted' | 'disconnected';
  address: string | null;
  peerPort: number | null;
  joinedAt: number | null;
  lastSeen: number | null;
  rttMs: number | null;
  report: ReportMessage | null;
  benchmarkScore: number | null;
  session: LinkSession | undefined;
}

/** Codes a host may refuse a program with that say the program is at fault (kept, not wrapped). */
const PROGRAM_ERRORS: ReadonlySet<string> = new Set<RoamErrorCode>([
  'ROAM_ERR_BUNDLE',
  'ROAM_ERR_WASM_MODULE',
  'ROAM_ERR_WASM_FEATURE',
]);

function deployError(code: string, message: string): RoamError {
  return PROGRAM_ERRORS.has(code)
    ? new RoamError(code as RoamErrorCode, `the host refused the program: ${message}`)
    : new RoamError('ROAM_ERR_API', `${code}: ${message}`);
}

interface GuestEntry {
  id: string;
  name: string;
  kind: GuestKind;
  state: GuestState;
  hostId: string | null;
  publish: PublishedPort[];
  env: Record<string, string>;
  argv: string[];
  since: number;
  exitCode: number | null;
  deadline?: number | null;
  expectMs?: number | null;
}

interface Pending<T> {
  resolve: (value: T) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class Proxy implements ProxyOperations {
  private readonly hostTable = new Map<string, HostEntry>();
  private readonly guestTable = new Map<string, GuestEntry>();
  private readonly subscribers = new Set<(event: EventView) => void>();
  private readonly deploys = new Map<string, Pending<void>>();
  private readonly logRequests = new Map<number, Pending<LogRecordView[]>>();
  /** Control connections (hosts' links, before and after they join). */
  private readonly sockets = new Set<net.Socket>();
  private nextRequestId = 1;
  private readonly controlPlane: ControlPlane;
  /** Remote connections and the guests' own, as streams on their hosts' links. */
  readonly connections: Connections;
  private readonly migrations = new Migrations({
    host: (id) => {
      const h = this.hostTable.get(id);
      return h
        ? { id: h.id, name: h.name, address: h.address, peerPort: h.peerPort, connected: h.session?.isOpen === true }
        : undefined;
    },
    send: (hostId, message, now) => {
      const h = this.hostTable.get(hostId);
      if (h) this.control(h, message, now);
    },
    switchHost: (guestId, targetId, streams) => this.switchHost(guestId, targetId, streams),
    released: (guestId) => this.connections.releaseHeld(guestId),
    event: (kind, message, ids, data) => this.event(kind, message, ids, data),
  });
  private readonly backups: BackupImages;
  /** Hosts that lost a guest which since resumed elsewhere from its image: their copy must stop. */
  private readonly fenced = new Map<string, Set<string>>();
  private controlServer: net.Server | undefined;
  private housekeeping: NodeJS.Timeout | undefined;
  private closed = false;
  controlPort = 0;

  private constructor(
    readonly config: ProxyConfig,
    private readonly store: Store,
  ) {
    this.connections = new Connections({
      guest: (id) => this.guestTable.get(id),
      session: (hostId) => this.hostTable.get(hostId)?.session,
      move: (guestId) => this.migrations.inFlight(guestId),
      event: (kind, message, ids, data) => this.event(kind, message, ids, data),
      bind: config.bind,
      reattachGraceMs: config.reattachGraceMs,
    });
    this.controlPlane = new ControlPlane(config.policy, {
      hosts: () =>
        [...this.hostTable.values()].map((h) => ({
          id: h.id,
          name: h.name,
          up: h.state === 'up' && h.session?.isOpen === true,
          canReceive: h.peerPort !== null && h.address !== null,
          score: h.benchmarkScore,
          rttMs: h.rttMs,
          metrics: h.report,
          joinedAt: h.joinedAt,
        })),
      guests: () =>
        [...this.guestTable.values()]
          .filter((g) => g.state === 'running' && g.hostId)
          .map((g) => {
            const usage = g.hostId
              ? this.hostTable.get(g.hostId)?.report?.guests.find((r) => r.id === g.id)
              : undefined;
            return {
              id: g.id,
              name: g.name,
              hostId: g.hostId as string,
              memoryBytes: usage?.memoryBytes ?? 0,
              cpuMs: usage?.cpuMs ?? 0,
              deadline: g.deadline ?? null,
              expectMs: g.expectMs ?? null,
            };
          }),
      sessions: () => this.store.sessions(),
      migrate: (guestId, to, precopy) => {
        const guest = this.guestTable.get(guestId);
        if (!guest) return Promise.reject(new RoamError('ROAM_ERR_NOT_FOUND', `no guest ${guestId}`));
        return this.migrate(guest.name, { to, precopy });
      },
      event: (kind, message, ids, data) => this.event(kind, message, ids, data),
    });
    this.backups = new BackupImages(join(config.dataDir, 'images'), {
      candidates: () =>
        [...this.guestTable.values()]
          .filter((g) => g.state === 'running' && g.hostId !== null && !this.migrations.pendingFor(g.id))
          .map((g) => ({ id: g.id, name: g.name, hostId: g.hostId as string })),
      request: (hostId, guestId) => {
        const host = this.hostTable.get(hostId);
        if (!host?.session?.isOpen || host.state !== 'up') return false;
        this.control(host, { type: 'backup', guestId });
        return true;
      },
      event: (kind, message, ids, data) => this.event(kind, message, ids, data),
    });
  }

  static async start(config: ProxyConfig): Promise<Proxy> {
    const store = new Store(join(config.dataDir, 'roam.db'));
    const proxy = new Proxy(config, store);
    proxy.load();
    await proxy.listenControl();
    proxy.housekeeping = setInterval(() => {
      proxy.checkHosts();
      proxy.controlPlane.tick();
      const { backupEverySeconds, maxConcurrentBackups } = config.policy;
      proxy.backups.tick(Date.now(), backupEverySeconds, maxConcurrentBackups);
    }, config.reportIntervalMs).unref();
    proxy.event('proxy.started', `proxy ${config.name} started (Roam ${ROAM_VERSION})`);
    return proxy;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.housekeeping);
    this.migrations.close();
    this.backups.close();
    this.connections.close();
    for (const host of this.hostTable.values()) host.session?.destroy();
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => (this.controlServer ? this.controlServer.close(() => resolve()) : resolve()));
    const now = Date.now();
    for (const host of this.hostTable.values())
      if (host.state === 'up') this.store.hostEnded(host.id, 'proxy-restart', now);
    this.store.close();
  }

  // --- ProxyOperations (the API) ---

  hosts(): HostView[] {
    return [...this.hostTable.values()].map((h) => this.hostView(h)).sort((a, b) => a.name.localeCompare(b.name));
  }

  guests(): GuestView[] {
    return [...this.guestTable.values()].map((g) => this.guestView(g)).sort((a, b) => a.name.localeCompare(b.name));
  }

  streams(): StreamView[] {
    return this.connections.list((id) => this.guestTable.get(id)?.name ?? id);
  }

  events(options: { after?: number; limit?: number }): EventView[] {
    return this.store.events(options);
  }

  subscribe(listener: (event: EventView) => void): () => void {
    this.subscribers.add(listener);
    return () => this.subscribers.delete(listener);
  }

  async deploy(request: DeployRequest): Promise<GuestView> {
    if ([...this.guestTable.values()].some((g) => g.name === request.name)) {
      throw new RoamError('ROAM_ERR_CONFLICT', `a guest named ${request.name} already exists: stop it first`);
    }
    for (const p of request.publish) {
      const owner = [...this.guestTable.values()].find((g) =>
        g.publish.some((q) => q.public === p.public && q.protocol === p.protocol),
      );
      if (owner)
        throw new RoamError('ROAM_ERR_CONFLICT', `port ${p.public}/${p.protocol} is published by ${owner.name}`);
    }
    const byPolicy =
      request.on === undefined && request.deadline !== undefined
        ? this.placeByPolicy({ id: '', name: request.name, deadline: request.deadline, expectMs: request.expectMs })
        : undefined;
    const host = this.place(byPolicy ?? request.on);
    const now = Date.now();
    const program =
      request.wasm !== undefined
        ? { kind: 'wasm' as const, wasm: request.wasm }
        : { kind: 'js' as const, bundle: request.bundle ?? '' };
    const guest: GuestEntry = {
      id: randomUUID(),
      name: request.name,
      kind: program.kind,
      state: 'starting',
      hostId: host.id,
      publish: request.publish,
      env: request.env,
      argv: request.argv,
      since: now,
      exitCode: null,
      deadline: request.deadline ?? null,
      expectMs: request.expectMs ?? null,
    };
    await this.connections.publish(guest);
    this.guestTable.set(guest.id, guest);
    this.store.addGuest(
      { ...guest, createdAt: now },
      program.kind === 'wasm' ? Buffer.from(program.wasm, 'base64') : program.bundle,
    );
    try {
      await this.sendDeploy(host, guest, program.kind === 'wasm' ? { wasm: program.wasm } : { bundle: program.bundle });
    } catch (err) {
      this.connections.unpublish(guest.id);
      this.setGuestState(guest, 'failed');
      this.event('guest.failed', `${guest.name} failed to start on ${host.name}: ${(err as Error).message}`, {
        hostId: host.id,
        guestId: guest.id,
      });
      throw err;
    }
    this.setGuestState(guest, 'running');
    this.event('guest.started', `${guest.name} started on ${host.name}`, { hostId: host.id, guestId: guest.id });
    return this.guestView(guest);
  }

  stop(name: string): Promise<GuestView> {
    const guest = [...this.guestTable.values()].find((g) => g.name === name);
    if (!guest) return Promise.reject(new RoamError('ROAM_ERR_NOT_FOUND', `no guest named ${name}`));
    this.connections.unpublish(guest.id);
    const host = guest.hostId ? this.hostTable.get(guest.hostId) : undefined;
    if (host?.session && guest.state === 'running') {
      this.control(host, { type: 'stop', guestId: guest.id });
    }
    this.connections.guestGone(guest.id);
    this.setGuestState(guest, 'stopped');
    this.guestTable.delete(guest.id);
    this.store.removeGuest(guest.id);
    this.event('guest.stopped', `${guest.name} stopped by an operator`, { hostId: guest.hostId, guestId: guest.id });
    return Promise.resolve(this.guestView(guest));
  }

  logs(name: string, options: { tail?: number }): Promise<LogRecordView[]> {
    const guest = this.guestByName(name);
    const host = guest.hostId ? this.hostTable.get(guest.hostId) : undefined;
    if (!host?.session) {
      return Promise.reject(
        new RoamError('ROAM_ERR_HOST_UNREACHABLE', `the host of ${guest.name} is not connected; its logs are there`),
      );
    }
    const requestId = this.nextRequestId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.logRequests.delete(requestId);
        reject(new RoamError('ROAM_ERR_TIMEOUT', `the host of ${guest.name} did not send its logs in time`));
      }, LOGS_TIMEOUT_MS);
      this.logRequests.set(requestId, { resolve, reject, timer });
      this.control(host, {
        type: 'logs',
        requestId,
        guestId: guest.id,
        ...(options.tail ? { tail: options.tail } : {}),
      });
    });
  }

  async migrate(name: string, request: MigrateRequest): Promise<MigrationView> {
    const guest = this.guestByName(name);
    if (guest.state !== 'running' || !guest.hostId) {
      throw new RoamError('ROAM_ERR_CONFLICT', `${guest.name} is ${guest.state}: only a running guest can move`);
    }
    const source = this.hostTable.get(guest.hostId);
    if (!source?.session)
      throw new RoamError('ROAM_ERR_HOST_UNREACHABLE', `the host of ${guest.name} is not connected`);
    if (request.to === source.name || request.to === source.id) {
      throw new RoamError('ROAM_ERR_CONFLICT', `${guest.name} already runs on ${source.name}`);
    }
    // Without --to, the control plane's ranking picks (it weighs how likely each host is to stay);
    // if it rejects every host, the plain score does.
    const suggested = request.to === undefined ? this.controlPlane.moveTarget(guest.id) : undefined;
    const usable = [...this.hostTable.values()].some(
      (h) => h.name === suggested && h.id !== source.id && h.state === 'up' && h.session,
    );
    const target = this.place(request.to ?? (usable ? suggested : undefined), source.id);
    return this.migrations.start({
      guestId: guest.id,
      guestName: guest.name,
      sourceId: source.id,
      targetId: target.id,
      precopy: request.precopy ?? true,
      stepTimeoutMs: MIGRATION_STEP_TIMEOUT_MS,
      deadlineMs: MIGRATION_DEADLINE_MS,
    });
  }

  policy(): PolicyStatus {
    return this.controlPlane.status();
  }

  async drain(hostName: string): Promise<DrainView> {
    const host = [...this.hostTable.values()].find((h) => h.name === hostName || h.id === hostName);
    if (!host) throw new RoamError('ROAM_ERR_NOT_FOUND', `no host named ${hostName}`);
    return this.evacuate(host, 'an operator drained it');
  }

  /** Moves every running guest off `host`, one at a time, each to the best other host. */
  private async evacuate(host: HostEntry, reason: string): Promise<DrainView> {
    const guests = [...this.guestTable.values()].filter((g) => g.hostId === host.id && g.state === 'running');
    this.event('host.draining', `draining ${host.name} (${reason}): ${guests.length} guest(s) to move`, {
      hostId: host.id,
    });
    const view: DrainView = { host: host.name, moved: 0, failed: 0, migrations: [] };
    for (const guest of guests) {
      try {
        // The backup named when the guest moved here is where it goes if this host leaves.
        const backup = this.controlPlane.backupFor(guest.id);
        const to = backup && this.isUp(backup) ? backup : undefined;
        const result = await this.migrate(guest.name, to ? { to } : {});
        view.migrations.push(result);
        if (result.outcome === 'moved') view.moved++;
        else view.failed++;
      } catch (err) {
        view.failed++;
        this.event('migration.failed', `could not move ${guest.name} off ${host.name}: ${(err as Error).message}`, {
          hostId: host.id,
          guestId: guest.id,
        });
      }
    }
    this.event('host.drained', `drained ${host.name}: ${view.moved} moved, ${view.failed} not`, { hostId: host.id });
    return view;
  }

  // --- hosts ---

  private load(): void {
    const now = Date.now();
    this.store.closeStaleSessions(now);
    for (const h of this.store.hosts()) {
      this.hostTable.set(h.id, {
        id: h.id,
        name: h.name,
        state: h.state === 'up' ? 'disconnected' : h.state,
        address: h.address,
        peerPort: h.peerPort,
        joinedAt: null,
        lastSeen: h.lastSeen,
        rttMs: null,
        report: null,
        benchmarkScore: h.benchmarkScore,
        session: undefined,
      });
    }
    // Guests survive a restart of the proxy as records; they count as running again when their
    // host reconnects and reports them.
    for (const g of this.store.guests()) {
      if (g.state === 'stopped' || g.state === 'exited' || g.state === 'failed') continue;
      this.guestTable.set(g.id, { ...g, state: 'lost' });
    }
  }

  private listenControl(): Promise<void> {
    const server = net.createServer((socket) => this.acceptControl(socket));
    this.controlServer = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.config.controlPort, this.config.bind, () => {
        server.off('error', reject);
        this.controlPort = (server.address() as net.AddressInfo).port;
        resolve();
      });
    });
  }

  private acceptControl(accepted: net.Socket): void {
    let host: HostEntry | undefined;
    const handshake = setTimeout(() => {
      session.refuse('ROAM_ERR_UNAUTHORIZED', 'no HELLO in time');
    }, HANDSHAKE_TIMEOUT_MS);
    const { socket, session } = LinkSession.accept(
      accepted,
      {
        admit: (frame) => {
          if (host || frame.type === 'hello') return true;
          clearTimeout(handshake);
          session.refuse('ROAM_ERR_UNAUTHORIZED', 'say HELLO first');
          return false;
        },
        onFrame: (frame: ConnectionFrame) => {
          if (!host) {
            if (frame.type !== 'hello') return; // refused by admit()
            clearTimeout(handshake);
            host = this.join(session, frame.message, socket.remoteAddress ?? null);
            return;
          }
          if (frame.type === 'control') this.onControl(host, frame.message);
        },
        onOpen: (frame: OpenFrame) => {
          if (host) this.connections.openOutbound(host.id, session, frame);
          else session.reject(frame, 'ROAM_ERR_UNAUTHORIZED', 'say HELLO first');
        },
        onImage: (frame: ImageOpenFrame) => {
          if (host) void this.backups.receive(host.id, session, frame);
          else session.reject(frame, 'ROAM_ERR_UNAUTHORIZED', 'say HELLO first');
        },
        onDatagram: (flowId: number, payload: Uint8Array) => {
          if (host) this.connections.udp.fromHost(flowId, payload);
        },
        onFlowReset: (flowId: number) => this.connections.udp.reset(flowId),
        onAttach: (frame: AttachFrame) => {
          if (host) this.connections.reattach(host.id, session, frame);
          else session.sendRst(frame.streamId, 'ROAM_ERR_UNAUTHORIZED', 'say HELLO first');
        },
        onClose: () => {
          clearTimeout(handshake);
          this.connections.udp.sessionClosed(session);
          if (host && host.session === session) this.disconnected(host);
        },
      },
      { maxControlPayload: UNAUTHENTICATED_CONTROL_LIMIT },
    );
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private join(session: LinkSession, hello: JoinMessage, address: string | null): HostEntry | undefined {
    if (!tokenMatches(hello.token, this.config.joinToken)) {
      session.refuse('ROAM_ERR_UNAUTHORIZED', 'wrong join token');
      this.event('host.refused', `a host at ${address ?? 'an unknown address'} offered a wrong join token`);
      return undefined;
    }
    const now = Date.now();
    const existing = this.hostTable.get(hello.hostId);
    if (existing?.session && existing.session !== session) existing.session.destroy();
    const host: HostEntry = existing ?? {
      id: hello.hostId,
      name: hello.name,
      state: 'up',
      address,
      peerPort: null,
      joinedAt: now,
      lastSeen: now,
      rttMs: null,
      report: null,
      benchmarkScore: null,
      session,
    };
    Object.assign(host, {
      name: hello.name,
      state: 'up',
      address: hello.advertise ?? address,
      peerPort: hello.peerPort ?? null,
      joinedAt: now,
      lastSeen: now,
      session,
    });
    this.hostTable.set(host.id, host);
    this.store.hostJoined({ id: host.id, name: host.name, address: host.address, peerPort: host.peerPort }, now);
    session.setLimits({ maxControlPayload: AUTHENTICATED_CONTROL_LIMIT });
    session.send({
      type: 'welcome',
      message: {
        type: 'welcome',
        hostId: host.id,
        proxyName: this.config.name,
        reportIntervalMs: this.config.reportIntervalMs,
        evictAfterIntervals: this.config.evictAfterIntervals,
      },
    });
    this.event('host.joined', `${host.name} joined from ${host.address ?? 'an unknown address'}`, { hostId: host.id });
    return host;
  }

  private disconnected(host: HostEntry): void {
    host.session = undefined;
    this.migrations.hostGone(host.id);
    if (host.state !== 'up') return;
    host.state = 'disconnected';
    this.store.hostEnded(host.id, 'disconnected', Date.now());
    this.event('host.disconnected', `${host.name} lost its connection; waiting for it to come back`, {
      hostId: host.id,
    });
    this.connections.hostDisconnected(host.id);
  }

  /**
   * Evicts hosts silent for too long; pings the others (the RTT in the roaming table). A host that
   * looks silent is judged again after this turn's I/O: this timer runs before it, so after the
   * proxy itself was held up (a long GC, a busy machine, a stopped process), the reports that
   * came meanwhile are still unread in their sockets.
   */
  private checkHosts(): void {
    const limit = this.config.reportIntervalMs * this.config.evictAfterIntervals;
    const silent = (host: HostEntry): boolean =>
      (host.state === 'up' || host.state === 'disconnected') &&
      host.lastSeen !== null &&
      Date.now() - host.lastSeen > limit;
    const suspects = new Set([...this.hostTable.values()].filter(silent));
    if (suspects.size > 0) {
      setImmediate(() => {
        for (const host of suspects) if (!this.closed && silent(host)) this.evict(host, Date.now());
      });
    }
    for (const host of this.hostTable.values()) {
      if (suspects.has(host)) continue;
      if (host.session) {
        host.session.ping(limit).then(
          (rtt) => (host.rttMs = rtt),
          () => {},
        );
      }
    }
  }

  private evict(host: HostEntry, now: number): void {
    // Detach the session first: its close must not be taken for a disconnect of a host still up.
    const session = host.session;
    host.session = undefined;
    host.state = 'evicted';
    session?.destroy();
    this.migrations.hostGone(host.id);
    this.store.hostEnded(host.id, 'evicted', now);
    this.event(
      'host.evicted',
      `${host.name} was evicted: silent for ${this.config.evictAfterIntervals} report intervals`,
      {
        hostId: host.id,
      },
    );
    const lost = [...this.guestTable.values()].filter((g) => g.hostId === host.id && g.state === 'running');
    this.connections.hostGone(host.id);
    for (const guest of lost) {
      this.connections.unpublish(guest.id);
      this.setGuestState(guest, 'lost');
      this.event('guest.lost', `${guest.name} was lost with its host ${host.name}`, {
        hostId: host.id,
        guestId: guest.id,
      });
    }
    void this.restoreLost(host, lost, `${host.name} was evicted`);
  }

  /**
   * Guests lost with their host resume from their newest backup image elsewhere, one after another:
   * on the backup host named at their last move if it is up, else where the policy would place them.
   * The lost host, should it come back, is told to stop its copies.
   */
  private async restoreLost(lostHost: HostEntry, guests: GuestEntry[], why: string): Promise<void> {
    for (const guest of guests) {
      const record = this.backups.record(guest.id);
      if (!record || guest.state !== 'lost' || this.closed) continue;
      const backup = this.controlPlane.backupFor(guest.id);
      let target: HostEntry;
      try {
        target = this.place(backup && this.isUp(backup) ? backup : this.placeByPolicy(guest), lostHost.id);
      } catch (err) {
        this.event('guest.lost', `${guest.name} cannot resume from its image: ${(err as Error).message}`, {
          guestId: guest.id,
        });
        continue;
      }
      const age = Math.round((Date.now() - record.takenAt) / 1000);
      try {
        const image = await this.backups.read(guest.id);
        guest.hostId = target.id;
        this.setGuestState(guest, 'starting');
        await this.sendRestore(target, guest, record.takenAt, image);
        await this.connections.publish(guest);
        this.setGuestState(guest, 'running');
        // Should the lost host come back with its copy, that copy stops (while a restore that
        // failed leaves the guest to be found there again).
        let fenced = this.fenced.get(lostHost.id);
        if (!fenced) this.fenced.set(lostHost.id, (fenced = new Set()));
        fenced.add(guest.id);
        this.event(
          'guest.restored',
          `${guest.name} resumed on ${target.name} from its backup image of ${age} s ago (${why}); ` +
            `its work since then and its open connections were lost`,
          { hostId: target.id, guestId: guest.id },
          { from: lostHost.name, to: target.name, imageAgeSeconds: age, imageBytes: record.bytes },
        );
      } catch (err) {
        this.connections.unpublish(guest.id);
        guest.hostId = lostHost.id;
        this.setGuestState(guest, 'lost');
        this.event(
          'guest.lost',
          `${guest.name} could not resume on ${target.name} from its backup image: ${(err as Error).message}`,
          { hostId: target.id, guestId: guest.id },
        );
      }
    }
  }

  private isUp(name: string): boolean {
    return [...this.hostTable.values()].some((h) => h.name === name && h.state === 'up' && h.session?.isOpen);
  }

  /** Sends a restore and the image after it; resolves when the host answers `deployed`. */
  private async sendRestore(host: HostEntry, guest: GuestEntry, takenAt: number, image: Uint8Array): Promise<void> {
    const session = host.session;
    if (!session?.isOpen) throw new RoamError('ROAM_ERR_HOST_UNREACHABLE', `${host.name} is not connected`);
    const started = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.deploys.delete(guest.id);
        reject(
          new RoamError(
            'ROAM_ERR_TIMEOUT',
            `${host.name} did not resume ${guest.name} within ${IMAGE_TIMEOUT_MS / 1000} s`,
          ),
        );
      }, IMAGE_TIMEOUT_MS);
      this.deploys.set(guest.id, { resolve, reject, timer });
    });
    started.catch(() => {}); // awaited below, after the image is sent
    this.control(host, { type: 'restore', guestId: guest.id, name: guest.name, takenAt });
    const stream = await session.open(this.connections.allocateId(), {
      guest: guest.id,
      direction: 'image',
      bytes: image.length,
    });
    await writeImage(stream, image, IMAGE_TIMEOUT_MS);
    await started;
  }

  private onControl(host: HostEntry, message: ControlMessage): void {
    if (this.migrations.onControl(host.id, message)) return;
    switch (message.type) {
      case 'drain':
        void this.evacuate(host, message.reason).then((view) =>
          this.control(host, { type: 'drained', moved: view.moved, failed: view.failed }),
        );
        return;
      case 'report':
        this.onReport(host, message);
        return;
      case 'leave':
        this.onLeave(host, message.reason);
        return;
      case 'deployed':
        this.settle(this.deploys, message.guestId, undefined);
        return;
      case 'deployFailed':
        this.fail(this.deploys, message.guestId, deployError(message.code, message.message));
        return;
      case 'backupFailed':
        this.backups.failed(host.id, message.guestId, message.code, message.message);
        return;
      case 'guestExited':
        this.onGuestExited(host, message.guestId, message.code, message.reason, message.message);
        return;
      case 'logsResult':
        this.onLogs(message);
        return;
      default:
        return; // messages for controllers only (deploy, stop, logs) are ignored here
    }
  }

  private onReport(host: HostEntry, report: ReportMessage): void {
    const now = Date.now();
    host.lastSeen = now;
    host.report = report;
    if (report.benchmarkScore !== undefined) host.benchmarkScore = report.benchmarkScore;
    this.store.hostReported(host.id, report, report.benchmarkScore ?? null, now);
    // Guests the host still runs (after a restart of the proxy, or after a reconnect).
    const fenced = this.fenced.get(host.id);
    for (const g of report.guests) {
      if (fenced?.has(g.id)) {
        // It came back with a guest that resumed elsewhere from its image meanwhile: one copy only.
        this.control(host, { type: 'stop', guestId: g.id });
        fenced.delete(g.id);
        continue;
      }
      const guest = this.guestTable.get(g.id);
      if (guest && guest.state === 'lost' && guest.hostId === host.id && g.state === 'running') {
        this.setGuestState(guest, 'running');
        void this.connections.publish(guest).catch((err: unknown) =>
          this.event('guest.port', `${guest.name}: cannot publish again: ${(err as Error).message}`, {
            guestId: guest.id,
          }),
        );
        this.event('guest.found', `${guest.name} is running on ${host.name}`, { hostId: host.id, guestId: guest.id });
      }
    }
  }

  private onLeave(host: HostEntry, reason: string): void {
    host.state = 'left';
    this.store.hostEnded(host.id, 'left', Date.now());
    this.event('host.left', `${host.name} left: ${reason}`, { hostId: host.id });
    const lost: GuestEntry[] = [];
    for (const guest of this.guestTable.values()) {
      if (guest.hostId !== host.id || guest.state !== 'running') continue;
      this.connections.unpublish(guest.id);
      if (this.backups.record(guest.id)) {
        // The drain could not move it: its newest image can still carry it on elsewhere.
        this.setGuestState(guest, 'lost');
        lost.push(guest);
        continue;
      }
      this.setGuestState(guest, 'stopped');
      this.event('guest.stopped', `${guest.name} stopped: its host ${host.name} left`, {
        hostId: host.id,
        guestId: guest.id,
      });
    }
    void this.restoreLost(host, lost, `${host.name} left with it`);
  }

  private onGuestExited(host: HostEntry, guestId: string, code: number, reason: string, message?: string): void {
    const guest = this.guestTable.get(guestId);
    // A copy on a host the guest no longer lives on (stopped there after it resumed elsewhere).
    if (!guest || guest.hostId !== host.id) return;
    guest.exitCode = code;
    this.connections.unpublish(guest.id);
    this.setGuestState(guest, 'exited');
    this.event(
      'guest.exited',
      `${guest.name} exited on ${host.name} with code ${code} (${reason})${message ? `: ${message}` : ''}`,
      {
        hostId: host.id,
        guestId,
      },
    );
  }

  private onLogs(message: LogsResultMessage): void {
    this.settle(this.logRequests, message.requestId, message.records);
  }

  // --- guests ---

  /** Where the policy would put a guest that starts now (its memory not known yet). */
  private placeByPolicy(guest: {
    id: string;
    name: string;
    deadline?: number | null;
    expectMs?: number | null;
  }): string | undefined {
    return this.controlPlane.place({
      id: guest.id,
      name: guest.name,
      memoryBytes: 0,
      cpuMs: 0,
      deadline: guest.deadline ?? null,
      expectMs: guest.expectMs ?? null,
    });
  }

  private place(on: string | undefined, exclude?: string): HostEntry {
    const up = [...this.hostTable.values()].filter((h) => h.state === 'up' && h.session && h.id !== exclude);
    if (on !== undefined) {
      const host = up.find((h) => h.name === on || h.id === on);
      if (!host) throw new RoamError('ROAM_ERR_NO_HOST', `no connected host named ${on}`);
      return host;
    }
    if (up.length === 0) {
      throw new RoamError(
        'ROAM_ERR_NO_HOST',
        exclude ? 'no other host is connected to move to' : 'no host has joined yet: start `roam host` on a machine',
      );
    }
    const count = (h: HostEntry): number => [...this.guestTable.values()].filter((g) => g.hostId === h.id).length;
    // The paper's benchmark-like ranking: speed times CPU headroom, fewest guests on ties.
    const score = (h: HostEntry): number => (h.benchmarkScore ?? 1) * (1 - (h.report?.cpu.usage ?? 0));
    return up.sort((a, b) => score(b) - score(a) || count(a) - count(b))[0] as HostEntry;
  }

  private sendDeploy(
    host: HostEntry,
    guest: GuestEntry,
    program: { bundle: string } | { wasm: string },
  ): Promise<void> {
    const timeoutMs = 'wasm' in program ? WASM_DEPLOY_TIMEOUT_MS : DEPLOY_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.deploys.delete(guest.id);
        reject(
          new RoamError('ROAM_ERR_TIMEOUT', `${host.name} did not start ${guest.name} within ${timeoutMs / 1000} s`),
        );
      }, timeoutMs);
      this.deploys.set(guest.id, { resolve, reject, timer });
      this.control(host, {
        type: 'deploy',
        guestId: guest.id,
        name: guest.name,
        ...program,
        env: guest.env,
        argv: guest.argv,
        publish: guest.publish,
      });
    });
  }

  /** A move's commit point: the guest lives on `targetId` from now on, on disk before anyone hears of it. */
  private switchHost(guestId: string, targetId: string, carried: number[]): void {
    const guest = this.guestTable.get(guestId);
    if (!guest) return;
    guest.hostId = targetId;
    this.setGuestState(guest, 'running', true);
    this.connections.moved(guestId, carried);
  }

  // --- helpers ---

  private control(host: HostEntry, message: ControlMessage, now = false): void {
    if (now) host.session?.sendNow({ type: 'control', message });
    else host.session?.send({ type: 'control', message });
  }

  private settle<K, T>(map: Map<K, Pending<T>>, key: K, value: T): void {
    const p = map.get(key);
    if (!p) return;
    map.delete(key);
    clearTimeout(p.timer);
    p.resolve(value);
  }

  private fail<K, T>(map: Map<K, Pending<T>>, key: K, err: Error): void {
    const p = map.get(key);
    if (!p) return;
    map.delete(key);
    clearTimeout(p.timer);
    p.reject(err);
  }

  private guestByName(name: string): GuestEntry {
    const guest = [...this.guestTable.values()].find((g) => g.name === name);
    if (!guest) throw new RoamError('ROAM_ERR_NOT_FOUND', `no guest named ${name}`);
    return guest;
  }

  private setGuestState(guest: GuestEntry, state: GuestState, durable = false): void {
    guest.state = state;
    guest.since = Date.now();
    if (state === 'stopped' || state === 'exited' || state === 'failed') this.backups.forget(guest.id);
    if (this.guestTable.has(guest.id)) {
      const change = { state, hostId: guest.hostId, exitCode: guest.exitCode };
      this.store.updateGuest(guest.id, change, guest.since, durable);
    }
  }

  private event(
    kind: string,
    message: string,
    ids: { hostId?: string | null; guestId?: string | null } = {},
    data: unknown = null,
  ): void {
    const row = this.store.addEvent({
      t: Date.now(),
      kind,
      hostId: ids.hostId ?? null,
      guestId: ids.guestId ?? null,
      message,
      data,
    });
    for (const listener of this.subscribers) listener(row);
    // Joins, leaves and evictions are the availability model's history.
    if (kind.startsWith('host.')) this.controlPlane?.historyChanged();
  }

  private hostView(h: HostEntry): HostView {
    return {
      id: h.id,
      name: h.name,
      state: h.state,
      address: h.address,
      peerPort: h.peerPort,
      joinedAt: h.joinedAt,
      lastSeen: h.lastSeen,
      rttMs: h.rttMs,
      benchmarkScore: h.benchmarkScore,
      metrics: h.report,
      guests: [...this.guestTable.values()].filter((g) => g.hostId === h.id).length,
    };
  }

  private guestView(g: GuestEntry): GuestView {
    const host = g.hostId ? this.hostTable.get(g.hostId) : undefined;
    const usage = host?.report?.guests.find((r) => r.id === g.id);
    const image = this.backups.record(g.id);
    return {
      id: g.id,
      name: g.name,
      kind: g.kind,
      state: g.state,
      hostId: g.hostId,
      hostName: host?.name ?? null,
      publish: g.publish,
      since: g.since,
      exitCode: g.exitCode,
      memoryBytes: usage?.memoryBytes ?? null,
      cpuMs: usage?.cpuMs ?? null,
      streams: this.connections.count(g.id),
      image: image ? { takenAt: image.takenAt, bytes: image.bytes } : null,
    };
  }
}
