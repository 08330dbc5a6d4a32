/**
 * Helpers shared by the relay benchmark (bench/relay.ts) and its child processes
 * (bench/relay-server.ts, bench/relay-proxy.ts, bench/relay-controller.ts): the server-side
 * behaviours every case offers (echo, sink, source, stall) on any Duplex, a small request/answer
 * protocol over the Node IPC channel, and a CPU profile summary.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import type { Duplex } from 'node:stream';

/** The services every server side offers, by the guest port a published port maps to. */
export const SERVICES = { echo: 1, sink: 2, source: 3, stall: 4 } as const;
export type Service = keyof typeof SERVICES;

export function serviceOf(port: number): Service | undefined {
  return (Object.keys(SERVICES) as Service[]).find((k) => SERVICES[k] === port);
}

/** Chunk the sources and the clients write. */
export const CHUNK = 64 * 1024;
/** A sink reports its cumulative byte count (8 bytes, big-endian) every time this many more arrived. */
export const SINK_REPORT_EVERY = 1024 * 1024;

const payload = Buffer.alloc(CHUNK, 0x61);

/** Echoes every byte back (as examples/echo-server.js does). */
export function serveEcho(stream: Duplex): void {
  stream.on('error', () => stream.destroy());
  stream.pipe(stream);
}

/**
 * Reads and counts; every SINK_REPORT_EVERY bytes it writes the count so far back, so the client
 * measures what arrived at the far end (not what it managed to queue), without needing a half-close.
 */
export function serveSink(stream: Duplex): void {
  let count = 0;
  let next = SINK_REPORT_EVERY;
  stream.on('error', () => stream.destroy());
  stream.on('data', (chunk: Buffer) => {
    count += chunk.length;
    if (count >= next) {
      next = count + SINK_REPORT_EVERY;
      const report = Buffer.allocUnsafe(8);
      report.writeBigUInt64BE(BigInt(count));
      stream.write(report);
    }
  });
  stream.on('end', () => stream.end());
}

/** Writes as fast as the stream takes it, until the peer goes away. */
export function serveSource(stream: Duplex): void {
  let done = false;
  const stop = (): void => {
    done = true;
  };
  stream.on('error', () => {
    stop();
    stream.destroy();
  });
  stream.on('close', stop);
  stream.on('end', () => {
    stop();
    stream.end();
  });
  stream.resume(); // whatever the client says is ignored
  const pump = (): void => {
    while (!done && stream.write(payload));
    if (!done) stream.once('drain', pump);
  };
  pump();
}

/** Never reads: a stalled reader. Its sender fills the window and buffers, then must wait. */
export function serveStall(stream: Duplex): void {
  stream.on('error', () => stream.destroy());
  stream.pause();
}

export function serve(service: Service, stream: Duplex): void {
  switch (service) {
    case 'echo':
      serveEcho(stream);
      return;
    case 'sink':
      serveSink(stream);
      return;
    case 'source':
      serveSource(stream);
      return;
    case 'stall':
      serveStall(stream);
      return;
  }
}

// --- a tiny request/answer protocol over the IPC channel ---

interface Request {
  id: number;
  cmd: string;
  args: unknown;
}
interface Answer {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}
type Handler = (args: unknown) => unknown;

/** In a child: answer the parent's requests; exit when the parent goes away. */
export function serveRequests(handlers: Record<string, Handler>): void {
  process.on('disconnect', () => process.exit(0));
  process.on('message', (message: Request) => {
    const handler = handlers[message.cmd];
    void (async () => {
      try {
        if (!handler) throw new Error(`unknown command ${message.cmd}`);
        const result: unknown = await handler(message.args);
        process.send?.({ id: message.id, ok: true, result } satisfies Answer);
      } catch (err) {
        process.send?.({ id: message.id, ok: false, error: (err as Error).stack ?? String(err) } satisfies Answer);
      }
    })();
  });
}

