/**
 * A guest: a sandbox plus the host side of everything it can do (clock, timers, console, process,
 * network, files), with the lifecycle the controller needs: start from a bundle, run, freeze and
 * capture between two event-loop turns, resume, restore from an image, exit.
 *
 * Every event reaches the guest through `deliver`, one at a time, from a host callback; so when
 * host code runs, the guest is always between turns, and `checkpoint()` can freeze it right there.
 */
import { randomFillSync, randomUUID } from 'node:crypto';
import { RoamError } from '../errors.js';
import { EXIT } from './exit-codes.js';
import type { HostBinding, HostOp } from './host/binding.js';
import { VirtualClock } from './host/clock.js';
import { GuestLog, type LogSink } from './host/log.js';
import { IdAllocator, NetHost } from './host/net.js';
import { TimerSchedule } from './host/timers.js';
import { runtimeTemplate, type RuntimeBase } from './template.js';
import { yieldToLoop } from './image/work.js';
import {
  applyPages,
  catchUp,
  copyLive,
  decodeImageInto,
  restoreMemory,
  snapshotMemory,
  type ImageContents,
  type MemorySnapshot,
} from './image/index.js';
import { LoopbackNetwork } from './network/loopback.js';
import type { VirtualNetwork } from './network/types.js';
import { DEFAULT_LIMITS, GuestFault, Sandbox, type HostValue, type SandboxLimits } from './sandbox/sandbox.js';
import type { TurnGate } from './turn-gate.js';
import { VirtualFileSystem } from './vfs.js';
import { FsHost } from './host/fs.js';
import { DgramHost } from './host/dgram.js';
import { ROAM_VERSION } from '../version.js';
import { decodeHeld, encodeHeld, parseGuestState, type GuestState } from './state-schema.js';

export type { GuestState };

/**
 * Longest a move waits, after the freeze, for the guest's outbound connects that are still
 * opening (a round trip to the proxy and the proxy's connect to the peer). A connect slower than
 * that ends with an error on the target, as it would if the network failed it.
 */
export const CONNECT_SETTLE_MS = 2000;

export interface GuestOptions {
  id?: string;
  name?: string;
  argv?: string[];
  env?: Record<string, string>;
  limits?: Partial<SandboxLimits>;
  network?: VirtualNetwork;
  onLog?: LogSink;
  /** The host's hold on guest turns (see TurnGate): while it is closed, this guest takes none. */
  gate?: TurnGate;
}

/**
 * Loads the runtime template into a sandbox's memory (grown to at least `byteLength`). In a `fresh`
 * sandbox made that large, the memory beyond the template was never written (booting writes less
 * than the template holds), so only the template's part is compared and rewritten: reading the
 * rest would fault in every page of it.
 */
function loadBase(sandbox: Sandbox, base: RuntimeBase, byteLength: number, fresh = false): Uint8Array {
  const view = sandbox.prepareRestore(Math.max(byteLength, base.snapshot.byteLength));
  restoreMemory(base.snapshot, fresh ? view.subarray(0, base.snapshot.byteLength) : view);
  sandbox.loadedBase = base.id;
  return view;
}

/**
 * The memory an image's pages go into: for an image stored against the runtime template, the
 * sandbox must hold that template first (a prepared sandbox already does). An image against
 * another template was made by another build of Roam, and is refused.
 */
async function memoryFor(sandbox: Sandbox, meta: ImageContents['meta'], byteLength: number): Promise<Uint8Array> {
  if (meta.roamVersion !== ROAM_VERSION) {
    throw new RoamError(
      'ROAM_ERR_IMAGE_VERSION',
      `unsupported version: this image was made by Roam ${meta.roamVersion}, and this is Roam ${ROAM_VERSION}; resume it with the same version`,
    );
  }
  if (meta.base === undefined) return sandbox.prepareRestore(byteLength);
  const base = await runtimeTemplate();
  if (base.id !== meta.base) {
    throw new RoamError(
      'ROAM_ERR_IMAGE_VERSION',
      `unsupported version: this image is stored against runtime ${meta.base}, and this Roam's runtime is ${base.id}; resume it with the Roam build that made it`,
    );
  }
  if (sandbox.loadedBase === base.id && sandbox.memoryBytes >= byteLength) return sandbox.prepareRestore(byteLength);
  return loadBase(sandbox, base, byteLength);
}

