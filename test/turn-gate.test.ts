/**
 * The host's hold on guest turns (src/guest/turn-gate.ts): how JavaScript and WebAssembly guests
 * keep to it, and how a move's target takes it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { bundleGuest } from '../src/guest/bundle.js';
import { Guest } from '../src/guest/guest.js';
import { TurnGate } from '../src/guest/turn-gate.js';
import { WasmGuest } from '../src/wasm/guest.js';
import { ROOT, tempDir } from './helpers/roam.js';
import { serveTarget, targetContext } from './helpers/move-target.js';

const TICKER = `let n = 0; setInterval(() => console.log('tick ' + ++n), 1);`;

/** A guest's log lines, and promises for lines still to come. */
function watchLog() {
  const lines: string[] = [];
  const waiters: Array<{ ready: () => boolean; resolve: () => void }> = [];
  const wait = (ready: () => boolean): Promise<void> =>
    ready() ? Promise.resolve() : new Promise((resolve) => waiters.push({ ready, resolve }));
  const match = (re: RegExp): RegExpExecArray | undefined =>
    lines.map((line) => re.exec(line)).find((m): m is RegExpExecArray => m !== null);
  return {
    lines,
    onLog: (record: { text: string }): void => {
      lines.push(record.text.trim());
      for (const w of waiters.splice(0)) (w.ready() ? w.resolve : () => waiters.push(w))();
    },
    /** Until there are `count` lines. */
    until: (count: number): Promise<void> => wait(() => lines.length >= count),
    /** The first line matching `re`, once there is one. */
    logged: async (re: RegExp): Promise<RegExpExecArray> => {
      await wait(() => match(re) !== undefined);
      return match(re) as RegExpExecArray;
    },
  };
}

type After = { after: (fn: () => void) => void };

/** A guest that logs `tick N` every millisecond. */
async function ticker(t: After, gate?: TurnGate) {
  const log = watchLog();
  const guest = await Guest.start(TICKER, { ...(gate ? { gate } : {}), onLog: log.onLog });
  t.after(() => guest.stop());
  return { guest, ...log };
}

/** A ticker behind a new gate (it has ticked twice), and one outside it whose ticks pace the test. */
async function gatedAndFree(t: After) {
  const gate = new TurnGate();
  const held = await ticker(t, gate);
  const free = await ticker(t);
  await held.until(2);
  return { gate, held, free };
}

test('no guest takes a turn while the gate is held, and each goes on in order once it opens', async (t) => {
  const { gate, held, free } = await gatedAndFree(t);

  const release = gate.hold();
  assert.equal(gate.closed, true);
  const before = held.lines.length;
  // The guest outside the gate ticks on: 20 of its turns pass while the gated one takes none.
  await free.until(free.lines.length + 20);
  assert.equal(held.lines.length, before, 'a gated guest took a turn');
  assert.equal(held.guest.state, 'running', 'held, not frozen');

  release();
  release(); // a second call changes nothing
  assert.equal(gate.closed, false);
  await held.until(before + 3);
  const numbers = held.lines.map((line) => Number(line.split(' ')[1]));
  assert.deepEqual(
    numbers,
    numbers.map((_, i) => i + 1),
    'every tick, once, in order',
  );
});

test('holds nest, and a hold ends by itself after its longest time', async (t) => {
  const { gate, held, free } = await gatedAndFree(t);

  const outer = gate.hold();
  const inner = gate.hold();
  outer();
  assert.equal(gate.closed, true, 'the inner hold keeps it closed');
  const before = held.lines.length;
  await free.until(free.lines.length + 10);
  assert.equal(held.lines.length, before);
  inner();
  await held.until(before + 2);

  // A renewed hold keeps the gate closed, and the one it replaced no longer counts.
  const first = gate.hold();
  const renewed = gate.renew(first);
  assert.equal(gate.closed, true);
  first();
  assert.equal(gate.closed, true, 'the first hold was already ended by the renewal');
  renewed();
  assert.equal(gate.closed, false);

  // A hold never released (a move that stalled) lets go after its longest time.
  gate.hold(30);
  const stalled = held.lines.length;
  await free.until(free.lines.length + 5);
  assert.equal(held.lines.length, stalled, 'held at first');
  await held.until(stalled + 2);
  assert.equal(gate.closed, false);
});

test('what a gated guest was due travels in its checkpoint and runs after a restore', async (t) => {
  const { gate, held, free } = await gatedAndFree(t);
  const release = gate.hold();
  t.after(release);
  await free.until(free.lines.length + 10);
  const seen = held.lines.length;

  const capture = held.guest.checkpoint();
  const due = (capture.contents.state as { held?: unknown[] }).held ?? [];
  assert.ok(due.length > 0, 'the timer events held at the gate are in the image');
  const log = watchLog();
  const copy = await Guest.restore(capture.contents, { onLog: log.onLog });
  t.after(() => copy.stop());
  await log.until(2);
  assert.equal(log.lines[0], `tick ${seen + 1}`, 'the copy goes on from the tick that was held');
  assert.equal(held.lines.length, seen, 'the original is still held');
});

