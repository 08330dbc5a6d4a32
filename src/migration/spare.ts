/**
 * One sandbox a target host prepares before any move asks for it (module compiled, instance made,
 * the runtime template loaded: about 20 ms of CPU here), so that accepting an offer waits only for
 * what depends on the offer. It is made when the host is ready for moves and again when a move
 * that took it is over, not during the move: a move in progress should not share the CPU with it.
 *
 * For 30 s after a guest moved away from here, the spare is made on that guest's memory instead:
 * zeroed a slice at a time (beside the guests running here), a fresh instance made on it and the
 * template loaded. The next guest of that size to arrive (the same one coming back, a guest moving
 * in as another moves out) is then written into memory that is already backed: a first write to
 * fresh memory costs about 0.65 ms per MiB on this machine, seven times a warm copy (65 ms for a
 * 64-MiB guest's 100 MiB, the whole "prepare" of a move without pre-copy). Zeroing it costs about
 * a seventh of that (10.5 ms for 100 MiB against 70). (Spares faulted in afresh, as before, kept
 * each host of bench:migrate busy for about 100 ms after every move, and the next move waited on
 * them: BENCHMARKS.md, session 8.)
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Guest } from '../guest/guest.js';
import { DEFAULT_LIMITS, type Sandbox, type SandboxLimits } from '../guest/sandbox/sandbox.js';

/** After the move that took the spare: the moved guest's first turns come first. */
const REFILL_DELAY_MS = 50;
/** How long a spare made on a departed guest's memory is kept, unless a move takes it. */
const GROWN_KEEP_MS = 30_000;
/** A departed guest's memory is zeroed this much at a time, the guests here running between. */
const ZERO_SLICE_BYTES = 8 * 1024 * 1024;

export class SpareSandbox {
  private spare: Promise<Sandbox | undefined> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private refilling: Promise<void> | undefined;
  private refilled: (() => void) | undefined;
  private shrinkTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly limits: SandboxLimits = DEFAULT_LIMITS) {}

  /**
   * A sandbox for a move whose guest has `limits` and `need.bytes` of memory, faulted in to that
   * size with `need.faultIn`: the spare if its limits and size suit the guest, else a new one.
   */
  async take(limits: SandboxLimits, need: { bytes: number; faultIn: boolean }): Promise<Sandbox> {
    const spare = this.fits(limits) ? this.spare : undefined;
    if (spare) this.spare = undefined;
    const ready = await spare;
    // Only a spare of the guest's size exactly: its memory must be the size it was on the source
    // (a larger one would grow it at every move), and growing a sandbox costs a copy of it.
    if (ready && ready.memoryBytes === need.bytes) {
      if (need.faultIn) ready.prefault(need.bytes);
      return ready;
    }
    if (ready) this.putBack(ready);
    return Guest.prepareSandbox(limits, need.bytes, need.faultIn ? 'now' : 'no');
  }

  /**
   * A guest moved away from here and left `memory` behind (its sandbox disposed, with `limits`):
   * the spare is made on it, for a while. (It replaces the spare there was even when that one is
   * of the same size: that one's memory is not backed yet.)
   */
  guestLeft(memory: WebAssembly.Memory, limits: SandboxLimits): void {
    if (this.closed || !this.fits(limits)) return;
    this.drop();
    const grown = recycled(memory, this.limits).catch(() => undefined);
    this.spare = grown;
    clearTimeout(this.shrinkTimer);
    this.shrinkTimer = setTimeout(() => {
      // Nobody came: the memory goes back to the OS, and a spare of the template's size replaces it.
      if (this.spare !== grown) return; // a move took it (or a later guest's replaced it)
      this.drop();
      this.refillSoon();
    }, GROWN_KEEP_MS);
    this.shrinkTimer.unref();
  }

  /** Resolves once the spare asked for last is made (or could not be): for tests. */
  async settled(): Promise<void> {
    this.timer?.ref(); // someone waits for it now
    await this.refilling;
    await this.spare;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.refilled?.();
    clearTimeout(this.shrinkTimer);
    this.drop();
  }

  private fits(limits: SandboxLimits): boolean {
    return (
      limits.memoryBytes === this.limits.memoryBytes &&
      limits.cpuBudgetMs === this.limits.cpuBudgetMs &&
      limits.stackBytes === this.limits.stackBytes
    );
  }

  /** Makes a spare shortly, if there is none (call when the host is ready, and after each move here). */
  refillSoon(): void {
    if (this.closed || this.spare || this.timer) return;
    this.refilling = new Promise<void>((resolve) => {
      this.refilled = resolve;
      this.timer = setTimeout(() => {
        this.timer = undefined;
        resolve();
        if (this.closed || this.spare) return;
        // A spare that cannot be made is no error: the next move prepares its own.
        this.spare = Guest.prepareSandbox(this.limits).catch(() => undefined);
      }, REFILL_DELAY_MS);
      this.timer.unref();
    });
  }

  /** A spare that did not suit one move may suit the next. */
  private putBack(sandbox: Sandbox): void {
    if (this.spare || this.closed) sandbox.dispose();
    else this.spare = Promise.resolve(sandbox);
  }

  private drop(): void {
    const spare = this.spare;
    this.spare = undefined;
    void spare?.then((sandbox) => sandbox?.dispose());
  }
}

/** A sandbox with the runtime template, made on a departed guest's `memory` once it is zeroed. */
async function recycled(memory: WebAssembly.Memory, limits: SandboxLimits): Promise<Sandbox> {
  const view = new Uint8Array(memory.buffer);
  for (let from = 0; from < view.length; from += ZERO_SLICE_BYTES) {
    view.fill(0, from, from + ZERO_SLICE_BYTES);
    await nextTurn();
  }
  return Guest.prepareSandbox(limits, view.length, 'no', memory);
}
