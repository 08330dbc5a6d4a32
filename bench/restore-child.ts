/**
 * The restore side of bench/checkpoint.ts, run in a fresh Node process:
 *
 *   node --import tsx bench/restore-child.ts IMAGE_FILE REPS
 *
 * (bench/checkpoint.ts runs it bundled by esbuild instead, as dist/cli.js is: see compileChild.)
 *
 * Reads the image into memory, then REPS times: prepares a warm sandbox (compiled module,
 * instance, runtime: `Guest.prepareSandbox`), and only then times `decodeImage` and
 * `Guest.restore(contents, { sandbox })` until the guest is runnable. In the same process it times
 * the plain copy floor of the same byte count, and finally a profile of the sub-steps. Prints one
 * line of JSON (`ChildReport`) on stdout and exits.
 */
import { readFileSync } from 'node:fs';
import { Guest } from '../src/guest/guest.js';
import {
  applyPages,
  decodeImage,
  inspectImage,
  restoreMemory,
  snapshotMemory,
  type ImageContents,
} from '../src/guest/image/index.js';
import { applyDiffs } from '../src/guest/image/diffs.js';
import { uninitialized } from '../src/guest/image/memory.js';
import { runtimeTemplate } from '../src/guest/template.js';
import { PLACE_KIND, nativeCodec } from '../src/guest/image/native.js';
import { DIGEST_BYTES, PREFIX_BYTES, digestKind, type ImageHeader } from '../src/guest/image/format.js';
import {
  POOL_CONCURRENCY,
  checksum,
  inflateChunk,
  runPool,
  unlz4Chunk,
  unsnappyChunk,
} from '../src/guest/image/work.js';
import type { Sandbox } from '../src/guest/sandbox/sandbox.js';
import { parseGuestState } from '../src/guest/state-schema.js';
import { VirtualFileSystem } from '../src/guest/vfs.js';
import { BENCH_LIMITS, PAGE, median, sleep, timed, timedAsync } from './checkpoint-lib.js';

export interface ChildRep {
  decodeMs: number;
  restoreMs: number;
  totalMs: number;
  floorPagesMs: number;
  floorSliceMs: number;
  /** The same copy into memory faulted in beforehand, for reference. */
  warmCopyMs: number;
}

export interface ChildProfile {
  /** decodeImage's parts: the image's checksum, inflating every chunk on the pool, the rest. */
  checksumMs: number;
  inflateMs: number;
  /** Guest.restore's parts, on a fresh prepared sandbox. */
  parseStateMs: number;
  filesMs: number;
  growMs: number;
  restoreMemoryMs: number;
  /** The diffs section's records applied into a sandbox that holds the runtime template. */
  applyDiffsMs: number;
  copyOnlyMs: number;
  zeroFillOnlyMs: number;
  zeroFillBytes: number;
  finishRestoreMs: number;
  prepareSandboxMs: number;
  /** The native codec's placement of the memory and diffs chunks into a prepared sandbox (NaN without it). */
  placeMs: number;
}

export interface ChildReport {
  imageBytes: number;
  memoryBytes: number;
  nonZeroBytes: number;
  stillRunning: boolean;
  reps: ChildRep[];
  profile: ChildProfile;
}

const [imagePath, repsArg] = process.argv.slice(2);
if (imagePath === undefined) throw new Error('usage: restore-child.ts IMAGE_FILE [REPS]');
const reps = Math.max(1, Number(repsArg ?? 5));

// Read before any timing: the restore starts with the image in memory.
const image = new Uint8Array(readFileSync(imagePath));

/** A buffer faulted in before any timing, for the copy into warm memory (see floorCopies). */
let warmTarget: Uint8Array | undefined;

/**
 * The floor as the issue defines it, a plain copy into a new buffer: one `set()` per page
 * ("pages") or one `slice()`. And, for reference, the same copy into memory faulted in
 * beforehand ("warm"), as the sandbox a restore writes into is: where a page fault is dear (about
 * 10 µs per 4 KiB on some machines), the plain copy mostly measures the faults.
 */
function floorCopies(data: Uint8Array): { pages: number; slice: number; warm: number } {
  const count = data.length / PAGE;
  const copyInto = (out: Uint8Array): Uint8Array => {
    for (let i = 0; i < count; i++) out.set(data.subarray(i * PAGE, (i + 1) * PAGE), i * PAGE);
    return out;
  };
  const [, pages] = timed(() => copyInto(uninitialized(count * PAGE)));
  const [, slice] = timed(() => data.slice());
  if (warmTarget === undefined || warmTarget.length < data.length) warmTarget = uninitialized(data.length).fill(1);
  const target = warmTarget;
  const [, warm] = timed(() => copyInto(target));
  return { pages, slice, warm };
}