/** In a child: tell the parent it is ready, with what it needs to know. */
export function announce(info: unknown): void {
  process.send?.({ id: 0, ok: true, result: info } satisfies Answer);
}

export interface Child<Ready> {
  child: ChildProcess;
  ready: Promise<Ready>;
  call<T>(cmd: string, args?: unknown, timeoutMs?: number): Promise<T>;
  stop(): Promise<void>;
}

/**
 * Starts `node [execArgv] FILE ARGS` with an IPC channel. FILE is plain JavaScript (the benchmark
 * bundles its children first, as `roam` itself is bundled; see bench/relay.ts) or, for a `.ts`
 * file, runs under tsx.
 */
export function startChild<Ready>(
  file: string,
  args: string[],
  options: { cwd: string; execArgv?: string[]; env?: Record<string, string>; name: string },
): Child<Ready> {
  const loader = file.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const child = spawn(process.execPath, [...(options.execArgv ?? []), ...loader, file, ...args], {
    cwd: options.cwd,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, ...options.env },
  });
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let onReady: ((v: unknown) => void) | undefined;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = new Promise<Ready>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${options.name} did not start within 30 s`)), 30_000);
    onReady = (v) => {
      clearTimeout(timer);
      resolve(v as Ready);
    };
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${options.name} exited (code ${String(code)}, signal ${String(signal)})`));
    });
  });
  ready.catch(() => {});
  child.on('message', (answer: Answer) => {
    if (answer.id === 0) {
      onReady?.(answer.result);
      return;
    }
    const w = waiting.get(answer.id);
    if (!w) return;
    waiting.delete(answer.id);
    if (answer.ok) w.resolve(answer.result);
    else w.reject(new Error(`${options.name}: ${answer.error ?? 'failed'}`));
  });
  child.once('exit', () => {
    for (const w of waiting.values()) w.reject(new Error(`${options.name} exited`));
    waiting.clear();
  });
  return {
    child,
    ready,
    call<T>(cmd: string, args?: unknown, timeoutMs = 60_000): Promise<T> {
      const id = nextId++;
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(id);
          reject(new Error(`${options.name}: ${cmd} timed out`));
        }, timeoutMs);
        waiting.set(id, {
          resolve: (v) => {
            clearTimeout(timer);
            resolve(v as T);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
        child.send({ id, cmd, args } satisfies Request);
      });
    },
    async stop(): Promise<void> {
      await stopProcess(child, exited);
    },
  };
}

