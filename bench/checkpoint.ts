/**
 * Checkpoint benchmark: `npm run bench:checkpoint`.
 *
 * For guests holding about 1, 16 and 64 MiB of live JavaScript heap it measures
 *   - the pause: `guest.checkpointLive().pauseMs` (how Roam captures a running guest for an image), from
 *     freeze until the capture is complete in memory; `guest.checkpoint()`, frozen for the whole
 *     copy, beside it for reference;
 *   - the floor: a plain copy of the same non-zero pages in the same process and run;
 *   - the image: raw and compressed size, and how long `encodeImage` takes;
 *   - the restore: in a fresh Node process with a warm sandbox (`Guest.prepareSandbox`, memory
 *     grown and faulted in), the time of `Guest.restoreImage` (image bytes decoded straight into
 *     the sandbox, guest runnable), against the same floor measured in that process;
 * and a profile of the sub-steps of each. Targets: pause <= 3x floor, restore <= 3x floor.
 * Prints tables and refreshes the checkpoint section of BENCHMARKS.md (BENCH_NO_WRITE=1 skips
 * that; BENCH_SIZES=1,16 picks the heap sizes in MiB).
 */
import { spawn } from 'node:child_process';
import { build } from 'esbuild';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Guest, type Capture } from '../src/guest/guest.js';
import { inspectImage, snapshotMemory, type ImageContents } from '../src/guest/image/index.js';
import { encodeGuestImage } from '../src/guest/template.js';
import { LZ4HC_LEVEL, nativeCodecProblem } from '../src/guest/image/native.js';
import { DAEMON_NODE_FLAGS, daemonEnv } from '../src/common/node-flags.js';
import {
  BENCH_LIMITS,
  BYTES_PER_UNIT,
  PAGE,
  copyPages,
  heapProgram,
  machineInfo,
  markdownTable,
  median,
  mib,
  ms,
  percentile,
  ratio,
  sleep,
  timed,
  timedAsync,
} from './checkpoint-lib.js';
import { writeBenchSection } from './report.js';
import type { ChildReport } from './restore-child.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CHILD_SOURCE = join(ROOT, 'bench', 'restore-child.ts');
/** Inside the package, so that the child finds the package root (and dist/) from where it runs. */
const CHILD_DIR = join(ROOT, 'node_modules', '.cache', 'roam-bench-checkpoint');
const COMMAND = 'npm run bench:checkpoint';

const SIZES_MIB = (process.env['BENCH_SIZES'] ?? '1,16,64').split(',').map(Number);
const WARMUP = 2;
const PAUSE_REPS = 10;
const ENCODE_REPS = 3;
const RESTORE_REPS = 7;
const TARGET = 3;
const CHILD_TIMEOUT_MS = 90_000;

// --- reaching inside a guest, for measurement only (never timed) ---

interface GuestInsides {
  sandbox?: { memoryView?: () => Uint8Array; runtime?: { dumpMemoryUsage?: () => string } };
}

/** The guest's live linear memory (valid until it grows; read it while the guest is frozen). */
function liveMemory(guest: Guest): Uint8Array {
  const view = (guest as unknown as GuestInsides).sandbox?.memoryView?.();
  if (!(view instanceof Uint8Array))
    throw new Error('cannot reach the guest sandbox memory (Guest internals changed?)');
  return view;
}

/** QuickJS's own "memory used" (bytes malloc'd, allocator overhead included), or NaN. */
function quickjsUsed(guest: Guest): number {
  const report = (guest as unknown as GuestInsides).sandbox?.runtime?.dumpMemoryUsage?.();
  return Number(/memory used\s+\d+\s+(\d+)/.exec(report ?? '')?.[1] ?? NaN);
}

/** The non-zero page scan of snapshotMemory alone (the same Buffer#compare test). */
function scanOnly(memory: Uint8Array): number {
  const zero = Buffer.alloc(PAGE);
  const buf = Buffer.from(memory.buffer, memory.byteOffset, memory.length);
  let count = 0;
  for (let offset = 0; offset < memory.length; offset += PAGE) {
    if (buf.compare(zero, 0, PAGE, offset, offset + PAGE) !== 0) count++;
  }
  return count;
}

/**
 * The restore child runs the restore as `roam host` does: bundled into one file by esbuild with the
 * options scripts/build.mjs uses for dist/cli.js, started by plain `node` with the hosts' flags.
 * Under tsx, the same code ran 0.2 ms slower per 1 MiB restore (one module per file, loader hooks,
 * source maps), which is not what a host runs.
 */
