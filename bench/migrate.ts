/**
 * Migration benchmark: `npm run bench:migrate` (issue 4, section 5). Needs root (network namespaces).
 *
 * A real `roam proxy` and three `roam host` processes, each in a network namespace of its own, and
 * a client namespace (test/helpers/netns-cluster.ts). For guests holding about 1, 16 and 64 MiB of
 * live JavaScript heap that also serve TCP, a remote client (bench/migrate-driver.ts) keeps paced,
 * checked records flowing through the proxy while it asks the proxy's API to move the guest from
 * host to host: ROAM_BENCH_MOVES (default 20) moves with pre-copy and as many without, alternating.
 * Each move's pause, total time and bytes come from its MigrationView. In the same run, right after
 * each guest's moves, the floor: a plain Node-to-Node TCP transfer of the same number of bytes
 * between two host namespaces (bench/migrate-floor.ts), and the round-trip time between them.
 *
 * Targets: pause p50 <= 20 ms at 16 MiB and <= 40 ms at 64 MiB with pre-copy; total time p50 <=
 * 2x the floor + 3 round trips. Prints PASS/FAIL per target and refreshes the `bench:migrate`
 * section of BENCHMARKS.md. Knobs: ROAM_BENCH_MOVES=N, BENCH_SIZES=1,16,64 (MiB),
 * ROAM_BENCH_RATE=records per second (default 200), BENCH_NO_WRITE=1 leaves BENCHMARKS.md alone.
 * Exits non-zero if a move fails or the client sees a failure (and says which).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { netnsAvailable, type NetProcess } from '../test/helpers/netns.js';
import { startNetnsCluster, type NetnsCluster } from '../test/helpers/netns-cluster.js';
import { BYTES_PER_UNIT, machineInfo, markdownTable, median, ms, percentile, ratio } from './checkpoint-lib.js';
import { writeBenchSection } from './report.js';
import type { MigrationView } from '../src/proxy/view.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const COMMAND = 'npm run bench:migrate';

const SIZES_MIB = (process.env['BENCH_SIZES'] ?? '1,16,64').split(',').map(Number);
const MOVES = Number(process.env['ROAM_BENCH_MOVES'] ?? 20);
const RATE = Number(process.env['ROAM_BENCH_RATE'] ?? 200);
const WARMUP = 2;
const FLOOR_REPS = 7;
/**
 * Rounds of the floor, FLOOR_GAP_MS apart, after the guest stopped; the least round median is the
 * floor. For the same 24.9 MB (16 MiB guest), a single round right after the moves took 28.2 and
 * 56.9 ms, as the hosts finished their own work on the same two cores; rounds 2 and 5 s later took
 * 13.4-17.1 ms, and once 31.0.
 */
const FLOOR_ROUNDS = 3;
const FLOOR_GAP_MS = 1000;
const PINGS = 50;
const FLOOR_PORT = 7600;
const HOSTS = ['host-a', 'host-b', 'host-c'];
const PAUSE_TARGETS: Record<number, number> = { 16: 20, 64: 40 };

/** What the proxy's API answers for a move (the fields the bench reads). */
type View = Pick<
  MigrationView,
  | 'outcome'
  | 'to'
  | 'step'
  | 'error'
  | 'pauseMs'
  | 'totalMs'
  | 'bytesSent'
  | 'precopyRounds'
  | 'precopyBytes'
  | 'finalBytes'
>;
interface MoveRow {
  view: View;
  clientGapMs: number;
  /** Step timings from the hosts' log lines (src/migration/source.ts and target.ts). */
  source: Record<string, number>;
  target: Record<string, number>;
}
interface Floor {
  bytes: number;
  /** The least of the rounds' medians: the link's cost with nothing else running. */
  floorMs: number;
  rttMs: number;
  /** Each round's median transfer time, in the order measured. */
  roundsMs: number[];
}
interface ModeResult {
  precopy: boolean;
  moves: MoveRow[];
  floor: Floor;
}
interface SizeResult {
  mib: number;
  modes: ModeResult[];
  answered: number;
}

