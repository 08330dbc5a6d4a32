/**
 * A WebAssembly guest: a WASI preview1 program, instrumented at load (instrument.ts), running on
 * this thread between turns of the event loop, with the same lifecycle as a JavaScript guest: run,
 * freeze and capture, resume, restore from an image, exit.
 *
 * The guest runs until it calls an import that must wait, or until a poll (every fuel interval of
 * loop iterations) finds that its time slice is over; then it unwinds (asyncify.ts) and the event
 * loop runs: sockets, timers, and a checkpoint if one was asked for. So whenever host code runs,
 * the guest is unwound, and `checkpoint()` can capture it right there, synchronously: its memory,
 * its mutable globals, the unwound stack and what it was waiting for.
 */
import { createHash, randomUUID } from 'node:crypto';
import { RoamError } from '../errors.js';
import { EXIT } from '../guest/exit-codes.js';
import type { Capture, ExitReason, GuestExit } from '../guest/guest.js';
import { VirtualClock } from '../guest/host/clock.js';
import { GuestLog, type LogSink } from '../guest/host/log.js';
import {
  catchUp,
  copyLive,
  decodeImage,
  restoreMemory,
  snapshotMemory,
  type ImageContents,
} from '../guest/image/index.js';
import { LoopbackNetwork } from '../guest/network/loopback.js';
import type { VirtualNetwork } from '../guest/network/types.js';
import type { TurnGate } from '../guest/turn-gate.js';
import { VirtualFileSystem } from '../guest/vfs.js';
import { ROAM_VERSION } from '../version.js';
import { Asyncify, asyncifyExports } from './asyncify.js';
import { instrument, readInfo, type InstrumentedInfo, type LoadOptions } from './instrument.js';
import {
  decodeGlobals,
  decodeParts,
  encodeGlobals,
  encodeParts,
  parseWasmState,
  type WasmParts,
  type WasmState,
} from './image.js';
import { ExitSignal } from './wasi/errno.js';
import { FdTable } from './wasi/fds.js';
import { Wasi, type Wait } from './wasi/preview1.js';
import { SeededRandom } from './wasi/random.js';
import { NetTable } from './wasi/sockets.js';

export interface WasmGuestOptions extends LoadOptions {
  id?: string;
  name?: string;
  /** Arguments after the program name. */
  argv?: string[];
  env?: Record<string, string>;
  network?: VirtualNetwork;
  onLog?: LogSink;
  /** Listeners opened before the guest starts; their fds are in ROAM_LISTEN_FDS (comma-separated). */
  listen?: Array<{ port: number; host: string | null }>;
  /** Largest linear memory the guest may have. Default 1 GiB. */
  memoryBytes?: number;
  /**
   * Longest the guest computes before the event loop gets a turn (and so the longest a checkpoint
   * or an arriving connection waits). Default 20 ms.
   */
  sliceMs?: number;
  /** The host's hold on guest turns (src/guest/turn-gate.ts): no slice starts while it is closed. */
  gate?: TurnGate;
}

export const DEFAULT_WASM_MEMORY_BYTES = 1024 * 1024 * 1024;
export const DEFAULT_SLICE_MS = 20;

type Phase = 'idle' | 'running' | 'suspended' | 'exited';

/** The parts of the WebAssembly JS API that Node's typings leave out. */
interface WasmGlobal {
  value: unknown;
}
const WasmApi = WebAssembly as unknown as {
  RuntimeError: new (message?: string) => Error;
  Instance: new (module: WebAssembly.Module, imports: Record<string, Record<string, unknown>>) => WebAssembly.Instance;
};

class Stopped extends Error {}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

interface Parts {
  module: WebAssembly.Module;
  moduleBytes: Uint8Array;
  info: InstrumentedInfo;
  clock: VirtualClock;
  files: VirtualFileSystem;
  log: GuestLog;
  random: SeededRandom;
  fds: FdTable;
  args: string[];
  env: Record<string, string>;
}

