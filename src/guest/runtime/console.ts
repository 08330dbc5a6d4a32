/** `console`, formatted like Node's (util.format/inspect) and written to the guest's log. */
import { format, inspect } from 'util';
import { hostNumber } from './host.js';
import { writeStderr, writeStdout } from './process.js';

let indent = '';
const counts = new Map<string, number>();
const timers = new Map<string, number>();

function out(write: (t: string) => void, args: unknown[]): void {
  const text = format(...args);
  write(indent ? indent + text.replace(/\n/g, `\n${indent}`) + '\n' : text + '\n');
}

export const console = {
  log: (...a: unknown[]) => out(writeStdout, a),
  info: (...a: unknown[]) => out(writeStdout, a),
  debug: (...a: unknown[]) => out(writeStdout, a),
  warn: (...a: unknown[]) => out(writeStderr, a),
  error: (...a: unknown[]) => out(writeStderr, a),
  trace: (...a: unknown[]) => out(writeStderr, [`Trace: ${format(...a)}\n${new Error().stack ?? ''}`]),
  dir: (v: unknown, options?: object) => out(writeStdout, [inspect(v, options)]),
  table: (v: unknown) => out(writeStdout, [inspect(v)]),
  assert: (cond: unknown, ...a: unknown[]) => {
    if (!cond) out(writeStderr, ['Assertion failed' + (a.length ? ': ' + format(...a) : '')]);
  },
  count: (label = 'default') => {
    const n = (counts.get(label) ?? 0) + 1;
    counts.set(label, n);
    out(writeStdout, [`${label}: ${n}`]);
  },
  countReset: (label = 'default') => counts.delete(label),
  group: (...a: unknown[]) => {
    if (a.length) out(writeStdout, a);
    indent += '  ';
  },
  groupEnd: () => {
    indent = indent.slice(2);
  },
  time: (label = 'default') => timers.set(label, hostNumber('clock.mono')),
  timeEnd: (label = 'default') => {
    const start = timers.get(label);
    if (start === undefined) return;
    timers.delete(label);
    out(writeStdout, [`${label}: ${(hostNumber('clock.mono') - start).toFixed(3)}ms`]);
  },
  timeLog: (label = 'default', ...a: unknown[]) => {
    const start = timers.get(label);
    if (start === undefined) return;
    out(writeStdout, [`${label}: ${(hostNumber('clock.mono') - start).toFixed(3)}ms`, ...a]);
  },
};
