/**
 * The migration soak (issue 4, section 4), in network namespaces: three hosts each with its own
 * address, a client in a namespace of its own. The client keeps a TCP connection sending numbered,
 * hashed records, an HTTP keep-alive connection and a UDP ping going to the records guest while
 * the guest is moved among the hosts ROAM_SOAK_MIGRATIONS times (default and minimum 20).
 * Needs root and iproute2: skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { netnsAvailable } from './helpers/netns.js';
import { startNetnsCluster, type NetnsCluster } from './helpers/netns-cluster.js';
import type { RecordsResult } from './helpers/records.js';
import { ROOT } from './helpers/roam.js';

const availability = netnsAvailable();
const skip = availability.ok ? false : `needs network namespaces: ${availability.reason}`;
const MIGRATIONS = Math.max(20, Number(process.env.ROAM_SOAK_MIGRATIONS ?? 20));

interface SoakResult {
  tcp: RecordsResult;
  http: {
    ok: number;
    failed: number;
    sockets: number;
    regressions: number;
    clockRegressions: number;
    tickRegressions: number;
    lastTicks: number;
    errors: string[];
  };
  udp: { answered: number; resent: number; unanswered: number };
}
interface MigrationRow {
  outcome: string | null;
  to: string;
  pauseMs: number | null;
  step: string | null;
  error: string | null;
}

describe('migration soak in network namespaces', { skip }, () => {
  let cluster: NetnsCluster;
  before(async () => {
    cluster = await startNetnsCluster({ hosts: ['host-a', 'host-b', 'host-c'], others: ['client'] });
  });
  after(() => cluster?.close());

  it(`moves a guest ${MIGRATIONS} times among three hosts while TCP, HTTP and UDP clients keep talking`, async () => {
    const run = await cluster.roamJson<{ hostName: string }>('client', [
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
    ]);
    const client = cluster.net.spawn(
      'client',
      process.execPath,
      ['--import', 'tsx', 'test/helpers/soak-client.ts', cluster.proxyAddress, '7000', '8080', '9000'],
      { cwd: ROOT, stdin: 'pipe' },
    );
    let mark = 50;
    await client.waitFor(/^tcp 50$/m, 20_000);

    const hosts = ['host-a', 'host-b', 'host-c'];
    let where = run.hostName;
    const pauses: number[] = [];
    for (let i = 0; i < MIGRATIONS; i++) {
      const to = hosts[(hosts.indexOf(where) + 1 + (i % 2)) % 3] as string;
      const moved = await cluster.roamJson<MigrationRow>('client', ['migrate', 'records', '--to', to], 60_000);
      assert.equal(moved.outcome, 'moved', `migration ${i + 1}: ${JSON.stringify(moved)}`);
      assert.equal(moved.to, to);
      if (moved.pauseMs !== null) pauses.push(moved.pauseMs);
      where = to;
      // Traffic flows again on the new host before the next move.
      mark = Number(/tcp (\d+)\n?$/.exec(client.output())?.[1] ?? mark) + 50;
      await client.waitFor(new RegExp(`^tcp ${mark}$`, 'm'), 20_000);
    }

    client.child.stdin?.write('stop\n');
    const line = await client.waitFor(/^RESULT (.*)$/m, 60_000);
    const result = JSON.parse(line[1] ?? '{}') as SoakResult;
    assert.deepEqual(result.tcp.failures, [], 'no TCP record lost, repeated, reordered or damaged');
    assert.equal(result.tcp.closed, false, 'the TCP connection never closed');
    assert.ok(result.tcp.answered > MIGRATIONS * 50, `TCP answers: ${result.tcp.answered}`);
    assert.equal(result.http.failed, 0, `HTTP failures: ${result.http.errors.join('; ')}`);
    assert.equal(result.http.sockets, 1, 'one keep-alive connection for every HTTP request');
    assert.equal(result.http.regressions, 0, "the guest's count never went back");
    assert.equal(result.http.clockRegressions, 0, "the guest's clock never went back on another host");
    assert.equal(result.http.tickRegressions, 0, "the guest's timer-driven counter never went back");
    assert.ok(result.http.lastTicks > 0, 'its interval kept running');
    assert.ok(result.http.ok > MIGRATIONS, `HTTP requests: ${result.http.ok}`);
    assert.equal(result.udp.unanswered, 0, 'every UDP ping was answered (resent if a move dropped it)');
    assert.ok(result.udp.answered > MIGRATIONS, `UDP answers: ${result.udp.answered}`);

    const events = await cluster.roamJson<Array<{ kind: string }>>('client', ['events', '--limit', '10000']);
    assert.equal(events.filter((e) => e.kind === 'migration.completed').length, MIGRATIONS);
    assert.equal(events.filter((e) => e.kind === 'migration.failed').length, 0);
    process.stdout.write(
      `# soak: ${MIGRATIONS} moves, pause p50 ${pauses.sort((x, y) => x - y)[Math.floor(pauses.length / 2)]?.toFixed(1)} ms; ` +
        `${result.tcp.answered} TCP records, ${result.http.ok} HTTP requests, ${result.udp.answered} UDP pings (${result.udp.resent} resent)\n`,
    );
  });
});
