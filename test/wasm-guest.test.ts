/**
 * WebAssembly guests in real processes: a tight loop that calls nothing, checkpointed mid-loop and
 * resumed through a chain of processes, ends with the same result as an uninterrupted run (and so
 * does a deep recursion that runs no loop at all); its
 * file and clocks travel with it; a compiled server answers a real client before and after a
 * restore; damaged images and modules using features Roam cannot capture are refused.
 *
 * The guests are the C examples in examples/wasm, built here with Debian's clang for wasm32-wasi
 * (.ci/run installs it); without clang these tests are skipped, and say so.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { ROAM, ROOT, runRoam, tempDir } from './helpers/roam.js';

const hasClang = spawnSync('clang', ['--version']).status === 0;
const skip = hasClang ? false : 'clang for wasm32-wasi is not installed (apt-get install clang lld wasi-libc)';
let built = '';

before(() => {
  if (!hasClang) return;
  const t = { after: (fn: () => void) => process.on('exit', fn) };
  built = tempDir(t, 'roam-wasm-');
  // Instrumented modules go to a cache of this run's own.
  process.env['ROAM_CACHE_DIR'] = join(built, 'cache');
  const made = spawnSync('bash', [join(ROOT, 'examples/wasm/build.sh'), built], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
});

/** Enough iterations that a checkpoint after 300 ms lands inside the loop on any machine we run on. */
const N = '1500000000';

test(
  'a tight loop checkpointed mid-loop and resumed through three processes gives the uninterrupted result',
  { skip },
  async (t) => {
    const dir = tempDir(t);
    const wasm = join(built, 'journey.wasm');
    const whole = await runRoam(['guest', 'run', wasm, '--', N], { timeoutMs: 120_000 });
    assert.equal(whole.code, 0, whole.stderr);
    const expected = /^result ([0-9a-f]{16})$/m.exec(whole.stdout)?.[1];
    assert.ok(expected, whole.stdout);

    const images = [join(dir, 'a.img'), join(dir, 'b.img')];
    const first = await runRoam([
      'guest',
      'run',
      wasm,
      '--checkpoint-after',
      '300ms',
      '--out',
      images[0] ?? '',
      '--',
      N,
    ]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, `started n=${N}\n`, 'stopped inside the loop, before the result');

    const info = await runRoam(['guest', 'inspect', images[0] ?? '', '--json']);
    assert.equal(info.code, 0, info.stderr);
    const summary = JSON.parse(info.stdout) as {
      meta: { kind: string };
      entry: { started: boolean };
      suspended: { kind: string };
    };
    assert.equal(summary.meta.kind, 'wasm');
    assert.equal(summary.entry.started, true);
    assert.equal(summary.suspended.kind, 'yield', 'captured at a poll: the loop calls nothing');

    const second = await runRoam([
      'guest',
      'resume',
      images[0] ?? '',
      '--checkpoint-after',
      '300ms',
      '--out',
      images[1] ?? '',
    ]);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout, '', 'still inside the loop, and nothing printed twice');

    const last = await runRoam(['guest', 'resume', images[1] ?? ''], { timeoutMs: 120_000 });
    assert.equal(last.code, 0, last.stderr);
    assert.match(last.stdout, new RegExp(`^result ${expected}$`, 'm'), 'same result as the uninterrupted run');
    assert.match(last.stdout, new RegExp(`^file written before the loop, n=${N}$`, 'm'), 'the file travelled');
    assert.match(last.stdout, /^clocks forward 1 1$/m, 'monotonic and real-time clocks never went backwards');
    assert.doesNotMatch(last.stdout, /started/);
  },
);

test(
  'a deep recursion with no loop in it is checkpointed mid-way and finishes in another process with the same answer',
  { skip },
  async (t) => {
    const dir = tempDir(t);
    const wasm = join(built, 'recursion.wasm');
    // tree(38): about 10^8 calls, seconds of work; none of the functions on the stack has a loop.
    const n = '38';
    const whole = await runRoam(['guest', 'run', wasm, '--', n], { timeoutMs: 120_000 });
    assert.equal(whole.code, 0, whole.stderr);
    const expected = /^result ([0-9a-f]{16})$/m.exec(whole.stdout)?.[1];
    assert.ok(expected, whole.stdout);

    const image = join(dir, 'r.img');
    const first = await runRoam(['guest', 'run', wasm, '--checkpoint-after', '300ms', '--out', image, '--', n]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, `started n=${n}\n`, 'stopped inside the recursion, before the result');
    const info = await runRoam(['guest', 'inspect', image, '--json']);
    assert.equal(info.code, 0, info.stderr);
    const summary = JSON.parse(info.stdout) as { suspended: { kind: string } };
    assert.equal(summary.suspended.kind, 'yield', 'captured at a poll at the entry of a recursive function');

    const last = await runRoam(['guest', 'resume', image], { timeoutMs: 120_000 });
    assert.equal(last.code, 0, last.stderr);
    assert.equal(last.stdout, `result ${expected}\n`, 'same answer as the uninterrupted run, nothing printed twice');
  },
);

