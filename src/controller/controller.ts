/**
 * The Interface Controller (paper section IV-B), `roam host`: joins the Proxy with the join token,
 * reports the host's health at a regular interval, runs the guests the proxy deploys here, and
 * carries their connections as link streams. If the proxy goes away, the guests keep running and
 * the controller reconnects with backoff; their streams re-attach from their offsets.
 */
import net from 'node:net';
import { RoamError } from '../errors.js';
import { Guest, type GuestExit } from '../guest/guest.js';
import { TurnGate } from '../guest/turn-gate.js';
import { moveSource, type MoveSource } from '../migration/movable.js';
import { WasmGuest } from '../wasm/guest.js';
import { LinkSession } from '../link/session.js';
import type { LinkStream } from '../link/stream.js';
import { ROAM_VERSION } from '../version.js';
import { IMAGE_TIMEOUT_MS, readImage, writeImage } from '../link/image-stream.js';
import type {
  ConnectionFrame,
  ControlMessage,
  DeployMessage,
  ImageOpenFrame,
  OpenFrame,
  ReportMessage,
  RestoreMessage,
} from '../wire/index.js';
import type { HostGuest } from './hosted.js';
import { hostIdentity } from './identity.js';
import { resumeFromImage, takeImage } from './images.js';
import { HostSampler, measureBenchmark } from './metrics/index.js';
import { Moves } from './moves.js';
import { TunnelNetwork, type TunnelLink } from './tunnel-network.js';

export interface ControllerOptions {
  proxy: { host: string; port: number };
  joinToken: string;
  name: string;
  dataDir: string;
  advertise?: string;
  /** Port for direct transfers from other hosts (0: any free port). Default 0. */
  peerPort?: number;
  /** Address the peer port listens on. Default all interfaces. */
  peerBind?: string;
  /** How long leaving (close) waits for the proxy to move this host's guests away. Default 30 s. */
  drainTimeoutMs?: number;
  /** Measure the benchmark score at start (about a second of CPU). Default true. */
  benchmark?: boolean;
  /** Where the controller says what it does (never secrets); `fields` name the guest or move. */
  log?: (line: string, fields?: ControllerLogFields) => void;
}

/** Ids a controller log line is about (structured logs carry them as fields). */
export interface ControllerLogFields {
  guest?: string;
  migration?: string;
  level?: 'info' | 'warn' | 'error';
}

/** A guest this host runs: either kind, behind the interface both share, and its move side. */
interface HostedGuest {
  guest: HostGuest;
  movable: MoveSource;
  network: TunnelNetwork;
}

const EXITED_KEPT = 20;
const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;
/** Outbound stream ids are even; each controller starts at a random one so hosts rarely collide. */
const MAX_STREAM_ID = 0xffff_fffe;
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5000;

export class Controller implements TunnelLink {
  readonly hostId: string;
  private session: LinkSession | undefined;
  private readonly guests = new Map<string, HostedGuest>();
  /** Guests that ended, kept a while so their logs can still be read (the last EXITED_KEPT). */
  private readonly exited = new Map<string, HostGuest>();
  private readonly streams = new Map<number, LinkStream>();
  /** UDP flows on the current link, and the guest network each belongs to. */
  private readonly flows = new Map<number, TunnelNetwork>();
  private sampler: HostSampler | undefined;
  private benchmarkScore: number | undefined;
  private reportTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private backoff = BACKOFF_MIN_MS;
  private closing = false;
  /** Aborted when the controller closes: work in progress for a guest (instrumenting a module) stops. */
  private readonly closed = new AbortController();
  private nextOutbound = 2 * (1 + Math.floor(Math.random() * 0x3fff_0000));
  private readonly moves: Moves;
  /** Held during a move's pause: the guests here take no turns then (src/guest/turn-gate.ts). */
  private readonly turns = new TurnGate();
  private peerPort = 0;
  private drained: (() => void) | undefined;
  private joinedOnce: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private readonly log: (line: string, fields?: ControllerLogFields) => void;
  /** Guests whose backup image is being taken or sent (one at a time per guest). */
  private readonly imaging = new Set<string>();
  /** Restores the proxy asked for, waiting for their image stream. */
  private readonly restores = new Map<string, { message: RestoreMessage; timer: NodeJS.Timeout }>();

