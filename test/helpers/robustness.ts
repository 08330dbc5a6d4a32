/**
 * Helpers for robustness tests against real `roam` processes: a proxy that can be restarted on the
 * same data directory and ports, raw TCP peers that speak (or fail to speak) the wire protocol at
 * the control port, and process measurements from /proc (resident memory, open descriptors).
 */
import { readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';
import { FrameDecoder, type Frame } from '../../src/wire/index.js';
import { startProxy, type ProxyPlace, type Started, type TestProxy } from './cluster.js';

interface AfterContext {
  after(fn: () => void | Promise<void>): void;
}

export type { ProxyPlace };

/**
 * Starts `roam proxy` on `place` (a fresh data directory and kernel-chosen ports by default). Run it
 * again with the returned `place` to restart the proxy on the same state and the same ports.
 */
export function launchProxy(
  t: AfterContext,
  place: Partial<ProxyPlace> = {},
  extra: string[] = [],
): Promise<TestProxy & { place: ProxyPlace }> {
  return startProxy(t, extra, place);
}

// ---- /proc ------------------------------------------------------------------------------------

export function pidOf(p: Started): number {
  const pid = p.child.pid;
  if (pid === undefined) throw new Error('the process has no pid (it did not start)');
  return pid;
}

/** Resident set size of a process, in bytes (VmRSS). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (!m) throw new Error(`no VmRSS for process ${pid}`);
  return Number(m[1]) * 1024;
}

/** Open file descriptors of a process (sockets included). */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Samples the RSS of some processes every `everyMs` until stopped; reports the peak of each. */
export function sampleRss(pids: Record<string, number>, everyMs = 50) {
  const base: Record<string, number> = {};
  const peak: Record<string, number> = {};
  for (const [name, pid] of Object.entries(pids)) base[name] = peak[name] = rssBytes(pid);
  const timer = setInterval(() => {
    for (const [name, pid] of Object.entries(pids)) {
      try {
        peak[name] = Math.max(peak[name] ?? 0, rssBytes(pid));
      } catch {
        // the process went away; the test will notice on its own
      }
    }
  }, everyMs);
  return {
    base,
    peak,
    /** Stops sampling; returns each process's peak growth over its first sample, in bytes. */
    stop(): Record<string, number> {
      clearInterval(timer);
      return Object.fromEntries(Object.keys(pids).map((n) => [n, (peak[n] ?? 0) - (base[n] ?? 0)]));
    },
  };
}

export const MiB = 1024 * 1024;
export const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;

// ---- raw peers at the control port ---------------------------------------------------------------

export interface RawPeer {
  socket: net.Socket;
  /** Every byte the proxy sent. */
  received(): Buffer;
  /**
   * The frames the proxy sent, decoded by the real decoder; `error` when its bytes do not decode
   * (the proxy must never send that) and `partial` when they end inside a frame.
   */
  frames(): { frames: Frame[]; error?: string; partial: boolean };
  /** Resolves (ms after connecting) when the proxy ended its side (FIN) or the socket closed. */
  ended: Promise<number>;
  /** Resolves (ms after connecting) when the socket closed; `error` is its error code if any. */
  closed: Promise<{ ms: number; error?: string }>;
  isClosed(): boolean;
}

/**
 * Opens a raw TCP connection. With `allowHalfOpen`, the peer does not close its side when the proxy
 * ends: the proxy has to close the connection itself (a hostile peer never helps).
 */
export function rawPeer(port: number, options: { allowHalfOpen?: boolean; read?: boolean } = {}): RawPeer {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: options.allowHalfOpen ?? false });
  const t0 = performance.now();
  const chunks: Buffer[] = [];
  let isClosed = false;
  if (options.read === false) socket.pause();
  socket.on('data', (d: Buffer) => chunks.push(d));
  const closed = new Promise<{ ms: number; error?: string }>((resolve) => {
    let error: string | undefined;
    socket.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message));
    socket.on('close', () => {
      isClosed = true;
      resolve({ ms: performance.now() - t0, ...(error ? { error } : {}) });
    });
  });
  const ended = new Promise<number>((resolve) => {
    socket.once('end', () => resolve(performance.now() - t0));
    void closed.then(({ ms }) => resolve(ms));
  });
  return {
    socket,
    received: () => Buffer.concat(chunks),
    frames() {
      const decoder = new FrameDecoder();
      try {
        const frames = decoder.push(Buffer.concat(chunks));
        return { frames, partial: !decoder.idle };
      } catch (err) {
        return { frames: [], error: (err as Error).message, partial: false };
      }
    },
    ended,
    closed,
    isClosed: () => isClosed,
  };
}

/** The GOAWAY frames among `frames` (type 6, JSON {code, message}). */
export function goaways(frames: Frame[]): Array<{ code: string; message: string }> {
  return frames.flatMap((f) => (f.type === 'goaway' ? [{ code: f.code, message: f.message }] : []));
}

/** Settles as `promise` does, or resolves with `fallback` after `ms` (the timer never outlives it). */
export function within<T, F>(promise: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(fallback), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One TCP conversation on a published port: sends `text`, resolves with the first line of the reply. */
export function ask(port: number, text: string, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let reply = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no reply from port ${port} within ${timeoutMs} ms (got ${JSON.stringify(reply)})`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      reply += d;
      if (reply.includes('\n')) {
        clearTimeout(timer);
        socket.destroy();
        resolve(reply.slice(0, reply.indexOf('\n')));
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.write(text);
  });
}
