/**
 * Unhandled promise rejections, as Node reports them. QuickJS's rejection tracker is not reachable
 * through quickjs-emscripten, so the runtime replaces the global `Promise` with a subclass that
 * notes rejections and handlers; guest bundles are compiled with async functions lowered to
 * generators (see bundle.ts) so that their promises are this class too.
 *
 * A rejection with no handler by the end of the turn (after every microtask ran) is unhandled:
 * the host calls the `rejections` event then, and process.ts decides what happens.
 */
import { host } from './host.js';

const NativePromise = Promise;
const unhandled = new Map<Promise<unknown>, unknown>();
const handled = new WeakSet<Promise<unknown>>();
let announced = false;

type Executor<T> = (resolve: (value: T | PromiseLike<T>) => void, reject: (reason?: unknown) => void) => void;

class RoamPromise<T> extends NativePromise<T> {
  constructor(executor: Executor<T>) {
    // The executor may reject before `this` exists; such a rejection is noted right after.
    const box: { self?: RoamPromise<T>; rejectedWith?: { reason: unknown } } = {};
    super((resolve, reject) => {
      const rejectAndNote = (reason?: unknown): void => {
        if (box.self) noteRejection(box.self, reason);
        else box.rejectedWith = { reason };
        reject(reason);
      };
      try {
        executor(resolve, rejectAndNote);
      } catch (err) {
        // An executor that throws rejects its promise (esbuild's async helper relies on it).
        rejectAndNote(err);
      }
    });
    box.self = this;
    if (box.rejectedWith) noteRejection(this, box.rejectedWith.reason);
  }

  override then<R1 = T, R2 = never>(
    onFulfilled?: ((value: T) => R1 | PromiseLike<R1>) | null,
    onRejected?: ((reason: unknown) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    handled.add(this);
    unhandled.delete(this);
    return super.then(onFulfilled, onRejected);
  }
}

function noteRejection(p: Promise<unknown>, reason: unknown): void {
  if (handled.has(p)) return;
  unhandled.set(p, reason);
  if (!announced) {
    announced = true;
    host('rejections.pending');
  }
}

/** Takes the rejections still unhandled now that the turn's microtasks have all run. */
export function takeUnhandled(): unknown[] {
  announced = false;
  const reasons = [...unhandled.values()];
  unhandled.clear();
  return reasons;
}

Object.defineProperty(globalThis, 'Promise', { value: RoamPromise, writable: true, configurable: true });