/** SIGTERM, then SIGKILL after a grace period; resolves when the process is gone. */
export async function stopProcess(child: ChildProcess, exited: Promise<unknown>, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

// --- memory and CPU of a child, measured from inside it ---

export interface MemorySample {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

export function memorySample(): MemorySample {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    gc();
    gc();
  }
  const m = process.memoryUsage();
  return {
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
  };
}

/** CPU time (user + system, ms) this process used over `ms` of wall time. */
export async function cpuOver(ms: number): Promise<number> {
  const before = process.cpuUsage();
  await new Promise((r) => setTimeout(r, ms));
  const d = process.cpuUsage(before);
  return (d.user + d.system) / 1000;
}

// --- CPU profiles (inspector, in the child being profiled) ---

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples?: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileLine {
  fn: string;
  where: string;
  /** Share of the profiled wall time spent in this function itself. */
  selfPct: number;
  /** Share spent in it and everything it called. */
  totalPct: number;
  /** The caller that most of its self time came through. */
  caller: string;
}

export interface ProfileSummary {
  totalMs: number;
  /** Share of the wall time in (idle): the process waited for I/O. */
  idlePct: number;
  gcPct: number;
  /** Top functions by self time. */
  top: ProfileLine[];
  /** Top Roam functions (src/) by inclusive time. */
  roam: ProfileLine[];
}

let session: Session | undefined;

function post(method: string, params: object = {}): Promise<unknown> {
  const s = session;
  if (!s) return Promise.reject(new Error('no inspector session'));
  return new Promise((resolve, reject) => s.post(method, params, (err, res) => (err ? reject(err) : resolve(res))));
}

export async function profileStart(): Promise<void> {
  session = new Session();
  session.connect();
  await post('Profiler.enable');
  await post('Profiler.setSamplingInterval', { interval: 100 });
  await post('Profiler.start');
}

/**
 * Stops the profiler and summarises it: self time by function, and Roam's own functions by
 * inclusive time. With `save`, the raw profile is also written there (open it in Chrome DevTools).
 */
export async function profileStop(save?: string): Promise<ProfileSummary> {
  const { profile } = (await post('Profiler.stop')) as { profile: Profile };
  session?.disconnect();
  session = undefined;
  if (save) writeFileSync(save, JSON.stringify(profile));
  return summarise(profile);
}

function shortUrl(url: string): string {
  if (!url) return '';
  const m = /.*\/(src|bench)\/(.*)$/.exec(url);
  return m ? `${m[1]}/${m[2]}` : url;
}

function summarise(profile: Profile, limit = 12): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    const id = samples[i] as number;
    self.set(id, (self.get(id) ?? 0) + (deltas[i] ?? 0));
  }
  // The inspector's own work (Profiler.start/stop posted from this process) is not the workload's.
  let totalUs = profile.endTime - profile.startTime;
  for (const [id, us] of self) {
    const up = parent.get(id);
    if (
      byId.get(id)?.callFrame.functionName === 'dispatch' &&
      up !== undefined &&
      byId.get(up)?.callFrame.functionName === 'post'
    ) {
      self.delete(id);
      totalUs -= us;
    }
  }
  const keyOf = (n: ProfileNode): string => {
    const { functionName, url, lineNumber } = n.callFrame;
    return `${functionName || '(anonymous)'}\t${url ? `${shortUrl(url)}:${lineNumber + 1}` : ''}`;
  };
  const selfBy = new Map<string, number>();
  const totalBy = new Map<string, number>();
  const callers = new Map<string, Map<string, number>>();
  let idle = 0;
  let gc = 0;
  for (const [id, us] of self) {
    const node = byId.get(id);
    if (!node) continue;
    if (node.callFrame.functionName === '(idle)') idle += us;
    if (node.callFrame.functionName === '(garbage collector)') gc += us;
    const key = keyOf(node);
    selfBy.set(key, (selfBy.get(key) ?? 0) + us);
    const up = parent.get(id);
    const callerNode = up === undefined ? undefined : byId.get(up);
    const callerKey = callerNode ? (keyOf(callerNode).split('\t')[0] ?? '') : '';
    const m = callers.get(key) ?? new Map<string, number>();
    m.set(callerKey, (m.get(callerKey) ?? 0) + us);
    callers.set(key, m);
    // Inclusive time: every distinct function on the stack gets these samples once.
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const n = byId.get(at);
      if (!n) break;
      const k = keyOf(n);
      if (seen.has(k)) continue;
      seen.add(k);
      totalBy.set(k, (totalBy.get(k) ?? 0) + us);
    }
  }
  const line = (key: string): ProfileLine => {
    const [fn = '', where = ''] = key.split('\t');
    const byCaller = [...(callers.get(key) ?? new Map<string, number>())].sort((a, b) => b[1] - a[1]);
    return {
      fn,
      where,
      selfPct: (100 * (selfBy.get(key) ?? 0)) / totalUs,
      totalPct: (100 * (totalBy.get(key) ?? 0)) / totalUs,
      caller: byCaller[0]?.[0] ?? '',
    };
  };
  const top = [...selfBy]
    .filter(([k]) => !k.startsWith('(idle)'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([k]) => line(k));
  const roam = [...totalBy]
    .filter(([k]) => k.includes('\tsrc/'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([k]) => line(k));
  return { totalMs: totalUs / 1000, idlePct: (100 * idle) / totalUs, gcPct: (100 * gc) / totalUs, top, roam };
}