/** A guest with `units` records of heap (built over several turns) that serves the records protocol. */
function guestProgram(units: number): string {
  return `
const net = require('net');
const heap = { list: [], index: new Map(), arrays: [] };
globalThis.__benchHeap = heap;
let built = 0;
function build() {
  const end = Math.min(${units}, built + 20000);
  for (let i = built; i < end; i++) {
    const record = { id: i, x: i * 1.5, y: i % 97, name: 'item-' + i, tag: 't' + (i % 1000) };
    heap.list.push(record);
    if (i % 4 === 0) heap.index.set('k' + i, record);
    if (i % 16 === 0) heap.arrays.push([i, i + 1, i + 2, 'a' + i]);
  }
  built = end;
  if (built < ${units}) setTimeout(build, 0);
  else console.log('heap ready ' + built);
}
build();
// Dirties little: one field of one record every 2 ms.
let ticks = 0;
setInterval(() => {
  ticks++;
  if (heap.list.length > 0) heap.list[ticks % heap.list.length].y = ticks;
}, 2);
function fnv1a(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16);
}
let total = 0;
net.createServer((socket) => {
  let buffered = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk) => {
    buffered += chunk;
    let end;
    let out = '';
    while ((end = buffered.indexOf('\\n')) >= 0) {
      const line = buffered.slice(0, end);
      buffered = buffered.slice(end + 1);
      const space = line.indexOf(' ');
      total++;
      out += line.slice(0, space) + ' ' + fnv1a(line.slice(space + 1)) + ' ' + total + '\\n';
    }
    if (out) socket.write(out);
  });
  socket.on('error', () => {});
}).listen(7000);
`;
}

/** A host's log line's message (hosts log JSON when their output is not a terminal). */
function logMessage(line: string): string {
  if (!line.startsWith('{')) return line;
  try {
    const record = JSON.parse(line) as { msg?: unknown };
    return typeof record.msg === 'string' ? record.msg : '';
  } catch {
    return line;
  }
}

/** `key=1.2 key=3.4` after `ms: ` in the last log message matching `re`. */
function parseTimings(text: string, re: RegExp): Record<string, number> {
  const lines = text
    .split('\n')
    .map(logMessage)
    .filter((l) => re.test(l));
  const last = lines[lines.length - 1] ?? '';
  const out: Record<string, number> = {};
  for (const m of (/ms: (.*)$/.exec(last)?.[1] ?? '').matchAll(/(\w+)=([\d.]+)/g)) {
    out[m[1] ?? ''] = Number(m[2]);
  }
  return out;
}

/** New output of each host since the last call. */
class HostLogs {
  private readonly seen = new Map<string, number>();
  constructor(private readonly cluster: NetnsCluster) {}
  since(host: string): string {
    const text = this.cluster.hosts.get(host)?.output() ?? '';
    const from = this.seen.get(host) ?? 0;
    this.seen.set(host, text.length);
    return text.slice(from);
  }
}

class Driver {
  private nextId = 1;
  constructor(private readonly proc: NetProcess) {}

  async request<T>(command: Record<string, unknown>, timeoutMs = 240_000): Promise<T> {
    const id = this.nextId++;
    this.proc.child.stdin?.write(`${JSON.stringify({ id, ...command })}\n`);
    const m = await this.proc.waitFor(new RegExp(`^R ${id} (.*)$`, 'm'), timeoutMs);
    const answer = JSON.parse(m[1] ?? '{}') as { ok: boolean; result?: T; error?: string };
    if (!answer.ok) throw new Error(`${String(command['cmd'])}: ${answer.error ?? 'failed'}`);
    return answer.result as T;
  }
}

/** One round of the floor: the median of FLOOR_REPS transfers of `bytes`, and the RTT. */
async function measureFloor(
  cluster: NetnsCluster,
  from: string,
  to: string,
  bytes: number,
): Promise<Omit<Floor, 'roundsMs'>> {
  const r = await cluster.net.exec(
    from,
    process.execPath,
    [
      '--import',
      'tsx',
      'bench/migrate-floor.ts',
      'send',
      cluster.net.address(to),
      String(FLOOR_PORT),
      String(Math.max(1, Math.round(bytes))),
      String(FLOOR_REPS),
      String(PINGS),
    ],
    { cwd: ROOT, timeoutMs: 60_000 },
  );
  if (r.code !== 0) throw new Error(`the floor transfer failed: ${r.stderr}`);
  const { rtts, times } = JSON.parse(r.stdout) as { rtts: number[]; times: number[] };
  return { bytes, floorMs: median(times), rttMs: median(rtts) };
}

