/**
 * `npm run bench:wasm`: what instrumenting a WebAssembly guest costs, and how fast it is captured.
 *
 * On the same workloads (a sieve, an n-body floating-point kernel), in one run, interleaved,
 * best of ROUNDS: the module as clang built it (instantiated with a minimal WASI stub), the same
 * module run as a Roam guest (instrumented: fuel polls, asyncify, yielding to the event loop every
 * slice), and the same algorithm as plain Node JavaScript. Then the instrumented run at several
 * fuel intervals (how the default was chosen), the code size ratio, and the checkpoint pause and
 * restore time of a guest holding 16 and 128 MiB, against a plain copy of its non-zero memory.
 *
 * Refreshes the wasm section of BENCHMARKS.md (BENCH_NO_WRITE=1 skips that).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeImage } from '../src/guest/image/index.js';
import { WasmGuest } from '../src/wasm/guest.js';
import { instrument } from '../src/wasm/instrument.js';
import { writeBenchSection } from './report.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const work = mkdtempSync(join(tmpdir(), 'roam-bench-wasm-'));
const cacheDir = join(work, 'cache');
const load0 = loadavg()[0] ?? 0;
const began = performance.now();

function build(name: string): Uint8Array {
  const out = join(work, `${name}.wasm`);
  const r = spawnSync('clang', ['--target=wasm32-wasi', '-O2', '-o', out, join(ROOT, 'bench/wasm', `${name}.c`)], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`clang failed for ${name}: ${r.stderr}`);
  return readFileSync(out);
}

/** Runs a module as clang built it, with just enough WASI for these programs. */
async function runPlain(bytes: Uint8Array, args: string[]): Promise<{ ms: number; out: string }> {
  const module = await WebAssembly.compile(bytes);
  const ref: { memory?: WebAssembly.Memory } = {};
  let out = '';
  const argv = ['bench', ...args];
  const enc = new TextEncoder();
  const view = () => new DataView((ref.memory as WebAssembly.Memory).buffer);
  class Exit extends Error {}
  const wasi: Record<string, (...a: number[]) => number> = {
    args_sizes_get: (c, s) => {
      view().setUint32(c, argv.length, true);
      view().setUint32(
        s,
        argv.reduce((n, a) => n + enc.encode(a).length + 1, 0),
        true,
      );
      return 0;
    },
    args_get: (p, b) => {
      const mem = new Uint8Array((ref.memory as WebAssembly.Memory).buffer);
      for (const a of argv) {
        view().setUint32(p, b, true);
        p += 4;
        const e = enc.encode(a);
        mem.set(e, b);
        mem[b + e.length] = 0;
        b += e.length + 1;
      }
      return 0;
    },
    fd_write: (_fd, iovs, n, written) => {
      let total = 0;
      for (let i = 0; i < n; i++) {
        const p = view().getUint32(iovs + i * 8, true);
        const l = view().getUint32(iovs + i * 8 + 4, true);
        out += Buffer.from((ref.memory as WebAssembly.Memory).buffer, p, l).toString();
        total += l;
      }
      view().setUint32(written, total, true);
      return 0;
    },
    proc_exit: () => {
      throw new Exit();
    },
  };
  const imports = {
    wasi_snapshot_preview1: new Proxy(wasi, { get: (t, k) => (typeof k === 'string' && t[k]) || (() => 0) }),
  };
  const t0 = performance.now();
  const instance = (await WebAssembly.instantiate(module, imports)) as unknown as {
    exports: { memory: WebAssembly.Memory; _start: () => void };
  };
  ref.memory = instance.exports.memory;
  try {
    instance.exports._start();
  } catch (err) {
    if (!(err instanceof Exit)) throw err;
  }
  return { ms: performance.now() - t0, out };
}

async function runGuest(
  bytes: Uint8Array,
  args: string[],
  fuelInterval?: number,
): Promise<{ ms: number; out: string }> {
  let out = '';
  const t0 = performance.now();
  const guest = await WasmGuest.start(bytes, {
    argv: args,
    cacheDir,
    onLog: (r) => (out += r.text),
    ...(fuelInterval ? { fuelInterval } : {}),
  });
  await guest.exited;
  return { ms: performance.now() - t0, out };
}

function sieveJs(n: number, rounds: number): number {
  const s = new Uint8Array(n + 1);
  let count = 0;
  for (let r = 0; r < rounds; r++) {
    s.fill(0);
    count = 0;
    for (let i = 2; i <= n; i++) {
      if (s[i]) continue;
      count++;
      for (let j = i * i; j <= n; j += i) s[j] = 1;
    }
  }
  return count;
}

