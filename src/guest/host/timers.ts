/**
 * The host half of guest timers: a schedule of (id, due time) on the virtual monotonic clock,
 * served by one real Node timer for the earliest entry. Freezing cancels the real timer; the
 * captured state is each timer's remaining time.
 */
import type { VirtualClock } from './clock.js';

export interface TimerState {
  id: number;
  remaining: number;
  ref: boolean;
}

interface Entry {
  id: number;
  due: number;
  seq: number;
  ref: boolean;
}

export class TimerSchedule {
  private readonly entries = new Map<number, Entry>();
  private handle: NodeJS.Timeout | undefined;
  private seq = 0;
  private frozen = true;

  constructor(
    private readonly clock: VirtualClock,
    private readonly onFire: (id: number) => void,
  ) {}

  set(id: number, delayMs: number, ref: boolean): void {
    this.entries.set(id, { id, due: this.clock.mono() + delayMs, seq: this.seq++, ref });
    this.arm();
  }

  clear(id: number): void {
    if (this.entries.delete(id)) this.arm();
  }

  ref(id: number, ref: boolean): void {
    const e = this.entries.get(id);
    if (e) e.ref = ref;
  }

  /** Timers that keep the guest alive. */
  get refCount(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.ref) n++;
    return n;
  }

  get size(): number {
    return this.entries.size;
  }

  freeze(): void {
    this.frozen = true;
    this.disarm();
  }

  thaw(): void {
    this.frozen = false;
    this.arm();
  }

  capture(): TimerState[] {
    const now = this.clock.mono();
    return [...this.entries.values()]
      .sort((a, b) => a.due - b.due || a.seq - b.seq)
      .map((e) => ({ id: e.id, remaining: Math.max(0, e.due - now), ref: e.ref }));
  }

  restore(state: readonly TimerState[]): void {
    for (const t of state) this.set(t.id, t.remaining, t.ref);
  }

  close(): void {
    this.frozen = true;
    this.disarm();
    this.entries.clear();
  }

  private disarm(): void {
    if (this.handle) clearTimeout(this.handle);
    this.handle = undefined;
  }

  private arm(): void {
    this.disarm();
    if (this.frozen || this.entries.size === 0) return;
    let next: Entry | undefined;
    for (const e of this.entries.values()) if (!next || e.due < next.due) next = e;
    if (!next) return;
    const delay = Math.max(0, next.due - this.clock.mono());
    this.handle = setTimeout(() => this.fireDue(), Math.ceil(delay));
  }

  private fireDue(): void {
    this.handle = undefined;
    const now = this.clock.mono();
    const due = [...this.entries.values()].filter((e) => e.due <= now).sort((a, b) => a.due - b.due || a.seq - b.seq);
    for (const e of due) {
      if (this.frozen) break;
      // A callback may have cleared or re-armed this timer meanwhile.
      if (this.entries.get(e.id) !== e) continue;
      this.entries.delete(e.id);
      this.onFire(e.id);
    }
    this.arm();
  }
}
