/**
 * One sandbox a target host prepares before any move asks for it (module compiled, instance made,
 * the runtime template loaded: about 20 ms of CPU here), so that accepting an offer waits only for
 * what depends on the offer. It is made when the host is ready for moves and again when a move
 * that took it is over, not during the move: a move in progress should not share the CPU with it.
 *
 * Its memory is the template's (about 5 MiB of it written), except for 30 s after a guest moved
 * away from here: then it is made as large as that guest's memory and faulted in (a slice at a
 * time, beside the guests running here), so that the next guest of that size to arrive (the same
 * one coming back, the next one of a drain made alike) is written into memory that is already
 * there. A first write to fresh memory costs about 0.65 ms per MiB on this machine, seven
 * times a warm copy: 65 ms for a 64-MiB guest's 100 MiB, or the whole "prepare" of a move without
 * pre-copy. The guest that left freed as much as the spare holds.
 */
import { Guest } from '../guest/guest.js';
import { DEFAULT_LIMITS, type Sandbox, type SandboxLimits } from '../guest/sandbox/sandbox.js';

/** After the move that took the spare: the moved guest's first turns come first. */
const REFILL_DELAY_MS = 50;
/** How long a spare stays grown to the size of a guest that moved away, unless a move takes it. */
const GROWN_KEEP_MS = 30_000;

export class SpareSandbox {
  private spare: Promise<Sandbox | undefined> | undefined;
  /** The memory the spare is (being) grown to; 0 for the template's size. */
  private spareBytes = 0;
  /** The size the next spare is made at. */
  private wantBytes = 0;
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

  /** A guest of `bytes` of memory moved away from here: make the spare that large for a while. */
  guestLeft(bytes: number): void {
    if (this.closed) return;
    // The last guest's size, not the largest: a spare larger than the guest that comes is no use.
    if (bytes !== this.wantBytes) {
      this.wantBytes = bytes;
      this.replaceSoon();
    }
    clearTimeout(this.shrinkTimer);
    this.shrinkTimer = setTimeout(() => {
      this.wantBytes = 0;
      this.replaceSoon();
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
        const bytes = this.wantedSize();
        this.spareBytes = bytes;
        // Faulted in a slice at a time: the guests that run here meanwhile keep their turns. A spare
        // that cannot be made is no error: the next move prepares its own.
        this.spare = Guest.prepareSandbox(this.limits, bytes > 0 ? bytes : undefined, 'in slices').catch(
          () => undefined,
        );
      }, REFILL_DELAY_MS);
      this.timer.unref();
    });
  }

  /** The spare is not the size wanted now: a new one replaces it. */
  private replaceSoon(): void {
    if (this.spare && this.spareBytes === this.wantedSize()) return;
    this.drop();
    this.refillSoon();
  }

  private wantedSize(): number {
    return Math.min(this.wantBytes, this.limits.memoryBytes);
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