function nbodyJs(steps: number): number {
  const PI = Math.PI,
    SM = 4 * PI * PI,
    D = 365.24;
  const b = [
    [0, 0, 0, 0, 0, 0, SM],
    [
      4.8414314424647209,
      -1.16032004402742839,
      -0.103622044471123109,
      1.66007664274403694e-3 * D,
      7.69901118419740425e-3 * D,
      -6.90460016972063023e-5 * D,
      9.54791938424326609e-4 * SM,
    ],
    [
      8.34336671824457987,
      4.12479856412430479,
      -0.403523417114321381,
      -2.76742510726862411e-3 * D,
      4.99852801234917238e-3 * D,
      2.30417297573763929e-5 * D,
      2.85885980666130812e-4 * SM,
    ],
    [
      12.894369562139131,
      -15.1111514016986312,
      -0.223307578892655734,
      2.96460137564761618e-3 * D,
      2.3784717395948095e-3 * D,
      -2.96589568540237556e-5 * D,
      4.36624404335156298e-5 * SM,
    ],
    [
      15.3796971148509165,
      -25.9193146099879641,
      0.179258772950371181,
      2.68067772490389322e-3 * D,
      1.62824170038242295e-3 * D,
      -9.5159225451971587e-5 * D,
      5.15138902046611451e-5 * SM,
    ],
  ].map(([x, y, z, vx, vy, vz, m]) => ({ x: x!, y: y!, z: z!, vx: vx!, vy: vy!, vz: vz!, m: m! }));
  let px = 0,
    py = 0,
    pz = 0;
  for (const p of b) {
    px += p.vx * p.m;
    py += p.vy * p.m;
    pz += p.vz * p.m;
  }
  b[0]!.vx = -px / SM;
  b[0]!.vy = -py / SM;
  b[0]!.vz = -pz / SM;
  for (let s = 0; s < steps; s++) {
    for (let i = 0; i < 5; i++)
      for (let j = i + 1; j < 5; j++) {
        const bi = b[i]!,
          bj = b[j]!;
        const dx = bi.x - bj.x,
          dy = bi.y - bj.y,
          dz = bi.z - bj.z;
        const d2 = dx * dx + dy * dy + dz * dz,
          mag = 0.01 / (d2 * Math.sqrt(d2));
        bi.vx -= dx * bj.m * mag;
        bi.vy -= dy * bj.m * mag;
        bi.vz -= dz * bj.m * mag;
        bj.vx += dx * bi.m * mag;
        bj.vy += dy * bi.m * mag;
        bj.vz += dz * bi.m * mag;
      }
    for (const p of b) {
      p.x += 0.01 * p.vx;
      p.y += 0.01 * p.vy;
      p.z += 0.01 * p.vz;
    }
  }
  let e = 0;
  for (let i = 0; i < 5; i++) {
    const bi = b[i]!;
    e += 0.5 * bi.m * (bi.vx * bi.vx + bi.vy * bi.vy + bi.vz * bi.vz);
    for (let j = i + 1; j < 5; j++) {
      const bj = b[j]!;
      e -= (bi.m * bj.m) / Math.hypot(bi.x - bj.x, bi.y - bj.y, bi.z - bj.z);
    }
  }
  return e;
}

const min = (xs: number[]) => Math.min(...xs);
const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);

interface Workload {
  name: string;
  file: string;
  args: string[];
  js: () => string;
}
const workloads: Workload[] = [
  { name: 'sieve (20M, 3 rounds)', file: 'sieve', args: ['20000000', '3'], js: () => `${sieveJs(20_000_000, 3)}\n` },
  { name: 'n-body (5M steps)', file: 'nbody', args: ['5000000'], js: () => `${nbodyJs(5_000_000).toFixed(9)}\n` },
];

const speedRows: string[] = [];
const sizeRows: string[] = [];
const fuelRows: string[] = [];
for (const w of workloads) {
  const bytes = build(w.file);
  const inst = await instrument(bytes, { cacheDir });
  sizeRows.push(
    `| ${w.name} | ${bytes.length} | ${inst.bytes.length} | ${f2(inst.bytes.length / bytes.length)}x | ${inst.info.loops} | ${inst.info.hoisted ?? 0} | ${inst.info.recursive ?? 0} |`,
  );
  const plain: number[] = [];
  const guest: number[] = [];
  const js: number[] = [];
  let answers = new Set<string>();
  for (let r = 0; r < ROUNDS; r++) {
    const p = await runPlain(bytes, w.args);
    const g = await runGuest(bytes, w.args);
    const t0 = performance.now();
    const j = w.js();
    js.push(performance.now() - t0);
    plain.push(p.ms);
    guest.push(g.ms);
    answers = new Set([...answers, p.out, g.out, j]);
  }
  const same = answers.size === 1 ? 'yes' : `NO (${[...answers].map((a) => a.trim()).join(' / ')})`;
  const ratio = min(guest) / min(plain);
  speedRows.push(
    `| ${w.name} | ${f1(min(plain))} | ${f1(min(guest))} | ${f2(ratio)}x | ${ratio <= 1.25 ? 'PASS' : 'FAIL'} | ${f1(min(js))} | ${f2(min(js) / min(plain))}x | ${same} |`,
  );
  console.error(speedRows.at(-1));
  if (w.file === 'sieve') {
    for (const fuel of [1000, 10_000, 100_000, 1_000_000]) {
      await instrument(bytes, { cacheDir, fuelInterval: fuel });
      const times: number[] = [];
      for (let r = 0; r < ROUNDS; r++) times.push((await runGuest(bytes, w.args, fuel)).ms);
      fuelRows.push(`| ${fuel} | ${f1(min(times))} | ${f2(min(times) / min(plain))}x |`);
      console.error(fuelRows.at(-1));
    }
  }
}

