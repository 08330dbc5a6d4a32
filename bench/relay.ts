/**
 * Relay benchmark: `npm run bench:relay`. Everything on 127.0.0.1, in one run, each case in its
 * own processes:
 *   (a) direct: this process (the client) to a plain TCP server (bench/relay-server.ts);
 *   (b) the same through HAProxy in TCP mode (one process, one thread; installed with apt when
 *       missing, else the case says why it is skipped);
 *   (c) through Roam's Proxy (bench/relay-proxy.ts: the real `Proxy`, a published port per service)
 *       and its link to a stand-in controller (bench/relay-controller.ts: joins with the token,
 *       answers the deploy, serves every inbound stream in Node, no guest);
 *   (d) end to end to a real guest, examples/echo-server.js, via real `roam proxy` and `roam host`
 *       processes (deployed with POST /api/guests).
 * It measures bulk throughput each way through one connection, 64-byte round-trip latency,
 * new connections per second, the proxy's memory per idle stream with 10,000 open streams (c), and
 * whether a stalled stream slows another one through the same proxy and link (c). Targets for (c)
 * are from issue 3, section 8. Prints tables and refreshes the relay section of BENCHMARKS.md.
 *
 * Knobs: BENCH_NO_WRITE=1 leaves BENCHMARKS.md alone; BENCH_IDLE_STREAMS=N (default 10000);
 * BENCH_PROFILE=1 profiles (c) even when it passes, BENCH_PROFILE=0 never; BENCH_PROFILE_DIR=DIR
 * keeps the raw .cpuprofile files; BENCH_QUICK=1 runs only (a)-(c) throughput, latency and
 * connection rate (to try a change quickly), BENCH_QUICK=conn only their connection rate;
 * BENCH_PROXY_NODE_FLAGS='--trace-gc ...' passes flags to the proxy child; BENCH_BASELINE=REF adds
 * case (c0), (c) as it was at git revision REF, measured in the same rounds (a change against the
 * code before it, on the same machine at the same time); its processes run with the Node flags
 * in BENCH_BASELINE_NODE_FLAGS and the GLIBC_TUNABLES in BENCH_BASELINE_TUNABLES (default none,
 * as before src/common/node-flags.ts), the others with DAEMON_NODE_FLAGS and `daemonEnv()`'s
 * malloc settings, as `roam proxy` and `roam host` run.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { DAEMON_NODE_FLAGS, daemonEnv } from '../src/common/node-flags.js';
import { bundleGuest } from '../src/guest/bundle.js';
import { machineInfo, markdownTable, median, percentile, sleep } from './checkpoint-lib.js';
import { writeBenchSection } from './report.js';
import {
  CHUNK,
  SERVICES,
  startChild,
  stopProcess,
  type Child,
  type MemorySample,
  type ProfileSummary,
  type Service,
} from './relay-lib.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const ROAM_BIN = join(ROOT, 'bin', 'roam');
const ECHO_GUEST = join(ROOT, 'examples', 'echo-server.js');
const COMMAND = 'npm run bench:relay';
const HOST = '127.0.0.1';

/** Throughput: rounds per case and direction, each this long; the first WARM_MS are not counted. */
const BULK_ROUNDS = 5;
const BULK_MS = 1000;
const WARM_MS = 200;
/** Latency: round trips of 64 bytes, in rounds interleaved across the cases. */
const LAT_ROUNDS = 5;
const LAT_PER_ROUND = 1000;
const LAT_WARM_FIRST = 500;
const LAT_WARM = 100;
const LAT_BYTES = 64;
/**
 * New connections: rounds per case, each this long, with this many clients in parallel, after an
 * unrecorded warm-up of each case. Without it, the first rounds measured code still being compiled:
 * over 12 rounds in a row, (c) made 1499, 2774, 4306, then 4005-5227 connections per second, (a)
 * 4867 then 10313-11704, HAProxy 4923 then 4918-5692; a proxy serves for hours.
 */
const CONN_ROUNDS = 5;
const CONN_MS = 1000;
const CONN_WARM_MS = 3000;
const CONN_PARALLEL = 8;
/** Memory: idle streams held open through (c), opened this many at a time. */
const IDLE_STREAMS = Number(process.env['BENCH_IDLE_STREAMS'] ?? 10_000);
const IDLE_CONCURRENCY = 200;
const IDLE_CPU_MS = 2000;
/** Fairness: the measured stream runs this long, alone and next to a stalled one, twice each. */
const FAIR_MS = 1500;
const FAIR_ROUNDS = 2;
/** File descriptors the run needs: 10k client sockets here, 10k accepted ones in the proxy. */
const NOFILE = 65_536;

/**
 * BENCH_QUICK=1: only (a), (b) and (c) throughput, latency and connection rate (for trying changes);
 * BENCH_QUICK=conn: only their connection rate.
 */
const QUICK = process.env['BENCH_QUICK'] === '1' || process.env['BENCH_QUICK'] === 'conn';
const CONN_ONLY = process.env['BENCH_QUICK'] === 'conn';

const TARGETS = { throughput: 0.8, addedP50: 2, connRate: 0.5, bytesPerStream: 16 * 1024, fairness: 0.8 };

type CaseId = 'a' | 'b' | 'e' | 'c0' | 'c' | 'd';
interface Case {
  id: CaseId;
  label: string;
  ports: Partial<Record<Service, number>>;
  skipped?: string;
  /** The processes of the case besides the client (for CPU accounting), by role. */
  pids?: Record<string, number>;
}

// --- processes this run started (all stopped at the end) ---

const stoppers: Array<() => Promise<void>> = [];
const tempDirs: string[] = [];

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