export interface RestoreOptions extends GuestOptions {
  /** A sandbox made by `Guest.prepareSandbox` with the image's limits (else one is made now). */
  sandbox?: Sandbox;
}

export type ExitReason = 'exit' | 'uncaught' | 'memory-limit' | 'cpu-budget' | 'killed' | 'internal';

export interface GuestExit {
  code: number;
  reason: ExitReason;
  message?: string;
}

export type GuestStatus = 'running' | 'frozen' | 'exited';

/** A moved guest whose host side is built and whose memory is still arriving: see `Guest.beginMoved`. */
export interface MovedGuest {
  /** Every page is in: the guest, whole (frozen if asked). */
  land(): Guest;
  /** The pages never came whole: the guest ends without having run. */
  drop(): void;
}

/** A frozen guest's state, captured in memory (the pause ends when this exists). */
export interface Capture {
  contents: ImageContents;
  /** Milliseconds from freeze until the capture was complete. */
  pauseMs: number;
}

interface Parts {
  clock: VirtualClock;
  log: GuestLog;
  files: VirtualFileSystem;
}

export class Guest {
  /** A JavaScript guest (the controller also runs WebAssembly ones, src/wasm/guest.ts). */
  readonly kind = 'js' as const;
  readonly id: string;
  readonly name: string;
  readonly limits: SandboxLimits;
  readonly log: GuestLog;
  readonly files: VirtualFileSystem;
  readonly exited: Promise<GuestExit>;
  private status: GuestStatus = 'frozen';
  private sandbox!: Sandbox;
  private readonly clock: VirtualClock;
  private readonly timers: TimerSchedule;
  private readonly net: NetHost;
  private readonly dgram: DgramHost;
  private readonly fs: FsHost;
  private readonly bindings: HostBinding[];
  private readonly ops = new Map<string, HostOp>();
  private readonly held: Array<[string, HostValue[]]> = [];
  private immediatePending = false;
  private immediateHandle: NodeJS.Immediate | undefined;
  private rejectionsPending = false;
  private livenessCheck: NodeJS.Immediate | undefined;
  private sawBeforeExit = false;
  private exitRequested: number | undefined;
  private fatal: { kind: string; text: string } | undefined;
  private resolveExit!: (exit: GuestExit) => void;
  private cpuMs = 0;
  /** The runtime template this guest's images are stored against. */
  private base!: RuntimeBase;
  private argv: string[];
  private readonly network: VirtualNetwork;
  private readonly gate: TurnGate | undefined;
  /** Its sockets stopped reading because the gate closed (its bindings frozen, the guest not). */
  private gatePaused = false;

  private constructor(options: GuestOptions, limits: SandboxLimits, parts: Parts) {
    this.id = options.id ?? randomUUID();
    this.name = options.name ?? 'guest';
    this.limits = limits;
    this.argv = options.argv ?? [];
    this.clock = parts.clock;
    this.log = parts.log;
    this.files = parts.files;
    this.network = options.network ?? new LoopbackNetwork();
    this.gate = options.gate;
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
    const deliver = (kind: string, ...args: HostValue[]): void => this.deliver(kind, args);
    const ids = new IdAllocator();
    this.timers = new TimerSchedule(this.clock, (id) => this.deliver('timer', [id]));
    this.net = new NetHost(this.network, ids, deliver);
    this.dgram = new DgramHost(this.network, ids, deliver);
    this.fs = new FsHost(this.files, deliver);
    this.bindings = [this.net, this.dgram, this.fs];
    for (const [op, fn] of Object.entries(this.coreOps())) this.ops.set(op, fn);
    for (const b of this.bindings) for (const [op, fn] of Object.entries(b.ops())) this.ops.set(op, fn);
  }