async function compileChild(): Promise<string> {
  rmSync(CHILD_DIR, { recursive: true, force: true });
  const outfile = join(CHILD_DIR, 'restore-child.mjs');
  await build({
    entryPoints: [CHILD_SOURCE],
    outfile,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    packages: 'external',
    logLevel: 'warning',
  });
  return outfile;
}

function runChild(childFile: string, imagePath: string, reps: number): Promise<ChildReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, childFile, imagePath, String(reps)], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
      env: daemonEnv(),
    });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`restore child timed out after ${CHILD_TIMEOUT_MS} ms`));
    }, CHILD_TIMEOUT_MS);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = stdout.trim().split('\n').pop() ?? '';
      if (code !== 0) {
        reject(new Error(`restore child failed (code ${String(code)}, signal ${String(signal)}): ${stdout}`));
        return;
      }
      try {
        resolve(JSON.parse(line) as ChildReport);
      } catch (err) {
        reject(new Error(`restore child printed no report: ${stdout}`, { cause: err }));
      }
    });
  });
}

interface Result {
  targetMiB: number;
  units: number;
  heapBytes: number;
  nonZeroBytes: number;
  /** Pages the image stores (those that differ from the runtime template). */
  storedPages: number;
  /** Of the stored pages, those kept as their differences from the runtime template. */
  diffPages: number;
  memoryBytes: number;
  pauseMed: number;
  pauseP90: number;
  /** The same guest captured by `checkpoint()`, frozen for the whole copy. */
  frozenMed: number;
  frozenP90: number;
  floorPagesMed: number;
  floorSliceMed: number;
  floorMed: number;
  floorKind: string;
  scanMed: number;
  snapshotMed: number;
  rawBytes: number;
  imageBytes: number;
  encodeMed: number;
  child: ChildReport;
  decodeMed: number;
  restoreMed: number;
  totalMed: number;
  firstTotal: number;
  childFloorMed: number;
  childFloorKind: string;
  childWarmMed: number;
}

