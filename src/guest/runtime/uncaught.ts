/**
 * Node's policy for errors nobody caught: an uncaught exception or an unhandled rejection prints
 * its stack and exits with 1, unless the program listens for it. (Kept apart from process.ts: the
 * util polyfill reads `process` while it loads.)
 */
import { format, inspect } from 'util';
import { on, setUncaughtHandler } from './dispatch.js';
import { host } from './host.js';
import { finish, process } from './process.js';
import { takeUnhandled } from './promise.js';

function describe(err: unknown): string {
  if (err instanceof Error && typeof err.stack === 'string' && err.stack) {
    return `${err.name}: ${err.message}\n${err.stack.replace(/\n$/, '')}`;
  }
  return inspect(err);
}

function fatal(kind: string, text: string): void {
  host('fatal', kind, text);
  process.exitCode = 1;
  finish(1);
}

setUncaughtHandler((err) => {
  if (process.exiting) throw err;
  if (process.listenerCount('uncaughtException') > 0) {
    process.emit('uncaughtException', err, 'uncaughtException');
    return;
  }
  fatal('uncaughtException', `Uncaught ${describe(err)}`);
});

on('rejections', () => {
  for (const reason of takeUnhandled()) {
    if (process.exiting) return;
    if (process.listenerCount('unhandledRejection') > 0) {
      process.emit('unhandledRejection', reason);
      continue;
    }
    const text =
      reason instanceof Error
        ? describe(reason)
        : `[UnhandledPromiseRejection: This error originated either by throwing inside of an async function without a catch block, or by rejecting a promise which was not handled with .catch(). The promise rejected with the reason "${format(reason)}".]`;
    fatal('unhandledRejection', text);
    return;
  }
});