async function cleanup(): Promise<void> {
  for (const stop of stoppers.splice(0).reverse()) {
    try {
      await stop();
    } catch (err) {
      console.error(`cleanup: ${(err as Error).message}`);
    }
  }
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

function track<R>(child: Child<R>): Child<R> {
  stoppers.push(() => child.stop());
  return child;
}

/** Starts an external program; `waitFor` resolves when its stdout matches. */
function startProgram(
  file: string,
  args: string[],
  env: Record<string, string> = {},
): { child: ChildProcess; waitFor: (re: RegExp, timeoutMs?: number) => Promise<RegExpMatchArray>; log: () => string } {
  const child = spawn(file, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  stoppers.push(() => stopProcess(child, exited));
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
  return {
    child,
    log: () => out,
    async waitFor(re, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = re.exec(out);
        if (m) return m;
        if (child.exitCode !== null || child.signalCode !== null)
          throw new Error(`${file} ${args.join(' ')} exited before printing ${String(re)}:\n${out}`);
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${String(re)} from ${file}:\n${out}`);
        await sleep(25);
      }
    },
  };
}

/** Every .ts file under `dir` (declaration files left out). */
function tsFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => join(dir, f));
}

/**
 * The children run as the `roam` command does: compiled to plain JavaScript by esbuild and started
 * with plain `node`. Under tsx they would run with source maps enabled, which makes every Error's
 * stack trace (one or two per closed connection) far more expensive than in production. Each file
 * is compiled on its own (not bundled) so that CPU profiles name the src/ file of every function;
 * packages resolve from the repository's node_modules.
 */
async function compileChildren(
  root = ROOT,
  outName = 'roam-bench-relay',
): Promise<Record<'server' | 'pipe' | 'proxy' | 'controller', string>> {
  const outdir = join(ROOT, 'node_modules', '.cache', outName);
  rmSync(outdir, { recursive: true, force: true });
  tempDirs.push(outdir);
  await build({
    entryPoints: [
      ...tsFiles(join(root, 'src')).filter((f) => !f.includes('/guest/runtime/')),
      ...['relay-lib', 'relay-server', 'relay-pipe', 'relay-proxy', 'relay-controller'].map((n) =>
        join(root, 'bench', `${n}.ts`),
      ),
    ],
    outdir,
    outbase: root,
    bundle: false,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    logLevel: 'warning',
  });
  writeFileSync(join(outdir, 'package.json'), '{ "type": "module" }\n');
  return {
    server: join(outdir, 'bench', 'relay-server.js'),
    pipe: join(outdir, 'bench', 'relay-pipe.js'),
    proxy: join(outdir, 'bench', 'relay-proxy.js'),
    controller: join(outdir, 'bench', 'relay-controller.js'),
  };
}

/**
 * BENCH_BASELINE=REF: the (c) children as they were at git revision REF (its src/ and bench/,
 * extracted with `git archive`), compiled the same way, so a change is measured side by side
 * with the code before it, as case (c0), in the same run.
 */
async function compileBaseline(ref: string): Promise<{ files: { proxy: string; controller: string }; label: string }> {
  const commit = execFileSync('git', ['rev-parse', '--short', ref], { cwd: ROOT, encoding: 'utf8' }).trim();
  // Under the repository's node_modules, so that the compiled files resolve its packages.
  const root = join(ROOT, 'node_modules', '.cache', 'roam-bench-baseline-src');
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  tempDirs.push(root);
  const archive = execFileSync('git', ['archive', '--format=tar', commit, 'src', 'bench'], {
    cwd: ROOT,
    maxBuffer: 256 * 2 ** 20,
  });
  execFileSync('tar', ['-x', '-C', root], { input: archive });
  const files = await compileChildren(root, 'roam-bench-relay-baseline');
  return { files, label: `the same at ${commit} (${ref}), for comparison` };
}

// --- the client side of every measurement (this process) ---

const chunk = Buffer.alloc(CHUNK, 0x62);

function connect(port: number, options: Pick<net.TcpSocketConnectOpts, 'onread'> = {}): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port, noDelay: true, ...options });
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Round trips of LAT_BYTES bytes on one connection, in microseconds (after `warm` unrecorded ones). */
async function latency(port: number, count: number, warm: number): Promise<number[]> {
  const socket = await connect(port);
  const message = Buffer.alloc(LAT_BYTES, 0x63);
  const samples: number[] = [];
  return new Promise((resolve, reject) => {
    let got = 0;
    let done = 0;
    let t0 = 0n;
    const send = (): void => {
      got = 0;
      t0 = process.hrtime.bigint();
      socket.write(message);
    };
    socket.on('data', (d: Buffer) => {
      got += d.length;
      if (got < LAT_BYTES) return;
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      if (done >= warm) samples.push(us);
      done++;
      if (done < warm + count) send();
      else {
        socket.destroy();
        resolve(samples);
      }
    });
    socket.on('error', reject);
    send();
  });
}

interface Bulk {
  /** Bytes per second in steady state. */
  rate: number;
  /** Bytes that reached the far end over the whole connection. */
  bytes: number;
}

/** Bytes per second a sink reports receiving, in steady state (after WARM_MS), while we write. */
async function upload(port: number, ms: number): Promise<Bulk> {
  const socket = await connect(port);
  const reports: Array<[number, number]> = [];
  let pending: Buffer = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, d]) : d;
    while (pending.length >= 8) {
      reports.push([performance.now(), Number(pending.readBigUInt64BE(0))]);
      pending = pending.subarray(8);
    }
  });
  socket.on('error', () => {});
  const t0 = performance.now();
  let stop = false;
  const pump = (): void => {
    while (!stop && socket.write(chunk));
    if (!stop) socket.once('drain', pump);
  };
  pump();
  await sleep(ms);
  stop = true;
  socket.destroy();
  const first = reports.find(([t]) => t >= t0 + WARM_MS);
  const last = reports.at(-1);
  const bytes = last?.[1] ?? 0;
  if (!first || !last || last[0] <= first[0]) return { rate: NaN, bytes };
  return { rate: (last[1] - first[1]) / ((last[0] - first[0]) / 1000), bytes };
}

/** How fast `counted()` grows between WARM_MS and `ms` (per second), and where it ends. */
async function steadyRate(counted: () => number, ms: number): Promise<Bulk> {
  await sleep(WARM_MS);
  const c0 = counted();
  const t0 = performance.now();
  await sleep(ms - WARM_MS);
  const c1 = counted();
  const t1 = performance.now();
  return { rate: (c1 - c0) / ((t1 - t0) / 1000), bytes: c1 };
}

/** Counts what arrives on `socket` between WARM_MS and `ms` (bytes per second) and in all. */
async function countIncoming(socket: net.Socket, ms: number): Promise<Bulk> {
  let count = 0;
  socket.on('data', (d: Buffer) => (count += d.length));
  return steadyRate(() => count, ms);
}

/**
 * What the download client reads into, reused: it only counts bytes. (With a new 64-KiB buffer per
 * read, as 'data' events give, this client used 0.38-0.95 ns of CPU per byte in most runs, but
 * 2.5-3.9 in some, and then it was what limited every case, direct included: 289 and 442 MB/s
 * against 1940-2583. Reading so, it used 0.28-0.52.)
 */
const downloadBuffer = Buffer.allocUnsafe(256 * 1024);

async function download(port: number, ms: number): Promise<Bulk> {
  let count = 0;
  const socket = await connect(port, {
    onread: { buffer: downloadBuffer, callback: (bytes: number) => ((count += bytes), true) },
  });
  socket.on('error', () => {});
  const result = await steadyRate(() => count, ms);
  socket.destroy();
  return result;
}

/** Echo throughput: we write as fast as the connection takes it and count what comes back. */
async function echoBulk(port: number, ms: number): Promise<Bulk> {
  const socket = await connect(port);
  socket.on('error', () => {});
  let stop = false;
  const pump = (): void => {
    while (!stop && socket.write(chunk));
    if (!stop) socket.once('drain', pump);
  };
  pump();
  const result = await countIncoming(socket, ms);
  stop = true;
  socket.destroy();
  return result;
}

// --- CPU accounting of whole processes (all threads), from /proc ---

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** User + system CPU time of a process so far, in ms (NaN where /proc cannot say). */
function processCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(rest[11]) + Number(rest[12])) * 1000) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/**
 * Per workload: CPU ms each process of a case used, and the work done meanwhile (bytes moved each
 * way; connections made, for 'connections').
 */
type CpuAccount = Record<'upload' | 'download' | 'connections', { bytes: number; cpuMs: Record<string, number> }>;

const emptyAccount = (): CpuAccount => ({
  upload: { bytes: 0, cpuMs: {} },
  download: { bytes: 0, cpuMs: {} },
  connections: { bytes: 0, cpuMs: {} },
});

async function accounted<T extends { bytes: number }>(
  c: Case,
  account: CpuAccount,
  dir: keyof CpuAccount,
  run: () => Promise<T>,
): Promise<T> {
  const pids: Record<string, number> = { client: process.pid, ...c.pids };
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, processCpuMs(pid)]));
  const result = await run();
  const entry = account[dir];
  entry.bytes += result.bytes;
  for (const [k, pid] of Object.entries(pids))
    entry.cpuMs[k] = (entry.cpuMs[k] ?? 0) + processCpuMs(pid) - (before[k] ?? NaN);
  return result;
}

/** Connect, send 1 byte, get 1 byte back, close. */
function oneConnection(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port, noDelay: true });
    let echoed = false;
    const timer = setTimeout(() => socket.destroy(new Error('no answer within 5 s')), 5000);
    socket.once('connect', () => socket.write('x'));
    socket.once('data', () => {
      echoed = true;
      socket.destroy();
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      if (echoed) resolve();
      else reject(new Error('closed before the echo'));
    });
  });
}

/** `bytes`: the connections made (for `accounted`). */
async function connectionRate(port: number, ms: number): Promise<{ rate: number; errors: number; bytes: number }> {
  let done = 0;
  let errors = 0;
  const t0 = performance.now();
  const deadline = t0 + ms;
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      try {
        await oneConnection(port);
        done++;
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: CONN_PARALLEL }, worker));
  return { rate: done / ((performance.now() - t0) / 1000), errors, bytes: done };
}

/** Opens `n` connections to an echo port, each proven end to end by one echoed byte, and keeps them. */
async function openIdle(port: number, n: number): Promise<{ sockets: net.Socket[]; errors: number }> {
  const sockets: net.Socket[] = [];
  let errors = 0;
  let next = 0;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const socket = net.connect({ host: HOST, port, noDelay: true });
      socket.once('connect', () => socket.write('i'));
      socket.once('data', () => {
        sockets.push(socket);
        resolve();
      });
      socket.once('error', () => {
        errors++;
        socket.destroy();
        resolve();
      });
    });
  const worker = async (): Promise<void> => {
    while (next < n) {
      next++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: IDLE_CONCURRENCY }, worker));
  return { sockets, errors };
}

async function waitPortOpen(port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      (await connect(port)).destroy();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(50);
    }
  }
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// --- setting up the cases ---

/** The open-files limit of this process (children inherit it); re-executes with a higher one if needed. */
function ensureFileLimit(): number {
  const current = Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim());
  const hardText = execFileSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim();
  const hard = hardText === 'unlimited' ? Infinity : Number(hardText);
  // Raising the hard limit needs CAP_SYS_RESOURCE (root outside a restricted container): try it.
  const canRaise = hard > current || spawnSync('sh', ['-c', `ulimit -n ${NOFILE}`], { stdio: 'ignore' }).status === 0;
  if (current >= NOFILE || !canRaise || process.env['ROAM_BENCH_RAISED'] === '1') return current;
  const script = fileURLToPath(import.meta.url);
  console.error(`open-files limit ${current}: running again with ${NOFILE} (or the hard limit)`);
  const raised = spawnSync(
    'sh',
    [
      '-c',
      `ulimit -n ${NOFILE} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`,
      'sh',
      process.execPath,
      ...process.execArgv,
      script,
      ...process.argv.slice(2),
    ],
    { stdio: 'inherit', env: { ...process.env, ROAM_BENCH_RAISED: '1' } },
  );
  process.exit(raised.status ?? 1);
}

function haveHaproxy(): boolean {
  return spawnSync('sh', ['-c', 'command -v haproxy'], { stdio: 'ignore' }).status === 0;
}

/** Finds HAProxy, or installs it with apt; returns why not when neither works. */
function ensureHaproxy(): string | undefined {
  if (haveHaproxy()) return undefined;
  if (process.getuid?.() !== 0) return 'haproxy is not installed and this is not root (apt-get install -y haproxy)';
  if (spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status !== 0)
    return 'haproxy is not installed and there is no apt-get';
  console.error('installing haproxy with apt-get ...');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let r = spawnSync('apt-get', ['install', '-y', '-qq', 'haproxy'], { stdio: 'ignore', env });
  if (r.status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'ignore', env });
    r = spawnSync('apt-get', ['install', '-y', '-qq', 'haproxy'], { stdio: 'ignore', env });
  }
  return haveHaproxy() ? undefined : `apt-get install haproxy failed (exit ${String(r.status)})`;
}

async function startHaproxy(backends: Record<Service, number>, fileLimit: number, serverPid: number): Promise<Case> {
  const label = 'HAProxy (TCP mode, 1 thread)';
  const why = ensureHaproxy();
  if (why) return { id: 'b', label, ports: {}, skipped: why };
  const version = /version (\S+)/.exec(execFileSync('haproxy', ['-v'], { encoding: 'utf8' }))?.[1] ?? '?';
  const dir = tempDir('roam-bench-haproxy-');
  const ports: Partial<Record<Service, number>> = {};
  const sections: string[] = [];
  for (const service of Object.keys(SERVICES) as Service[]) {
    const port = await freePort();
    ports[service] = port;
    sections.push(`listen ${service}\n    bind ${HOST}:${port}\n    server s1 ${HOST}:${backends[service]}\n`);
  }
  const config = [
    'global',
    // HAProxy wants about 2 descriptors per connection and refuses to start above the limit.
    `    maxconn ${Math.min(20_000, Math.floor((fileLimit - 200) / 2))}`,
    '    nbthread 1',
    'defaults',
    '    mode tcp',
    '    timeout connect 5s',
    '    timeout client 300s',
    '    timeout server 300s',
    '',
    ...sections,
  ].join('\n');
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, config);
  const check = spawnSync('haproxy', ['-c', '-q', '-f', file], { encoding: 'utf8' });
  if (check.status !== 0) return { id: 'b', label, ports: {}, skipped: `haproxy refused its config: ${check.stderr}` };
  const haproxy = startProgram('haproxy', ['-db', '-f', file]);
  const pids = { haproxy: haproxy.child.pid ?? NaN, server: serverPid };
  try {
    await Promise.all(Object.values(ports).map((p) => waitPortOpen(p, 5000)));
  } catch (err) {
    return { id: 'b', label, ports: {}, skipped: `haproxy did not start: ${(err as Error).message}: ${haproxy.log()}` };
  }
  return { id: 'b', label: `HAProxy ${version} (TCP mode, 1 thread)`, ports, pids };
}

interface ProxyChildReady {
  controlPort: number;
  joinToken: string;
}

interface RoamRelay {
  c: Case;
  proxy: Child<ProxyChildReady>;
  controller: Child<{ name: string }>;
  stop(): Promise<void>;
}

/** A fresh pair of (c) processes: the Proxy and the stand-in controller, with a guest deployed. */
async function startRoamRelay(
  files: { proxy: string; controller: string },
  id: 'c' | 'c0' = 'c',
  label = 'Roam proxy + link, controller-side sink (no guest)',
): Promise<RoamRelay> {
  const dir = tempDir('roam-bench-proxy-');
  // The Node flags `roam proxy` and `roam host` run with (bin/roam), or the baseline's.
  const nodeFlags =
    id === 'c0' ? (process.env['BENCH_BASELINE_NODE_FLAGS'] ?? '').split(' ').filter(Boolean) : DAEMON_NODE_FLAGS;
  // Their malloc settings too, or the baseline's.
  const tunables = id === 'c0' ? process.env['BENCH_BASELINE_TUNABLES'] : daemonEnv({}).GLIBC_TUNABLES;
  const env: Record<string, string> = tunables ? { GLIBC_TUNABLES: tunables } : {};
  const proxy = track(
    startChild<ProxyChildReady>(files.proxy, [dir], {
      cwd: ROOT,
      execArgv: [
        '--expose-gc',
        ...nodeFlags,
        ...(process.env['BENCH_PROXY_NODE_FLAGS'] ?? '').split(' ').filter(Boolean),
      ],
      env,
      name: 'relay-proxy',
    }),
  );
  const { controlPort, joinToken } = await proxy.ready;
  const controller = track(
    startChild<{ name: string }>(files.controller, [String(controlPort)], {
      cwd: ROOT,
      execArgv: ['--expose-gc', ...nodeFlags],
      env: { ...env, ROAM_JOIN_TOKEN: joinToken },
      name: 'relay-controller',
    }),
  );
  const { name } = await controller.ready;
  const ports: Partial<Record<Service, number>> = {};
  const publish = [];
  for (const service of Object.keys(SERVICES) as Service[]) {
    const port = await freePort();
    ports[service] = port;
    publish.push({ public: port, guest: SERVICES[service], protocol: 'tcp' as const });
  }
  await proxy.call('deploy', {
    name: 'bench-sink',
    bundle: '/* served by the bench controller */',
    publish,
    env: {},
    argv: [],
    on: name,
  });
  const pids = { proxy: proxy.child.pid ?? NaN, controller: controller.child.pid ?? NaN };
  return {
    c: { id, label, ports, pids },
    proxy,
    controller,
    stop: async () => {
      await controller.stop();
      await proxy.stop();
    },
  };
}

async function startRoamGuest(): Promise<Case> {
  const label = 'Roam end to end: `roam proxy` + `roam host` + guest examples/echo-server.js';
  const dir = tempDir('roam-bench-e2e-');
  // As bin/roam starts them: with the Node flags and malloc settings of Roam's processes.
  const proxy = startProgram(
    process.execPath,
    [
      ...DAEMON_NODE_FLAGS,
      ROAM_BIN,
      'proxy',
      '--bind',
      HOST,
      '--control-port',
      '0',
      '--api-port',
      '0',
      '--data-dir',
      join(dir, 'proxy'),
      '--name',
      'bench-e2e',
    ],
    daemonEnv({}),
  );
  const controlPort = Number((await proxy.waitFor(/control port (\d+)/))[1]);
  const apiPort = Number((await proxy.waitFor(/api port +(\d+)/))[1]);
  const joinToken = readFileSync(join(dir, 'proxy', 'join-token'), 'utf8').trim();
  const adminToken = readFileSync(join(dir, 'proxy', 'admin-token'), 'utf8').trim();
  const host = startProgram(
    process.execPath,
    [
      ...DAEMON_NODE_FLAGS,
      ROAM_BIN,
      'host',
      '--proxy',
      `${HOST}:${controlPort}`,
      '--name',
      'bench-e2e-host',
      '--data-dir',
      join(dir, 'host'),
      '--no-benchmark',
    ],
    daemonEnv({ ROAM_JOIN_TOKEN: joinToken }),
  );
  await host.waitFor(/joined the proxy/);
  const port = await freePort();
  const { code } = await bundleGuest(ECHO_GUEST);
  const res = await fetch(`http://${HOST}:${apiPort}/api/guests`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      name: 'echo',
      bundle: code,
      publish: [{ public: port, guest: 7000, protocol: 'tcp' }],
      env: {},
      argv: [],
    }),
  });
  if (res.status !== 201) throw new Error(`deploying the echo guest failed: ${res.status} ${await res.text()}`);
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await oneConnection(port);
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(100);
    }
  }
  return {
    id: 'd',
    label,
    ports: { echo: port },
    pids: { proxy: proxy.child.pid ?? NaN, host: host.child.pid ?? NaN },
  };
}