/** FLOOR_ROUNDS rounds of `measureFloor`, FLOOR_GAP_MS apart: the round with the least median counts. */
async function quietFloor(cluster: NetnsCluster, from: string, to: string, bytes: number): Promise<Floor> {
  const rounds: Array<Omit<Floor, 'roundsMs'>> = [];
  for (let i = 0; i < FLOOR_ROUNDS; i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, FLOOR_GAP_MS));
    rounds.push(await measureFloor(cluster, from, to, bytes));
  }
  const best = rounds.reduce((a, b) => (b.floorMs < a.floorMs ? b : a));
  return { ...best, roundsMs: rounds.map((r) => r.floorMs) };
}

async function runSize(cluster: NetnsCluster, driver: Driver, mib: number): Promise<SizeResult> {
  const logs = new HostLogs(cluster);
  for (const host of HOSTS) logs.since(host);
  const units = Math.round((mib * 2 ** 20) / BYTES_PER_UNIT);
  const name = `heap${mib}`;
  const file = join(cluster.dir, `${name}.js`);
  writeFileSync(file, guestProgram(units));
  const port = 7000 + mib;
  await cluster.roamJson(
    'client',
    ['run', file, '--name', name, '--publish', `${port}:7000`, '--on', HOSTS[0] ?? ''],
    60_000,
  );
  await driver.request({ cmd: 'ready', name, text: 'heap ready', timeoutMs: 180_000 });
  await driver.request({ cmd: 'traffic', port, rate: RATE });
  console.error(`${name}: heap built, traffic flowing; ${WARMUP} warm-up moves, then ${2 * MOVES}`);

  let where = 0;
  const modes: ModeResult[] = [
    { precopy: true, moves: [], floor: { bytes: 0, floorMs: NaN, rttMs: NaN, roundsMs: [] } },
    { precopy: false, moves: [], floor: { bytes: 0, floorMs: NaN, rttMs: NaN, roundsMs: [] } },
  ];
  for (let i = 0; i < WARMUP + 2 * MOVES; i++) {
    const mode = modes[i % 2] as ModeResult;
    const from = HOSTS[where] ?? '';
    where = (where + 1) % HOSTS.length;
    const to = HOSTS[where] ?? '';
    const moved = await driver.request<{ view: View; clientGapMs: number }>({
      cmd: 'migrate',
      name,
      to,
      precopy: mode.precopy,
    });
    const v = moved.view;
    if (v.outcome !== 'moved' || v.to !== to) {
      throw new Error(`move ${i + 1} of ${name} to ${to} did not happen: ${JSON.stringify(v)}`);
    }
    // Let the guest run on its new host a little before it moves again (and the hosts' logs arrive).
    await new Promise((resolve) => setTimeout(resolve, 200));
    const source = parseTimings(logs.since(from), new RegExp(`^moved ${name} to ${to}`));
    const target = parseTimings(logs.since(to), new RegExp(`^took ${name} in`));
    for (const host of HOSTS) logs.since(host);
    if (i >= WARMUP) mode.moves.push({ view: v, clientGapMs: moved.clientGapMs, source, target });
    console.error(
      `${name} ${i < WARMUP ? 'warm-up' : `move ${i + 1 - WARMUP}`} -> ${to} ${mode.precopy ? 'pre-copy' : 'no pre-copy'}: ` +
        `pause ${ms(v.pauseMs ?? NaN)} ms, total ${ms(v.totalMs ?? NaN)} ms, ${v.bytesSent} bytes, client gap ${ms(moved.clientGapMs)} ms\n` +
        `  source ${JSON.stringify(source)}\n  target ${JSON.stringify(target)}`,
    );
  }
  const traffic = await driver.request<{ answered: number; failures: string[]; closed: boolean }>({
    cmd: 'stopTraffic',
  });
  if (traffic.failures.length > 0 || traffic.closed) {
    throw new Error(`the client saw failures with ${name}: ${traffic.failures.join('; ')}`);
  }
  await cluster.roamJson('client', ['stop', name]);

  // The floor for each mode, right here: the median bytes the moves sent, between two hosts.
  for (const [i, mode] of modes.entries()) {
    const bytes = median(mode.moves.map((m) => m.view.bytesSent ?? 0));
    mode.floor = await quietFloor(cluster, HOSTS[i % 3] ?? '', HOSTS[(i + 1) % 3] ?? '', bytes);
  }
  return { mib, modes, answered: traffic.answered };
}

