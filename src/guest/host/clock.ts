/**
 * The guest's virtual clock. Wall time follows the host's clock but never goes backwards: after a
 * restore on a machine whose clock is behind, it continues from the captured time at real speed.
 * Monotonic time (performance.now) continues from its captured value; the time a guest spent
 * frozen in an image does not count, which is also why timers keep their remaining time.
 */
export interface ClockState {
  wall: number;
  mono: number;
}

export class VirtualClock {
  private wallSkew = 0;
  private lastWall = 0;
  private monoBase: number;
  private readonly monoStart = performance.now();

  constructor(
    state?: ClockState,
    private readonly hostWall: () => number = Date.now,
  ) {
    this.monoBase = state?.mono ?? 0;
    if (state) {
      const hostWall = this.hostWall();
      this.wallSkew = state.wall > hostWall ? state.wall - hostWall : 0;
      this.lastWall = state.wall;
    }
  }

  /** Milliseconds since the epoch, as the guest sees them. */
  wall(): number {
    const t = Math.max(this.hostWall() + this.wallSkew, this.lastWall);
    this.lastWall = t;
    return t;
  }

  /** Milliseconds since the guest first started, excluding time spent in images. */
  mono(): number {
    return this.monoBase + (performance.now() - this.monoStart);
  }

  capture(): ClockState {
    return { wall: this.wall(), mono: this.mono() };
  }
}