// --- measurements ---

interface Result {
  upload: number[];
  download: number[];
  echo: number[];
  latency: number[];
  conn: number[];
  connErrors: number;
  cpu: CpuAccount;
}

const emptyResult = (): Result => ({
  upload: [],
  download: [],
  echo: [],
  latency: [],
  conn: [],
  connErrors: 0,
  cpu: emptyAccount(),
});

async function measureAll(cases: Case[], results: Map<CaseId, Result>): Promise<void> {
  const live = cases.filter((c) => !c.skipped);
  const get = (c: Case): Result => results.get(c.id) as Result;
  console.error('latency ...');
  for (let round = 0; round < (CONN_ONLY ? 0 : LAT_ROUNDS); round++) {
    for (const c of live) {
      get(c).latency.push(
        ...(await latency(c.ports.echo as number, LAT_PER_ROUND, round === 0 ? LAT_WARM_FIRST : LAT_WARM)),
      );
    }
  }
  console.error('throughput ...');
  for (let round = 0; round < (CONN_ONLY ? 0 : BULK_ROUNDS); round++) {
    for (const c of live) {
      const r = get(c);
      const { sink, source, echo } = c.ports;
      if (sink) r.upload.push((await accounted(c, r.cpu, 'upload', () => upload(sink, BULK_MS))).rate);
      if (source) r.download.push((await accounted(c, r.cpu, 'download', () => download(source, BULK_MS))).rate);
      r.echo.push((await echoBulk(echo as number, BULK_MS)).rate);
    }
  }
  console.error('connection rate ...');
  for (const c of live) await connectionRate(c.ports.echo as number, CONN_WARM_MS);
  for (let round = 0; round < CONN_ROUNDS; round++) {
    for (const c of live) {
      const { rate, errors } = await accounted(c, get(c).cpu, 'connections', () =>
        connectionRate(c.ports.echo as number, CONN_MS),
      );
      get(c).conn.push(rate);
      get(c).connErrors += errors;
      await sleep(100);
    }
  }
}

