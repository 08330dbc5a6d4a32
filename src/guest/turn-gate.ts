/**
 * A host-wide hold on guest turns. Every guest of a host runs on its controller's one thread, so
 * while a move is in its pause (the source froze the guest; the target has not resumed it), the
 * move's steps wait behind whatever turns the host's other guests take: a guest that computes for
 * 42 ms of every 50 (the demo's burner) made each step wait up to 42 ms. While the gate is held,
 * no guest starts a turn (a WebAssembly guest, a slice); what arrives for a JavaScript guest
 * meanwhile is held, in order, as for a frozen guest (and travels in a checkpoint the same way),
 * and runs once the last hold is released. A turn already running when the gate closes finishes
 * first: a turn cannot be cut short.
 */

/**
 * The longest a hold lasts. A move's pause is 8-15 ms in bench:migrate (16 and 64 MiB guests);
 * one that takes longer than this has stalled, and the guests here run again meanwhile.
 */
const MAX_HOLD_MS = 1000;

/** A host's hold on its guests' turns; guests take it as `GuestOptions.gate`. */
export class TurnGate {
  private holds = 0;
  private readonly waiting = new Set<() => void>();

  /** Whether guests must not start turns now. */
  get closed(): boolean {
    return this.holds > 0;
  }

  /**
   * Closes the gate until the returned function is called (once; later calls do nothing), or for
   * at most `maxMs`: a move that stalls (a peer that does not answer) must not starve the guests.
   */
  hold(maxMs = MAX_HOLD_MS): () => void {
    this.holds++;
    let released = false;
    const timer = setTimeout(() => release(), maxMs);
    timer.unref();
    const release = (): void => {
      if (released) return;
      released = true;
      clearTimeout(timer);
      this.holds--;
      if (this.holds > 0) return;
      const waiting = [...this.waiting];
      this.waiting.clear();
      // In a later turn of the event loop: the releasing move finishes its step first.
      if (waiting.length > 0) setImmediate(() => waiting.forEach((resume) => resume()));
    };
    return release;
  }

  /**
   * A new hold in place of `previous`, which may have run out (a step that waited long): the gate
   * stays closed from one to the other.
   */
  renew(previous: (() => void) | undefined, maxMs = MAX_HOLD_MS): () => void {
    const release = this.hold(maxMs);
    previous?.();
    return release;
  }

  /** Calls `resume` once the gate opens (a set: asking twice before then calls it once). */
  whenOpen(resume: () => void): void {
    this.waiting.add(resume);
  }
}
