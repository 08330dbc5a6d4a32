/**
 * The guest runtime: the Node-like world a guest program sees, run once at the top of every new
 * sandbox (a restored sandbox gets it back with the rest of the memory). Order matters: the host
 * door and Promise first, then the globals the polyfills expect, then the modules.
 */
import './host.js';
import './dispatch.js';
import './promise.js';
import './uncaught.js';
import './random.js';
import { Buffer } from 'buffer';
import { AbortController, AbortSignal } from 'abort-controller';
import URL from 'core-js-pure/actual/url/index.js';
import URLSearchParams from 'core-js-pure/actual/url-search-params/index.js';
import structuredClone from 'core-js-pure/actual/structured-clone.js';
import { DateClass, performance } from './clock.js';
import { TextDecoder, TextEncoder } from './text.js';
import { getRandomValues, randomUUID } from './crypto.js';
import { process } from './process.js';
import { console } from './console.js';
import { clearImmediate, clearInterval, clearTimeout, setImmediate, setInterval, setTimeout } from './timers.js';
import { requireBuiltin } from './builtins.js';
import { on } from './dispatch.js';

const globals: Record<string, unknown> = {
  global: globalThis,
  Date: DateClass,
  performance,
  process,
  console,
  Buffer,
  TextEncoder,
  TextDecoder,
  URL,
  URLSearchParams,
  AbortController,
  AbortSignal,
  structuredClone,
  crypto: { getRandomValues, randomUUID },
  setTimeout,
  setInterval,
  setImmediate,
  clearTimeout,
  clearInterval,
  clearImmediate,
  queueMicrotask: (fn: () => void) => {
    void Promise.resolve().then(fn);
  },
};
for (const [name, value] of Object.entries(globals)) {
  Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
}
Object.defineProperty(globalThis, '__roam_require', { value: requireBuiltin, enumerable: false });

// The guest's bundle defines `__roam_main`; running it is an event like any other, so an exception
// at the top level of the program is an uncaught exception, as in Node.
on('main', () => {
  const g = globalThis as unknown as { __roam_main?: () => void };
  const main = g.__roam_main;
  delete g.__roam_main;
  main?.();
});