  /** Boots a new guest from a bundled program (see bundle.ts) and starts running it. */
  static async start(bundleCode: string, options: GuestOptions = {}): Promise<Guest> {
    const limits = { ...DEFAULT_LIMITS, ...options.limits };
    const clock = new VirtualClock();
    const guest = new Guest(options, limits, {
      clock,
      log: new GuestLog(undefined, options.onLog),
      files: new VirtualFileSystem({ now: () => clock.wall() }),
    });
    guest.base = await runtimeTemplate();
    const sandbox = await Sandbox.create(limits);
    // Booting a sandbox writes fresh memory, dear in page faults (about 60 ms here, many times that
    // on a busy machine): the host's other work (its reports to the proxy) gets a turn between steps.
    await yieldToLoop();
    loadBase(sandbox, guest.base, guest.base.snapshot.byteLength);
    await yieldToLoop();
    guest.attach(sandbox);
    sandbox.finishRestore();
    guest.thaw();
    guest.deliver('seed', []);
    guest.deliver('init', [JSON.stringify(guest.bootInfo(options))]);
    if (guest.status === 'running') {
      try {
        guest.sandbox.evalScript(`globalThis.__roam_main = function () {\n${bundleCode}\n};`, 'roam:main');
      } catch (err) {
        guest.finish({ code: EXIT.GUEST_UNCAUGHT, reason: 'uncaught', message: `${String(err)}` });
        return guest;
      }
      guest.deliver('main', []);
    }
    return guest;
  }

  /**
   * Restores a guest from an image's contents into a fresh sandbox and resumes it. The memory
   * continues exactly; host-side state is rebuilt from the image.
   */
  static async restore(contents: ImageContents, options: RestoreOptions = {}): Promise<Guest> {
    const state = parseGuestState(contents.state);
    const sandbox = await Guest.sandboxFor(state, options);
    try {
      const view = await memoryFor(sandbox, contents.meta, contents.memory.byteLength);
      if (contents.meta.base === undefined) restoreMemory(contents.memory, view);
      else applyPages(contents.memory, view);
    } catch (err) {
      sandbox.dispose();
      throw err;
    }
    return Guest.assemble(contents.meta, state, contents.files, sandbox, options, await runtimeTemplate());
  }

  /**
   * Restores a guest from image bytes, decoding its memory straight into the sandbox (no
   * intermediate copy): the fast path of a restore. Refuses a damaged image before the guest runs.
   */
  static async restoreImage(bytes: Uint8Array, options: RestoreOptions = {}): Promise<Guest> {
    // Filled in by the decoder's callback, once the state (and so the limits) is known.
    const made: { sandbox?: Sandbox; state?: GuestState } = {};
    try {
      const decoded = await decodeImageInto(bytes, async (byteLength, raw, meta) => {
        made.state = parseGuestState(raw);
        made.sandbox = await Guest.sandboxFor(made.state, options);
        return memoryFor(made.sandbox, meta, byteLength);
      });
      if (!made.sandbox || !made.state) throw new RoamError('ROAM_ERR_SANDBOX', 'the image decoded without a sandbox');
      return Guest.assemble(decoded.meta, made.state, decoded.files, made.sandbox, options, await runtimeTemplate());
    } catch (err) {
      made.sandbox?.dispose();
      throw err;
    }
  }

  /**
   * Boots an empty sandbox ahead of a restore (compiled module, instance, runtime), so that the
   * restore itself is only the copy of the image's memory: the target side of a move calls this
   * before the source freezes. Given the size of the memory to come, it also grows the memory and
   * faults its pages in now rather than during the restore. `reuse`: an all-zero memory a disposed
   * sandbox with these limits released, to be made on instead of a new one (its pages are backed).
   */
  static async prepareSandbox(
    limits: Partial<SandboxLimits> = {},
    expectedBytes?: number,
    faultIn: 'now' | 'no' = 'now',
    reuse?: WebAssembly.Memory,
  ): Promise<Sandbox> {
    const sandbox = await Sandbox.create({ ...DEFAULT_LIMITS, ...limits }, expectedBytes, reuse);
    const base = await runtimeTemplate();
    const fresh = sandbox.memoryBytes >= Math.max(expectedBytes ?? 0, base.snapshot.byteLength);
    loadBase(sandbox, base, Math.max(expectedBytes ?? 0, base.snapshot.byteLength), fresh);
    if (expectedBytes !== undefined && faultIn === 'now') sandbox.prefault(expectedBytes);
    return sandbox;
  }

