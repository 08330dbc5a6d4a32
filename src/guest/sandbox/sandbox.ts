/**
 * The guest sandbox (the paper's JVM): one QuickJS runtime and context in a WebAssembly instance
 * that owns its linear memory. The guest reaches the outside world through exactly one host
 * function, `__roam_host`, and the host reaches the guest through `__roam_dispatch`, a function
 * the guest runtime installs. Everything else the guest has lives in the linear memory, which is
 * why a byte copy of that memory is a complete checkpoint of the guest's JavaScript state.
 *
 * The sandbox runs in the controller's thread, not in a worker: measured with bench/host-call.ts
 * (2 cores, Node 20), a guest's host call costs 8 µs in-process while a bare postMessage round
 * trip to a worker costs 21 µs, so every event and call crossing threads would cost about 3x.
 * A guest turn that runs too long is cut off by the interrupt handler (the CPU budget), so one
 * guest cannot hold the controller for long.
 *
 * Restoring relies on determinism: a fresh instance that goes through the same setup sequence
 * (runtime, limits, interrupt handler, context, host function) holds its C and JavaScript-side
 * wrappers at the same addresses as the one that was captured, so overwriting its memory with
 * the captured bytes yields the captured guest. `create()` is that one sequence; keep it fixed.
 */
import type { QuickJSContext, QuickJSHandle, QuickJSRuntime } from 'quickjs-emscripten-core';
import { RoamError } from '../../errors.js';
import { zeroOtherPages } from '../image/memory.js';
import { breakAddress, heapEnd } from './heap-end.js';
import { WASM_PAGE, instantiate, type Instance } from './module.js';

export interface SandboxLimits {
  /** Ceiling on the guest's linear memory, in bytes: everything the guest holds lives in it. */
  memoryBytes: number;
  /** Longest a single guest turn may run before it is interrupted, in milliseconds. */
  cpuBudgetMs: number;
  /** Native stack available to guest code, in bytes. */
  stackBytes: number;
}

export const DEFAULT_LIMITS: SandboxLimits = {
  memoryBytes: 256 * 1024 * 1024,
  cpuBudgetMs: 5000,
  stackBytes: 1024 * 1024,
};

/** What a host call may return to the guest. */
export type HostValue = string | number | boolean | Uint8Array | undefined | null;

/** Thrown by a host call to raise an error inside the guest (like a failed syscall in Node). */
export class GuestVisibleError extends Error {
  constructor(
    message: string,
    readonly props: Record<string, string | number | undefined> = {},
  ) {
    super(message);
  }
}

export type HostCallHandler = (op: string, args: readonly HostValue[]) => HostValue | void;

/** Why a guest entry did not complete normally. */
export type Interruption =
  { kind: 'cpu-budget'; elapsedMs: number } | { kind: 'exit'; code: number } | { kind: 'killed' };

export class GuestFault extends Error {
  constructor(
    message: string,
    readonly interruption?: Interruption,
  ) {
    super(message);
  }
}

export class Sandbox {
  /** Where the guest's host calls go; set by the guest that owns this sandbox. */
  onHostCall: HostCallHandler = (op) => {
    throw new Error(`host call ${op} before the sandbox was given to a guest`);
  };
  /** Which base memory (runtime template) was last loaded into this sandbox, if any. */
  loadedBase: string | undefined;
  private dispatchFn: QuickJSHandle | undefined;
  private turnStart = 0;
  private pendingInterrupt: Interruption | undefined;
  private disposed = false;
  private memoryReleased = false;
  /** How much of the memory is known to be backed (`prefault` touches only beyond). */
  private faultedBytes = 0;
  /** The allocator's break variable (heap-end.ts), if found. */
  private breakAt: number | undefined;

  private constructor(
    private readonly instance: Instance,
    private readonly runtime: QuickJSRuntime,
    private readonly context: QuickJSContext,
    readonly limits: SandboxLimits,
  ) {}

  /**
   * Boots a sandbox, its memory `initialBytes` large from the start when given, on `reuse` when
   * given (a departed guest's memory, zeroed in full: spare.ts). The sequence of calls here is the
   * layout contract restore depends on (the memory's size is not part of it).
   */
  static async create(limits: SandboxLimits, initialBytes = 0, reuse?: WebAssembly.Memory): Promise<Sandbox> {
    // Zeroed in full, every page of a reused memory is backed.
    const backed = reuse?.buffer.byteLength ?? 0;
    const [instance, breakAt] = await Promise.all([
      instantiate(limits.memoryBytes, initialBytes, reuse),
      breakAddress(),
    ]);
    const runtime = instance.qjs.newRuntime();
    // QuickJS counts requested bytes, not what the allocator really uses, so its limit is a second
    // line: the linear memory's maximum is the limit that bites first.
    runtime.setMemoryLimit(limits.memoryBytes);
    runtime.setMaxStackSize(limits.stackBytes);
    const context = runtime.newContext();
    const sandbox = new Sandbox(instance, runtime, context, limits);
    sandbox.faultedBytes = backed;
    sandbox.breakAt = breakAt;
    runtime.setInterruptHandler(() => sandbox.shouldInterrupt());
    const host = context.newFunction('__roam_host', (opHandle, ...argHandles) =>
      sandbox.hostCall(opHandle, argHandles),
    );
    context.setProp(context.global, '__roam_host', host);
    host.dispose();
    return sandbox;
  }