async function measure(targetMiB: number, baselineUsed: number, dir: string, childFile: string): Promise<Result> {
  const units = Math.round((targetMiB * 2 ** 20) / BYTES_PER_UNIT);
  const [guest, startMs] = await timedAsync(() => Guest.start(heapProgram(units), { limits: BENCH_LIMITS }));
  try {
    await sleep(20);
    if (guest.state !== 'running') throw new Error(`the ${targetMiB} MiB guest is ${guest.state}`);
    const heapBytes = quickjsUsed(guest) - baselineUsed;

    const pauses: number[] = [];
    const frozenPauses: number[] = [];
    const floorPages: number[] = [];
    const floorSlice: number[] = [];
    const scans: number[] = [];
    const snapshots: number[] = [];
    let contents: ImageContents | undefined;
    let storedPages = 0;
    let fullBytes = 0;
    for (let rep = 0; rep < WARMUP + PAUSE_REPS; rep++) {
      // Both kinds of capture, in alternating order, with a few timer turns of the guest before each.
      let live: Capture | undefined;
      if (rep % 2 === 0) {
        await sleep(5);
        live = await guest.checkpointLive();
      }
      await sleep(5);
      const capture = guest.checkpoint();
      // Still frozen: the floor copies the same non-zero pages of the same memory.
      const memory = liveMemory(guest);
      // The floor is a copy of every non-zero page of the guest's memory (its whole state), even
      // though the checkpoint stores only the pages that differ from the runtime template.
      const full = snapshotMemory(memory);
      const { pages, data } = full;
      const copyByPage = (): number => timed(() => copyPages(memory, pages))[1];
      const copyBySlice = (): number => timed(() => data.slice())[1];
      // Alternate which copy goes first, so neither always meets a colder heap.
      const [a, b] = rep % 2 ? [copyBySlice(), copyByPage()] : [copyByPage(), copyBySlice()];
      const [byPage, bySlice] = rep % 2 ? [b, a] : [a, b];
      const scan = timed(() => scanOnly(memory));
      const snap = timed(() => snapshotMemory(memory));
      if (scan[0] !== pages.length || snap[0].pages.length !== pages.length) throw new Error('page count mismatch');
      storedPages = capture.contents.memory.pages.length;
      fullBytes = data.length;
      guest.resume();
      if (live === undefined) {
        await sleep(5);
        live = await guest.checkpointLive();
      }
      if (live.contents.memory.pages.length === 0) throw new Error('the live capture holds no pages');
      if (rep < WARMUP) continue;
      pauses.push(live.pauseMs);
      frozenPauses.push(capture.pauseMs);
      floorPages.push(byPage);
      floorSlice.push(bySlice);
      scans.push(scan[1]);
      snapshots.push(snap[1]);
      contents = capture.contents;
    }
    if (contents === undefined) throw new Error('no checkpoint taken');

    const { memory } = contents;
    const stateBytes = new TextEncoder().encode(JSON.stringify(contents.state)).length;
    const rawBytes = memory.data.length + memory.pages.length * 4 + stateBytes + contents.files.length;
    const encodes: number[] = [];
    let image: Uint8Array | undefined;
    for (let i = 0; i < ENCODE_REPS; i++) {
      const frozen = contents;
      const [bytes, t] = await timedAsync(() => encodeGuestImage(frozen));
      encodes.push(t);
      image = bytes;
    }
    if (image === undefined) throw new Error('no image encoded');
    const imagePath = join(dir, `guest-${targetMiB}MiB.roamimg`);
    writeFileSync(imagePath, image);

    const child = await runChild(childFile, imagePath, RESTORE_REPS);
    if (!child.stillRunning) throw new Error(`the restored ${targetMiB} MiB guest did not keep running`);
    if (child.nonZeroBytes !== fullBytes) throw new Error('the child restored a different memory');

    const floorPagesMed = median(floorPages);
    const floorSliceMed = median(floorSlice);
    const childPages = median(child.reps.map((r) => r.floorPagesMs));
    const childSlice = median(child.reps.map((r) => r.floorSliceMs));
    console.error(
      `  ${targetMiB} MiB: ${units} records built in ${ms(startMs)} ms; QuickJS heap +${mib(heapBytes)} MiB; ` +
        `${memory.pages.length} non-zero pages (${mib(memory.data.length)} MiB) of ${mib(memory.byteLength)} MiB`,
    );
    return {
      targetMiB,
      units,
      heapBytes,
      nonZeroBytes: fullBytes,
      storedPages,
      diffPages: inspectImage(image).memory.diffPages,
      memoryBytes: memory.byteLength,
      pauseMed: median(pauses),
      pauseP90: percentile(pauses, 90),
      frozenMed: median(frozenPauses),
      frozenP90: percentile(frozenPauses, 90),
      floorPagesMed,
      floorSliceMed,
      floorMed: Math.min(floorPagesMed, floorSliceMed),
      floorKind: floorPagesMed <= floorSliceMed ? 'pages' : 'slice',
      scanMed: median(scans),
      snapshotMed: median(snapshots),
      rawBytes,
      imageBytes: image.length,
      encodeMed: median(encodes),
      child,
      decodeMed: median(child.reps.map((r) => r.decodeMs)),
      restoreMed: median(child.reps.map((r) => r.restoreMs)),
      totalMed: median(child.reps.map((r) => r.totalMs)),
      firstTotal: child.reps[0]?.totalMs ?? NaN,
      childFloorMed: Math.min(childPages, childSlice),
      childFloorKind: childPages <= childSlice ? 'pages' : 'slice',
      childWarmMed: median(child.reps.map((r) => r.warmCopyMs)),
    };
  } finally {
    guest.stop();
  }
}

const verdict = (value: number): string => (value <= TARGET ? 'PASS' : 'FAIL');

function resultsTable(results: Result[]): string {
  return markdownTable(
    [
      'heap (target)',
      'QuickJS heap MiB',
      'non-zero MiB (of memory)',
      'pause med ms',
      'pause p90 ms',
      'floor med ms',
      'pause/floor',
      'checkpoint() pause med / p90 ms (/floor)',
      'raw bytes',
      'image bytes',
      'encode ms',
      'decodeImage ms (to a buffer)',
      'restoreImage ms',
      'restore total ms',
      'child floor ms',
      'restore/floor',
      'copy into warm memory ms (restore/it)',
      `pause <= ${TARGET}x`,
      `restore <= ${TARGET}x`,
    ],
    results.map((r) => {
      const pauseRatio = r.pauseMed / r.floorMed;
      const restoreRatio = r.totalMed / r.childFloorMed;
      return [
        `${r.targetMiB} MiB`,
        mib(r.heapBytes),
        `${mib(r.nonZeroBytes)} (${mib(r.memoryBytes)}), ${mib(r.storedPages * PAGE)} stored (${r.diffPages} of ${r.storedPages} pages as diffs)`,
        ms(r.pauseMed),
        ms(r.pauseP90),
        `${ms(r.floorMed)} (${r.floorKind})`,
        ratio(pauseRatio),
        `${ms(r.frozenMed)} / ${ms(r.frozenP90)} (${ratio(r.frozenMed / r.floorMed)})`,
        String(r.rawBytes),
        `${r.imageBytes} (${((100 * r.imageBytes) / r.rawBytes).toFixed(1)}%)`,
        ms(r.encodeMed),
        ms(r.decodeMed),
        ms(r.restoreMed),
        ms(r.totalMed),
        `${ms(r.childFloorMed)} (${r.childFloorKind})`,
        ratio(restoreRatio),
        `${ms(r.childWarmMed)} (${ratio(r.totalMed / r.childWarmMed)})`,
        verdict(pauseRatio),
        verdict(restoreRatio),
      ];
    }),
  );
}

