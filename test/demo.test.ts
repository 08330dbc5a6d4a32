/**
 * `roam demo` end to end: it starts a proxy, three hosts, the guests and its client, moves the
 * guest, reports that the client lost nothing, and removes everything it started. Run with
 * `--moves 2` so that it ends by itself; once on loopback, and once in network namespaces and CPU
 * cgroups when this runs as root.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { netnsAvailable } from './helpers/netns.js';
import { ROAM, ROOT, runRoam, startRoam } from './helpers/roam.js';

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

/** The parent, process group and command line of `pid`, from /proc (Linux); undefined once it is gone. */
function procStat(pid: number): { ppid: number; pgid: number; cmdline: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const [, ppid, pgid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(ppid), pgid: Number(pgid), cmdline: readFileSync(`/proc/${pid}/cmdline`, 'utf8') };
  } catch {
    return undefined;
  }
}

test('roam demo, Ctrl-C in a terminal (SIGINT to its whole process group): its processes hear it from the demo alone', async (t) => {
  if (!existsSync('/proc/self/stat') || !['/usr/bin/setpriv', '/bin/setpriv'].some((p) => existsSync(p))) {
    t.skip('needs Linux and util-linux setpriv (the demo then keeps its processes in its own group)');
    return;
  }
  // Its own process group, as a terminal gives a command it runs.
  const demo = spawn(
    process.execPath,
    [ROAM, 'demo', '--move-every', '1s', '--api-port', '0', '--no-netns', '--no-load'],
    {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    },
  );
  t.after(() => {
    try {
      process.kill(-(demo.pid as number), 'SIGKILL'); // the group: what a failed check left running too
    } catch {
      // already gone
    }
  });
  let stdout = '';
  const moved = new Promise<void>((resolve) =>
    demo.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (/^moved records/m.test(stdout)) resolve();
    }),
  );
  const exited = new Promise<number | null>((resolve) => demo.on('close', (code) => resolve(code)));
  await Promise.race([moved, exited]);
  const pid = demo.pid as number;
  const children = readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map(Number)
    .filter((p) => {
      const stat = procStat(p);
      return stat?.ppid === pid && stat.cmdline.includes('bin/roam');
    });
  assert.equal(children.length, 4, `the proxy and three hosts\n${stdout}`);
  for (const child of children) assert.notEqual(procStat(child)?.pgid, procStat(pid)?.pgid, "not in the demo's group");
  process.kill(-pid, 'SIGINT');
  assert.equal(await exited, 0, stdout);
  assert.match(stdout, /got every answer, in order and intact/);
  assert.match(stdout, /removed the hosts, the proxy/);
});