  private constructor(private readonly options: ControllerOptions) {
    this.hostId = hostIdentity(options.dataDir);
    this.log = options.log ?? (() => {});
    this.moves = new Moves({
      control: (message) => this.control(message),
      guest: (guestId) => this.guests.get(guestId),
      release: (guestId) => this.release(guestId),
      adopt: (guest, network) => this.adopt(guest, network),
      network: (guestId) => new TunnelNetwork(guestId, this),
      log: (line, fields) => this.log(line, fields),
      turns: this.turns,
    });
  }

  /** Starts the controller; resolves once it has joined the proxy (it keeps retrying until then). */
  static async start(options: ControllerOptions): Promise<Controller> {
    const controller = new Controller(options);
    if (options.benchmark !== false) controller.benchmarkScore = (await measureBenchmark()).score;
    controller.sampler = await HostSampler.create();
    controller.peerPort = await controller.moves.listen(options.peerPort ?? 0, options.peerBind ?? '0.0.0.0');
    try {
      await new Promise<void>((resolve, reject) => {
        controller.joinedOnce = { resolve, reject };
        controller.connect();
      });
    } catch (err) {
      // Refused: let go of everything this start opened, so the process can exit.
      controller.moves.close();
      controller.session?.destroy();
      throw err;
    }
    return controller;
  }

  get connected(): boolean {
    return this.session?.isOpen === true;
  }

  /** The port other hosts send guests to. */
  get peerPortNumber(): number {
    return this.peerPort;
  }