interface Verdict {
  what: string;
  value: string;
  target: string;
  pass: boolean;
}

function totalTarget(m: ModeResult): number {
  return 2 * m.floor.floorMs + 3 * m.floor.rttMs;
}

function verdicts(results: SizeResult[]): Verdict[] {
  const out: Verdict[] = [];
  for (const r of results) {
    const limit = PAUSE_TARGETS[r.mib];
    const pre = r.modes.find((m) => m.precopy);
    if (limit !== undefined && pre) {
      const p50 = percentile(
        pre.moves.map((m) => m.view.pauseMs ?? NaN),
        50,
      );
      out.push({
        what: `${r.mib} MiB, pre-copy: pause p50`,
        value: `${ms(p50)} ms (${ratio(p50 / limit)} of the target)`,
        target: `<= ${limit} ms`,
        pass: p50 <= limit,
      });
    }
    for (const m of r.modes) {
      const p50 = percentile(
        m.moves.map((x) => x.view.totalMs ?? NaN),
        50,
      );
      const limitMs = totalTarget(m);
      out.push({
        what: `${r.mib} MiB, ${m.precopy ? 'pre-copy' : 'no pre-copy'}: total p50`,
        value: `${ms(p50)} ms (${ratio(p50 / limitMs)} of the target; ${ratio(p50 / m.floor.floorMs)} of the floor)`,
        target: `<= 2 x ${ms(m.floor.floorMs)} + 3 x ${ms(m.floor.rttMs)} = ${ms(limitMs)} ms`,
        pass: p50 <= limitMs,
      });
    }
  }
  return out;
}

function resultsTable(results: SizeResult[]): string {
  const rows: string[][] = [];
  for (const r of results) {
    for (const m of r.modes) {
      const v = m.moves.map((x) => x.view);
      const pct = (f: (x: View) => number | null, p: number): number =>
        percentile(
          v.map((x) => f(x) ?? NaN),
          p,
        );
      rows.push([
        `${r.mib} MiB`,
        m.precopy ? 'yes' : 'no',
        String(m.moves.length),
        ms(pct((x) => x.pauseMs, 50)),
        ms(pct((x) => x.pauseMs, 99)),
        ms(pct((x) => x.totalMs, 50)),
        ms(pct((x) => x.totalMs, 99)),
        (pct((x) => x.bytesSent, 50) / 1e6).toFixed(2),
        m.precopy
          ? `${(pct((x) => x.precopyBytes, 50) / 1e6).toFixed(2)} / ${(pct((x) => x.finalBytes, 50) / 1e6).toFixed(2)} (${pct((x) => x.precopyRounds, 50)})`
          : `- / ${(pct((x) => x.finalBytes, 50) / 1e6).toFixed(2)}`,
        ms(
          percentile(
            m.moves.map((x) => x.clientGapMs),
            50,
          ),
        ),
        ms(
          percentile(
            m.moves.map((x) => x.clientGapMs),
            99,
          ),
        ),
        ms(m.floor.floorMs),
        m.floor.roundsMs.map(ms).join(' / '),
        ms(m.floor.rttMs),
        ratio(pct((x) => x.totalMs, 50) / m.floor.floorMs),
        ms(totalTarget(m)),
      ]);
    }
  }
  return markdownTable(
    [
      'heap',
      'pre-copy',
      'moves',
      'pause p50 ms',
      'pause p99 ms',
      'total p50 ms',
      'total p99 ms',
      'MB sent p50',
      'MB pre-copy / final p50 (rounds)',
      'client gap p50 ms',
      'client gap p99 ms',
      'floor ms',
      'floor rounds ms',
      'RTT ms',
      'total p50 / floor',
      'total target ms',
    ],
    rows,
  );
}

const SOURCE_STEPS = [
  'connect',
  'offer',
  'precopy',
  'precopyScan',
  'precopyCopy',
  'precopySend',
  'hold',
  'freeze',
  'state',
  'scan',
  'copy',
  'compress',
  'send',
  'wait',
];
const TARGET_STEPS = ['prepare', 'precopy', 'state', 'apply', 'assemble', 'commit', 'resume'];

