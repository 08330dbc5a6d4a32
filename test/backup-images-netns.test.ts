/**
 * Backup images end to end (issue 5, "the backup plan"), in network namespaces: the proxy keeps an
 * image of each guest; when the guest's host is cut off without a drain, the guest resumes from its
 * newest image on the other host (its state as of the image, not a fresh start), and when the lost
 * host comes back with its old copy, that copy is stopped: one guest, never two.
 * Needs root and iproute2: skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { netnsAvailable } from './helpers/netns.js';
import { startNetnsCluster, until, type NetnsCluster } from './helpers/netns-cluster.js';

const net = netnsAvailable();
const skip = net.ok ? false : `needs network namespaces: ${net.reason}`;

interface GuestRow {
  name: string;
  hostName: string | null;
  state: string;
  image: { takenAt: number; bytes: number } | null;
}
interface EventRow {
  kind: string;
  message: string;
}

/** Sends `count` records to examples/records.js over TCP from the client namespace; its last answer's total. */
async function sendRecords(cluster: NetnsCluster, count: number): Promise<number> {
  const script = `
    const s = require('net').connect(7000, process.argv[1]);
    let got = '', n = 0;
    s.setEncoding('utf8');
    s.on('connect', () => { for (let i = 1; i <= ${count}; i++) s.write(i + ' data' + i + '\\n'); });
    s.on('data', (d) => {
      got += d;
      const lines = got.split('\\n').filter(Boolean);
      if (lines.length === ${count}) { console.log(lines[lines.length - 1].split(' ')[2]); s.end(); }
    });`;
  const r = await cluster.net.exec('client', process.execPath, ['-e', script, cluster.proxyAddress], {
    timeoutMs: 15_000,
  });
  assert.equal(r.code, 0, r.stderr);
  return Number(r.stdout.trim());
}

/** The guest's own count of records, over its HTTP port. */
async function recordsSeen(cluster: NetnsCluster): Promise<number> {
  const script = `require('http').get('http://' + process.argv[1] + ':8080/', (res) => {
      let body = ''; res.on('data', (d) => (body += d)); res.on('end', () => console.log(JSON.parse(body).records));
    }).on('error', (e) => { console.error(e.message); process.exit(1); });`;
  const r = await cluster.net.exec('client', process.execPath, ['-e', script, cluster.proxyAddress], {
    timeoutMs: 15_000,
  });
  assert.equal(r.code, 0, r.stderr);
  return Number(r.stdout.trim());
}

async function guest(cluster: NetnsCluster): Promise<GuestRow | undefined> {
  const guests = await cluster.roamJson<GuestRow[]>('client', ['ps']);
  return guests.find((g) => g.name === 'records');
}

describe('backup images', { skip, concurrency: false }, () => {
  it('resume a guest whose host was cut off on another host, from its newest image, and stop the old copy when the host returns', async (t) => {
    // Images every second; no moves of its own, so the guest stays where it is put.
    const dir = mkdtempSync(join(tmpdir(), 'roam-backup-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const policy = join(dir, 'policy.yaml');
    writeFileSync(policy, 'backupEverySeconds: 1\nenabled: false\n');
    const cluster = await startNetnsCluster({
      hosts: ['host-a', 'host-b'],
      others: ['client'],
      proxyArgs: ['--policy', policy],
    });
    t.after(() => cluster.close());
    await cluster.roamJson('client', [
      'run',
      'examples/records.js',
      '--name',
      'records',
      '--on',
      'host-a',
      '--publish',
      '7000',
      '--publish',
      '8080',
    ]);
    assert.equal(await sendRecords(cluster, 40), 40);
    const after = Date.now();
    // An image taken after the records arrived.
    const imaged = await until(async () => {
      const g = await guest(cluster);
      return g?.image && g.image.takenAt > after ? g : undefined;
    }, 'a backup image taken after the records');
    assert.equal(imaged.hostName, 'host-a');
    assert.ok(imaged.image && imaged.image.bytes > 0);

    // Cut host-a off: no drain, no goodbye. It is evicted after 5 silent report intervals.
    await cluster.net.setLink('host-a', 'down');
    const restored = await until(
      async () => {
        const g = await guest(cluster);
        return g?.hostName === 'host-b' && g.state === 'running' ? g : undefined;
      },
      'the guest running on host-b',
      30_000,
    );
    assert.equal(restored.hostName, 'host-b');
    const events = await cluster.roamJson<EventRow[]>('client', ['events', '--limit', '200']);
    const event = events.find((e) => e.kind === 'guest.restored');
    assert.ok(event, events.map((e) => `${e.kind}: ${e.message}`).join('\n'));
    assert.match(event.message, /^records resumed on host-b from its backup image of \d+ s ago \(host-a was evicted\)/);
    // Its state came from the image: the 40 records it had taken (a fresh start would say 0).
    assert.equal(await recordsSeen(cluster), 40);
    assert.equal(await sendRecords(cluster, 2), 42);

    // host-a comes back, still running its old copy: the proxy stops that copy, and the guest on
    // host-b is not disturbed by its exit.
    await cluster.net.setLink('host-a', 'up');
    const hostA = cluster.hosts.get('host-a');
    assert.ok(hostA);
    await hostA.waitFor(/guest records exited with code 137 \(killed\)/, 30_000);
    const still = await guest(cluster);
    assert.equal(still?.hostName, 'host-b');
    assert.equal(still?.state, 'running');
    assert.equal(await recordsSeen(cluster), 42);
  });
});