/** A remainder of medians measured separately: below zero it is only noise around zero. */
const rest = (value: number): string => (value < 0.5 ? '~0' : ms(value));

/** Which image codec wrote and restored the images (src/guest/image/native.ts). */
function codecLine(): string {
  const problem = nativeCodecProblem();
  return problem === undefined
    ? `native (LZ4HC level ${LZ4HC_LEVEL} by liblz4; restores placed on helper threads)`
    : `portable (lz4_flex by lz4-napi; ${problem})`;
}

function profileTable(results: Result[]): string {
  return markdownTable(
    [
      'heap (target)',
      'floor: pages / slice ms',
      'checkpoint(): page scan ms',
      'checkpoint(): snapshotMemory ms',
      'checkpoint(): rest ms',
      'decode: checksum ms',
      'decode: decompress ms',
      'decode: rest ms',
      'restore: grow ms',
      'restore: apply diffs ms',
      'restore: native place ms',
      'restore: restoreMemory ms',
      '(copy / zero-fill ms, MiB zeroed)',
      'restore: state+files ms',
      'restore: rest ms',
      'prepareSandbox ms',
      'first restore ms',
    ],
    results.map((r) => {
      const p = r.child.profile;
      // What the restore does besides: the checksum, the pages (placed by the native codec, or the
      // diffs applied and the LZ4 chunks decoded by the portable path), state and files.
      const pagesMs = Number.isNaN(p.placeMs) ? p.applyDiffsMs + p.inflateMs : p.placeMs;
      const restoreRest = r.restoreMed - p.checksumMs - pagesMs - p.finishRestoreMs - p.parseStateMs - p.filesMs;
      return [
        `${r.targetMiB} MiB`,
        `${ms(r.floorPagesMed)} / ${ms(r.floorSliceMed)}`,
        ms(r.scanMed),
        ms(r.snapshotMed),
        rest(r.frozenMed - r.snapshotMed),
        ms(p.checksumMs),
        ms(p.inflateMs),
        rest(r.decodeMed - p.checksumMs - p.inflateMs),
        ms(p.growMs),
        ms(p.applyDiffsMs),
        Number.isNaN(p.placeMs) ? '-' : ms(p.placeMs),
        ms(p.restoreMemoryMs),
        `${ms(p.copyOnlyMs)} / ${ms(p.zeroFillOnlyMs)}, ${mib(p.zeroFillBytes)}`,
        ms(p.parseStateMs + p.filesMs),
        rest(restoreRest),
        ms(p.prepareSandboxMs),
        ms(r.firstTotal),
      ];
    }),
  );
}