interface MemoryResult {
  streams: number;
  errors: number;
  proxyStreams: number;
  openMs: number;
  proxyBefore: MemorySample;
  proxyAfter: MemorySample;
  proxyClosed: MemorySample;
  /** What the proxy's link session still holds once every stream has closed (should be nothing). */
  sessionAfterClose: { streams: number; closeHandlers: number };
  controllerBefore: MemorySample;
  controllerAfter: MemorySample;
  proxyIdleCpuMs: number;
  controllerIdleCpuMs: number;
  proxyBaseCpuMs: number;
}

async function measureMemory(
  c: Case,
  proxy: Child<ProxyChildReady>,
  controller: Child<{ name: string }>,
): Promise<MemoryResult> {
  console.error(`memory: ${IDLE_STREAMS} idle streams ...`);
  const port = c.ports.echo as number;
  // Warm up: the code paths of a stream are compiled before the baseline.
  for (let i = 0; i < 3; i++) {
    const { sockets } = await openIdle(port, 200);
    for (const s of sockets) s.destroy();
    await sleep(200);
  }
  await sleep(300);
  const proxyBaseCpuMs = await proxy.call<number>('cpu', { ms: 1000 });
  const proxyBefore = await proxy.call<MemorySample>('memory');
  const controllerBefore = await controller.call<MemorySample>('memory');
  const t0 = performance.now();
  const { sockets, errors } = await openIdle(port, IDLE_STREAMS);
  const openMs = performance.now() - t0;
  await sleep(1000);
  const proxyStreams = await proxy.call<number>('streams');
  const proxyAfter = await proxy.call<MemorySample>('memory');
  const controllerAfter = await controller.call<MemorySample>('memory');
  const [proxyIdleCpuMs, controllerIdleCpuMs] = await Promise.all([
    proxy.call<number>('cpu', { ms: IDLE_CPU_MS }),
    controller.call<number>('cpu', { ms: IDLE_CPU_MS }),
  ]);
  for (const s of sockets) s.destroy();
  const deadline = Date.now() + 30_000;
  while ((await proxy.call<number>('streams')) > 0 && Date.now() < deadline) await sleep(100);
  await sleep(500);
  const proxyClosed = await proxy.call<MemorySample>('memory');
  const [sessionAfterClose = { streams: NaN, closeHandlers: NaN }] =
    await proxy.call<Array<{ streams: number; closeHandlers: number }>>('sessions');
  return {
    streams: sockets.length,
    errors,
    proxyStreams,
    openMs,
    proxyBefore,
    proxyAfter,
    proxyClosed,
    sessionAfterClose,
    controllerBefore,
    controllerAfter,
    proxyIdleCpuMs,
    controllerIdleCpuMs,
    proxyBaseCpuMs,
  };
}

