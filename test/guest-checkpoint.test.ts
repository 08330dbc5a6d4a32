/**
 * A guest survives a checkpoint in one process and a resume in another: its memory (closures,
 * classes, generators, pending awaits, collections, heap), its timers (count, cadence, remaining
 * time), its files, and its listening servers.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROAM, runRoam, startRoam, tempDir, writeGuest } from './helpers/roam.js';

const SURVIVOR = `
const fs = require('node:fs');
function makeCounter() { let n = 0; return () => ++n; }
const counter = makeCounter(); counter(); counter();
class Account { #balance = 0; deposit(x) { this.#balance += x; return this.#balance; } }
const account = new Account(); account.deposit(10);
function* naturals() { let i = 0; for (;;) yield i++; }
const gen = naturals(); gen.next(); gen.next();
let awaited = 'pending';
(async () => { await new Promise((r) => setTimeout(r, 700)); awaited = 'resolved after the timer'; })();
const map = new Map([['a', 1]]); const set = new Set([1, 2, 3]); const weak = new WeakMap(); const key = {}; weak.set(key, 'weak value');
const floats = new Float64Array([1.5, 2.5]); const bytes = new Uint8Array([7, 8, 9]);
const big = 2n ** 100n;
const re = /a/g; re.exec('aaa');
const proxy = new Proxy({}, { get: (_t, k) => 'proxied ' + String(k) });
const heap = []; for (let i = 0; i < 120000; i++) heap.push({ i, s: 'o' + i });
let ticks = 0; const interval = setInterval(() => { ticks++; }, 50);
const t0 = performance.now(); const wall0 = Date.now();
fs.mkdirSync('/data'); fs.writeFileSync('/data/state.txt', 'persisted');
setTimeout(() => {
  clearInterval(interval);
  console.log('REPORT ' + JSON.stringify({
    counter: counter(), balance: account.deposit(5), gen: gen.next().value, awaited,
    map: map.get('a'), set: set.size, weak: weak.get(key), floats: Array.from(floats), bytes: Array.from(bytes),
    big: big.toString(), lastIndex: re.lastIndex, next: re.exec('aaa').index, proxy: proxy.hello,
    heap: heap.length, last: heap[heap.length - 1].s, ticks, elapsed: performance.now() - t0,
    wallForward: Date.now() >= wall0, file: fs.readFileSync('/data/state.txt', 'utf8'),
  }));
}, 1000);
console.log('ready');
`;

test('a guest resumed in another process continues exactly where it was', async (t) => {
  const dir = tempDir(t);
  const file = writeGuest(dir, 'survivor.js', SURVIVOR);
  const image = join(dir, 'survivor.img');

  const first = await runRoam(['guest', 'run', file, '--checkpoint-after', '300ms', '--out', image]);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stdout, 'ready\n', 'only the output before the checkpoint');

  const second = await runRoam(['guest', 'resume', image]);
  assert.equal(second.code, 0, second.stderr);
  assert.doesNotMatch(second.stdout, /ready/, 'no line repeated');
  const m = /^REPORT (.*)$/m.exec(second.stdout);
  assert.ok(m?.[1], `no report in ${second.stdout}`);
  const r = JSON.parse(m[1]) as Record<string, unknown>;
  assert.equal(r.counter, 3);
  assert.equal(r.balance, 15);
  assert.equal(r.gen, 2);
  assert.equal(r.awaited, 'resolved after the timer');
  assert.equal(r.map, 1);
  assert.equal(r.set, 3);
  assert.equal(r.weak, 'weak value');
  assert.deepEqual(r.floats, [1.5, 2.5]);
  assert.deepEqual(r.bytes, [7, 8, 9]);
  assert.equal(r.big, (2n ** 100n).toString());
  assert.equal(r.lastIndex, 1);
  assert.equal(r.next, 1);
  assert.equal(r.proxy, 'proxied hello');
  assert.equal(r.heap, 120000);
  assert.equal(r.last, 'o119999');
  assert.equal(r.file, 'persisted');
  assert.equal(r.wallForward, true);
  // The 1000 ms timer fired after its remaining time on the guest's clock, which excludes the
  // time spent in the image: never early.
  const elapsed = r.elapsed as number;
  assert.ok(elapsed >= 1000, `fired early: ${elapsed} ms`);
  // The 50 ms interval kept counting across the move, and never faster than its cadence.
  const ticks = r.ticks as number;
  assert.ok(ticks > 0 && ticks <= Math.floor(elapsed / 50), `ticks ${ticks} in ${elapsed} ms`);
});

test('an image can be checkpointed again after a resume (a chain of processes)', async (t) => {
  const dir = tempDir(t);
  const file = writeGuest(
    dir,
    'chain.js',
    `let n = 0; setInterval(() => { n++; if (n % 5 === 0) console.log('n=' + n); if (n === 40) process.exit(0); }, 20);`,
  );
  let image = join(dir, 'chain-0.img');
  const outputs: string[] = [];
  const first = await runRoam(['guest', 'run', file, '--checkpoint-after', '150ms', '--out', image]);
  assert.equal(first.code, 0, first.stderr);
  outputs.push(first.stdout);
  for (let i = 1; i <= 3; i++) {
    const next = join(dir, `chain-${i}.img`);
    const r = await runRoam(['guest', 'resume', image, '--checkpoint-after', '150ms', '--out', next]);
    assert.equal(r.code, 0, r.stderr);
    outputs.push(r.stdout);
    image = next;
  }
  const last = await runRoam(['guest', 'resume', image]);
  assert.equal(last.code, 0, last.stderr);
  outputs.push(last.stdout);
  const lines = outputs.join('').trim().split('\n');
  assert.deepEqual(lines, ['n=5', 'n=10', 'n=15', 'n=20', 'n=25', 'n=30', 'n=35', 'n=40']);
});

test('a listening server is bound again after a resume; open connections end with an error', async (t) => {
  const dir = tempDir(t);
  const file = writeGuest(
    dir,
    'echo.js',
    `const net = require('node:net');
let served = 0;
const server = net.createServer((socket) => {
  served++;
  socket.on('data', (d) => socket.write('echo ' + served + ': ' + d));
  socket.on('error', (err) => console.log('socket error ' + err.code));
});
server.listen(0, '127.0.0.1', () => console.log('listening on ' + server.address().port));`,
  );
  const image = join(dir, 'echo.img');
  const first = startRoam(['guest', 'run', file, '--checkpoint-after', '1500ms', '--out', image]);
  t.after(() => first.child.kill('SIGKILL'));
  const port = Number((await first.waitFor(/listening on (\d+)/))[1]);

  const held = await connect(port);
  assert.equal(await exchange(held, 'one'), 'echo 1: one');
  const done = await first.exited;
  assert.equal(done.code, 0, done.stderr);

  const second = startRoam(['guest', 'resume', image]);
  t.after(() => second.child.kill('SIGKILL'));
  // The connection open at the checkpoint cannot survive on the loopback network: the guest is told.
  await second.waitFor(/socket error ECONNRESET/);
  const fresh = await connectWithRetry(port);
  assert.equal(await exchange(fresh, 'two'), 'echo 2: two', 'the counter went on from the image');
  fresh.destroy();
  held.destroy();
});

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

/** The resumed guest binds its port while the test connects: retry a refused connection, bounded. */
async function connectWithRetry(port: number): Promise<net.Socket> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await connect(port);
    } catch (err) {
      if (attempt >= 100 || (err as { code?: string }).code !== 'ECONNREFUSED') throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

function exchange(socket: net.Socket, text: string): Promise<string> {
  return new Promise((resolve) => {
    socket.once('data', (d) => resolve(d.toString()));
    socket.write(text);
  });
}

test('an image restores whatever path Roam runs from (regression: layout depended on argv[1])', async (t) => {
  const dir = tempDir(t);
  // A long install path: Emscripten used to copy process.argv[1] into guest memory, shifting its layout.
  const install = join(dir, 'a-rather-long-installation-directory-name-'.repeat(4));
  mkdirSync(install);
  const launcher = join(install, 'roam');
  symlinkSync(ROAM, launcher);
  const file = writeGuest(
    dir,
    'tick.js',
    `let n = 0; setInterval(() => { n++; if (n === 10) { console.log('n=' + n); process.exit(0); } }, 20);`,
  );
  const image = join(dir, 'tick.img');
  const made = await runNode([launcher, 'guest', 'run', file, '--checkpoint-after', '100ms', '--out', image]);
  assert.equal(made.code, 0, made.stderr);
  const resumed = await runRoam(['guest', 'resume', image]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.equal(resumed.stdout, 'n=10\n');
});

function runNode(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') reject(new Error(err.message, { cause: err }));
      else resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}
