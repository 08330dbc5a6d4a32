/** The `roam` command line: help, usage errors, and what `guest inspect` reports. */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROOT, runRoam, tempDir, writeGuest } from './helpers/roam.js';

test('--help explains the commands and the exit codes', async () => {
  const r = await runRoam(['--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /Usage: roam/);
  assert.match(r.stdout, /guest/);
  assert.match(r.stdout, /Exit codes/);
  const run = await runRoam(['guest', 'run', '--help']);
  assert.equal(run.code, 0);
  assert.match(run.stdout, /--checkpoint-after <duration>/);
});

test('usage errors exit 64 with a message; a missing program exits 66', async () => {
  const cases: Array<[string[], number, RegExp]> = [
    [['guest', 'bogus'], 64, /unknown command 'bogus'/],
    [['guest', 'run'], 64, /missing required argument 'file'/],
    [['guest', 'run', 'examples/counter.ts', '--checkpoint-after', '1s'], 64, /--checkpoint-after needs --out/],
    [
      ['guest', 'run', 'examples/counter.ts', '--checkpoint-after', 'soon', '--out', 'x'],
      64,
      /invalid --checkpoint-after "soon": use a number with ms, s, m, h or d/,
    ],
    [['guest', 'run', 'examples/counter.ts', '--memory-limit', 'lots'], 64, /invalid size "lots"/],
    [['guest', 'run', 'does-not-exist.js'], 66, /cannot read does-not-exist.js/],
  ];
  for (const [args, code, message] of cases) {
    const r = await runRoam(args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
});

test('guest inspect shows what an image holds, as text and JSON', async (t) => {
  const dir = tempDir(t);
  const file = writeGuest(
    dir,
    'holder.js',
    `require('fs').writeFileSync('/note.txt', 'twelve bytes');
const s = require('net').createServer().listen(0, '127.0.0.1');
setTimeout(() => {}, 60000);
console.log('holding');`,
  );
  const image = join(dir, 'holder.img');
  const made = await runRoam(['guest', 'run', file, '--checkpoint-after', '300ms', '--out', image]);
  assert.equal(made.code, 0, made.stderr);
  const text = await runRoam(['guest', 'inspect', image], { cwd: ROOT });
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /guest +holder/);
  assert.match(text.stdout, /format +v3 \(checksum XXH3-64\), written by roam/);
  assert.match(text.stdout, /timers +1: #\d+ in \d+ ms/);
  // Every page the guest changed is stored, here all as differences from the runtime's.
  const stored = /(\d+) of \d+ pages stored, (\d+) of them as differences/.exec(text.stdout);
  assert.ok(stored, text.stdout);
  assert.ok(Number(stored[1]) > 0 && Number(stored[2]) > 0 && Number(stored[2]) <= Number(stored[1]), text.stdout);
  const json = await runRoam(['guest', 'inspect', image, '--json']);
  const info = JSON.parse(json.stdout) as {
    meta: { name: string; kind: string };
    timers: unknown[];
    servers: Array<{ address: { port: number } }>;
    files: { files: number; bytes: number };
    logTail: string[];
  };
  assert.equal(info.meta.name, 'holder');
  assert.equal(info.meta.kind, 'js');
  assert.equal(info.timers.length, 1);
  assert.equal(info.servers.length, 1);
  assert.ok((info.servers[0]?.address.port ?? 0) > 0);
  assert.deepEqual(info.files, { files: 1, dirs: 2, bytes: 12 });
  assert.deepEqual(info.logTail, ['holding\n']);
});