export class WasmGuest {
  readonly kind = 'wasm' as const;
  readonly id: string;
  readonly name: string;
  readonly log: GuestLog;
  readonly files: VirtualFileSystem;
  readonly exited: Promise<GuestExit>;
  readonly info: InstrumentedInfo;
  private readonly moduleBytes: Uint8Array;
  private readonly moduleSha256: string;
  private readonly module: WebAssembly.Module;
  private readonly clock: VirtualClock;
  private readonly random: SeededRandom;
  private readonly fds: FdTable;
  private readonly net: NetTable;
  private readonly args: string[];
  private readonly env: Record<string, string>;
  private readonly memoryLimit: number;
  private readonly sliceMs: number;
  private readonly gate: TurnGate | undefined;
  private instance!: WebAssembly.Instance;
  private memory!: WebAssembly.Memory;
  private asyncify!: Asyncify;
  private phase: Phase = 'idle';
  private frozen = true;
  private entryIndex = 0;
  private rewindPending = false;
  private suspension: { wait: Wait; data: unknown } | undefined;
  private resumeData: unknown;
  private sliceStart = 0;
  private cpuMs = 0;
  private wake: (() => void) | undefined;
  private resolveExit!: (exit: GuestExit) => void;
  private driving = false;

  private constructor(options: WasmGuestOptions, parts: Parts) {
    this.id = options.id ?? randomUUID();
    this.name = options.name ?? 'guest';
    this.module = parts.module;
    this.moduleBytes = parts.moduleBytes;
    this.moduleSha256 = sha256Hex(parts.moduleBytes);
    this.info = parts.info;
    this.clock = parts.clock;
    this.files = parts.files;
    this.log = parts.log;
    this.random = parts.random;
    this.fds = parts.fds;
    this.args = parts.args;
    this.env = parts.env;
    this.memoryLimit = options.memoryBytes ?? DEFAULT_WASM_MEMORY_BYTES;
    this.sliceMs = options.sliceMs ?? DEFAULT_SLICE_MS;
    this.gate = options.gate;
    this.net = new NetTable(options.network ?? new LoopbackNetwork(), () => this.wake?.());
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  /** Instruments (or finds in the cache) and starts a WASI program. */
  static async start(source: Uint8Array, options: WasmGuestOptions = {}): Promise<WasmGuest> {
    const instrumented = await instrument(source, options);
    const module = await WebAssembly.compile(instrumented.bytes);
    const clock = new VirtualClock();
    const name = options.name ?? 'guest';
    const fds = new FdTable();
    fds.set(0, { kind: 'stdio', flags: 0 });
    fds.set(1, { kind: 'stdio', flags: 0 });
    fds.set(2, { kind: 'stdio', flags: 0 });
    fds.set(3, { kind: 'dir', path: '/', preopen: '/', flags: 0 });
    const env = { ...options.env };
    const guest = new WasmGuest(options, {
      module,
      moduleBytes: instrumented.bytes,
      info: instrumented.info,
      clock,
      files: new VirtualFileSystem({ now: () => clock.wall() }),
      log: new GuestLog(undefined, options.onLog),
      random: new SeededRandom(),
      fds,
      args: [name, ...(options.argv ?? [])],
      env,
    });
    try {
      const listenFds: number[] = [];
      for (const request of options.listen ?? []) {
        const id = await guest.net.listen(request);
        listenFds.push(fds.add({ kind: 'listener', id, flags: 0 }));
      }
      if (listenFds.length) env['ROAM_LISTEN_FDS'] = listenFds.join(',');
      guest.instantiate();
    } catch (err) {
      guest.net.destroy();
      throw err;
    }
    guest.thaw();
    return guest;
  }

  /** Restores a guest from image bytes and lets it continue. Refuses a damaged image before anything runs. */
  static async restoreImage(bytes: Uint8Array, options: WasmGuestOptions = {}): Promise<WasmGuest> {
    const { contents } = await decodeImage(bytes);
    return WasmGuest.restore(contents, options);
  }

  /** Restores a guest from decoded image contents: the same module, memory, globals and stack, then a rewind. */
  static async restore(contents: ImageContents, options: WasmGuestOptions = {}): Promise<WasmGuest> {
    checkMeta(contents.meta);
    const state = parseWasmState(contents.state);
    const parts = decodeParts(contents.files);
    if (sha256Hex(parts.module) !== state.module.sha256) {
      throw new RoamError(
        'ROAM_ERR_IMAGE_MALFORMED',
        'malformed WebAssembly checkpoint image: the module does not match its hash',
      );
    }
    const memoryBytes = options.memoryBytes ?? state.limits.memoryBytes;
    if (contents.memory.byteLength > memoryBytes) {
      throw new RoamError(
        'ROAM_ERR_IMAGE_TOO_LARGE',
        `the image's ${contents.memory.byteLength} bytes of memory exceed the memory limit of ${memoryBytes}`,
      );
    }
    const module = await compileModule(parts.module);
    return WasmGuest.rebuild(
      contents.meta,
      state,
      { ...parts, module: parts.module },
      module,
      (memory) => {
        growTo(memory, contents.memory.byteLength);
        restoreMemory(contents.memory, new Uint8Array(memory.buffer));
      },
      { ...options, memoryBytes },
    );
  }

  /**
   * The target side of a move: builds a guest from the compiled module (sent ahead, so it compiled
   * while the guest still ran on the source), the memory the move's pages were written into
   * (starting from all zeros), and the host state. With `frozen`, it runs only after `resume()`.
   */
  static async assembleMoved(
    prepared: { module: WebAssembly.Module; moduleBytes: Uint8Array },
    memory: Uint8Array,
    contents: Omit<ImageContents, 'memory'>,
    options: WasmGuestOptions & { frozen?: boolean } = {},
  ): Promise<WasmGuest> {
    checkMeta(contents.meta);
    const state = parseWasmState(contents.state);
    const parts = decodeParts(contents.files);
    if (sha256Hex(prepared.moduleBytes) !== state.module.sha256) {
      throw new RoamError('ROAM_ERR_IMAGE_MALFORMED', 'the moved guest state names another module than the one sent');
    }
    const memoryBytes = options.memoryBytes ?? state.limits.memoryBytes;
    if (memory.byteLength > memoryBytes) {
      throw new RoamError(
        'ROAM_ERR_IMAGE_TOO_LARGE',
        `the moved guest's ${memory.byteLength} bytes of memory exceed its memory limit of ${memoryBytes}`,
      );
    }
    return WasmGuest.rebuild(
      contents.meta,
      state,
      { ...parts, module: prepared.moduleBytes },
      prepared.module,
      (target) => {
        growTo(target, memory.byteLength);
        // Every byte: the fresh instance's data segments are not what the guest's memory holds now.
        new Uint8Array(target.buffer).set(memory);
      },
      { ...options, memoryBytes },
    );
  }

  /** Rebuilds a captured guest around a compiled module; `load` fills its memory. */
  private static async rebuild(
    meta: ImageContents['meta'],
    state: WasmState,
    parts: WasmParts,
    module: WebAssembly.Module,
    load: (memory: WebAssembly.Memory) => void,
    options: WasmGuestOptions & { frozen?: boolean },
  ): Promise<WasmGuest> {
    const info = readInfo(module);
    if (state.entry.index >= info.entries.length) {
      throw new RoamError(
        'ROAM_ERR_IMAGE_MALFORMED',
        'malformed WebAssembly checkpoint image: entry index out of range',
      );
    }
    const globals = decodeGlobals(
      info.globals.map((g) => g.type),
      parts.globals,
    );
    const clock = new VirtualClock(state.clock);
    const files = VirtualFileSystem.deserialize(parts.files, { now: () => clock.wall() });
    const log = new GuestLog(undefined, options.onLog);
    log.restore(state.log);
    const guest = new WasmGuest(
      {
        ...options,
        id: meta.guestId,
        name: meta.name,
        sliceMs: options.sliceMs ?? state.limits.sliceMs,
      },
      {
        module,
        moduleBytes: parts.module,
        info,
        clock,
        files,
        log,
        random: new SeededRandom(state.random),
        fds: new FdTable(state.fds),
        args: state.args,
        env: state.env,
      },
    );
    try {
      guest.instantiate();
      guest.loadMemory(load, globals);
      guest.cpuMs = state.cpuMs;
      guest.entryIndex = state.entry.index;
      if (state.entry.started) {
        if (!state.suspended)
          throw new RoamError(
            'ROAM_ERR_IMAGE_MALFORMED',
            'malformed WebAssembly checkpoint image: a started guest without a suspension',
          );
        guest.asyncify.stack = parts.stack.slice();
        guest.rewindPending = true;
        guest.resumeData = state.suspended.data;
        guest.phase = 'suspended';
      }
      await guest.net.restore(state.net);
    } catch (err) {
      guest.net.destroy();
      throw err;
    }
    if (!options.frozen) guest.thaw();
    return guest;
  }

  get state(): 'running' | 'frozen' | 'exited' {
    return this.phase === 'exited' ? 'exited' : this.frozen ? 'frozen' : 'running';
  }

  usage(): { memoryBytes: number; cpuMs: number } {
    return { memoryBytes: this.memory.buffer.byteLength, cpuMs: this.cpuMs };
  }

  /** The address of a pre-opened listener, by its position in `options.listen`. */
  listenerAddress(index: number): { address: string; port: number } | null {
    const listeners = this.fds.all().filter(([, e]) => e.kind === 'listener');
    const entry = listeners[index]?.[1];
    return entry?.kind === 'listener' ? this.net.address(entry.id) : null;
  }

  /**
   * Freezes the guest where it is (unwound, between two slices or inside a waiting call) and
   * captures it. It stays frozen: `resume()` lets it go on, `stop()` ends it.
   */
  checkpoint(): Capture {
    const t0 = performance.now();
    const host = this.freezeForMove(true);
    const memory = snapshotMemory(new Uint8Array(this.memory.buffer));
    return { contents: { ...host, memory }, pauseMs: performance.now() - t0 };
  }

  /**
   * Captures the guest with a short pause, for a backup image: its memory is copied while it runs
   * (a slice of it between two of its slices), then it is frozen and unwound, the pages that
   * changed meanwhile are copied again, and it runs on.
   */
  async checkpointLive(sliceBytes?: number): Promise<Capture> {
    const copy = await copyLive(
      () => this.memoryView(),
      () => !this.frozen && this.phase !== 'exited',
      sliceBytes,
    );
    if (this.frozen || this.phase === 'exited') {
      // Frozen for a move meanwhile (which resumes it or takes it away), or ended: not ours to capture.
      throw new RoamError(
        'ROAM_ERR_GUEST_STATE',
        `cannot capture guest ${this.name}: it is ${this.phase === 'exited' ? 'exited' : 'frozen'}`,
      );
    }
    const t0 = performance.now();
    const host = this.freezeForMove(true);
    const memory = catchUp(this.memoryView(), copy);
    const pauseMs = performance.now() - t0;
    this.resume();
    return { contents: { ...host, memory: snapshotMemory(memory) }, pauseMs };
  }

  /**
   * Freezes the guest and captures everything but its memory (a move sends the memory as pages).
   * The module is left out of the files unless `withModule`: a move sends it ahead, in its offer.
   * The guest stays frozen.
   */
  freezeForMove(withModule = false): Omit<ImageContents, 'memory'> {
    if (this.phase === 'exited' || this.phase === 'running') {
      throw new RoamError(
        'ROAM_ERR_GUEST_STATE',
        `cannot checkpoint guest ${this.name}: it is ${this.phase === 'running' ? 'inside a host call' : 'exited'}`,
      );
    }
    this.frozen = true;
    const exports = this.instance.exports;
    const values = this.info.globals.map((g) => {
      const global = exports[g.export] as WasmGlobal;
      return global.value as number | bigint;
    });
    const started = this.phase === 'suspended';
    const state: WasmState = {
      format: 1,
      module: { sha256: this.moduleSha256, source: this.info.source },
      args: this.args,
      env: this.env,
      entry: { index: this.entryIndex, started },
      suspended:
        started && this.suspension
          ? { wait: this.suspension.wait, data: this.suspension.data ?? null }
          : started
            ? { wait: { kind: 'yield' }, data: this.resumeData ?? null }
            : null,
      fds: this.fds.capture(),
      net: this.net.capture(),
      clock: this.clock.capture(),
      random: this.random.capture(),
      log: this.log.capture(),
      cpuMs: this.cpuMs,
      limits: { memoryBytes: this.memoryLimit, sliceMs: this.sliceMs },
    };
    const files = encodeParts({
      module: withModule ? this.moduleBytes : new Uint8Array(0),
      files: this.files.serialize(),
      globals: encodeGlobals(
        this.info.globals.map((g) => g.type),
        values,
      ),
      stack: started ? (this.asyncify.stack ?? new Uint8Array(0)) : new Uint8Array(0),
    });
    return {
      meta: {
        kind: 'wasm',
        guestId: this.id,
        name: this.name,
        roamVersion: ROAM_VERSION,
        createdAt: new Date(state.clock.wall).toISOString(),
      },
      state,
      files,
    };
  }

  /** The guest's linear memory (live: a move reads its pages while the guest runs; a new view after a grow). */
  memoryView(): Uint8Array {
    return new Uint8Array(this.memory.buffer);
  }

  /** What a move's target needs to prepare before the memory comes: the instrumented module and the limits. */
  get moveInfo(): { moduleBytes: Uint8Array; sha256: string; memoryLimit: number; sliceMs: number } {
    return {
      moduleBytes: this.moduleBytes,
      sha256: this.moduleSha256,
      memoryLimit: this.memoryLimit,
      sliceMs: this.sliceMs,
    };
  }

  resume(): void {
    if (this.phase === 'exited' || !this.frozen) return;
    this.thaw();
  }

  /** Ends the guest now (it runs no more code), releasing its listeners and connections. Idempotent. */
  stop(reason: ExitReason = 'killed', code = 137): void {
    this.finish({ code, reason });
  }

  // --- internals ---

  private instantiate(): void {
    const wasi = new Wasi({
      args: this.args,
      env: this.env,
      fds: this.fds,
      files: this.files,
      clock: this.clock,
      log: this.log,
      random: this.random,
      net: this.net,
      memory: () => this.memory,
      cpuMs: () => this.cpuMs,
      ctl: {
        enter: () => {
          if (!this.asyncify.finishRewind()) return undefined;
          const data = this.resumeData;
          this.resumeData = undefined;
          return { data };
        },
        suspend: (wait, data) => {
          this.suspension = { wait, data: data ?? null };
          this.asyncify.startUnwind();
        },
      },
    });
    const imports = {
      wasi_snapshot_preview1: wasi.imports(),
      roam: { poll: () => this.poll() },
      env: {
        abort: (msg: number, file: number, line: number, column: number) => {
          const text = `abort: ${this.asString(msg)} at ${this.asString(file)}:${line}:${column}\n`;
          this.log.write({ t: this.clock.wall(), stream: 'err', text });
          throw new ExitSignal(EXIT.GUEST_UNCAUGHT);
        },
        seed: () => this.random.float() * 2 ** 52,
        trace: (msg: number, n: number, ...values: number[]) => {
          const text = `trace: ${this.asString(msg)}${values
            .slice(0, n)
            .map((v) => ` ${v}`)
            .join(',')}\n`;
          this.log.write({ t: this.clock.wall(), stream: 'err', text });
        },
      },
    };
    this.instance = new WasmApi.Instance(this.module, imports);
    const exports = this.instance.exports;
    const memory = Object.values(exports).find((e) => e instanceof WebAssembly.Memory);
    if (!(memory instanceof WebAssembly.Memory))
      throw new RoamError('ROAM_ERR_WASM_MODULE', 'the module exports no memory');
    this.memory = memory;
    this.asyncify = new Asyncify(asyncifyExports(exports), memory);
  }

  /** An AssemblyScript string (UTF-16, its byte length in the 4 bytes before it). */
  private asString(ptr: number): string {
    if (ptr === 0) return 'null';
    try {
      const view = new DataView(this.memory.buffer);
      const len = view.getUint32(ptr - 4, true);
      return Buffer.from(this.memory.buffer, ptr, Math.min(len, 4096)).toString('utf16le');
    } catch {
      return `<string at ${ptr}>`;
    }
  }

  private loadMemory(load: (memory: WebAssembly.Memory) => void, globals: Array<number | bigint>): void {
    load(this.memory);
    const exports = this.instance.exports;
    this.info.globals.forEach((g, i) => {
      (exports[g.export] as WasmGlobal).value = globals[i] ?? 0;
    });
  }

  /** The `roam.poll` import, called every fuel interval: ends the slice when it is over. */
  private poll(): void {
    if (this.asyncify.finishRewind()) return;
    if (this.memory.buffer.byteLength > this.memoryLimit) {
      throw new MemoryLimit();
    }
    if (performance.now() - this.sliceStart >= this.sliceMs) {
      this.suspension = { wait: { kind: 'yield' }, data: null };
      this.asyncify.startUnwind();
    }
  }

  private thaw(): void {
    this.frozen = false;
    this.wake?.();
    if (!this.driving) {
      this.driving = true;
      setImmediate(() => void this.drive());
    }
  }

  /** Runs the guest's entries to the end, slice by slice. */
  private async drive(): Promise<void> {
    try {
      await this.waitOut({ kind: 'yield' });
      const exports = this.instance.exports;
      while (this.entryIndex < this.info.entries.length) {
        const entry = exports[this.info.entries[this.entryIndex] ?? ''];
        if (typeof entry !== 'function') throw new RoamError('ROAM_ERR_WASM_MODULE', 'an entry export is missing');
        if (this.rewindPending) {
          this.rewindPending = false;
          this.asyncify.startRewind();
        }
        this.phase = 'running';
        this.suspension = undefined;
        this.sliceStart = performance.now();
        try {
          (entry as () => unknown)();
        } finally {
          this.cpuMs += performance.now() - this.sliceStart;
        }
        if (this.asyncify.finishUnwind()) {
          this.phase = 'suspended';
          // Set by the import that unwound (TypeScript cannot see that the call above changed it).
          const suspension = this.suspension as { wait: Wait; data: unknown } | undefined;
          await this.waitOut(suspension?.wait ?? { kind: 'yield' });
          this.resumeData = suspension?.data;
          this.rewindPending = true;
          continue;
        }
        this.entryIndex++;
      }
      this.finish({ code: EXIT.OK, reason: 'exit' });
    } catch (err) {
      this.onError(err);
    }
  }

  private onError(err: unknown): void {
    if (err instanceof Stopped || this.phase === 'exited') return;
    if (err instanceof ExitSignal) {
      this.finish({ code: err.code & 0xff, reason: 'exit' });
      return;
    }
    if (err instanceof MemoryLimit) {
      const message = `guest ${this.name} was stopped: it exceeded its memory limit of ${this.memoryLimit} bytes`;
      this.log.write({ t: this.clock.wall(), stream: 'err', text: `roam: ${message}\n` });
      this.finish({ code: EXIT.MEMORY_LIMIT, reason: 'memory-limit', message });
      return;
    }
    if (err instanceof WasmApi.RuntimeError || err instanceof RangeError) {
      this.asyncify.abandon();
      const message = `guest ${this.name} trapped: ${err.message}`;
      this.log.write({ t: this.clock.wall(), stream: 'err', text: `roam: ${message}\n${err.stack ?? ''}\n` });
      this.finish({ code: EXIT.GUEST_UNCAUGHT, reason: 'uncaught', message });
      return;
    }
    const message = `internal error in guest ${this.name}: ${String(err)}`;
    this.log.write({ t: this.clock.wall(), stream: 'err', text: `roam: ${message}\n` });
    this.finish({ code: EXIT.INTERNAL, reason: 'internal', message });
  }

  /** Resolves when the wait is over and the guest is not frozen; rejects with Stopped when it is stopped. */
  private async waitOut(wait: Wait): Promise<void> {
    if (wait.kind === 'yield') await new Promise<void>((resolve) => setImmediate(resolve));
    for (;;) {
      if (this.phase === 'exited') throw new Stopped();
      if (!this.frozen && this.ready(wait)) {
        if (this.gate?.closed !== true) return;
        // A move's pause on this host: the slice starts once the gate opens (or the guest stops).
        await new Promise<void>((resolve) => {
          this.wake = () => {
            this.wake = undefined;
            resolve();
          };
          this.gate?.whenOpen(() => this.wake?.());
        });
        continue;
      }
      await new Promise<void>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        this.wake = () => {
          this.wake = undefined;
          if (timer) clearTimeout(timer);
          resolve();
        };
        if (!this.frozen && wait.kind === 'io' && wait.until !== null) {
          timer = setTimeout(() => this.wake?.(), Math.max(0, Math.ceil(wait.until - this.clock.mono())));
        }
      });
    }
  }

  private ready(wait: Wait): boolean {
    if (wait.kind === 'yield') return true;
    if (wait.until !== null && this.clock.mono() >= wait.until) return true;
    return wait.read.some((id) => this.net.readable(id)) || wait.write.some((id) => this.net.writable(id));
  }

  private finish(exit: GuestExit): void {
    if (this.phase === 'exited') return;
    this.phase = 'exited';
    this.net.destroy();
    this.wake?.();
    this.resolveExit(exit);
  }
}

