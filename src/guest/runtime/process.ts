/**
 * The guest's `process`: argv, env, exit and its events, nextTick, and the uncaught-error policy
 * of Node (an uncaught exception or unhandled rejection prints its stack and exits with 1 unless
 * the program listens for it).
 */
import EventEmitter from 'events';
import { on, setAfterCallback } from './dispatch.js';
import { host, hostJson, hostNumber, parseArg } from './host.js';

interface Boot {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  pid: number;
  platform: string;
  arch: string;
  version: string;
}

function write(stream: 'out' | 'err', chunk: unknown): boolean {
  const text =
    typeof chunk === 'string' ? chunk : chunk instanceof Uint8Array ? new TextDecoder().decode(chunk) : String(chunk);
  host('log', stream, text);
  return true;
}

class StdStream extends EventEmitter {
  readonly isTTY = false;
  constructor(
    private readonly stream: 'out' | 'err',
    readonly fd: number,
  ) {
    super();
  }
  write(chunk: unknown, encoding?: unknown, cb?: unknown): boolean {
    write(this.stream, chunk);
    const done = typeof encoding === 'function' ? encoding : cb;
    if (typeof done === 'function') queueMicrotask(() => (done as () => void)());
    return true;
  }
  end(chunk?: unknown): void {
    if (chunk !== undefined && typeof chunk !== 'function') this.write(chunk);
  }
}

class Process extends EventEmitter {
  argv: string[] = [];
  argv0 = 'roam';
  execArgv: string[] = [];
  execPath = '/roam/guest';
  env: Record<string, string> = {};
  exitCode: number | undefined = undefined;
  pid = 1;
  ppid = 0;
  title = 'roam-guest';
  platform = 'linux';
  arch = 'wasm32';
  version = 'v20.0.0';
  versions: Record<string, string> = { node: '20.0.0', roam: '0' };
  release = { name: 'node' };
  config = {};
  stdout = new StdStream('out', 1);
  stderr = new StdStream('err', 2);
  stdin = new StdStream('out', 0);
  #cwd = '/';
  #exiting = false;

  cwd(): string {
    return this.#cwd;
  }
  chdir(dir: string): void {
    this.#cwd = dir.startsWith('/') ? dir : `${this.#cwd.replace(/\/$/, '')}/${dir}`;
  }
  umask(): number {
    return 0o22;
  }
  uptime(): number {
    return hostNumber('clock.mono') / 1000;
  }
  hrtime(prev?: [number, number]): [number, number] {
    const ns = Math.round(hostNumber('clock.mono') * 1e6);
    let s = Math.floor(ns / 1e9);
    let n = ns % 1e9;
    if (prev) {
      s -= prev[0];
      n -= prev[1];
      if (n < 0) {
        s -= 1;
        n += 1e9;
      }
    }
    return [s, n];
  }
  memoryUsage(): { rss: number; heapTotal: number; heapUsed: number; external: number; arrayBuffers: number } {
    const m = hostJson<{ rss: number; heapUsed: number }>('memory');
    return { rss: m.rss, heapTotal: m.rss, heapUsed: m.heapUsed, external: 0, arrayBuffers: 0 };
  }
  cpuUsage(): { user: number; system: number } {
    return { user: Math.round(hostNumber('clock.cpu') * 1000), system: 0 };
  }
  nextTick(fn: (...args: unknown[]) => void, ...args: unknown[]): void {
    queueTick(() => fn(...args));
  }
  emitWarning(warning: unknown, type?: unknown): void {
    const name = typeof type === 'string' ? type : warning instanceof Error ? warning.name : 'Warning';
    const message = warning instanceof Error ? warning.message : String(warning);
    if (this.listenerCount('warning') > 0) this.emit('warning', Object.assign(new Error(message), { name }));
    else write('err', `(roam guest) ${name}: ${message}\n`);
  }
  exit(code?: number | string): never {
    if (code !== undefined) this.exitCode = Number(code) | 0;
    finish(this.exitCode ?? 0);
    // The host interrupts the guest at its next check; nothing below runs for long.
    throw new Error('process.exit');
  }
  abort(): never {
    return this.exit(134);
  }
  kill(): boolean {
    return false;
  }
  get exiting(): boolean {
    return this.#exiting;
  }
  markExiting(): void {
    this.#exiting = true;
  }
}
(Process.prototype as unknown as { hrtime: { bigint?: () => bigint } }).hrtime.bigint = () =>
  BigInt(Math.round(hostNumber('clock.mono') * 1e6));

export const process = new Process();

// process.nextTick: as in Node, ticks queued by a callback run when it returns, before promise
// jobs; ticks queued from a promise job run after the jobs already queued.
let ticks: Array<() => void> = [];
let tickDrainQueued = false;
function queueTick(fn: () => void): void {
  ticks.push(fn);
  if (!tickDrainQueued) {
    tickDrainQueued = true;
    void Promise.resolve().then(runTicks);
  }
}
export function runTicks(): void {
  tickDrainQueued = false;
  while (ticks.length > 0) {
    const batch = ticks;
    ticks = [];
    for (let i = 0; i < batch.length; i++) {
      try {
        batch[i]?.();
      } catch (err) {
        // Keep the rest for later, as Node would after reporting this one.
        ticks = [...batch.slice(i + 1), ...ticks];
        if (ticks.length > 0 && !tickDrainQueued) {
          tickDrainQueued = true;
          void Promise.resolve().then(runTicks);
        }
        throw err;
      }
    }
  }
}

export function finish(code: number): void {
  if (!process.exiting) {
    process.markExiting();
    try {
      process.emit('exit', code);
    } catch (err) {
      write('err', `${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      code = code || 7;
    }
  }
  host('exit', process.exitCode ?? code);
}

setAfterCallback(runTicks);

on('init', (json) => {
  const boot = parseArg<Boot>(json);
  process.argv = boot.argv;
  process.env = boot.env;
  process.pid = boot.pid;
  process.platform = boot.platform;
  process.arch = boot.arch;
  process.version = boot.version;
  process.chdir(boot.cwd);
});

on('beforeExit', () => {
  process.emit('beforeExit', process.exitCode ?? 0);
});

on('exit', () => {
  finish(process.exitCode ?? 0);
});

export function writeStdout(text: string): void {
  write('out', text);
}
export function writeStderr(text: string): void {
  write('err', text);
}
