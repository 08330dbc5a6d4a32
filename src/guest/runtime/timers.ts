/**
 * Node's timers. Callbacks stay in the guest (so they travel in its memory); the host keeps only
 * the schedule (id, due time, ref), which it captures as remaining time in the checkpoint image.
 */
import { on } from './dispatch.js';
import { host } from './host.js';

type Callback = (...args: unknown[]) => void;
interface Entry {
  timeout: Timeout;
  fn: Callback;
  args: unknown[];
  repeat: number | undefined;
}

const timers = new Map<number, Entry>();
let nextId = 1;

function clampDelay(ms: unknown): number {
  const n = Number(ms);
  // Node: outside 1..2^31-1 (or NaN) means 1 ms.
  return n >= 1 && n <= 2147483647 ? n : 1;
}

export class Timeout {
  #ref = true;
  constructor(
    readonly id: number,
    private delay: number,
  ) {}
  ref(): this {
    this.#ref = true;
    if (timers.has(this.id)) host('timer.ref', this.id, true);
    return this;
  }
  unref(): this {
    this.#ref = false;
    if (timers.has(this.id)) host('timer.ref', this.id, false);
    return this;
  }
  hasRef(): boolean {
    return this.#ref;
  }
  refresh(): this {
    if (timers.has(this.id)) host('timer.set', this.id, this.delay, this.#ref);
    return this;
  }
  close(): this {
    clearTimeout(this);
    return this;
  }
  [Symbol.toPrimitive](): number {
    return this.id;
  }
}

function schedule(fn: unknown, delay: unknown, args: unknown[], repeat: boolean): Timeout {
  if (typeof fn !== 'function') {
    throw Object.assign(new TypeError('The "callback" argument must be of type function'), {
      code: 'ERR_INVALID_ARG_TYPE',
    });
  }
  const ms = clampDelay(delay);
  const timeout = new Timeout(nextId++, ms);
  timers.set(timeout.id, { timeout, fn: fn as Callback, args, repeat: repeat ? ms : undefined });
  host('timer.set', timeout.id, ms, true);
  return timeout;
}

function idOf(t: unknown): number | undefined {
  if (t instanceof Timeout) return t.id;
  if (typeof t === 'number') return t;
  return undefined;
}

export function setTimeout(fn: unknown, delay?: unknown, ...args: unknown[]): Timeout {
  return schedule(fn, delay, args, false);
}
export function setInterval(fn: unknown, delay?: unknown, ...args: unknown[]): Timeout {
  return schedule(fn, delay, args, true);
}
export function clearTimeout(t: unknown): void {
  const id = idOf(t);
  if (id === undefined || !timers.delete(id)) return;
  host('timer.clear', id);
}
export const clearInterval = clearTimeout;

on('timer', (id) => {
  const entry = timers.get(Number(id));
  if (!entry) return;
  if (entry.repeat === undefined) timers.delete(entry.timeout.id);
  else host('timer.set', entry.timeout.id, entry.repeat, entry.timeout.hasRef());
  entry.fn.apply(undefined, entry.args);
});

// setImmediate: the queue is the guest's; the host only knows that a turn for it is due.
class Immediate {
  #ref = true;
  constructor(
    readonly fn: Callback,
    readonly args: unknown[],
  ) {}
  ref(): this {
    this.#ref = true;
    return this;
  }
  unref(): this {
    this.#ref = false;
    return this;
  }
  hasRef(): boolean {
    return this.#ref;
  }
}
let immediates: Immediate[] = [];
let cleared = new WeakSet<Immediate>();

export function setImmediate(fn: unknown, ...args: unknown[]): Immediate {
  if (typeof fn !== 'function') throw new TypeError('The "callback" argument must be of type function');
  const imm = new Immediate(fn as Callback, args);
  if (immediates.length === 0) host('immediate');
  immediates.push(imm);
  return imm;
}
export function clearImmediate(imm: unknown): void {
  if (imm instanceof Immediate) cleared.add(imm);
}

on('immediate', () => {
  // Immediates queued while these run wait for the next turn, as in Node.
  const batch = immediates;
  immediates = [];
  const skip = cleared;
  cleared = new WeakSet();
  let error: unknown;
  let failed = false;
  for (const imm of batch) {
    if (skip.has(imm)) continue;
    if (failed) {
      // Keep the rest for the next turn; the exception goes up as an uncaught one.
      immediates.push(imm);
      continue;
    }
    try {
      imm.fn.apply(undefined, imm.args);
    } catch (err) {
      failed = true;
      error = err;
    }
  }
  if (immediates.length > 0) host('immediate');
  if (failed) throw error;
});

export const timersModule = {
  setTimeout,
  setInterval,
  setImmediate,
  clearTimeout,
  clearInterval,
  clearImmediate,
  promises: {
    setTimeout: (ms?: number, value?: unknown) => new Promise((resolve) => setTimeout(resolve, ms, value)),
    setImmediate: (value?: unknown) => new Promise((resolve) => setImmediate(resolve, value)),
  },
};
