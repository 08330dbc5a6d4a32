/**
 * `roam demo` end to end: it starts a proxy, three hosts, the guests and its client, moves the
 * guest, reports that the client lost nothing, and removes everything it started. Run with
 * `--moves 2` so that it ends by itself; once on loopback, and once in network namespaces and CPU
 * cgroups when this runs as root.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { netnsAvailable } from './helpers/netns.js';
import { runRoam, startRoam } from './helpers/roam.js';

for (const mode of ['loopback', 'namespaces'] as const) {
  test(`roam demo (${mode}): the guest moves twice, the client loses nothing, everything is removed`, async (t) => {
    if (mode === 'namespaces') {
      const ns = netnsAvailable();
      if (!ns.ok) {
        t.skip(ns.reason);
        return;
      }
    }
    const cgroupRoots = ['/sys/fs/cgroup/cpu', '/sys/fs/cgroup/cpuacct', '/sys/fs/cgroup'].filter((r) => existsSync(r));
    const demoGroups = (): string[] =>
      cgroupRoots.flatMap((root) =>
        readdirSync(root)
          .filter((n) => n.startsWith('roam-demo-'))
          .map((n) => join(root, n)),
      );
    const groupsBefore = new Set(demoGroups()); // a demo killed earlier may have left some: not this one's
    const r = await runRoam(
      ['demo', '--move-every', '1s', '--moves', '2', '--api-port', '0', ...(mode === 'loopback' ? ['--no-netns'] : [])],
      { timeoutMs: 110_000 },
    );
    const output = `${r.stdout}\n${r.stderr}`;
    assert.equal(r.code, 0, output);
    assert.match(r.stdout, /dashboard {2}http:\/\/[\d.]+:\d+\//);
    assert.equal((r.stdout.match(/^moved records host-\w → host-\w: pause [\d.]+ ms/gm) ?? []).length, 2, output);
    assert.match(
      r.stdout,
      /got every answer, in order and intact, over one TCP connection across 2 move\(s\).*no byte lost/,
    );
    assert.ok(!r.stdout.includes('\u001b['), 'no colour or cursor codes when stdout is not a terminal');
    if (mode === 'namespaces') assert.match(r.stdout, /each in its own network namespace/);
    const dir = /logs +(\/\S+)\/\*\.log/.exec(r.stdout)?.[1];
    assert.ok(dir, output);
    assert.equal(existsSync(dir), false, 'its folder is removed');
    if (mode === 'namespaces') {
      const left = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
      assert.doesNotMatch(left, /roam-demo-/, 'its namespaces are deleted');
      assert.deepEqual(
        demoGroups().filter((g) => !groupsBefore.has(g)),
        [],
        'its cgroups are removed',
      );
    }
  });
}

test('roam demo, interrupted by the same signal twice at once (as `timeout` and a process group deliver it): one orderly stop', async (t) => {
  const demo = startRoam(['demo', '--move-every', '1s', '--api-port', '0', '--no-netns', '--no-load']);
  t.after(() => demo.child.kill('SIGKILL'));
  await demo.waitFor(/^moved records host-\w → host-\w/m, 90_000);
  const dir = /logs +(\/\S+)\/\*\.log/.exec(demo.output())?.[1];
  assert.ok(dir, demo.output());
  demo.child.kill('SIGINT');
  // The second comes once the first was taken (two sent at once may reach it as one).
  await demo.waitFor(/interrupted: stopping everything/, 10_000);
  demo.child.kill('SIGINT');
  const r = await demo.exited;
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /got every answer, in order and intact/);
  assert.match(r.stdout, /removed the hosts, the proxy/);
  assert.equal(existsSync(dir), false, 'its folder is removed');
});