function method(): string {
  return [
    `Each guest is plain JavaScript (bench/checkpoint-lib.ts, \`heapProgram\`) that builds records of ordinary data`,
    `(objects with numbers and strings, a Map over every fourth, small arrays) in its main turn, keeps them`,
    `reachable and then runs a 2 ms interval that writes one record per tick; it prints nothing. "QuickJS heap"`,
    `is the growth of QuickJS's own "memory used" over an idle guest; "non-zero" is the guest's non-zero 64-KiB`,
    `pages (its whole state, the runtime's ~4 MiB included) out of the linear memory, and "stored" the pages the`,
    `image keeps (those that differ from the runtime template). Pause is \`Guest.checkpointLive().pauseMs\`, the`,
    `capture Roam makes of a running guest for its image (src/controller/images.ts): memory copied in slices while`,
    `the guest runs, then, frozen, every page that differs from that copy copied again (a page that was zero in the`,
    `copy read against a zero page), host state and files. "checkpoint() pause" is \`Guest.checkpoint().pauseMs\`, the`,
    `guest frozen for the whole page scan and copy, for reference (\`roam guest run --checkpoint-after\`, which ends the`,
    `guest anyway); the profile's checkpoint() columns are its parts. ${PAUSE_REPS} of each after ${WARMUP} warm-ups, in`,
    `alternating order, 5 ms of guest run time before each.`,
    `The floor is measured in the same process while the guest is frozen: a plain copy of every non-zero`,
    `byte, into a new buffer (not zeroed first, as the checkpoint's own is not) with one \`set()\` per page ("pages")`,
    `or one \`slice()\` ("slice"); the faster median is the floor. Raw bytes are stored pages + page index + state JSON + files; the image is \`encodeImage\``,
    `with its defaults (pages the runtime template has stored as their differences from it, the rest LZ4;`,
    `median of ${ENCODE_REPS}). Restore runs as \`roam host\` runs it: bench/restore-child.ts bundled by esbuild as dist/cli.js is,`,
    `in a fresh Node process with the hosts' Node flags`,
    `(${DAEMON_NODE_FLAGS.map((f) => `\`${f}\``).join(' ')}, src/common/node-flags.ts), that reads the image into memory first, then ${RESTORE_REPS} times prepares a warm sandbox`,
    `(\`Guest.prepareSandbox\` with the image's memory size: compiled module, instance, runtime template loaded,`,
    `memory grown and faulted in; not timed, as a migration target does it before the source freezes) and times`,
    `\`Guest.restoreImage\` (checksum, diffs applied and LZ4 chunks decoded straight into the sandbox's pages, state`,
    `and files parsed, timers and sockets rebuilt) until it returns with the guest runnable (checked: it keeps`,
    `running); restore/floor divides that by the same plain-copy floor timed in that child. "Copy into warm memory"`,
    `is that copy into a buffer faulted in beforehand, as the sandbox is, for reference (not the issue's floor). "decodeImage (to a`,
    `buffer)" is the decode alone into fresh buffers, for reference. All values are medians. The profile's`,
    `decode columns time the checksum and the portable decompression of all chunks (lz4-napi, on the thread pool)`,
    `on their own; "apply diffs" is the diffs section's records written by the portable path into a sandbox that`,
    `holds the runtime template; "native place" is what a restore does with the native codec instead (every`,
    `memory and diffs chunk placed into such a sandbox, on helper threads and the calling one, the second of two`,
    `placements into it; "-" without the codec); "restoreMemory" a copy of every stored page as whole pages (as a version 1 image restored), for`,
    `reference; "restore: rest" is the restore minus checksum, pages (native place, or diffs and decompression),`,
    `state and files (header, guest rebuilt, turns waited; with helper threads the checksum overlaps the pages).`,
  ].join('\n');
}

async function main(): Promise<void> {
  const machine = machineInfo();
  const loadBefore = loadavg()[0] ?? NaN;
  const dir = mkdtempSync(join(tmpdir(), 'roam-bench-'));
  const t0 = performance.now();
  try {
    const childFile = await compileChild();
    // An idle guest: the runtime's own heap, subtracted from each guest's, and the runtime
    // template built once (every later Guest.start copies it).
    const idle = await Guest.start(heapProgram(0), { limits: BENCH_LIMITS });
    await sleep(20);
    const baselineUsed = quickjsUsed(idle);
    idle.stop();

    const results: Result[] = [];
    for (const size of SIZES_MIB) results.push(await measure(size, baselineUsed, dir, childFile));

    const report = [
      `## Checkpoint pause, image and restore`,
      '',
      `- Date: ${machine.date}`,
      `- Machine: ${machine.cpus} CPUs (nproc), ${machine.cpuModel}, ${machine.memory} RAM, ${machine.os}`,
      `- Node: ${machine.node}`,
      `- Image codec: ${codecLine()}`,
      `- Command: \`${COMMAND}\` (whole run: ${((performance.now() - t0) / 1000).toFixed(0)} s)`,
      `- 1-minute load average: ${loadBefore.toFixed(2)} before, ${(loadavg()[0] ?? NaN).toFixed(2)} after` +
        ' (the machine is shared; other work running at the same time inflates every number, floors included)',
      '',
      resultsTable(results),
      '',
      'Profile (medians, ms):',
      '',
      profileTable(results),
      '',
      method(),
    ].join('\n');
    console.log(report);
    if (process.env['BENCH_NO_WRITE'] !== '1') writeBenchSection('checkpoint', report);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(CHILD_DIR, { recursive: true, force: true });
  }
}

await main();
