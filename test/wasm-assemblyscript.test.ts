/**
 * The AssemblyScript example (examples/assemblyscript: a prime sieve that reports its progress),
 * built with npm's assemblyscript compiler by its build script, runs as a WebAssembly guest with
 * the right answer, and a checkpoint mid-sieve resumed in another process ends with the output of
 * an uninterrupted run. (Its module's imports once tripped Roam's section scan: the regression.)
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { ROOT, runRoam, tempDir } from './helpers/roam.js';

let built = '';

before(() => {
  built = tempDir({ after: (fn: () => void) => process.on('exit', fn) }, 'roam-as-');
  process.env['ROAM_CACHE_DIR'] = join(built, 'cache');
  const made = spawnSync('bash', [join(ROOT, 'examples/assemblyscript/build.sh'), built], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stdout + made.stderr);
});

/** Primes below 1e8: a known value, not computed by the code under test. */
const N = '100000000';
const COUNT = '5761455';

test('the AssemblyScript sieve checkpointed mid-sieve and resumed gives the uninterrupted output', async (t) => {
  const wasm = join(built, 'sieve.wasm');
  const whole = await runRoam(['guest', 'run', wasm, '--', N], { timeoutMs: 180_000 });
  assert.equal(whole.code, 0, whole.stderr);
  assert.match(whole.stdout, new RegExp(`^primes below ${N}: ${COUNT}, sum \\d+$`, 'm'));
  assert.equal(whole.stdout.match(/^progress \d+\/10: /gm)?.length, 10);

  const image = join(tempDir(t), 'sieve.img');
  const first = await runRoam(['guest', 'run', wasm, '--checkpoint-after', '50ms', '--out', image, '--', N], {
    timeoutMs: 60_000,
  });
  assert.equal(first.code, 0, first.stderr);
  assert.doesNotMatch(first.stdout, /^primes below/m, 'checkpointed before the end');
  const rest = await runRoam(['guest', 'resume', image], { timeoutMs: 180_000 });
  assert.equal(rest.code, 0, rest.stderr);
  assert.equal(first.stdout + rest.stdout, whole.stdout);
});