  /**
   * Asks the proxy to move this host's guests away and waits until it says it is done (or the
   * drain timeout passes). The host stays joined: `close()` leaves.
   */
  async drain(reason = 'the host is draining'): Promise<void> {
    if (!this.session?.isOpen || this.guests.size === 0) return;
    const timeoutMs = this.options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.log(`drain: ${this.guests.size} guest(s) still here after ${timeoutMs} ms; leaving anyway`);
        resolve();
      }, timeoutMs);
      this.drained = () => {
        clearTimeout(timer);
        resolve();
      };
      this.control({ type: 'drain', reason });
    });
    this.drained = undefined;
  }

  /** Moves the guests away (bounded by the drain timeout), leaves the proxy, and closes everything. */
  async close(reason = 'the host is shutting down'): Promise<void> {
    if (this.closing) return;
    await this.drain(reason);
    if (this.closing) return;
    this.closing = true;
    this.closed.abort();
    clearTimeout(this.reconnectTimer);
    clearInterval(this.reportTimer);
    this.moves.close();
    for (const { timer } of this.restores.values()) clearTimeout(timer);
    this.restores.clear();
    if (this.session?.isOpen) {
      this.control({ type: 'leave', reason });
      await new Promise((resolve) => setImmediate(resolve));
    }
    for (const { guest } of this.guests.values()) guest.stop('killed', 137);
    this.guests.clear();
    for (const stream of this.streams.values()) stream.destroy();
    this.session?.close();
  }

  // --- the link to the proxy ---

  private connect(): void {
    let joined = false;
    const { socket, session } = LinkSession.connect(this.options.proxy, {
      onFrame: (frame: ConnectionFrame) => {
        if (frame.type === 'welcome') {
          joined = true;
          this.onWelcome(session, frame.message.reportIntervalMs);
        } else if (frame.type === 'control') this.onControl(frame.message);
        else if (frame.type === 'goaway') {
          this.log(`the proxy closed the connection: ${frame.code}: ${frame.message}`, { level: 'warn' });
          if (frame.code === 'ROAM_ERR_UNAUTHORIZED' && !joined) {
            this.closing = true;
            this.joinedOnce?.reject(
              new RoamError('ROAM_ERR_UNAUTHORIZED', `the proxy refused to let this host join: ${frame.message}`),
            );
            this.joinedOnce = undefined;
          }
        }
      },
      onOpen: (frame: OpenFrame) => this.onInbound(session, frame),
      onImage: (frame: ImageOpenFrame) => void this.onImage(session, frame),
      onDatagram: (flowId: number, payload: Uint8Array) => this.flows.get(flowId)?.deliverDatagram(flowId, payload),
      onFlowReset: (flowId: number) => {
        this.flows.get(flowId)?.forgetFlow(flowId);
        this.flows.delete(flowId);
      },
      onClose: () => {
        if (this.session === session) this.session = undefined;
        // UDP keeps nothing across links: flows start again with the next datagram.
        for (const network of new Set(this.flows.values())) network.forgetAllFlows();
        this.flows.clear();
        clearInterval(this.reportTimer);
        if (!this.closing) this.scheduleReconnect();
      },
    });
    socket.once('connect', () => {
      session.send({
        type: 'hello',
        message: {
          type: 'join',
          protocol: 1,
          token: this.options.joinToken,
          hostId: this.hostId,
          name: this.options.name,
          version: ROAM_VERSION,
          ...(this.options.advertise ? { advertise: this.options.advertise } : {}),
          ...(this.peerPort ? { peerPort: this.peerPort } : {}),
        },
      });
    });
    this.session = session;
  }

  private scheduleReconnect(): void {
    const delay = this.backoff * (0.5 + Math.random() / 2);
    this.backoff = Math.min(BACKOFF_MAX_MS, this.backoff * 2);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  private onWelcome(session: LinkSession, reportIntervalMs: number): void {
    this.backoff = BACKOFF_MIN_MS;
    this.log(`joined the proxy at ${this.options.proxy.host}:${this.options.proxy.port} as ${this.options.name}`);
    // Streams from before a reconnect carry on from their offsets.
    for (const stream of this.streams.values()) session.attach(stream);
    this.moves.resend();
    this.report();
    clearInterval(this.reportTimer);
    this.reportTimer = setInterval(() => this.report(), reportIntervalMs);
    this.joinedOnce?.resolve();
    this.joinedOnce = undefined;
  }

  private control(message: ControlMessage): void {
    this.session?.send({ type: 'control', message });
  }

  private report(): void {
    if (!this.sampler) return;
    const metrics = this.sampler.sample();
    const message: ReportMessage = {
      type: 'report',
      intervalMs: metrics.intervalMs,
      cpu: metrics.cpu,
      memory: metrics.memory,
      network: metrics.network,
      cgroup: metrics.cgroup,
      guests: [...this.guests.entries()].map(([id, { guest }]) => ({
        id,
        name: guest.name,
        memoryBytes: guest.usage().memoryBytes,
        cpuMs: guest.usage().cpuMs,
        state:
          guest.state === 'exited'
            ? ('exited' as const)
            : guest.state === 'frozen'
              ? ('frozen' as const)
              : ('running' as const),
      })),
      ...(this.benchmarkScore !== undefined ? { benchmarkScore: this.benchmarkScore } : {}),
    };
    this.control(message);
  }

  private onControl(message: ControlMessage): void {
    if (this.moves.onControl(message)) return;
    switch (message.type) {
      case 'drained':
        this.log(`drain done: ${message.moved} guest(s) moved, ${message.failed} could not be`);
        this.drained?.();
        return;
      case 'deploy':
        void this.deploy(message);
        return;
      case 'backup':
        void this.backup(message.guestId);
        return;
      case 'restore': {
        clearTimeout(this.restores.get(message.guestId)?.timer);
        const timer = setTimeout(() => this.restores.delete(message.guestId), IMAGE_TIMEOUT_MS).unref();
        this.restores.set(message.guestId, { message, timer });
        return;
      }
      case 'stop': {
        const hosted = this.guests.get(message.guestId);
        hosted?.guest.stop('killed', 137);
        return;
      }
      case 'logs': {
        const guest = this.guests.get(message.guestId)?.guest ?? this.exited.get(message.guestId);
        const records = guest ? guest.log.tail(message.tail ?? 200) : [];
        this.control({
          type: 'logsResult',
          requestId: message.requestId,
          guestId: message.guestId,
          records: records.map((r) => ({ t: r.t, stream: r.stream, text: r.text.slice(0, 16 * 1024) })),
        });
        return;
      }
      default:
        return;
    }
  }

  // --- guests ---

  private async deploy(message: DeployMessage): Promise<void> {
    if (this.guests.has(message.guestId)) {
      this.control({ type: 'deployed', guestId: message.guestId });
      return;
    }
    const network = new TunnelNetwork(message.guestId, this);
    try {
      this.run(await this.startGuest(message, network), network);
      this.log(`started guest ${message.name}`, { guest: message.guestId });
      this.control({ type: 'deployed', guestId: message.guestId });
    } catch (err) {
      this.deployFailed(message.guestId, err);
    }
  }

  /** A guest this host runs from now on (deployed, resumed from an image, or moved here). */
  private run(guest: Guest | WasmGuest, network: TunnelNetwork): void {
    this.guests.set(guest.id, { guest, movable: moveSource(guest), network });
    void guest.exited.then((exit) => this.onExit(guest.id, exit));
  }

  /** The proxy's deploy or restore did not start the guest here: say why. */
  private deployFailed(guestId: string, err: unknown): void {
    this.control({
      type: 'deployFailed',
      guestId,
      code: err instanceof RoamError ? err.code : 'ROAM_ERR_SANDBOX',
      message: (err as Error).message.slice(0, 1000),
    });
  }

  // --- backup images ---

  /** Takes an image of a running guest (it pauses for the capture only) and sends it to the proxy. */
  private async backup(guestId: string): Promise<void> {
    const hosted = this.guests.get(guestId);
    const refuse = (code: string, message: string): void =>
      this.control({ type: 'backupFailed', guestId, code, message: message.slice(0, 1000) });
    if (!hosted || hosted.guest.state !== 'running' || this.moves.isLeaving(guestId) || this.imaging.has(guestId)) {
      refuse('ROAM_ERR_GUEST_STATE', `guest ${guestId} is not running here, or is moving, or is being imaged`);
      return;
    }
    const session = this.session;
    this.imaging.add(guestId);
    try {
      const t0 = performance.now();
      const { bytes, pauseMs } = await takeImage(hosted.guest);
      if (!session?.isOpen) throw new RoamError('ROAM_ERR_HOST_UNREACHABLE', 'the proxy went away');
      const stream = await session.open(this.allocateId(), { guest: guestId, direction: 'image', bytes: bytes.length });
      this.track(stream);
      await writeImage(stream, bytes, IMAGE_TIMEOUT_MS);
      this.log(
        `sent a backup image of ${hosted.guest.name}: ${(bytes.length / 1048576).toFixed(1)} MiB, ` +
          `paused ${pauseMs.toFixed(1)} ms, ${(performance.now() - t0).toFixed(0)} ms in all`,
        { guest: guestId },
      );
    } catch (err) {
      const e = err as Error & { code?: string };
      refuse(e.code ?? 'ROAM_ERR_IMAGE_TRANSFER', e.message);
    } finally {
      this.imaging.delete(guestId);
    }
  }

  /**
   * The image of a guest the proxy asked this host to resume (its own host was lost): read it,
   * resume the guest from it, and answer as a deploy is answered.
   */
  private async onImage(session: LinkSession, frame: ImageOpenFrame): Promise<void> {
    const pending = this.restores.get(frame.guest);
    if (!pending || this.guests.has(frame.guest)) {
      session.reject(frame, 'ROAM_ERR_CONFLICT', `no restore of guest ${frame.guest} is expected here`);
      return;
    }
    clearTimeout(pending.timer);
    this.restores.delete(frame.guest);
    const { message } = pending;
    const stream = session.accept(frame);
    this.track(stream);
    try {
      const bytes = await readImage(stream, frame.bytes, IMAGE_TIMEOUT_MS);
      const network = new TunnelNetwork(message.guestId, this, { fromBackup: true });
      const guest = await resumeFromImage(bytes, network, this.closed.signal, this.turns);
      if (guest.id !== message.guestId) {
        guest.stop();
        throw new RoamError('ROAM_ERR_IMAGE_MALFORMED', `the image is of guest ${guest.id}, not ${message.guestId}`);
      }
      this.run(guest, network);
      const age = Math.max(0, Math.round((Date.now() - message.takenAt) / 1000));
      this.log(`resumed ${message.name} from its backup image, taken ${age} s ago`, { guest: guest.id });
      this.control({ type: 'deployed', guestId: message.guestId });
    } catch (err) {
      this.deployFailed(message.guestId, err);
    }
  }

  /** Starts a deployed program: a JavaScript bundle, or a WebAssembly module. */
  private startGuest(message: DeployMessage, network: TunnelNetwork): Promise<Guest | WasmGuest> {
    const common = { id: message.guestId, name: message.name, env: message.env, argv: message.argv, network };
    if (message.wasm !== undefined) {
      // WASI preview1 cannot listen: each published TCP port is a listener opened before the
      // guest starts, its fd in ROAM_LISTEN_FDS (in the order the ports were first published).
      const ports = new Set(message.publish.filter((p) => p.protocol === 'tcp').map((p) => p.guest));
      const listen = [...ports].map((port) => ({ port, host: null }));
      return WasmGuest.start(Buffer.from(message.wasm, 'base64'), {
        ...common,
        listen,
        signal: this.closed.signal,
        gate: this.turns,
        ...(message.limits?.memoryBytes ? { memoryBytes: message.limits.memoryBytes } : {}),
      });
    }
    return Guest.start(message.bundle ?? '', {
      ...common,
      gate: this.turns,
      ...(message.limits ? { limits: message.limits } : {}),
    });
  }

  /** The guest moved to another host: forget it, and let its streams go without a reset. */
  private release(guestId: string): void {
    const hosted = this.guests.get(guestId);
    if (!hosted) return;
    this.guests.delete(guestId);
    const ids = hosted.network.release();
    this.session?.retire(ids);
    for (const id of ids) this.streams.delete(id);
  }

  /** A guest moved here (the proxy committed): run it, and carry its streams on from their offsets. */
  private adopt(guest: Guest | WasmGuest, network: TunnelNetwork): void {
    this.run(guest, network);
    for (const stream of network.takeRestored()) {
      this.track(stream);
      if (this.session?.isOpen) this.session.attach(stream, { guestId: guest.id });
    }
    this.log(`guest ${guest.name} moved here`, { guest: guest.id });
  }

  private onExit(guestId: string, exit: GuestExit): void {
    const hosted = this.guests.get(guestId);
    this.guests.delete(guestId);
    if (!hosted || this.closing) return;
    this.exited.set(guestId, hosted.guest);
    for (const old of this.exited.keys()) {
      if (this.exited.size <= EXITED_KEPT) break;
      this.exited.delete(old);
    }
    this.log(`guest ${hosted.guest.name} exited with code ${exit.code} (${exit.reason})`, { guest: guestId });
    this.control({
      type: 'guestExited',
      guestId,
      code: exit.code,
      reason: exit.reason,
      ...(exit.message ? { message: exit.message.slice(0, 1000) } : {}),
    });
  }

  // --- streams ---

  private onInbound(session: LinkSession, frame: OpenFrame): void {
    const hosted = this.guests.get(frame.guest);
    if (hosted && this.moves.isLeaving(frame.guest) && hosted.guest.state === 'frozen') {
      // Frozen for a move: the proxy holds the connection and opens it wherever the guest ends up.
      session.reject(frame, 'ROAM_ERR_MOVING', 'the guest is moving to another host');
      return;
    }
    if (frame.protocol === 'udp') {
      if (hosted && frame.direction === 'inbound' && hosted.network.acceptsFlow(frame)) {
        this.flows.set(frame.streamId, hosted.network);
        session.acceptFlow(frame);
      } else session.reject(frame, 'ECONNREFUSED', `no UDP socket on port ${frame.port} of this guest`);
      return;
    }
    if (!hosted || frame.direction !== 'inbound' || !hosted.network.accepts(frame.port)) {
      session.reject(frame, 'ECONNREFUSED', `nothing listens on port ${frame.port} of this guest`);
      return;
    }
    const stream = session.accept(frame);
    this.track(stream);
    hosted.network.deliver(frame, stream);
  }

  openOutbound(guestId: string, remote: { address: string; port: number }, attempt = 0): Promise<LinkStream> {
    const session = this.session;
    if (!session?.isOpen) {
      return Promise.reject(
        Object.assign(new Error(`connect ENETUNREACH ${remote.address}:${remote.port}: the proxy is not reachable`), {
          code: 'ENETUNREACH',
        }),
      );
    }
    const id = this.allocateId();
    const family = net.isIP(remote.address) === 6 ? ('IPv6' as const) : ('IPv4' as const);
    return session
      .open(id, { guest: guestId, protocol: 'tcp', direction: 'outbound', port: 0, remote: { ...remote, family } })
      .then(
        (stream) => {
          this.track(stream);
          return stream;
        },
        (err: Error & { code?: string }) => {
          // Another host's stream has this id (ids travel with moved guests): take another.
          if (err.code === 'ROAM_STREAM_EXISTS' && attempt < 8) return this.openOutbound(guestId, remote, attempt + 1);
          throw Object.assign(new Error(`connect ${err.code ?? 'ECONNREFUSED'} ${remote.address}:${remote.port}`), {
            code: err.code ?? 'ECONNREFUSED',
            syscall: 'connect',
            address: remote.address,
            port: remote.port,
          });
        },
      );
  }

  async openFlow(
    guestId: string,
    remote: { address: string; port: number },
    localPort: number,
    network: TunnelNetwork,
  ): Promise<number> {
    const session = this.session;
    if (!session?.isOpen) {
      throw Object.assign(new Error(`send ENETUNREACH ${remote.address}:${remote.port}: the proxy is not reachable`), {
        code: 'ENETUNREACH',
      });
    }
    const id = this.allocateId();
    const family = net.isIP(remote.address) === 6 ? ('IPv6' as const) : ('IPv4' as const);
    this.flows.set(id, network);
    try {
      await session.openFlow(id, {
        guest: guestId,
        protocol: 'udp',
        direction: 'outbound',
        port: localPort,
        remote: { ...remote, family },
      });
    } catch (err) {
      this.flows.delete(id);
      throw err;
    }
    return id;
  }

  sendDatagram(flowId: number, payload: Uint8Array): boolean {
    return this.session?.sendDatagram(flowId, payload) ?? false;
  }

  private allocateId(): number {
    do {
      this.nextOutbound = this.nextOutbound >= MAX_STREAM_ID ? 2 : this.nextOutbound + 2;
    } while (this.streams.has(this.nextOutbound) || this.flows.has(this.nextOutbound));
    return this.nextOutbound;
  }

  private track(stream: LinkStream): void {
    this.streams.set(stream.id, stream);
    stream.once('close', () => this.streams.delete(stream.id));
  }
}
