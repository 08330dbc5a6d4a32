/**
 * How guests fail: Node's behaviour for their own errors, clear Roam errors for limits, and
 * damaged images refused with a reason, never a crash.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { runRoam, tempDir, writeGuest } from './helpers/roam.js';

test('process.exit(n) ends the guest with n and runs its exit handlers', async (t) => {
  const file = writeGuest(
    tempDir(t),
    'exit.js',
    `process.on('exit', (code) => console.log('exiting with', code));
setTimeout(() => { process.exit(3); console.log('never printed'); }, 10);
setTimeout(() => console.log('never printed either'), 5000);`,
  );
  const r = await runRoam(['guest', 'run', file]);
  assert.equal(r.code, 3);
  assert.equal(r.stdout, 'exiting with 3\n');
});

test('an uncaught exception prints its stack and exits 1, as in Node', async (t) => {
  const file = writeGuest(
    tempDir(t),
    'throws.js',
    `function deep() { throw new Error('boom in deep'); }\nsetTimeout(deep, 5);`,
  );
  const r = await runRoam(['guest', 'run', file]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Uncaught Error: boom in deep/);
  assert.match(r.stderr, /at deep/);
});

test('process.on("uncaughtException") keeps the guest alive', async (t) => {
  const file = writeGuest(
    tempDir(t),
    'handled.js',
    `process.on('uncaughtException', (err) => console.log('caught', err.message));
setTimeout(() => { throw new Error('first'); }, 5);
setTimeout(() => console.log('still running'), 20);`,
  );
  const r = await runRoam(['guest', 'run', file]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'caught first\nstill running\n');
});

test('an unhandled rejection exits 1 with its stack; a handled one does not', async (t) => {
  const dir = tempDir(t);
  const unhandled = writeGuest(
    dir,
    'unhandled.mjs',
    `async function fail() { throw new Error('rejected here'); }\nfail();\nsetTimeout(() => console.log('not reached'), 100);`,
  );
  const r = await runRoam(['guest', 'run', unhandled]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Error: rejected here/);
  assert.doesNotMatch(r.stdout, /not reached/);

  const handled = writeGuest(
    dir,
    'handled.mjs',
    `const p = Promise.reject(new Error('x'));\np.catch((e) => console.log('handled', e.message));`,
  );
  const h = await runRoam(['guest', 'run', handled]);
  assert.equal(h.code, 0, h.stderr);
  assert.equal(h.stdout, 'handled x\n');
});

test('a guest over its memory limit is stopped with a clear error', async (t) => {
  const file = writeGuest(
    tempDir(t),
    'hog.js',
    `const hoard = []; setInterval(() => { for (let i = 0; i < 20000; i++) hoard.push({ i, pad: 'x'.repeat(64) + i }); }, 1);`,
  );
  const r = await runRoam(['guest', 'run', file, '--memory-limit', '32MiB']);
  assert.equal(r.code, 68, r.stderr);
  assert.match(r.stderr, /exceeded its memory limit of 33554432 bytes/);
});

test('synchronous code that runs past the CPU budget is interrupted', async (t) => {
  const file = writeGuest(tempDir(t), 'spin.js', `console.log('spinning'); setTimeout(() => { for (;;) {} }, 1);`);
  const r = await runRoam(['guest', 'run', file, '--cpu-budget', '300ms']);
  assert.equal(r.code, 69, r.stderr);
  assert.equal(r.stdout, 'spinning\n');
  assert.match(r.stderr, /CPU budget of 300 ms/);
});

test('a Node built-in the runtime lacks is refused at bundle time, naming it', async (t) => {
  const file = writeGuest(tempDir(t), 'child.js', `const cp = require('node:child_process'); cp.execSync('true');`);
  const r = await runRoam(['guest', 'run', file]);
  assert.equal(r.code, 67);
  assert.match(r.stderr, /does not provide the Node built-in module "node:child_process"/);
});

test('damaged images are refused with the reason', async (t) => {
  const dir = tempDir(t);
  const file = writeGuest(dir, 'idle.js', `setInterval(() => {}, 1000);`);
  const image = join(dir, 'good.img');
  const made = await runRoam(['guest', 'run', file, '--checkpoint-after', '100ms', '--out', image]);
  assert.equal(made.code, 0, made.stderr);
  const good = readFileSync(image);

  const cases: Array<[string, Buffer, RegExp]> = [
    ['truncated', good.subarray(0, Math.floor(good.length / 2)), /truncated/],
    ['corrupted', Buffer.from(good).fill(0x55, 4000, 4100), /checksum/],
    [
      'wrong version',
      (() => {
        const b = Buffer.from(good);
        b.writeUInt16LE(99, 8);
        return b;
      })(),
      /unsupported version/,
    ],
    ['not an image', Buffer.from('hello, this is not a roam image at all'), /not a Roam checkpoint image/],
    ['empty', Buffer.alloc(0), /truncated|not a Roam/],
  ];
  for (const [name, bytes, reason] of cases) {
    const path = join(dir, `${name}.img`);
    writeFileSync(path, bytes);
    for (const command of ['resume', 'inspect']) {
      const r = await runRoam(['guest', command, path]);
      assert.equal(r.code, 65, `${name} ${command}: ${r.stderr}`);
      assert.match(r.stderr, reason, `${name} ${command}`);
      assert.doesNotMatch(r.stderr, /at .*\.js:\d+/, `${name} ${command}: no stack trace, a clear error`);
    }
  }
});