const results: ChildRep[] = [];
let stillRunning = true;
let lastContents: ImageContents | undefined;
// The target learns the memory size before the source freezes (from the image's header here),
// so its sandbox is prepared with the memory grown and faulted in, outside the timed restore.
const { formatVersion, memory: imageMemory } = inspectImage(image);
const expectedBytes = imageMemory.byteLength;
const digest = digestKind(formatVersion);
const base = await runtimeTemplate();
const fullMemory = await (async () => {
  const { contents } = await decodeImage(image, { base });
  const flat = new Uint8Array(contents.memory.byteLength);
  restoreMemory(base.snapshot, flat);
  applyPages(contents.memory, flat);
  return snapshotMemory(flat);
})();
for (let rep = 0; rep < reps; rep++) {
  // For reference: decoding into a fresh buffer, as a reader of the image without a sandbox does.
  const t0 = performance.now();
  const { contents } = await decodeImage(image, { base });
  const decodeMs = performance.now() - t0;

  const sandbox = await Guest.prepareSandbox(BENCH_LIMITS, expectedBytes);
  await sleep(20);
  const t1 = performance.now();
  const guest = await Guest.restoreImage(image, { sandbox });
  const restoreMs = performance.now() - t1;
  if (rep === 0) {
    // The restored guest must go on running its timer.
    await sleep(30);
    stillRunning = guest.state === 'running';
  }
  guest.stop();
  // The floor copies the guest's whole non-zero memory (its state), though the image stores only
  // the pages that differ from the runtime template.
  const floor = floorCopies(fullMemory.data);
  results.push({
    decodeMs,
    restoreMs,
    totalMs: restoreMs,
    floorPagesMs: floor.pages,
    floorSliceMs: floor.slice,
    warmCopyMs: floor.warm,
  });
  lastContents = contents;
}
if (lastContents === undefined) throw new Error('no restore ran');
const contents = lastContents;

// --- profile of the sub-steps (medians of 3) ---
function readHeader(bytes: Uint8Array): { header: ImageHeader; payload: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getUint32(12, true);
  const text = new TextDecoder().decode(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength));
  return { header: JSON.parse(text) as ImageHeader, payload: PREFIX_BYTES + headerLength };
}

/** Applies every (verbatim) chunk of the diffs section into `memory`, which holds the base. */
function applyAllDiffs(bytes: Uint8Array, memory: Uint8Array): void {
  const { header, payload } = readHeader(bytes);
  const diffs = header.sections.find((s) => s.name === 'diffs');
  if (diffs === undefined || diffs.encoding !== 'none') return;
  let from = payload + diffs.offset;
  for (const [, stored] of diffs.chunks) {
    applyDiffs(bytes.subarray(from, from + stored), memory, { place: (index) => index * PAGE });
    from += stored;
  }
}

/** The indices of the pages an image stores whole (its 'pages' section). */
function wholePagesOf(bytes: Uint8Array): Uint32Array {
  const { header, payload } = readHeader(bytes);
  const section = header.sections.find((s) => s.name === 'pages');
  if (section === undefined) return new Uint32Array(0);
  const parts: Uint8Array[] = [];
  let from = payload + section.offset;
  for (const [raw, stored] of section.chunks) {
    const chunk = bytes.subarray(from, from + stored);
    parts.push(raw === stored ? chunk : unlz4Chunk(chunk, raw));
    from += stored;
  }
  const raw = Buffer.concat(parts);
  return new Uint32Array(raw.length / 4).map((_, i) => raw.readUInt32LE(i * 4));
}

/** Every memory and diffs chunk placed by the native codec, as a restore places them. */
function placeAll(bytes: Uint8Array, memory: Uint8Array): void {
  const native = nativeCodec();
  if (!native) return;
  const { header, payload } = readHeader(bytes);
  const jobs: number[] = [];
  for (const section of header.sections) {
    if (section.name !== 'memory' && section.name !== 'diffs') continue;
    const verbatim = section.name === 'memory' ? PLACE_KIND.memoryVerbatim : PLACE_KIND.diffsVerbatim;
    let from = payload + section.offset;
    let to = 0;
    for (const [raw, stored] of section.chunks) {
      jobs.push(verbatim + (raw === stored ? 0 : 1), from, stored, raw, to);
      from += stored;
      to += raw;
    }
  }
  const whole = wholePagesOf(bytes);
  const seen = new Uint8Array(memory.length / PAGE);
  for (const page of whole) seen[page] = 1;
  const results = native.placeFinish(native.placeStart(bytes, new Float64Array(jobs), whole, seen, memory));
  if (results.some((r) => r < 0)) throw new Error(`the native placement failed: ${results.join(',')}`);
}