  get memory(): WebAssembly.Memory {
    return this.instance.memory;
  }

  /** Runs a script at the top level (the guest runtime, then the guest's bundle). */
  evalScript(code: string, filename: string): void {
    this.enter(() => this.context.evalCode(code, filename, { type: 'global' }));
  }

  /** Delivers one event to the guest runtime's dispatcher and runs the promise jobs it queued. */
  dispatch(kind: string, ...args: HostValue[]): void {
    this.dispatchFn ??= this.context.getProp(this.context.global, '__roam_dispatch');
    const fn = this.dispatchFn;
    this.enter(() => {
      const handles = [this.context.newString(kind), ...args.map((a) => this.toGuest(a))];
      try {
        return this.context.callFunction(fn, this.context.undefined, ...handles);
      } finally {
        for (const h of handles) h.dispose();
      }
    });
  }

  /** Asks the running turn to stop as soon as QuickJS checks for interrupts (process.exit, kill). */
  interrupt(reason: Interruption): void {
    this.pendingInterrupt ??= reason;
  }

  /** Bytes of linear memory in use (the high-water mark: WebAssembly memory never shrinks). */
  get memoryBytes(): number {
    return this.instance.memory.buffer.byteLength;
  }

  /**
   * How much of its heap limit QuickJS has allocated. Read from the engine's own report, which is
   * built without touching the guest's heap, so it works right after an out-of-memory failure.
   */
  heapUsage(): { allocated: number; limit: number } {
    const report = this.runtime.dumpMemoryUsage();
    const limit = Number(/malloc limit: (\d+)/.exec(report)?.[1] ?? this.limits.memoryBytes);
    const allocated = Number(/memory allocated\s+\d+\s+(\d+)/.exec(report)?.[1] ?? 0);
    return { allocated, limit };
  }

  /** Whether the guest's memory is (nearly) exhausted: what an out-of-memory failure looks like. */
  nearMemoryLimit(): boolean {
    // The allocator grows memory with some overgrowth and gives up when that does not fit, so a
    // guest that ran out stops short of the exact maximum. (Checked first: the engine's report
    // itself needs a little free memory.)
    if (this.memoryBytes >= this.limits.memoryBytes * 0.9) return true;
    const { allocated, limit } = this.heapUsage();
    return allocated >= limit - Math.max(1 << 20, limit * 0.05);
  }

  /**
   * Where the guest's heap ends (page-aligned): no byte at or past it is in use. The whole memory
   * when the allocator's break could not be found (heap-end.ts).
   */
  heapEnd(): number {
    return heapEnd(this.memoryView(), this.breakAt, WASM_PAGE);
  }

  /** A live view of the whole linear memory. Copy it before the guest runs again. */
  memoryView(): Uint8Array {
    return new Uint8Array(this.instance.memory.buffer);
  }

  /**
   * Makes room for a captured memory of `byteLength` bytes and returns a view to overwrite.
   * Call on a freshly created sandbox, before any guest code ran in it.
   */
  prepareRestore(byteLength: number): Uint8Array {
    if (byteLength > this.limits.memoryBytes) {
      throw new RoamError(
        'ROAM_ERR_GUEST_MEMORY_LIMIT',
        `the image holds ${byteLength} bytes of guest memory, more than this guest's limit of ${this.limits.memoryBytes} bytes; raise --memory-limit`,
      );
    }
    this.instance.growTo(byteLength);
    this.dispatchFn = undefined;
    return this.memoryView();
  }

  /**
   * Grows the memory to `byteLength` keeping its contents exactly, the new part zero: what a move's
   * target must hold for the pages the source does not send. (The guest's allocator does the
   * growing, and writes its bookkeeping as it goes; that is put back.)
   */
  grow(byteLength: number): Uint8Array {
    const before = this.memoryBytes;
    if (byteLength <= before) return this.memoryView();
    const saved = this.memoryView().slice();
    this.prepareRestore(byteLength);
    const view = this.memoryView();
    view.set(saved);
    zeroOtherPages(new Uint32Array(0), view.subarray(before));
    return view;
  }

  /**
   * Grows the memory to `byteLength` (contents kept) and faults its pages in (a write per OS page,
   * of the byte already there), so that a restore into it later copies instead of faulting.
   */
  prefault(byteLength: number): void {
    const view = this.grow(byteLength);
    if (view.length <= this.faultedBytes) return; // (touching 16 MiB that is backed costs 0.3 ms)
    for (let i = 0; i < view.length; i += 4096) view[i] = view[i] ?? 0;
    this.faultedBytes = view.length;
  }