interface AfterMany {
  used: { upload: number[]; download: number[]; cpu: CpuAccount };
  fresh: { upload: number[]; download: number[]; cpu: CpuAccount };
}

const AFTER_MANY_ROUNDS = 3;

/** Throughput of a (c) pair that has carried many connections, against a fresh pair, alternating. */
async function measureAfterMany(used: Case, fresh: Case): Promise<AfterMany> {
  console.error('throughput after many streams ...');
  const blank = (): AfterMany['used'] => ({
    upload: [],
    download: [],
    cpu: emptyAccount(),
  });
  const out: AfterMany = { used: blank(), fresh: blank() };
  for (let round = 0; round < AFTER_MANY_ROUNDS; round++) {
    for (const [c, r] of [
      [used, out.used],
      [fresh, out.fresh],
    ] as const) {
      const { sink, source } = c.ports;
      r.upload.push((await accounted(c, r.cpu, 'upload', () => upload(sink as number, BULK_MS))).rate);
      r.download.push((await accounted(c, r.cpu, 'download', () => download(source as number, BULK_MS))).rate);
    }
  }
  return out;
}

interface FairnessResult {
  downloadAlone: number;
  downloadStalled: number;
  uploadAlone: number;
  uploadStalled: number;
  stalledUploadQueued: number;
}

/** One stream whose reader is stalled, next to a stream measured for throughput, both through (c). */
async function measureFairness(c: Case): Promise<FairnessResult> {
  console.error('fairness ...');
  const source = c.ports.source as number;
  const sink = c.ports.sink as number;
  const stall = c.ports.stall as number;
  const dl = { alone: [] as number[], stalled: [] as number[] };
  const ul = { alone: [] as number[], stalled: [] as number[] };
  let stalledUploadQueued = 0;
  for (let round = 0; round < FAIR_ROUNDS; round++) {
    // Download: the remote client of the stalled stream does not read.
    dl.alone.push((await download(source, FAIR_MS)).rate);
    const stalledReader = await connect(source);
    stalledReader.on('error', () => {});
    stalledReader.pause();
    await sleep(300);
    dl.stalled.push((await download(source, FAIR_MS)).rate);
    stalledReader.destroy();

    // Upload: the controller side of the stalled stream never reads what we send it.
    ul.alone.push((await upload(sink, FAIR_MS)).rate);
    const stalledWriter = await connect(stall);
    stalledWriter.on('error', () => {});
    let queued = 0;
    const fill = (): void => {
      while (queued < 64 * 2 ** 20 && stalledWriter.write(chunk)) queued += CHUNK;
    };
    fill();
    stalledWriter.on('drain', fill);
    await sleep(300);
    ul.stalled.push((await upload(sink, FAIR_MS)).rate);
    stalledUploadQueued = Math.max(stalledUploadQueued, queued);
    stalledWriter.destroy();
    await sleep(100);
  }
  return {
    downloadAlone: median(dl.alone),
    downloadStalled: median(dl.stalled),
    uploadAlone: median(ul.alone),
    uploadStalled: median(ul.stalled),
    stalledUploadQueued,
  };
}

interface ProfileResult {
  workload: string;
  proxy: ProfileSummary;
  controller: ProfileSummary;
}

async function profileRelay(
  c: Case,
  proxy: Child<ProxyChildReady>,
  controller: Child<{ name: string }>,
): Promise<ProfileResult[]> {
  const workloads: Array<[string, () => Promise<unknown>]> = [
    ['upload 2 s', () => upload(c.ports.sink as number, 2000)],
    ['download 2 s', () => download(c.ports.source as number, 2000)],
    ['latency 3000 round trips', () => latency(c.ports.echo as number, 3000, 0)],
    ['new connections 2 s', () => connectionRate(c.ports.echo as number, 2000)],
  ];
  const out: ProfileResult[] = [];
  // Warm up the fresh pair's code paths first (not profiled).
  await upload(c.ports.sink as number, 500);
  await download(c.ports.source as number, 500);
  await latency(c.ports.echo as number, 500, 0);
  await connectionRate(c.ports.echo as number, 500);
  const dir = process.env['BENCH_PROFILE_DIR'];
  if (dir) mkdirSync(dir, { recursive: true });
  for (const [workload, run] of workloads) {
    console.error(`profile: ${workload} ...`);
    await Promise.all([proxy.call('profileStart'), controller.call('profileStart')]);
    await run();
    const file = (who: string): { save?: string } =>
      dir ? { save: join(dir, `${who}-${workload.split(' ')[0] ?? 'x'}.cpuprofile`) } : {};
    const [p, k] = await Promise.all([
      proxy.call<ProfileSummary>('profileStop', file('proxy')),
      controller.call<ProfileSummary>('profileStop', file('controller')),
    ]);
    out.push({ workload, proxy: p, controller: k });
    await sleep(200);
  }
  return out;
}

// --- reporting ---

