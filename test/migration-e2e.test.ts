/**
 * Live migration end to end on loopback, with real processes: a proxy, two hosts, the records
 * guest, and a remote client that checks every byte while the guest moves back and forth.
 * (The soak among three hosts in network namespaces is test/migration-netns.test.ts.)
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROOT } from './helpers/roam.js';
import { deploy, freePort, startHost, startProxy } from './helpers/cluster.js';
import { RecordsClient } from './helpers/records.js';

interface MigrationRow {
  outcome: string | null;
  from: string;
  to: string;
  pauseMs: number | null;
  bytesSent: number | null;
  precopyRounds: number | null;
  step: string | null;
  error: string | null;
}

test('a guest moves between hosts 6 times while a client talks to it: nothing lost, the connection stays open', async (t) => {
  const proxy = await startProxy(t, ['--report-interval', '200']);
  const a = startHost(t, proxy, 'host-a');
  const b = startHost(t, proxy, 'host-b');
  await Promise.all([a.waitFor(/joined the proxy/), b.waitFor(/joined the proxy/)]);
  const tcp = await freePort();
  const made = await deploy(proxy, join(ROOT, 'examples/records.js'), {
    name: 'records',
    publish: [{ public: tcp, guest: 7000, protocol: 'tcp' }],
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));

  const client = new RecordsClient(tcp);
  await client.connected;
  await client.waitForAnswers(200);
  let where = made.body.hostName;
  for (let i = 0; i < 6; i++) {
    const to = where === 'host-a' ? 'host-b' : 'host-a';
    const r = await proxy.api<MigrationRow>('POST', '/api/guests/records/migrate', { to, precopy: i % 2 === 0 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.outcome, 'moved', JSON.stringify(r.body));
    assert.equal(r.body.to, to);
    assert.ok((r.body.bytesSent ?? 0) > 0);
    where = to;
    await client.waitForAnswers(100);
  }
  const result = await client.finish();
  assert.deepEqual(result.failures, []);
  assert.equal(result.closed, false, 'the connection never closed');
  assert.ok(result.answered >= 800, `answered ${result.answered}`);

  const guests = await proxy.api<Array<{ name: string; hostName: string }>>('GET', '/api/guests');
  assert.equal(guests.body[0]?.hostName, where);
  const events = await proxy.api<Array<{ kind: string }>>('GET', '/api/events?limit=1000');
  assert.equal(events.body.filter((e) => e.kind === 'migration.completed').length, 6);
});