const COUNTER = `const net = require('net');
const server = net.createServer((socket) => {
  let bytes = 0;
  socket.on('data', (chunk) => { bytes += chunk.length; });
  socket.on('end', () => { console.log('got ' + bytes); socket.end(); });
});
server.listen(0, '127.0.0.1', () => console.log('listening ' + server.address().port));`;

test('a gated guest reads nothing meanwhile, so what is held stays small, and gets every byte after', async (t) => {
  const gate = new TurnGate();
  const free = await ticker(t);
  const { onLog, logged } = watchLog();
  const dir = mkdtempSync(join(tmpdir(), 'roam-gate-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'counter.js'), COUNTER);
  const { code } = await bundleGuest(join(dir, 'counter.js'));
  const guest = await Guest.start(code, { gate, onLog });
  t.after(() => guest.stop());
  const port = Number((await logged(/^listening (\d+)$/))[1]);
  const client = net.connect(port, '127.0.0.1');
  t.after(() => client.destroy());
  await new Promise((resolve) => client.once('connect', resolve));

  const release = gate.hold();
  t.after(release);
  const total = 64 * 1024 * 1024;
  client.write(Buffer.alloc(total, 7));
  // While 40 turns of another guest pass, the gated one's socket is not read: most of the 64 MiB
  // is still in the client's buffer (read into the host, it would all be held in memory).
  await free.until(free.lines.length + 40);
  assert.ok(client.writableLength > total / 2, `only ${client.writableLength} bytes still to write`);

  release();
  client.end();
  assert.equal((await logged(/^got (\d+)$/))[1], String(total));
});

test("a move's target holds its turns from the source's word that it freezes next until the move is over", async (t) => {
  const { gate, held, free } = await gatedAndFree(t);
  const failed: string[] = [];
  const target = await serveTarget(targetContext(failed, { turns: gate }));
  t.after(() => target.close());
  const channel = await target.offered();
  t.after(() => channel.destroy());
  assert.equal(gate.closed, false, 'no hold while pages are pre-copied');

  await channel.send({ type: 'freezing' });
  assert.equal((await channel.next(5000, 'holding')).header.type, 'holding');
  assert.equal(gate.closed, true, 'held once the target says so');
  const before = held.lines.length;
  await free.until(free.lines.length + 10);
  assert.equal(held.lines.length, before, 'a guest of the target took a turn while the source froze');

  // The source goes away: the move fails here, and the hold ends with it.
  channel.destroy();
  assert.equal(await target.moves[0], false);
  assert.match(failed.join('\n'), /^precopy: /);
  assert.equal(gate.closed, false);
  await held.until(before + 2);
});

const hasClang = spawnSync('clang', ['--version']).status === 0;

test(
  'a WebAssembly guest starts no slice while the gate is held',
  { skip: hasClang ? false : 'clang for wasm32-wasi is not installed (apt-get install clang lld wasi-libc)' },
  async (t) => {
    const dir = tempDir(t, 'roam-gate-wasm-');
    const cache = process.env['ROAM_CACHE_DIR'];
    process.env['ROAM_CACHE_DIR'] = join(dir, 'cache'); // instrumented modules: a cache of this test's own
    t.after(() =>
      cache === undefined ? delete process.env['ROAM_CACHE_DIR'] : (process.env['ROAM_CACHE_DIR'] = cache),
    );
    const made = spawnSync('bash', [join(ROOT, 'examples/wasm/build.sh'), dir], { encoding: 'utf8' });
    assert.equal(made.status, 0, made.stderr);
    const free = await ticker(t);
    const gate = new TurnGate();
    // A loop long enough to compute through the whole test, 5 ms at a time.
    const guest = await WasmGuest.start(readFileSync(join(dir, 'journey.wasm')), {
      gate,
      argv: ['100000000000'],
      sliceMs: 5,
    });
    t.after(() => guest.stop());
    const computed = (): number => guest.usage().cpuMs;
    await free.until(free.lines.length + 10);
    assert.ok(computed() > 0, 'it computes while the gate is open');

    const release = gate.hold();
    t.after(release);
    const before = computed();
    await free.until(free.lines.length + 20);
    assert.equal(computed(), before, 'a slice ran while the gate was held');

    release();
    await free.until(free.lines.length + 20);
    assert.ok(computed() > before, 'it computes again once the gate opens');
  },
);