  /**
   * A moved guest, in two steps: this rebuilds its host side (state, files, log, timers,
   * connections) from the image's meta, state and files as soon as they arrive, while the move is
   * still writing its last pages (against the runtime template) into `sandbox`; `land()` then hands
   * it the sandbox, once every page is in. With `frozen`, it does not run until `resume()`: a move's
   * target waits for the proxy to commit first. `drop()` ends it if the pages never come whole.
   */
  static async beginMoved(
    sandbox: Sandbox,
    contents: Omit<ImageContents, 'memory'>,
    options: RestoreOptions & { frozen?: boolean } = {},
  ): Promise<MovedGuest> {
    const state = parseGuestState(contents.state);
    const base = await runtimeTemplate();
    if (contents.meta.roamVersion !== ROAM_VERSION || contents.meta.base !== base.id) {
      throw new RoamError(
        'ROAM_ERR_IMAGE_VERSION',
        `unsupported version: the guest comes from Roam ${contents.meta.roamVersion} (runtime ${contents.meta.base ?? 'none'}), and this is Roam ${ROAM_VERSION} (runtime ${base.id})`,
      );
    }
    const guest = Guest.build(contents.meta, state, contents.files, sandbox.limits, options, base);
    return {
      land: () => {
        guest.land(sandbox, options.frozen === true);
        return guest;
      },
      drop: () => guest.stop('killed', 0),
    };
  }

  /** The prepared sandbox if it has the limits this guest needs, else a new one. */
  private static async sandboxFor(state: GuestState, options: RestoreOptions): Promise<Sandbox> {
    const limits = { ...state.limits, ...options.limits };
    const prepared = options.sandbox;
    if (
      prepared &&
      prepared.limits.memoryBytes === limits.memoryBytes &&
      prepared.limits.stackBytes === limits.stackBytes
    ) {
      prepared.limits.cpuBudgetMs = limits.cpuBudgetMs;
      return prepared;
    }
    prepared?.dispose();
    return Sandbox.create(limits);
  }

  /** Builds the guest around a sandbox whose memory holds the image's, and lets it run. */
  private static assemble(
    meta: ImageContents['meta'],
    state: GuestState,
    filesImage: Uint8Array,
    sandbox: Sandbox,
    options: RestoreOptions & { frozen?: boolean },
    base: RuntimeBase,
  ): Guest {
    let guest: Guest;
    try {
      guest = Guest.build(meta, state, filesImage, sandbox.limits, options, base);
    } catch (err) {
      sandbox.dispose();
      throw err;
    }
    guest.land(sandbox, options.frozen === true);
    return guest;
  }

  /**
   * A restored guest's host side, from the image's state and files, frozen and without a sandbox:
   * nothing here reads guest memory, so it can be built while the memory is still being written.
   */
  private static build(
    meta: ImageContents['meta'],
    state: GuestState,
    filesImage: Uint8Array,
    limits: SandboxLimits,
    options: RestoreOptions,
    base: RuntimeBase,
  ): Guest {
    const clock = new VirtualClock(state.clock);
    const files = VirtualFileSystem.deserialize(filesImage, { now: () => clock.wall() });
    const log = new GuestLog(undefined, options.onLog);
    log.restore(state.log);
    const guest = new Guest({ ...options, id: meta.guestId, name: meta.name, argv: state.argv }, limits, {
      clock,
      log,
      files,
    });
    guest.cpuMs = state.cpuMs;
    guest.base = base;
    // Before anything the restore itself says: these happened first. (Frozen, the guest holds
    // what they deliver until it runs.)
    guest.held.push(...decodeHeld(state.held));
    guest.timers.restore(state.timers);
    guest.net.restore(state.net);
    guest.dgram.restore(state.dgram);
    guest.immediatePending = state.immediatePending;
    return guest;
  }

  /** Gives a built guest its sandbox, whose memory holds the image's; it runs unless `frozen`. */
  private land(sandbox: Sandbox, frozen: boolean): void {
    this.attach(sandbox);
    sandbox.finishRestore();
    if (frozen) this.freeze();
    else this.thaw();
  }

  get state(): GuestStatus {
    return this.status;
  }

  /** Memory and CPU the guest has used, for the host's reports. */
  usage(): { memoryBytes: number; cpuMs: number } {
    return { memoryBytes: this.sandbox.memoryBytes, cpuMs: this.cpuMs };
  }