  /** After overwriting the memory: the limits live in it, so set this sandbox's limits again. */
  finishRestore(): void {
    this.runtime.setMemoryLimit(this.limits.memoryBytes);
    this.runtime.setMaxStackSize(this.limits.stackBytes);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    // The context and runtime live inside the instance's memory, which is dropped with it; freeing
    // them one by one would only walk a heap that is about to disappear (and asserts on leaks).
    this.dispatchFn = undefined;
  }

  /**
   * A disposed sandbox's memory, once, for a new sandbox with the same limits to be made on (see
   * SpareSandbox): nothing runs in this one any more (`enter` refuses), so its memory is free.
   */
  releaseMemory(): WebAssembly.Memory | undefined {
    if (!this.disposed || this.memoryReleased) return undefined;
    this.memoryReleased = true;
    return this.instance.memory;
  }

  private enter(run: () => ReturnType<QuickJSContext['evalCode']>): void {
    if (this.disposed) throw new RoamError('ROAM_ERR_GUEST_STATE', 'the guest sandbox has been disposed');
    this.turnStart = performance.now();
    const result = run();
    if (result.error) {
      const err = this.describe(result.error);
      result.error.dispose();
      throw new GuestFault(err, this.pendingInterrupt);
    }
    result.value.dispose();
    this.drainJobs();
  }

  /** Runs promise jobs until none is left, as Node does after each callback. */
  private drainJobs(): void {
    for (;;) {
      const jobs = this.runtime.executePendingJobs(-1);
      if (jobs.error) {
        const err = this.describe(jobs.error);
        jobs.error.dispose();
        throw new GuestFault(err, this.pendingInterrupt);
      }
      if (jobs.value === 0 || !this.runtime.hasPendingJob()) return;
    }
  }

  private shouldInterrupt(): boolean {
    if (this.pendingInterrupt) return true;
    const elapsedMs = performance.now() - this.turnStart;
    if (elapsedMs > this.limits.cpuBudgetMs) {
      this.pendingInterrupt = { kind: 'cpu-budget', elapsedMs };
      return true;
    }
    return false;
  }

  private hostCall(
    opHandle: QuickJSHandle | undefined,
    argHandles: QuickJSHandle[],
  ): QuickJSHandle | { error: QuickJSHandle } {
    const ctx = this.context;
    if (!opHandle || this.pendingInterrupt) return ctx.undefined;
    const op = ctx.getString(opHandle);
    const args = argHandles.map((h) => this.fromGuest(h));
    try {
      return this.toGuest(this.onHostCall(op, args));
    } catch (err) {
      const error = ctx.newError(err instanceof Error ? err.message : String(err));
      if (err instanceof GuestVisibleError) {
        for (const [k, v] of Object.entries(err.props)) {
          if (v === undefined) continue;
          const h = typeof v === 'number' ? ctx.newNumber(v) : ctx.newString(v);
          ctx.setProp(error, k, h);
          h.dispose();
        }
      } else {
        // A bug on our side, not the guest's: keep it visible on the host too.
        process.emitWarning(`roam: host call ${op} failed: ${err instanceof Error ? err.stack : String(err)}`);
      }
      return { error };
    }
  }

  private fromGuest(h: QuickJSHandle): HostValue {
    const ctx = this.context;
    switch (ctx.typeof(h)) {
      case 'string':
        return ctx.getString(h);
      case 'number':
        return ctx.getNumber(h);
      case 'boolean':
        return ctx.dump(h) === true;
      case 'undefined':
        return undefined;
      case 'object': {
        if (ctx.dump(ctx.null) === null && this.isNull(h)) return null;
        const lifetime = ctx.getArrayBuffer(h);
        try {
          return lifetime.value.slice();
        } finally {
          lifetime.dispose();
        }
      }
      default:
        return undefined;
    }
  }

  private isNull(h: QuickJSHandle): boolean {
    return this.context.sameValue(h, this.context.null);
  }

  private toGuest(v: HostValue | void): QuickJSHandle {
    const ctx = this.context;
    if (v === undefined) return ctx.undefined;
    if (v === null) return ctx.null;
    if (typeof v === 'string') return ctx.newString(v);
    if (typeof v === 'number') return ctx.newNumber(v);
    if (typeof v === 'boolean') return v ? ctx.true : ctx.false;
    return ctx.newArrayBuffer(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength));
  }

  private describe(errHandle: QuickJSHandle): string {
    const ctx = this.context;
    const dumped: unknown = ctx.dump(errHandle);
    if (dumped && typeof dumped === 'object') {
      const e = dumped as { name?: unknown; message?: unknown; stack?: unknown };
      const name = typeof e.name === 'string' ? e.name : 'Error';
      const head = `${name}: ${typeof e.message === 'string' ? e.message : ''}`;
      return typeof e.stack === 'string' && e.stack ? `${head}\n${e.stack}` : head;
    }
    return String(dumped);
  }
}
