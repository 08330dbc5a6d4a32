/**
 * Events from the host arrive through `__roam_dispatch(kind, ...args)`. Each module registers the
 * kinds it handles. An exception escaping a handler is an uncaught exception, as in Node.
 */
import type { HostArg } from './host.js';

type Handler = (...args: HostArg[]) => void;
const handlers = new Map<string, Handler>();
let onUncaught: (err: unknown) => void = (err) => {
  throw err;
};
let afterCallback: () => void = () => {};

export function on(kind: string, handler: Handler): void {
  handlers.set(kind, handler);
}

export function setUncaughtHandler(fn: (err: unknown) => void): void {
  onUncaught = fn;
}

/** Runs after each event's handler, before its promise jobs (process.nextTick's queue). */
export function setAfterCallback(fn: () => void): void {
  afterCallback = fn;
}

function dispatch(kind: string, ...args: HostArg[]): void {
  const handler = handlers.get(kind);
  if (!handler) throw new Error(`roam guest runtime: unknown event ${kind}`);
  try {
    handler(...args);
    afterCallback();
  } catch (err) {
    onUncaught(err);
  }
}

Object.defineProperty(globalThis, '__roam_dispatch', {
  value: dispatch,
  enumerable: false,
  writable: false,
  configurable: false,
});