  /**
   * Freezes the guest between two turns and captures it. The guest stays frozen: call `resume()`
   * to let it go on, or `stop()` when the capture moves elsewhere.
   */
  checkpoint(): Capture {
    const t0 = performance.now();
    this.freezeForCapture();
    const memory: MemorySnapshot = snapshotMemory(this.sandbox.memoryView(), this.base.full, this.sandbox.heapEnd());
    const contents: ImageContents = { ...this.captureHost(), memory };
    return { contents, pauseMs: performance.now() - t0 };
  }

  /**
   * Captures the guest with a short pause, for a backup image: its memory is copied in slices while
   * it runs (it gets a turn between slices), then, frozen, only the pages that changed since are
   * copied again (found by comparing contents, as pre-copy does) with the host state; it runs on
   * at once. Pause: a compare of every page, what changed, and the host state, not a copy of all.
   */
  async checkpointLive(sliceBytes?: number): Promise<Capture> {
    const view = (): Uint8Array => this.sandbox.memoryView();
    const copy = await copyLive(view, () => this.status === 'running', sliceBytes);
    const t0 = performance.now();
    this.freezeForCapture(); // refuses a guest that exited or froze for a move meanwhile
    const end = this.sandbox.heapEnd();
    const memory = catchUp(view(), copy, end);
    const host = this.captureHost();
    const pauseMs = performance.now() - t0;
    this.thaw();
    return { contents: { ...host, memory: snapshotMemory(memory, this.base.full, end) }, pauseMs };
  }

  /**
   * Freezes the guest and captures everything but its memory (a move sends the memory as pages
   * against what the target already holds). The guest stays frozen. Outbound connects still
   * opening get up to `settleMs` to finish first, so that they move as open connections.
   */
  async freezeForMove(settleMs = CONNECT_SETTLE_MS): Promise<Omit<ImageContents, 'memory'>> {
    this.freezeForCapture();
    if (this.net.connectsInFlight > 0) await this.net.settle(settleMs);
    if (this.status !== 'frozen') {
      throw new RoamError('ROAM_ERR_GUEST_STATE', `cannot move guest ${this.name}: it is ${this.status}`);
    }
    return this.captureHost();
  }

  /** Outbound connections still opening. */
  get connectsInFlight(): number {
    return this.net.connectsInFlight;
  }

  /** The guest's linear memory (live: a move reads its pages while the guest runs). */
  memoryView(): Uint8Array {
    return this.sandbox.memoryView();
  }

  /** Where the guest's heap ends now: no page at or past it is in use (sandbox/heap-end.ts). */
  heapEnd(): number {
    return this.sandbox.heapEnd();
  }

  /** The runtime template this guest's memory is stored against. */
  get runtimeBase(): RuntimeBase {
    return this.base;
  }

  private freezeForCapture(): void {
    if (this.status !== 'running') {
      throw new RoamError('ROAM_ERR_GUEST_STATE', `cannot checkpoint guest ${this.name}: it is ${this.status}`);
    }
    this.freeze();
  }

  private captureHost(): Omit<ImageContents, 'memory'> {
    const state: GuestState = {
      limits: this.limits,
      argv: this.argv,
      clock: this.clock.capture(),
      timers: this.timers.capture(),
      immediatePending: this.immediatePending,
      net: this.net.capture(),
      dgram: this.dgram.capture(),
      log: this.log.capture(),
      cpuMs: this.cpuMs,
      ...(this.held.length > 0 ? { held: encodeHeld(this.held) } : {}),
    };
    return {
      meta: {
        kind: 'js',
        guestId: this.id,
        name: this.name,
        roamVersion: ROAM_VERSION,
        base: this.base.id,
        createdAt: new Date(state.clock.wall).toISOString(),
      },
      state,
      files: this.files.serialize(),
    };
  }

  /** Lets a frozen guest run again. */
  resume(): void {
    if (this.status !== 'frozen') return;
    this.thaw();
  }

  /** Once the guest has exited: its sandbox's memory, for a new sandbox to reuse (Sandbox.releaseMemory). */
  releaseMemory(): WebAssembly.Memory | undefined {
    return this.status === 'exited' ? this.sandbox.releaseMemory() : undefined;
  }

  /** Stops the guest now (it gets no exit event), releasing everything it holds. */
  stop(reason: ExitReason = 'killed', code = 137): void {
    if (this.status === 'exited') return;
    this.finish({ code, reason });
  }