async function inflateAll(bytes: Uint8Array): Promise<void> {
  const { header, payload } = readHeader(bytes);
  const jobs: Array<{ from: number; stored: number; raw: number; encoding: string }> = [];
  for (const section of header.sections) {
    let from = payload + section.offset;
    for (const [raw, stored] of section.chunks) {
      if (stored < raw) jobs.push({ from, stored, raw, encoding: section.encoding });
      from += stored;
    }
  }
  await runPool(jobs.length, POOL_CONCURRENCY, async (i) => {
    const job = jobs[i];
    if (!job) return;
    const input = bytes.subarray(job.from, job.from + job.stored);
    const unpack = { lz4: unlz4Chunk, snappy: unsnappyChunk }[job.encoding] ?? inflateChunk;
    await unpack(input, job.raw);
  });
}

function copyRuns(pages: Uint32Array, data: Uint8Array, target: Uint8Array): void {
  for (let i = 0; i < pages.length;) {
    const first = pages[i] ?? 0;
    let j = i + 1;
    while (j < pages.length && pages[j] === first + (j - i)) j++;
    target.set(data.subarray(i * PAGE, j * PAGE), first * PAGE);
    i = j;
  }
}

function zeroGaps(pages: Uint32Array, target: Uint8Array): number {
  let filled = 0;
  let zeroFrom = 0;
  for (const page of pages) {
    const start = page * PAGE;
    if (start > zeroFrom) {
      target.fill(0, zeroFrom, start);
      filled += start - zeroFrom;
    }
    zeroFrom = start + PAGE;
  }
  if (zeroFrom < target.length) {
    filled += target.length - zeroFrom;
    target.fill(0, zeroFrom);
  }
  return filled;
}

const samples: Record<keyof ChildProfile, number[]> = {
  checksumMs: [],
  inflateMs: [],
  parseStateMs: [],
  filesMs: [],
  growMs: [],
  restoreMemoryMs: [],
  applyDiffsMs: [],
  copyOnlyMs: [],
  zeroFillOnlyMs: [],
  zeroFillBytes: [],
  finishRestoreMs: [],
  prepareSandboxMs: [],
  placeMs: [],
};
const { memory } = contents;
const hashed = image.subarray(0, image.length - DIGEST_BYTES[digest]);
for (let i = 0; i < 3; i++) {
  samples.checksumMs.push((await timedAsync(() => checksum(hashed, digest)))[1]);
  samples.inflateMs.push((await timedAsync(() => inflateAll(image)))[1]);
  samples.parseStateMs.push(timed(() => parseGuestState(contents.state))[1]);
  samples.filesMs.push(timed(() => VirtualFileSystem.deserialize(contents.files, { now: () => Date.now() }))[1]);

  const [a, prepareMs] = await timedAsync<Sandbox>(() => Guest.prepareSandbox(BENCH_LIMITS));
  samples.prepareSandboxMs.push(prepareMs);
  const [viewA, growMs] = timed(() => a.prepareRestore(memory.byteLength));
  samples.growMs.push(growMs);
  samples.restoreMemoryMs.push(timed(() => restoreMemory(memory, viewA))[1]);
  samples.finishRestoreMs.push(timed(() => a.finishRestore())[1]);
  a.dispose();

  const c = await Guest.prepareSandbox(BENCH_LIMITS, memory.byteLength);
  samples.applyDiffsMs.push(timed(() => applyAllDiffs(image, c.memoryView()))[1]);
  c.dispose();
  const d = await Guest.prepareSandbox(BENCH_LIMITS, memory.byteLength);
  // Twice into the same sandbox, the second timed: the first write into this fresh sandbox took
  // 5-9 ms at 16 MiB, the timed restores' 3-4 ms (not explained yet; see BENCHMARKS.md, session 20).
  if (nativeCodec()) placeAll(image, d.memoryView());
  samples.placeMs.push(nativeCodec() ? timed(() => placeAll(image, d.memoryView()))[1] : NaN);
  d.dispose();

  const b = await Guest.prepareSandbox(BENCH_LIMITS);
  const viewB = b.prepareRestore(memory.byteLength);
  samples.copyOnlyMs.push(timed(() => copyRuns(memory.pages, memory.data, viewB))[1]);
  const [bytes, fillMs] = timed(() => zeroGaps(memory.pages, viewB));
  samples.zeroFillOnlyMs.push(fillMs);
  samples.zeroFillBytes.push(bytes);
  b.dispose();
  await sleep(10);
}
const profile = Object.fromEntries(
  Object.entries(samples).map(([key, values]) => [key, median(values)]),
) as unknown as ChildProfile;

const report: ChildReport = {
  imageBytes: image.length,
  memoryBytes: memory.byteLength,
  nonZeroBytes: fullMemory.data.length,
  stillRunning,
  reps: results,
  profile,
};
process.stdout.write(`${JSON.stringify(report)}\n`);