/** Medians of the hosts' step timings (ms) per size and mode. */
function profileTable(results: SizeResult[]): string {
  const rows: string[][] = [];
  for (const r of results) {
    for (const m of r.modes) {
      const med = (side: 'source' | 'target', key: string): string => {
        const values = m.moves.map((x) => x[side][key]).filter((v): v is number => v !== undefined);
        return values.length === 0 ? '-' : ms(median(values));
      };
      rows.push([
        `${r.mib} MiB`,
        m.precopy ? 'yes' : 'no',
        ...SOURCE_STEPS.map((k) => med('source', k)),
        ...TARGET_STEPS.map((k) => med('target', k)),
      ]);
    }
  }
  return markdownTable(
    ['heap', 'pre-copy', ...SOURCE_STEPS.map((k) => `source: ${k}`), ...TARGET_STEPS.map((k) => `target: ${k}`)],
    rows,
  );
}

function method(): string {
  return [
    `Each guest (bench/migrate.ts, \`guestProgram\`) builds records of ordinary data (as bench/checkpoint-lib.ts's`,
    `\`heapProgram\`, in turns of 20000) and serves examples/records.js's TCP protocol; it dirties little (one field`,
    `of one record every 2 ms, plus what serving the client allocates). It starts on host-a and moves`,
    `host-a -> host-b -> host-c -> host-a ..., pre-copy and no pre-copy alternating, after ${WARMUP} unrecorded`,
    `warm-up moves, 200 ms apart. A remote client in its own namespace (bench/migrate-driver.ts) keeps ${RATE} records per`,
    `second flowing through the proxy on one connection, checks every answer (number, hash, the guest's count) and asks`,
    `for each move with POST /api/guests/:name/migrate; a move counts once the client has seen 10 more answers.`,
    `"Client gap" is the longest wait between two answers during a move as the client sees it. Pause (freeze to resume`,
    `on the target), total (from the source's start of the move to the target's word that the guest runs) and bytes`,
    `(pre-copy + final pages + state, headers included) are the MigrationView's. The floor, measured after each`,
    `guest's moves, once it has stopped: a plain Node-to-Node TCP transfer of the median bytes sent, between two host namespaces over the`,
    `same veth link, timed from the first write until the receiver's 1-byte answer, median of ${FLOOR_REPS} after a warm-up,`,
    `in ${FLOOR_ROUNDS} rounds ${FLOOR_GAP_MS} ms apart ("floor rounds"); the least round median is the floor, the link's cost with nothing`,
    `else running (a round right after the moves can run several times slower while the hosts finish their own work);`,
    `RTT is the median of ${PINGS} 1-byte round trips on the connection of that round. Targets: pause p50 <= 20 ms (16 MiB) and <= 40 ms`,
    `(64 MiB) with pre-copy; total p50 <= 2 x floor + 3 x RTT, for each size and mode.`,
    `Step timings (src/migration/source.ts and target.ts, logged by \`roam host\`): on the source, connect, offer (until`,
    `the target's accept, its sandbox prepared), precopy (all rounds; of it, precopyScan: comparing pages, precopyCopy: into`,
    `the shadow, precopySend: until the socket took them, waits for the last round's bytes to leave included), hold (until`,
    `the target's word that it holds its guests' turns, before the freeze), then after the freeze: freeze (host state`,
    `captured), state (its JSON and message, sent first so that the target rebuilds it while the pages arrive), scan (the`,
    `final compare of every page against what the target holds), copy (the 4-KiB blocks that differ, found in the changed`,
    `pages, into the message), compress (per message, LZ4 or plain as the codec chooser decides), send (until the socket took it), wait`,
    `(until the target's word that the guest runs). Pause = freeze + state + scan + copy + compress + send + wait. On the`,
    `target: prepare (sandbox; before the accept), precopy (from the accept until the state message: pre-copied pages`,
    `written into the sandbox as they come), state (JSON parsed, the guest's host side rebuilt), apply (until the end of the`,
    `final pages: received and copied, or decompressed), assemble (the sandbox attached: the guest whole, frozen), commit`,
    `(round trip to the proxy), resume (adopt, resume, the word to the source).`,
    `Warm memory: a host keeps its last move's pre-copy shadow and a spare sandbox grown to the size of the guest that left`,
    `for 30 s (src/migration/pages.ts \`ShadowBuffers\`, src/migration/spare.ts). Moves here come about a second apart per`,
    `host, so all but each host's first move out find both warm; a cold move writes fresh memory on both sides, about`,
    `0.65 ms more per MiB of guest memory on each (page faults).`,
  ].join('\n');
}