  private attach(sandbox: Sandbox): void {
    this.sandbox = sandbox;
    sandbox.onHostCall = (op, args) => this.hostCall(op, args);
  }

  // --- the event loop ---

  private freeze(): void {
    this.status = 'frozen';
    this.timers.freeze();
    for (const b of this.bindings) b.freeze?.();
    if (this.immediateHandle) clearImmediate(this.immediateHandle);
    this.immediateHandle = undefined;
    if (this.livenessCheck) clearImmediate(this.livenessCheck);
    this.livenessCheck = undefined;
  }

  /**
   * Something arrived while the host's gate is closed: held until it opens. Its sockets stop
   * reading meanwhile, as a frozen guest's do, so that what is held stays bounded (the guest cannot
   * pause a stream that outpaces it while it takes no turns).
   */
  private waitForGate(): void {
    if (!this.gatePaused) {
      this.gatePaused = true;
      for (const b of this.bindings) b.freeze?.();
    }
    this.gate?.whenOpen(this.releaseHeld);
  }

  /** The gate opened: what arrived while it was closed runs now, in order (a frozen guest's waits for thaw). */
  private readonly releaseHeld = (): void => {
    if (this.status !== 'running') return;
    if (this.gate?.closed === true) {
      this.gate.whenOpen(this.releaseHeld); // closed again before this ran
      return;
    }
    if (this.gatePaused) {
      this.gatePaused = false;
      for (const b of this.bindings) b.thaw?.();
    }
    for (const [kind, args] of this.held.splice(0)) this.deliver(kind, args);
    this.scheduleLivenessCheck();
  };

  private thaw(): void {
    this.status = 'running';
    this.timers.thaw();
    this.gatePaused = false;
    for (const b of this.bindings) b.thaw?.();
    if (this.immediatePending) this.scheduleImmediate();
    // Events that arrived while frozen, in their order.
    const held = this.held.splice(0);
    for (const [kind, args] of held) this.deliver(kind, args);
    this.scheduleLivenessCheck();
  }

  private deliver(kind: string, args: HostValue[]): void {
    if (this.status === 'exited') return;
    if (this.status === 'frozen' || this.gate?.closed === true) {
      this.held.push([kind, args]);
      if (this.status === 'running') this.waitForGate();
      return;
    }
    this.turn(kind, args);
    if (this.status === 'running' && this.rejectionsPending) {
      this.rejectionsPending = false;
      this.turn('rejections', []);
    }
    this.scheduleLivenessCheck();
  }

  private turn(kind: string, args: HostValue[]): void {
    const t0 = performance.now();
    try {
      this.sandbox.dispatch(kind, ...args);
    } catch (err) {
      this.onFault(err);
    } finally {
      this.cpuMs += performance.now() - t0;
    }
    if (this.exitRequested !== undefined && this.status !== 'exited') this.onExitRequested(this.exitRequested);
  }

  private onFault(err: unknown): void {
    if (!(err instanceof GuestFault)) {
      this.finish({ code: EXIT.INTERNAL, reason: 'internal', message: String(err) });
      return;
    }
    const why = err.interruption;
    if (why?.kind === 'exit') return; // handled after the turn
    if (why?.kind === 'cpu-budget') {
      const message = `guest ${this.name} was stopped: a single turn ran for more than its CPU budget of ${this.limits.cpuBudgetMs} ms (synchronous code that never yields)`;
      this.log.write({ t: this.clock.wall(), stream: 'err', text: `roam: ${message}\n` });
      this.finish({ code: EXIT.CPU_BUDGET, reason: 'cpu-budget', message });
      return;
    }
    // An error the guest runtime could not route (for example, out of memory while reporting one).
    this.reportFatal('uncaught', err.message);
  }

  private reportFatal(kind: string, text: string): void {
    if (this.sandbox.nearMemoryLimit()) {
      const message = `guest ${this.name} was stopped: it exceeded its memory limit of ${this.limits.memoryBytes} bytes`;
      this.log.write({ t: this.clock.wall(), stream: 'err', text: `roam: ${message}\n` });
      this.finish({ code: EXIT.MEMORY_LIMIT, reason: 'memory-limit', message });
      return;
    }
    this.log.write({ t: this.clock.wall(), stream: 'err', text: text.endsWith('\n') ? text : `${text}\n` });
    this.finish({ code: EXIT.GUEST_UNCAUGHT, reason: 'uncaught', message: text.split('\n')[0] ?? kind });
  }