/** Checkpoint pause and restore of a guest that holds `mib` MiB of non-zero data. */
async function capture(mib: number): Promise<string> {
  const bytes = build('ballast');
  const pauses: number[] = [];
  const floors: number[] = [];
  const restores: number[] = [];
  const imageRestores: number[] = [];
  let nonZero = 0;
  let imageBytes = 0;
  let encodeMs = 0;
  for (let r = 0; r < ROUNDS; r++) {
    let ready!: () => void;
    const isReady = new Promise<void>((resolve) => (ready = resolve));
    const guest = await WasmGuest.start(bytes, {
      argv: [String(mib)],
      cacheDir,
      onLog: (rec) => rec.text.includes('ready') && ready(),
    });
    await isReady;
    const c = guest.checkpoint();
    guest.stop();
    pauses.push(c.pauseMs);
    nonZero = c.contents.memory.data.length;
    const source = new Uint8Array(nonZero).fill(7);
    const t0 = performance.now();
    new Uint8Array(nonZero).set(source);
    floors.push(performance.now() - t0);
    const t1 = performance.now();
    const image = await encodeImage(c.contents);
    encodeMs = performance.now() - t1;
    imageBytes = image.length;
    const t2 = performance.now();
    const restored = await WasmGuest.restore(c.contents, { cacheDir });
    restores.push(performance.now() - t2);
    restored.stop();
    const t3 = performance.now();
    const fromImage = await WasmGuest.restoreImage(image, { cacheDir });
    imageRestores.push(performance.now() - t3);
    fromImage.stop();
  }
  const ratio = min(pauses) / min(floors);
  return `| ${mib} MiB | ${f1(nonZero / 1048576)} | ${f1(min(pauses))} | ${f1(min(floors))} | ${f2(ratio)}x | ${ratio <= 3 ? 'PASS' : 'FAIL'} | ${imageBytes} | ${f1(encodeMs)} | ${f1(min(restores))} | ${f1(min(imageRestores))} |`;
}
const captureRows = [await capture(16), await capture(128)];
for (const row of captureRows) console.error(row);

const cpu = cpus()[0]?.model ?? 'unknown CPU';
const section = `## WebAssembly guests: instrumentation cost, checkpoint and restore

- Date: ${new Date().toUTCString()}
- Machine: ${cpus().length} CPUs, ${cpu}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM; Node ${process.version}; clang for wasm32-wasi -O2; binaryen.js 132
- Command: \`npm run bench:wasm\` (node --no-liftoff: V8 has no on-stack replacement for WebAssembly, so
  without it a long \`_start\` stays in baseline code for its whole run while a guest, re-entered after
  every slice, gets optimized code: the comparison would flatter the guest) (whole run: ${((performance.now() - began) / 1000).toFixed(0)} s, best of ${ROUNDS} interleaved rounds)
- 1-minute load average: ${f2(load0)} before, ${f2(loadavg()[0] ?? 0)} after (the machine is shared; other work inflates every number)

Run time, ms (plain: the module as clang built it, with a minimal WASI stub; guest: the same module as a
Roam guest, instrumented, yielding to the event loop every 20 ms slice; JS: the same algorithm in Node):

| workload | plain ms | guest ms | guest/plain | <= 1.25x | JS ms | JS/plain | same answer |
| --- | --- | --- | --- | --- | --- | --- | --- |
${speedRows.join('\n')}

Code size (bytes):

| workload | original | instrumented | ratio | loops polled | of which poll through their parent loop | recursive functions polled at entry |
| --- | --- | --- | --- | --- | --- | --- |
${sizeRows.join('\n')}

Fuel interval (loop iterations between polls) on the sieve, guest run time; the default is 10000:

| fuel interval | guest ms | guest/plain |
| --- | --- | --- |
${fuelRows.join('\n')}

Checkpoint pause (freeze to a complete capture in memory: page scan and copy of the non-zero pages,
globals, stack, host state) against a plain copy of the same number of bytes; restore from the
capture (compile, instantiate, copy, set globals) and from the encoded image (decode too):

| guest data | non-zero MiB | pause ms | copy ms | pause/copy | <= 3x | image bytes | encode ms | restore ms | restore from image ms |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
${captureRows.join('\n')}`;
console.log(section);
if (process.env['BENCH_NO_WRITE'] !== '1') writeBenchSection('wasm', section);
rmSync(work, { recursive: true, force: true });