async function main(): Promise<number> {
  const availability = netnsAvailable();
  if (!availability.ok) {
    console.error(`bench:migrate needs network namespaces (root and iproute2): ${availability.reason}`);
    return 1;
  }
  if (!(MOVES >= 1)) {
    console.error(`ROAM_BENCH_MOVES must be a positive number, not ${process.env['ROAM_BENCH_MOVES']}`);
    return 1;
  }
  const machine = machineInfo();
  const loadBefore = loadavg()[0] ?? NaN;
  const t0 = performance.now();
  const cluster = await startNetnsCluster({ hosts: HOSTS, others: ['client'] });
  try {
    for (const host of HOSTS) {
      const sink = cluster.net.spawn(
        host,
        process.execPath,
        ['--import', 'tsx', 'bench/migrate-floor.ts', 'serve', String(FLOOR_PORT)],
        { cwd: ROOT },
      );
      await sink.waitFor(/floor sink/, 30_000);
    }
    const proc = cluster.net.spawn(
      'client',
      process.execPath,
      ['--import', 'tsx', 'bench/migrate-driver.ts', cluster.proxyAddress, cluster.api, cluster.adminTokenFile],
      { cwd: ROOT, stdin: 'pipe' },
    );
    await proc.waitFor(/driver ready/, 30_000);
    const driver = new Driver(proc);

    const results: SizeResult[] = [];
    for (const mib of SIZES_MIB) results.push(await runSize(cluster, driver, mib));

    const checks = verdicts(results);
    const report = [
      `## Migration: pause, total time and bytes against the link's floor`,
      '',
      `- Date: ${machine.date}`,
      `- Machine: ${machine.cpus} CPUs (nproc), ${machine.cpuModel}, ${machine.memory} RAM, ${machine.os}`,
      `- Node: ${machine.node}`,
      `- Command: \`${COMMAND}\` (ROAM_BENCH_MOVES=${MOVES}; whole run: ${((performance.now() - t0) / 1000).toFixed(0)} s)`,
      `- 1-minute load average: ${loadBefore.toFixed(2)} before, ${(loadavg()[0] ?? NaN).toFixed(2)} after` +
        ' (the machine is shared; other work running at the same time inflates every number, floors included)',
      `- Client: ${results.map((r) => `${r.answered} records answered at ${r.mib} MiB`).join(', ')}; no failure seen`,
      '',
      resultsTable(results),
      '',
      markdownTable(
        ['target', 'value', 'limit', 'verdict'],
        checks.map((c) => [c.what, c.value, c.target, c.pass ? 'PASS' : 'FAIL']),
      ),
      '',
      'Where the time goes (medians of the step timings each host logs for each move, ms; see below):',
      '',
      profileTable(results),
      '',
      method(),
    ].join('\n');
    console.log(report);
    for (const c of checks) console.log(`${c.pass ? 'PASS' : 'FAIL'} ${c.what}: ${c.value}; target ${c.target}`);
    if (process.env['BENCH_NO_WRITE'] !== '1') writeBenchSection('migrate', report, 'Migration findings');
    // Every host's whole log and the proxy's, for a look at single moves (BENCH_LOGS=dir).
    const logs = process.env['BENCH_LOGS'];
    if (logs) {
      mkdirSync(logs, { recursive: true });
      for (const [host, proc] of cluster.hosts) writeFileSync(join(logs, `${host}.log`), proc.output());
      writeFileSync(join(logs, 'proxy.log'), cluster.proxy.output());
    }
    return 0;
  } catch (err) {
    console.error(`bench:migrate aborted: ${(err as Error).message}`);
    // What each process said last, to see why.
    const tail = (text: string): string => text.split('\n').slice(-60).join('\n');
    console.error(`--- proxy, last lines ---\n${tail(cluster.proxy.output())}`);
    for (const [host, proc] of cluster.hosts) console.error(`--- ${host}, last lines ---\n${tail(proc.output())}`);
    return 1;
  } finally {
    await cluster.close();
  }
}

process.exitCode = await main();