  private onExitRequested(code: number): void {
    if (this.fatal) {
      const { kind, text } = this.fatal;
      this.fatal = undefined;
      this.reportFatal(kind, text);
      return;
    }
    this.finish({ code, reason: 'exit' });
  }

  private scheduleImmediate(): void {
    this.immediatePending = true;
    this.immediateHandle ??= setImmediate(() => {
      this.immediateHandle = undefined;
      this.immediatePending = false;
      this.deliver('immediate', []);
    });
  }

  /** After the turns of this tick: with nothing left to wait for, the guest exits, as Node does. */
  private scheduleLivenessCheck(): void {
    if (this.status !== 'running') return;
    this.livenessCheck ??= setImmediate(() => {
      this.livenessCheck = undefined;
      if (this.status !== 'running' || this.alive()) return;
      if (!this.sawBeforeExit) {
        this.sawBeforeExit = true;
        this.deliver('beforeExit', []);
        if (this.status !== 'running' || this.alive()) {
          this.sawBeforeExit = false;
          return;
        }
      }
      this.deliver('exit', []);
    });
  }

  private alive(): boolean {
    if (this.immediatePending || this.held.length > 0 || this.timers.refCount > 0) return true;
    return this.bindings.some((b) => (b.refCount ?? 0) > 0);
  }

  private finish(exit: GuestExit): void {
    if (this.status === 'exited') return;
    this.status = 'exited';
    this.timers.close();
    for (const b of this.bindings) b.close?.();
    if (this.immediateHandle) clearImmediate(this.immediateHandle);
    if (this.livenessCheck) clearImmediate(this.livenessCheck);
    this.held.length = 0;
    this.sandbox?.dispose();
    this.resolveExit(exit);
  }

  // --- host calls ---

  private hostCall(op: string, args: readonly HostValue[]): HostValue | void {
    if (this.status === 'exited' || this.exitRequested !== undefined) return undefined;
    const fn = this.ops.get(op);
    if (!fn) throw new Error(`unknown host operation ${op}`);
    return fn(args);
  }

  private coreOps(): Record<string, HostOp> {
    return {
      log: ([stream, text]) => {
        this.log.write({ t: this.clock.wall(), stream: stream === 'err' ? 'err' : 'out', text: String(text) });
      },
      'clock.wall': () => this.clock.wall(),
      'clock.mono': () => this.clock.mono(),
      'clock.cpu': () => this.cpuMs,
      memory: () => JSON.stringify({ rss: this.sandbox.memoryBytes, heapUsed: this.sandbox.memoryBytes }),
      random: ([n]) => {
        const size = Math.min(Math.max(0, Number(n) | 0), 65536);
        return randomFillSync(new Uint8Array(size));
      },
      'utf8.encode': ([s]) => Buffer.from(String(s), 'utf8'),
      'utf8.decode': ([bytes, fatal, ignoreBOM]) => {
        const decoder = new TextDecoder('utf-8', { fatal: fatal === true, ignoreBOM: ignoreBOM === true });
        return decoder.decode(bytes as Uint8Array);
      },
      'timer.set': ([id, delay, ref]) => this.timers.set(Number(id), Number(delay), ref !== false),
      'timer.clear': ([id]) => this.timers.clear(Number(id)),
      'timer.ref': ([id, ref]) => this.timers.ref(Number(id), ref === true),
      immediate: () => this.scheduleImmediate(),
      'rejections.pending': () => {
        this.rejectionsPending = true;
      },
      fatal: ([kind, text]) => {
        this.fatal = { kind: String(kind), text: String(text) };
      },
      exit: ([code]) => {
        this.exitRequested = Number(code) & 0xff;
        this.sandbox.interrupt({ kind: 'exit', code: this.exitRequested });
      },
    };
  }

  private bootInfo(options: GuestOptions): object {
    return {
      argv: ['/roam/guest', `/app/${this.name}`, ...this.argv],
      env: options.env ?? {},
      cwd: '/',
      pid: 1,
      platform: 'linux',
      arch: 'wasm32',
      version: 'v20.0.0',
    };
  }
}