const mbs = (bytesPerSec: number): string => (Number.isFinite(bytesPerSec) ? (bytesPerSec / 1e6).toFixed(0) : 'n/a');
const us = (v: number): string => (Number.isFinite(v) ? v.toFixed(0) : 'n/a');
const x = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)}x` : 'n/a');
const kib = (bytes: number): string => (bytes / 1024).toFixed(1);
const mibs = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);
const verdict = (ok: boolean | undefined): string => (ok === undefined ? 'n/a' : ok ? 'PASS' : 'FAIL');

interface Summary {
  upload: number;
  download: number;
  echo: number;
  p50: number;
  p99: number;
  conn: number;
  connErrors: number;
  latencyCount: number;
}

function summarize(r: Result): Summary {
  return {
    upload: median(r.upload),
    download: median(r.download),
    echo: median(r.echo),
    p50: percentile(r.latency, 50),
    p99: percentile(r.latency, 99),
    conn: median(r.conn),
    connErrors: r.connErrors,
    latencyCount: r.latency.length,
  };
}

function mainTable(cases: Case[], s: Map<CaseId, Summary>): string {
  const a = s.get('a');
  return markdownTable(
    [
      'case',
      'upload MB/s',
      'download MB/s',
      'echo MB/s',
      'p50 µs',
      'p99 µs',
      'added p50 µs (vs a)',
      'added p99 µs (vs a)',
      'conn/s',
    ],
    cases.map((c) => {
      const r = s.get(c.id);
      if (c.skipped || !r) return [`(${c.id}) ${c.label}`, `skipped: ${c.skipped ?? '?'}`, '', '', '', '', '', '', ''];
      return [
        `(${c.id}) ${c.label}`,
        c.ports.sink ? mbs(r.upload) : 'n/a (echo only)',
        c.ports.source ? mbs(r.download) : 'n/a (echo only)',
        mbs(r.echo),
        us(r.p50),
        us(r.p99),
        c.id === 'a' || !a ? '-' : us(r.p50 - a.p50),
        c.id === 'a' || !a ? '-' : us(r.p99 - a.p99),
        `${r.conn.toFixed(0)}${r.connErrors ? ` (${r.connErrors} errors)` : ''}`,
      ];
    }),
  );
}

interface Verdicts {
  rows: string[][];
  failed: boolean;
}

function targetsTable(
  s: Map<CaseId, Summary>,
  mem: MemoryResult | undefined,
  fair: FairnessResult | undefined,
): Verdicts {
  const a = s.get('a');
  const b = s.get('b');
  const c = s.get('c');
  const d = s.get('d');
  const rows: string[][] = [];
  let failed = false;
  const add = (what: string, value: string, target: string, ok: boolean | undefined): void => {
    if (ok === false) failed = true;
    rows.push([what, value, target, verdict(ok)]);
  };
  if (c && b) {
    const up = c.upload / b.upload;
    const down = c.download / b.download;
    add(
      '(c) upload throughput / (b)',
      `${x(up)} (${mbs(c.upload)} / ${mbs(b.upload)} MB/s)`,
      `>= ${TARGETS.throughput}x`,
      up >= TARGETS.throughput,
    );
    add(
      '(c) download throughput / (b)',
      `${x(down)} (${mbs(c.download)} / ${mbs(b.download)} MB/s)`,
      `>= ${TARGETS.throughput}x`,
      down >= TARGETS.throughput,
    );
    add(
      '(c) echo throughput / (b)',
      `${x(c.echo / b.echo)} (${mbs(c.echo)} / ${mbs(b.echo)} MB/s)`,
      '(for reference)',
      undefined,
    );
  } else add('(c) throughput / (b)', 'n/a: (b) skipped', `>= ${TARGETS.throughput}x`, undefined);
  if (a && b && c) {
    const addedB = b.p50 - a.p50;
    const addedC = c.p50 - a.p50;
    add(
      '(c) added p50 latency / (b) added p50 latency',
      `${x(addedC / addedB)} (${us(addedC)} / ${us(addedB)} µs)`,
      `<= ${TARGETS.addedP50}x`,
      addedC / addedB <= TARGETS.addedP50,
    );
    add(
      '(c) added p99 latency / (b) added p99 latency',
      `${x((c.p99 - a.p99) / (b.p99 - a.p99))} (${us(c.p99 - a.p99)} / ${us(b.p99 - a.p99)} µs)`,
      '(for reference)',
      undefined,
    );
  }
  if (c && b) {
    const r = c.conn / b.conn;
    add(
      '(c) connection rate / (b)',
      `${x(r)} (${c.conn.toFixed(0)} / ${b.conn.toFixed(0)} per s)`,
      `>= ${TARGETS.connRate}x`,
      r >= TARGETS.connRate,
    );
  }
  if (mem) {
    const per = (mem.proxyAfter.rss - mem.proxyBefore.rss) / mem.streams;
    const heap = (mem.proxyAfter.heapUsed - mem.proxyBefore.heapUsed) / mem.streams;
    add(
      `(c) proxy memory per idle stream (${mem.streams} streams)`,
      `${kib(per)} KiB RSS (${kib(heap)} KiB of it JS heap)`,
      `<= ${kib(TARGETS.bytesPerStream)} KiB`,
      mem.streams >= IDLE_STREAMS && per <= TARGETS.bytesPerStream,
    );
  }
  if (fair) {
    const down = fair.downloadStalled / fair.downloadAlone;
    const up = fair.uploadStalled / fair.uploadAlone;
    add(
      '(c) download of one stream next to a stalled reader / alone',
      `${x(down)} (${mbs(fair.downloadStalled)} / ${mbs(fair.downloadAlone)} MB/s)`,
      `>= ${TARGETS.fairness}x (not stalled)`,
      down >= TARGETS.fairness,
    );
    add(
      '(c) upload of one stream next to a stalled reader / alone',
      `${x(up)} (${mbs(fair.uploadStalled)} / ${mbs(fair.uploadAlone)} MB/s)`,
      `>= ${TARGETS.fairness}x (not stalled)`,
      up >= TARGETS.fairness,
    );
  }
  const c0 = s.get('c0');
  if (c0 && c && a) {
    add(
      '(c) / (c0), the same before the change: upload, download, added p50, conn/s',
      `${x(c.upload / c0.upload)}, ${x(c.download / c0.download)}, ${x((c.p50 - a.p50) / (c0.p50 - a.p50))}` +
        ` (${us(c.p50 - a.p50)} / ${us(c0.p50 - a.p50)} µs), ${x(c.conn / c0.conn)}`,
      '(for reference)',
      undefined,
    );
  }
  const e = s.get('e');
  if (e && a && b) {
    add(
      '(e) one plain Node relay hop / (b): upload, download, added p50, conn/s',
      `${x(e.upload / b.upload)}, ${x(e.download / b.download)}, ${x((e.p50 - a.p50) / (b.p50 - a.p50))}` +
        ` (${us(e.p50 - a.p50)} µs), ${x(e.conn / b.conn)}`,
      '(for reference)',
      undefined,
    );
  }
  if (d && a) {
    add(
      '(d) guest echo: throughput, p50 / p99, conn/s',
      `${mbs(d.echo)} MB/s (${x(d.echo / a.echo)} of (a)); ${us(d.p50)} / ${us(d.p99)} µs; ${d.conn.toFixed(0)} per s (${x(d.conn / a.conn)} of (a))`,
      'measured',
      undefined,
    );
  }
  return { rows, failed };
}

function memoryTable(m: MemoryResult): string {
  const row = (what: string, before: MemorySample, after: MemorySample): string[] => [
    what,
    `${mibs(before.rss)} -> ${mibs(after.rss)}`,
    kib((after.rss - before.rss) / m.streams),
    `${mibs(before.heapUsed)} -> ${mibs(after.heapUsed)}`,
    kib((after.heapUsed - before.heapUsed) / m.streams),
    kib((after.external - before.external) / m.streams),
  ];
  return markdownTable(
    ['process', 'RSS MiB', 'RSS KiB/stream', 'JS heap used MiB', 'heap KiB/stream', 'external KiB/stream'],
    [
      row('(c) proxy', m.proxyBefore, m.proxyAfter),
      row('(c) controller (for reference)', m.controllerBefore, m.controllerAfter),
    ],
  );
}

/** CPU time per byte moved, per process of each case (ns/B: 1 ns per byte is 1 s of CPU per GB). */
function cpuTable(cases: Case[], results: Map<CaseId, Result>): string {
  const rows: string[][] = [];
  for (const c of cases) {
    const r = results.get(c.id);
    if (!r || c.skipped || !(r.cpu.upload.bytes || r.cpu.connections.bytes)) continue;
    // ns per byte moved; µs per connection made (1e6 ms -> ns, 1e3 ms -> µs).
    const per = (dir: keyof CpuAccount, who: string): number =>
      ((r.cpu[dir].cpuMs[who] ?? NaN) * (dir === 'connections' ? 1e3 : 1e6)) / r.cpu[dir].bytes;
    const roles = ['client', ...Object.keys(c.pids ?? {})];
    const cell = (dir: keyof CpuAccount, digits: number): string =>
      r.cpu[dir].bytes === 0
        ? 'n/a'
        : roles.map((k) => `${k} ${per(dir, k).toFixed(digits)}`).join(', ') +
          `; all but the client ${roles
            .slice(1)
            .reduce((sum, k) => sum + per(dir, k), 0)
            .toFixed(digits)}`;
    rows.push([`(${c.id})`, cell('upload', 2), cell('download', 2), cell('connections', 0)]);
  }
  return markdownTable(
    ['case', 'upload: CPU ns per byte', 'download: CPU ns per byte', 'new connections: CPU µs per connection'],
    rows,
  );
}

function memoryReport(memory: MemoryResult, fairness: FairnessResult): string {
  return [
    `Memory with ${memory.streams} idle streams through (c) (${memory.errors} failed to open; the proxy counted` +
      ` ${memory.proxyStreams} streams; opened in ${(memory.openMs / 1000).toFixed(1)} s):`,
    '',
    memoryTable(memory),
    '',
    `With the streams idle, the proxy used ${memory.proxyIdleCpuMs.toFixed(0)} ms of CPU in ${IDLE_CPU_MS} ms` +
      ` (${memory.proxyBaseCpuMs.toFixed(0)} ms per 1000 ms before they were opened) and the controller` +
      ` ${memory.controllerIdleCpuMs.toFixed(0)} ms. After they all closed, the proxy's RSS was` +
      ` ${mibs(memory.proxyClosed.rss)} MiB and its heap ${mibs(memory.proxyClosed.heapUsed)} MiB` +
      ` (${mibs(memory.proxyBefore.heapUsed)} MiB before), and its link session still held` +
      ` ${memory.sessionAfterClose.streams} streams and ${memory.sessionAfterClose.closeHandlers} close handlers. Fairness, upload: the` +
      ` client had ${mibs(fairness.stalledUploadQueued)} MiB written into the stalled stream when its socket pushed back.`,
  ].join('\n');
}

