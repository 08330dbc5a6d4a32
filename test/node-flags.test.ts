/**
 * src/common/node-flags.ts and bin/roam: Roam's daemons start with the same Node flags and malloc
 * settings whether bin/roam starts them (as a program) or `roam demo`, the tests and the benchmarks do.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { DAEMON_MALLOC_TUNABLES, DAEMON_NODE_FLAGS, daemonEnv } from '../src/common/node-flags.js';
import { ROOT, tempDir } from './helpers/roam.js';

/**
 * Runs bin/roam as a program with a stand-in `node` first on the PATH, which prints the
 * GLIBC_TUNABLES it was given and its arguments, one per line.
 */
function startedAs(t: TestContext, env: NodeJS.ProcessEnv): string[] {
  const dir = tempDir(t, 'roam-node-flags-');
  const fake = join(dir, 'node');
  writeFileSync(fake, '#!/bin/sh\nprintf "%s\\n" "$GLIBC_TUNABLES" "$@"\n');
  chmodSync(fake, 0o755);
  const run = spawnSync(join(ROOT, 'bin', 'roam'), ['--version'], {
    env: { ...env, PATH: `${dir}:${process.env['PATH'] ?? ''}` },
    encoding: 'utf8',
  });
  assert.equal(run.status, 0, run.stderr);
  return run.stdout.trimEnd().split('\n');
}

test('bin/roam starts Node with the daemon flags and malloc settings of node-flags.ts', (t) => {
  const { GLIBC_TUNABLES: _unset, ...env } = process.env;
  const [tunables, ...args] = startedAs(t, env);
  assert.equal(tunables, DAEMON_MALLOC_TUNABLES);
  assert.deepEqual(args, [...DAEMON_NODE_FLAGS, join(ROOT, 'bin', 'roam'), '--version']);
});

test("an operator's own GLIBC_TUNABLES come after Roam's, so theirs win, from bin/roam and daemonEnv alike", (t) => {
  const own = 'glibc.malloc.trim_threshold=131072';
  const [tunables] = startedAs(t, { ...process.env, GLIBC_TUNABLES: own });
  assert.equal(tunables, `${DAEMON_MALLOC_TUNABLES}:${own}`);

  const given = { PATH: '/bin', GLIBC_TUNABLES: own };
  assert.deepEqual(daemonEnv(given), { PATH: '/bin', GLIBC_TUNABLES: `${DAEMON_MALLOC_TUNABLES}:${own}` });
  assert.equal(given.GLIBC_TUNABLES, own, 'the environment given is not changed');
  assert.deepEqual(daemonEnv({ PATH: '/bin' }), { PATH: '/bin', GLIBC_TUNABLES: DAEMON_MALLOC_TUNABLES });
});

test('the malloc settings are well-formed glibc tunables', () => {
  for (const setting of DAEMON_MALLOC_TUNABLES.split(':')) {
    assert.match(setting, /^glibc\.malloc\.[a-z_]+=\d+$/);
  }
  // Run for real: a Node given them starts and works (glibc ignores a tunable it does not know,
  // so this guards against a value that breaks start-up, not against a misspelling).
  const run = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(Buffer.alloc(1 << 20).length))'], {
    env: daemonEnv(),
    encoding: 'utf8',
  });
  assert.equal(run.status, 0, run.stderr);
  assert.equal(run.stdout, String(1 << 20));
});
