/**
 * One sandbox a target host prepares before any move asks for it (module compiled, instance made,
 * the runtime template loaded: about 20 ms of CPU here), so that accepting an offer waits only for
 * what depends on the offer. It costs one idle sandbox's memory (the template, about 5 MiB). It is
 * made when the host is ready for moves and again when a move that took it is over, not during
 * the move: a move in progress should not share the CPU with it.
 */
import { Guest } from '../guest/guest.js';
import { DEFAULT_LIMITS, type Sandbox, type SandboxLimits } from '../guest/sandbox/sandbox.js';

/** After the move that took the spare: the moved guest's first turns come first. */
const REFILL_DELAY_MS = 50;

export class SpareSandbox {
  private spare: Promise<Sandbox | undefined> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly limits: SandboxLimits = DEFAULT_LIMITS) {}

  /**
   * A sandbox for a move whose guest has `limits`, with its memory grown to `expectedBytes` and
   * faulted in when given: the spare if it is ready and fits, else a new one.
   */
  async take(limits: SandboxLimits, expectedBytes?: number): Promise<Sandbox> {
    const spare = this.fits(limits) ? this.spare : undefined;
    if (spare) this.spare = undefined;
    const ready = await spare;
    if (!ready) return Guest.prepareSandbox(limits, expectedBytes);
    if (expectedBytes !== undefined) ready.prefault(expectedBytes);
    return ready;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    const spare = this.spare;
    this.spare = undefined;
    void spare?.then((sandbox) => sandbox?.dispose());
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
    if (this.closed || this.spare) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (this.closed || this.spare) return;
      // A spare that cannot be made is no error: the next move prepares its own.
      this.spare = Guest.prepareSandbox(this.limits).catch(() => undefined);
    }, REFILL_DELAY_MS);
    this.timer.unref();
  }
}