test('damaged WebAssembly images are refused like JavaScript ones', { skip }, async (t) => {
  const dir = tempDir(t);
  const image = join(dir, 'j.img');
  const made = await runRoam([
    'guest',
    'run',
    join(built, 'journey.wasm'),
    '--checkpoint-after',
    '200ms',
    '--out',
    image,
    '--',
    N,
  ]);
  assert.equal(made.code, 0, made.stderr);
  const bytes = readFileSync(image);

  const flipped = Buffer.from(bytes);
  const at = Math.floor(flipped.length / 2);
  flipped[at] = (flipped[at] ?? 0) ^ 0x40;
  writeFileSync(join(dir, 'flipped.img'), flipped);
  const a = await runRoam(['guest', 'resume', join(dir, 'flipped.img')]);
  assert.equal(a.code, 65);
  assert.match(a.stderr, /checksum/);

  writeFileSync(join(dir, 'short.img'), bytes.subarray(0, bytes.length - 1000));
  const b = await runRoam(['guest', 'resume', join(dir, 'short.img')]);
  assert.equal(b.code, 65);
  assert.match(b.stderr, /truncated/);

  const c = await runRoam(['guest', 'inspect', join(dir, 'flipped.img')]);
  assert.equal(c.code, 65);
});

/** Reads `roam: NAME listens on ADDRESS:PORT` from a guest's stderr. */
function listening(child: ReturnType<typeof spawn>): Promise<number> {
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      const m = / listens on [^:]+:(\d+)$/m.exec(err);
      if (m) resolve(Number(m[1]));
    });
    child.on('close', () => reject(new Error(`exited before listening: ${err}`)));
  });
}

function exchange(port: number, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(`${line}\n`));
    let got = '';
    socket.setEncoding('utf8').on('data', (d: string) => {
      got += d;
      if (got.endsWith('\n')) socket.end();
    });
    socket.on('close', () => resolve(got));
    socket.on('error', reject);
  });
}

function exited(child: ReturnType<typeof spawn>): Promise<number | null> {
  return new Promise((resolve) => child.on('close', (code) => resolve(code)));
}

test(
  'a compiled server answers a real client before a checkpoint and after a restore in another process',
  { skip },
  async (t) => {
    const dir = tempDir(t);
    const image = join(dir, 'server.img');
    const wasm = join(built, 'echo-server.wasm');
    const first = spawn(
      process.execPath,
      [ROAM, 'guest', 'run', wasm, '--listen', '0', '--checkpoint-after', '4s', '--out', image],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    t.after(() => first.kill('SIGKILL'));
    const firstExit = exited(first);
    const port = await listening(first);
    assert.equal(await exchange(port, 'hello'), '#1 hello\n');
    assert.equal(await exchange(port, 'again'), '#2 again\n');
    assert.equal(await firstExit, 0, 'checkpointed and exited');

    const second = spawn(process.execPath, [ROAM, 'guest', 'resume', image], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => second.kill('SIGKILL'));
    assert.equal(await listening(second), port, 'listens again on the same port');
    assert.equal(await exchange(port, 'after'), '#3 after\n', 'the count lived in the guest memory');
    second.kill('SIGTERM');
    await exited(second);
  },
);

/** A module of one `_start` that does nothing, with `extra` spliced in before the code section. */
function moduleWith(options: { types?: number[]; memory?: number[]; beforeCode?: number[]; body?: number[] }): Buffer {
  const section = (id: number, bytes: number[]) => [id, bytes.length, ...bytes];
  const str = (s: string) => [s.length, ...Buffer.from(s)];
  const body = options.body ?? [0x0b];
  const code = [1, body.length + 1, 0, ...body];
  return Buffer.from([
    0x00,
    0x61,
    0x73,
    0x6d,
    1,
    0,
    0,
    0,
    ...section(1, options.types ?? [1, 0x60, 0, 0]),
    ...section(3, [1, 0]),
    ...section(5, options.memory ?? [1, 0x00, 1]),
    ...(options.beforeCode ?? []),
    ...section(7, [2, ...str('_start'), 0x00, 0, ...str('memory'), 0x02, 0]),
    ...section(10, code),
  ]);
}

test('modules using features Roam cannot capture are refused, naming the feature', async (t) => {
  const dir = tempDir(t);
  const cases: Array<[string, Buffer, RegExp]> = [
    ['threads', moduleWith({ memory: [1, 0x03, 1, 1] }), /unsupported WebAssembly feature: threads/],
    // v128.const 0, drop
    [
      'simd',
      moduleWith({ body: [0xfd, 0x0c, ...new Array<number>(16).fill(0), 0x1a, 0x0b] }),
      /unsupported WebAssembly feature: SIMD/,
    ],
    ['exceptions', moduleWith({ beforeCode: [13, 3, 1, 0, 0] }), /unsupported WebAssembly feature: exceptions/],
    ['gc', moduleWith({ types: [2, 0x5f, 1, 0x7f, 0x01, 0x60, 0, 0] }), /unsupported WebAssembly feature: GC/],
    ['garbage', Buffer.from('not wasm at all'), /not a WebAssembly module/],
  ];
  for (const [name, bytes, message] of cases) {
    const file = join(dir, `${name}.wasm`);
    writeFileSync(file, bytes);
    const r = await runRoam(['guest', 'run', file]);
    assert.equal(r.code, 67, `${name}: ${r.stderr}`);
    assert.match(r.stderr, message, name);
  }
});