function afterManyReport(a: AfterMany, memory: MemoryResult): string {
  const ns = (r: AfterMany['used'], dir: keyof CpuAccount): string =>
    (((r.cpu[dir].cpuMs['proxy'] ?? NaN) * 1e6) / r.cpu[dir].bytes).toFixed(2);
  const row = (what: string, r: AfterMany['used']): string[] => [
    what,
    mbs(median(r.upload)),
    ns(r, 'upload'),
    mbs(median(r.download)),
    ns(r, 'download'),
  ];
  return [
    `The same (c) throughput on the pair that carried the ${memory.streams} idle streams (and the warm-up) after they` +
      ` closed, against the fresh pair, alternating, ${AFTER_MANY_ROUNDS} rounds of ${BULK_MS} ms each (medians):`,
    '',
    markdownTable(
      ['(c) pair', 'upload MB/s', 'proxy CPU ns/byte', 'download MB/s', 'proxy CPU ns/byte'],
      [row(`after ${memory.streams} streams`, a.used), row('fresh', a.fresh)],
    ),
  ].join('\n');
}

function profileTables(profiles: ProfileResult[]): string {
  const lines: string[] = [];
  const pct = (v: number): string => v.toFixed(1);
  for (const p of profiles) {
    for (const [who, s] of [
      ['proxy', p.proxy],
      ['controller', p.controller],
    ] as const) {
      lines.push(
        `**${p.workload}, ${who}**: ${s.totalMs.toFixed(0)} ms profiled, ${(100 - s.idlePct).toFixed(0)}% busy,` +
          ` GC ${pct(s.gcPct)}%. Self time, then Roam's functions by inclusive time (% of wall time):`,
        '',
        markdownTable(
          ['self: function', 'where', 'self %', 'called from', 'Roam: function', 'where', 'incl. %', 'self %'],
          Array.from({ length: who === 'proxy' ? 8 : 5 }, (_, i) => {
            const t = s.top[i];
            const r = s.roam[i];
            return [
              t?.fn ?? '',
              t ? t.where || '(native)' : '',
              t ? pct(t.selfPct) : '',
              t?.caller ?? '',
              r?.fn ?? '',
              r?.where ?? '',
              r ? pct(r.totalPct) : '',
              r ? pct(r.selfPct) : '',
            ];
          }),
        ),
        '',
      );
    }
  }
  return lines.join('\n');
}

function method(fileLimit: number): string {
  return [
    `Every case runs in its own processes on 127.0.0.1, started by this run and stopped at its end; this process is`,
    `the client of all of them. (a) and (b) reach bench/relay-server.ts, a plain Node TCP server with one port per`,
    `service (echo, sink, source). (b) is HAProxy in TCP mode with \`nbthread 1\` (one process, one thread) and a`,
    `\`listen\` section per service, config written to a temporary directory. (c) is the real \`Proxy\` (src/proxy/proxy.ts,`,
    `config from \`resolveProxyConfig\`) in bench/relay-proxy.ts, and in bench/relay-controller.ts a stand-in controller`,
    `that joins over the control port with the join token (LinkSession, HELLO/WELCOME), answers the proxy's own`,
    `\`deploy\` operation (which publishes one public port per service) with \`deployed\`, reports every interval, and`,
    `serves each inbound OPEN in Node on the accepted LinkStream: the same echo/sink/source code as the plain server, no`,
    `guest. So (b) and (c) both put 3 processes on the path (client, relay, server); (c) crosses two relaying hops`,
    `(proxy, then link to the controller). (e), for reference only, is bench/relay-pipe.ts: the plainest Node relay`,
    `(\`socket.pipe\` both ways) in front of the same server, to show what one Node hop costs by itself. (d) is \`roam proxy\` + \`roam host\` (bin/roam) with the unmodified`,
    `examples/echo-server.js deployed by POST /api/guests, running in the QuickJS sandbox; it only echoes. The children`,
    `run as \`roam\` does: compiled to plain JavaScript by esbuild and started with plain \`node\` (no tsx, so no`,
    `source-mapped stack traces), with the Node flags bin/roam gives \`roam proxy\` and \`roam host\``,
    `(${DAEMON_NODE_FLAGS.map((f) => `\`${f}\``).join(' ')}, src/common/node-flags.ts) and its glibc malloc settings`,
    `(\`GLIBC_TUNABLES=${daemonEnv({}).GLIBC_TUNABLES}\`); case (c0), when there is one, with`,
    `${process.env['BENCH_BASELINE_NODE_FLAGS'] ? `\`${process.env['BENCH_BASELINE_NODE_FLAGS']}\`` : 'no flags'} and`,
    `${process.env['BENCH_BASELINE_TUNABLES'] ? `\`GLIBC_TUNABLES=${process.env['BENCH_BASELINE_TUNABLES']}\`` : "glibc's defaults"}.`,
    `(a), (b)'s server, (e) and this client are plain Node programs, with Node's and glibc's defaults.`,
    '',
    `Upload: the client writes 64 KiB chunks as fast as the socket takes them for ${BULK_MS} ms; the sink writes back its`,
    `byte count every MiB, and the rate is the growth of that count after the first ${WARM_MS} ms (bytes that arrived, not`,
    `bytes queued). Download: the source writes as fast as it can; the client counts what arrives from ${WARM_MS} ms to`,
    `${BULK_MS} ms. Echo: the client writes as fast as it can and counts what comes back. Each is the median of`,
    `${BULK_ROUNDS} rounds, one connection each, rounds interleaved across the cases (the machine is shared, so drift hits every`,
    `case alike). MB = 10^6 bytes. CPU per byte: user + system time of each process (all threads, /proc/PID/stat) over`,
    `the upload and download rounds, divided by the bytes that reached the far end. Latency: ${LAT_BYTES}-byte round trips on`,
    `one connection to the echo service (write, wait for all ${LAT_BYTES} bytes back), ${LAT_ROUNDS} rounds of ${LAT_PER_ROUND} per case`,
    `interleaved (${LAT_WARM_FIRST} unrecorded warm-ups in the first round, ${LAT_WARM} in the others); p50/p99 over all of them;`,
    `"added" subtracts (a). New connections: ${CONN_PARALLEL} clients in parallel each loop connect, send 1 byte, receive the`,
    `echoed byte, close, for ${CONN_MS} ms; median of ${CONN_ROUNDS} rounds, after ${CONN_WARM_MS} ms of the same per case, unrecorded`,
    `(the first seconds of connections run code the JIT has not compiled yet: without it, rounds 1-2 of (c) made 30-60% of the later rounds).`,
    '',
    `Memory runs on a separate, fresh pair of (c) processes: after warm-up (600 connections opened and closed) the`,
    `proxy child runs a full GC (--expose-gc) and reports \`process.memoryUsage()\`; the client opens ${IDLE_STREAMS}`,
    `connections to its echo port (${IDLE_CONCURRENCY} at a time, each proven end to end by one echoed byte) and keeps them idle;`,
    `1 s later the proxy GCs and reports again: (after - before) / streams. The same for the controller, for reference;`,
    `then the CPU both use in ${IDLE_CPU_MS} ms with the streams idle; then every stream is closed and the proxy is asked`,
    `what its link session still holds; then that pair's throughput is compared with the fresh pair's. Open-files`,
    `limit: ${fileLimit} (the run raises it when the hard limit allows). Fairness: one stream's throughput (download from`,
    `the source, upload to the sink) alone, then next to a second stream through the same proxy and link whose reader`,
    `is stalled (download: the remote client pauses reading; upload: the controller never reads the stream while the`,
    `client keeps writing into it), ${FAIR_ROUNDS} rounds each of ${FAIR_MS} ms, medians.`,
    '',
    `Targets (issue 3, section 8) are for (c): throughput >= ${TARGETS.throughput}x HAProxy's, added p50 <= ${TARGETS.addedP50}x HAProxy's`,
    `added p50, connection rate >= ${TARGETS.connRate}x HAProxy's, <= 16 KiB of proxy RSS per idle stream, and a stalled stream`,
    `does not stall another (here: keeps >= ${TARGETS.fairness}x of its throughput alone). When a target fails, a third fresh`,
    `pair of (c) processes is warmed up and profiled (inspector CPU profiler in each child, 100 µs sampling) under`,
    `each workload; the tables list self time and Roam's own functions by inclusive time, as shares of wall time.`,
  ].join('\n');
}

