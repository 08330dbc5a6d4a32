/** The host's hold on guest turns (src/guest/turn-gate.ts) and how a guest keeps to it. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { bundleGuest } from '../src/guest/bundle.js';
import { Guest } from '../src/guest/guest.js';
import { TurnGate } from '../src/guest/turn-gate.js';

const TICKER = `let n = 0; setInterval(() => console.log('tick ' + ++n), 1);`;

/** A guest that logs `tick N` every millisecond, and a way to await its next lines. */
async function ticker(t: { after: (fn: () => void) => void }, gate?: TurnGate) {
  const lines: string[] = [];
  let waiter: { count: number; resolve: () => void } | undefined;
  const guest = await Guest.start(TICKER, {
    ...(gate ? { gate } : {}),
    onLog: (record) => {
      lines.push(record.text.trim());
      if (waiter && lines.length >= waiter.count) {
        waiter.resolve();
        waiter = undefined;
      }
    },
  });
  t.after(() => guest.stop());
  const until = (count: number): Promise<void> =>
    lines.length >= count ? Promise.resolve() : new Promise((resolve) => (waiter = { count, resolve }));
  return { guest, lines, until };
}

test('no guest takes a turn while the gate is held, and each goes on in order once it opens', async (t) => {
  const gate = new TurnGate();
  const held = await ticker(t, gate);
  const free = await ticker(t);
  await held.until(3);

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
  const gate = new TurnGate();
  const held = await ticker(t, gate);
  const free = await ticker(t);
  await held.until(2);

  const outer = gate.hold();
  const inner = gate.hold();
  outer();
  assert.equal(gate.closed, true, 'the inner hold keeps it closed');
  const before = held.lines.length;
  await free.until(free.lines.length + 10);
  assert.equal(held.lines.length, before);
  inner();
  await held.until(before + 2);

  // A hold never released (a move that stalled) lets go after its longest time.
  gate.hold(30);
  const stalled = held.lines.length;
  await free.until(free.lines.length + 5);
  assert.equal(held.lines.length, stalled, 'held at first');
  await held.until(stalled + 2);
  assert.equal(gate.closed, false);
});

test('what a gated guest was due travels in its checkpoint and runs after a restore', async (t) => {
  const gate = new TurnGate();
  const held = await ticker(t, gate);
  const free = await ticker(t);
  await held.until(2);
  const release = gate.hold();
  t.after(release);
  await free.until(free.lines.length + 10);
  const seen = held.lines.length;

  const capture = held.guest.checkpoint();
  const due = (capture.contents.state as { held?: unknown[] }).held ?? [];
  assert.ok(due.length > 0, 'the timer events held at the gate are in the image');
  const lines: string[] = [];
  let resolve!: () => void;
  const ticked = new Promise<void>((r) => (resolve = r));
  const copy = await Guest.restore(capture.contents, {
    onLog: (record) => {
      lines.push(record.text.trim());
      if (lines.length >= 2) resolve();
    },
  });
  t.after(() => copy.stop());
  await ticked;
  assert.equal(lines[0], `tick ${seen + 1}`, 'the copy goes on from the tick that was held');
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
  const lines: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (m: RegExpMatchArray) => void }> = [];
  const dir = mkdtempSync(join(tmpdir(), 'roam-gate-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'counter.js'), COUNTER);
  const { code } = await bundleGuest(join(dir, 'counter.js'));
  const guest = await Guest.start(code, {
    gate,
    onLog: (record) => {
      lines.push(record.text.trim());
      for (const w of waiters.splice(0)) {
        const m = lines.map((line) => w.re.exec(line)).find((x) => x !== null);
        if (m) w.resolve(m);
        else waiters.push(w);
      }
    },
  });
  t.after(() => guest.stop());
  const logged = (re: RegExp): Promise<RegExpMatchArray> => {
    const m = lines.map((line) => re.exec(line)).find((x) => x !== null);
    return m ? Promise.resolve(m) : new Promise((resolve) => waiters.push({ re, resolve }));
  };
  const port = Number((await logged(/^listening (\d+)$/))[1]);
  const client = connect(port, '127.0.0.1');
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
