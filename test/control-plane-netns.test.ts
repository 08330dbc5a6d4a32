/**
 * The control plane end to end (issue 5, section 4), in network namespaces, each host confined to
 * a CPU cgroup of its own: a host saturated by other work makes its guest move by itself with the
 * default policy; a host with a history of leaving early is passed over for a deadline guest; and
 * when the chosen target dies during the move, the guest goes to the backup.
 * Needs root, iproute2 and cgroup v1 cpu/cpuacct: skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cgroupsAvailable, joinAndExec } from './helpers/cgroups.js';
import { netnsAvailable } from './helpers/netns.js';
import { startNetnsCluster, until, type NetnsCluster } from './helpers/netns-cluster.js';
import type { RecordsResult } from './helpers/records.js';
import { ROOT } from './helpers/roam.js';

const net = netnsAvailable();
const cg = cgroupsAvailable();
const skip = !net.ok ? `needs network namespaces: ${net.reason}` : !cg.ok ? `needs CPU cgroups: ${cg.reason}` : false;

interface GuestRow {
  name: string;
  hostName: string | null;
  state: string;
}
interface EventRow {
  kind: string;
  message: string;
}

/** Waits for the guest to be on `host`; on timeout, the events and hosts say why not. */
async function waitForGuestOn(cluster: NetnsCluster, host: string, timeoutMs: number): Promise<void> {
  try {
    await until(
      async () => ((await guestHost(cluster, 'records')) === host ? true : undefined),
      `the guest on ${host}`,
      timeoutMs,
    );
  } catch (err) {
    const events = await cluster.roamJson<EventRow[]>('client', ['events', '--limit', '50']).catch(() => []);
    const policy = await cluster.roam('client', ['policy', 'show']).catch(() => undefined);
    throw new Error(
      `${(err as Error).message}\n${events.map((e) => `${e.kind}: ${e.message}`).join('\n')}\n${policy?.stdout ?? ''}`,
      { cause: err },
    );
  }
}

async function guestHost(cluster: NetnsCluster, name: string): Promise<string | null> {
  const guests = await cluster.roamJson<GuestRow[]>('client', ['ps']);
  return guests.find((g) => g.name === name)?.hostName ?? null;
}

/** Burns CPU inside a host's cgroup (the host saturated by other work). */
function burn(cluster: NetnsCluster, host: string): void {
  const group = cluster.cgroup(host);
  assert.ok(group, `${host} has a cgroup`);
  const [command, args] = joinAndExec(group, process.execPath, ['-e', 'for (;;) {}']);
  cluster.net.spawn(host, command, args);
}

function startClient(cluster: NetnsCluster) {
  const client = cluster.net.spawn(
    'client',
    process.execPath,
    ['--import', 'tsx', 'test/helpers/soak-client.ts', cluster.proxyAddress, '7000', '8080', '9000'],
    { cwd: ROOT, stdin: 'pipe' },
  );
  return {
    ready: () => client.waitFor(/^tcp 50$/m, 30_000),
    async finish(): Promise<RecordsResult> {
      client.child.stdin?.write('stop\n');
      const line = await client.waitFor(/^RESULT (.*)$/m, 60_000);
      return (JSON.parse(line[1] ?? '{}') as { tcp: RecordsResult }).tcp;
    },
  };
}

async function runRecords(cluster: NetnsCluster, extra: string[]): Promise<void> {
  await cluster.roamJson('client', [
    'run',
    'examples/records.js',
    '--name',
    'records',
    '--publish',
    '7000',
    '--publish',
    '8080',
    '--publish',
    '9000/udp',
    ...extra,
  ]);
}

describe('the control plane', { skip, concurrency: false }, () => {
  it('moves a guest off a host saturated by other work, with the default policy, keeping its connection', async (t) => {
    const cluster = await startNetnsCluster({
      hosts: ['host-a', 'host-b'],
      others: ['client'],
      cpuQuota: { 'host-a': 0.5, 'host-b': 0.5 },
    });
    t.after(() => cluster.close());
    await runRecords(cluster, ['--on', 'host-a']);
    const client = startClient(cluster);
    await client.ready();

    burn(cluster, 'host-a');
    await waitForGuestOn(cluster, 'host-b', 60_000);
    const events = await cluster.roamJson<EventRow[]>('client', ['events', '--limit', '1000']);
    const move = events.find((e) => e.kind === 'decision.move');
    assert.ok(move, JSON.stringify(events.map((e) => e.kind)));
    assert.match(
      move.message,
      /move records from host-a to host-b: utility of host-a 0\.\d\d < 0\.4 for \d+ s; host-b [\d.]+× as fast; P\(host-b stays 10 min\) = [\d.]+; backup none/,
    );
    assert.ok(events.some((e) => e.kind === 'migration.completed'));
    const tcp = await client.finish();
    assert.deepEqual(tcp.failures, []);
    assert.equal(tcp.closed, false);
  });

  it('passes over a host with a history of leaving early for a deadline guest, in favour of a slower, steadier one', async (t) => {
    const cluster = await startNetnsCluster({
      hosts: ['flaky', 'steady'],
      others: ['client'],
      // flaky may use every core; steady half of one: flaky is the faster host.
      cpuQuota: { flaky: 0, steady: 0.5 },
    });
    t.after(() => cluster.close());
    for (let i = 0; i < 4; i++) await cluster.restartHost('flaky');
    const status = await until(async () => {
      const s = await cluster.roamJson<{ hosts: Array<{ name: string; pStay: number }> }>('client', ['policy', 'show']);
      return s.hosts.length === 2 ? s : undefined;
    }, 'the policy status');
    const p = Object.fromEntries(status.hosts.map((h) => [h.name, h.pStay]));
    assert.ok((p['flaky'] ?? 1) < (p['steady'] ?? 0), JSON.stringify(status.hosts));

    await runRecords(cluster, ['--deadline', '30m', '--expect', '2m']);
    assert.equal(await guestHost(cluster, 'records'), 'steady');
  });

  it('sends the guest to the backup when the chosen target dies during the move', async (t) => {
    const cluster = await startNetnsCluster({
      hosts: ['host-a', 'host-b', 'host-c'],
      others: ['client'],
      // host-b is the fastest candidate (1.5 cores) and dies when the guest's memory arrives.
      cpuQuota: { 'host-a': 0.5, 'host-b': 1.5, 'host-c': 0.5 },
      hostEnv: { 'host-b': { ROAM_FAILPOINTS: 'migrate.target.precopyPages=exit' } },
    });
    t.after(() => cluster.close());
    await runRecords(cluster, ['--on', 'host-a']);
    const client = startClient(cluster);
    await client.ready();
    burn(cluster, 'host-a');
    await waitForGuestOn(cluster, 'host-c', 90_000);
    const events = await cluster.roamJson<EventRow[]>('client', ['events', '--limit', '1000']);
    const move = events.find((e) => e.kind === 'decision.move');
    assert.match(move?.message ?? '', /to host-b: .*backup host-c/, events.map((e) => e.message).join('\n'));
    assert.ok(
      events.some((e) => e.kind === 'decision.backup'),
      JSON.stringify(events.map((e) => e.kind)),
    );
    const tcp = await client.finish();
    assert.deepEqual(tcp.failures, []);
    assert.equal(tcp.closed, false);
  });
});