async function main(): Promise<void> {
  const fileLimit = ensureFileLimit();
  // The client (this process) runs like the children: without tsx's source-mapped stack traces.
  process.setSourceMapsEnabled(false);
  const machine = machineInfo();
  const loadBefore = loadavg()[0] ?? NaN;
  const t0 = performance.now();
  const cases: Case[] = [];
  const results = new Map<CaseId, Result>();
  let memory: MemoryResult | undefined;
  let fairness: FairnessResult | undefined;
  let profiles: ProfileResult[] = [];
  let afterMany: AfterMany | undefined;
  try {
    console.error('starting the cases ...');
    const files = await compileChildren();
    const server = track(startChild<Record<Service, number>>(files.server, [], { cwd: ROOT, name: 'relay-server' }));
    const backends = await server.ready;
    const serverPid = server.child.pid ?? NaN;
    cases.push({ id: 'a', label: 'direct (Node client to Node server)', ports: backends, pids: { server: serverPid } });
    cases.push(await startHaproxy(backends, fileLimit, serverPid));
    const pipe = track(
      startChild<Record<Service, number>>(files.pipe, [JSON.stringify(backends)], { cwd: ROOT, name: 'relay-pipe' }),
    );
    cases.push({
      id: 'e',
      label: 'reference: one plain Node relay process (`socket.pipe`), not a target',
      ports: await pipe.ready,
      pids: { relay: pipe.child.pid ?? NaN, server: serverPid },
    });
    const baselineRef = process.env['BENCH_BASELINE'];
    if (baselineRef) {
      const baseline = await compileBaseline(baselineRef);
      cases.push((await startRoamRelay(baseline.files, 'c0', baseline.label)).c);
    }
    const relay = await startRoamRelay(files);
    cases.push(relay.c);
    if (QUICK) cases.push({ id: 'd', label: 'Roam end to end', ports: {}, skipped: 'BENCH_QUICK=1' });
    else cases.push(await startRoamGuest());
    for (const c of cases) results.set(c.id, emptyResult());

    if (!QUICK) {
      // The memory test on its own pair of (c) processes, which have carried only a few
      // connections before; then the same pair's throughput after those 10k streams closed,
      // against the fresh pair that the main measurements use.
      const used = await startRoamRelay(files);
      memory = await measureMemory(used.c, used.proxy, used.controller);
      afterMany = await measureAfterMany(used.c, relay.c);
      await used.stop();
    }
    await measureAll(cases, results);
    if (!QUICK) fairness = await measureFairness(relay.c);

    const summaries = new Map<CaseId, Summary>();
    for (const c of cases) if (!c.skipped) summaries.set(c.id, summarize(results.get(c.id) as Result));
    for (const c of cases) {
      const r = results.get(c.id);
      if (!r || c.skipped) continue;
      const list = (v: number[]): string => v.map((n) => mbs(n)).join(', ');
      console.error(
        `(${c.id}) rounds: upload ${list(r.upload)}; download ${list(r.download)}; echo ${list(r.echo)} MB/s;` +
          ` conn/s ${r.conn.map((n) => n.toFixed(0)).join(', ')}`,
      );
    }
    const verdicts = targetsTable(summaries, memory, fairness);
    const wantProfile =
      process.env['BENCH_PROFILE'] === '1' || (verdicts.failed && process.env['BENCH_PROFILE'] !== '0');
    if (wantProfile) {
      // A fresh pair again: the one measured above has carried every connection of the run.
      const fresh = await startRoamRelay(files);
      profiles = await profileRelay(fresh.c, fresh.proxy, fresh.controller);
      await fresh.stop();
    }

    const report = [
      '## Relay: data path throughput, latency, connection rate and memory',
      '',
      `- Date: ${machine.date}`,
      `- Machine: ${machine.cpus} CPUs (nproc), ${machine.cpuModel}, ${machine.memory} RAM, ${machine.os}`,
      `- Node: ${machine.node}`,
      `- Command: \`${COMMAND}\` (whole run: ${((performance.now() - t0) / 1000).toFixed(0)} s)`,
      `- 1-minute load average: ${loadBefore.toFixed(2)} before, ${(loadavg()[0] ?? NaN).toFixed(2)} after` +
        ' (the machine is shared; other work running at the same time lowers every number)',
      '',
      mainTable(cases, summaries),
      '',
      'Targets for (c) (issue 3, section 8), from the same run:',
      '',
      markdownTable(['measure', 'value', 'target', 'verdict'], verdicts.rows),
      '',
      'CPU time each process used per byte moved in the throughput runs and per connection in the connection' +
        ' rounds (user + system, all threads, from /proc; ns per byte = s per GB). With 2 CPUs shared by every' +
        ' process of a case, this is what bounds its throughput and its connection rate:',
      '',
      cpuTable(cases, results),
      '',
      ...(memory && fairness ? [memoryReport(memory, fairness), ''] : []),
      ...(afterMany && memory ? [afterManyReport(afterMany, memory), ''] : []),
      ...(profiles.length
        ? [
            'Where (c) spends its time (CPU profiles taken after the measurements; "where" is a line of the compiled' +
              ' .js file, the .ts source with its types stripped):',
            '',
            profileTables(profiles),
          ]
        : []),
      method(fileLimit),
    ].join('\n');
    console.log(report);
    if (process.env['BENCH_NO_WRITE'] !== '1') writeBenchSection('relay', report);
  } finally {
    await cleanup();
  }
}

process.once('SIGINT', () => {
  void cleanup().finally(() => process.exit(130));
});
await main();