class MemoryLimit extends Error {}

function checkMeta(meta: ImageContents['meta']): void {
  if (meta.kind !== 'wasm') {
    throw new RoamError('ROAM_ERR_IMAGE_MALFORMED', `this is an image of a ${meta.kind} guest, not a WebAssembly one`);
  }
  if (meta.roamVersion !== ROAM_VERSION) {
    throw new RoamError(
      'ROAM_ERR_IMAGE_VERSION',
      `unsupported version: this image was made by Roam ${meta.roamVersion}, and this is Roam ${ROAM_VERSION}; resume it with the same version`,
    );
  }
}

/** Compiles a module that came with an image or a move (it was instrumented where it came from). */
export async function compileModule(bytes: Uint8Array): Promise<WebAssembly.Module> {
  try {
    return await WebAssembly.compile(bytes);
  } catch (err) {
    throw new RoamError(
      'ROAM_ERR_IMAGE_MALFORMED',
      `malformed WebAssembly checkpoint image: its module does not compile (${String(err)})`,
      { cause: err },
    );
  }
}

/** Grows a fresh instance's memory to a captured size (never less than the module's initial). */
function growTo(memory: WebAssembly.Memory, want: number): void {
  const have = memory.buffer.byteLength;
  if (want < have || want % 65536 !== 0) {
    throw new RoamError(
      'ROAM_ERR_IMAGE_MALFORMED',
      `malformed WebAssembly checkpoint image: ${want} bytes of memory, not a whole number of pages at least the module's initial ${have}`,
    );
  }
  try {
    if (want > have) memory.grow((want - have) / 65536);
  } catch (err) {
    throw new RoamError('ROAM_ERR_IMAGE_TOO_LARGE', `the module's memory cannot grow to the image's ${want} bytes`, {
      cause: err,
    });
  }
}

/** Restores a guest from image bytes already decoded elsewhere; re-exported for the CLI. */
export { decodeImage };
