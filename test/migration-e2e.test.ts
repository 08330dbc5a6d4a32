/**
 * Live migration end to end on loopback, with real processes: a proxy, two hosts, the records
 * guest, and a remote client that checks every byte while the guest moves back and forth.
 * (The soak among three hosts in network namespaces is test/migration-netns.test.ts.)
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { runRoam, tempDir } from './helpers/roam.js';
import { deploy, eventually, startHost, startProxy } from './helpers/cluster.js';
import { startRecordsPair } from './helpers/records-pair.js';
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
  const { proxy, a, b, client } = await startRecordsPair(t);
  let where = 'host-a';
  for (let i = 0; i < 6; i++) {
    const to = where === 'host-a' ? 'host-b' : 'host-a';
    const r = await proxy.api<MigrationRow>('POST', '/api/guests/records/migrate', { to, precopy: i % 2 === 0 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.outcome, 'moved', `${JSON.stringify(r.body)}\nhost-a:\n${a.output()}\nhost-b:\n${b.output()}`);
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
  // Each host moved the guest to the other three times: after the first, on the connection kept.
  for (const host of [a, b]) {
    const kept = host.output().match(/took records in \(move [\w-]+, on a kept peer connection\)/g) ?? [];
    assert.equal(kept.length, 2, host.output());
  }
});

test('a connection made while the guest is frozen, before the proxy knows it, reaches the guest on its new host with every byte', async (t) => {
  // The source's word that it froze the guest is lost, and the target waits 1.5 s before it commits:
  // the proxy opens the new connection at the source, sending its first records right behind the
  // OPEN; the source refuses (its guest is leaving), and the proxy opens it again at the target
  // once the guest runs there.
  const { proxy, client, port } = await startRecordsPair(t, {
    a: { ROAM_FAILPOINTS: 'migrate.source.freezeProgress=drop' },
    b: { ROAM_FAILPOINTS: 'migrate.target.beforeCommit=delay(1500)' },
  });
  // One client at a time: each checks the guest's count of all the records it answered.
  const first = await client.finish();
  assert.deepEqual(first.failures, []);
  const moving = proxy.api<MigrationRow>('POST', '/api/guests/records/migrate', { to: 'host-b', precopy: false });
  await eventually(async () => {
    const events = (await proxy.api<Array<{ kind: string; message: string }>>('GET', '/api/events?limit=1000')).body;
    return events.some((e) => e.kind === 'migration.progress' && /sent the rest/.test(e.message)) ? true : undefined;
  }, 'the source to have sent the rest (the guest frozen until the target commits)');
  const late = new RecordsClient(port);
  await late.connected;
  const r = await moving;
  assert.equal(r.body.outcome, 'moved', JSON.stringify(r.body));
  await late.waitForAnswers(200);
  const result = await late.finish();
  assert.deepEqual(result.failures, []);
  assert.equal(result.closed, false);
  assert.ok(result.answered >= 200, `answered ${result.answered}`);
  const guests = await proxy.api<Array<{ name: string; hostName: string }>>('GET', '/api/guests');
  assert.equal(guests.body[0]?.hostName, 'host-b');
});

test('`roam migrate` shows the progress and the pause; `roam host drain` and SIGTERM move guests away with their connections', async (t) => {
  const { proxy, a, client } = await startRecordsPair(t);
  const api = ['--api', `http://127.0.0.1:${proxy.apiPort}`, '--data-dir', proxy.dataDir];

  // The command line: progress lines, then the summary with the pause.
  const moved = await runRoam(['migrate', 'records', '--to', 'host-b', ...api]);
  assert.equal(moved.code, 0, moved.stderr);
  assert.match(moved.stdout, /pre-copy round 1: \d+ pages/);
  assert.match(moved.stdout, /frozen/);
  assert.match(
    moved.stdout,
    /moved records from host-a to host-b\n {2}pause \d+\.\d ms \(freeze to resume\), total \d+ ms, [\d.]+ MB sent/,
  );
  await client.waitForAnswers(100);

  // A move that cannot happen says why, with its own exit code.
  const nowhere = await runRoam(['migrate', 'records', '--to', 'host-b', ...api]);
  assert.equal(nowhere.code, 73, nowhere.stdout + nowhere.stderr);
  assert.match(nowhere.stderr, /already runs on host-b/);

  // Drain host-b from the command line: the guest goes back to host-a.
  const drained = await runRoam(['host', 'drain', 'host-b', ...api]);
  assert.equal(drained.code, 0, drained.stderr);
  assert.match(drained.stdout, /drained host-b: 1 guest\(s\) moved, 0 not/);
  await client.waitForAnswers(100);

  // SIGTERM on host-a: it asks the proxy to move its guests away first, then leaves. The SIGINT
  // right after is the same stop delivered twice (as `timeout` does): it must not cut the drain short.
  a.child.kill('SIGTERM');
  a.child.kill('SIGINT');
  await a.exited;
  const guest = await eventually(async () => {
    const g = (await proxy.api<Array<{ hostName: string; state: string }>>('GET', '/api/guests')).body[0];
    return g?.hostName === 'host-b' ? g : undefined;
  }, 'the guest on host-b');
  assert.equal(guest.state, 'running');
  await client.waitForAnswers(100);
  const result = await client.finish();
  assert.deepEqual(result.failures, []);
  assert.equal(result.closed, false);

  const kinds = (await proxy.api<Array<{ kind: string }>>('GET', '/api/events?limit=1000')).body.map((e) => e.kind);
  const tail = kinds.slice(kinds.lastIndexOf('host.draining'));
  assert.deepEqual(
    tail.filter((k) => k.startsWith('host.') || k === 'migration.completed'),
    ['host.draining', 'migration.completed', 'host.drained', 'host.left'],
  );
});

/** Sends `seq N got M` to a remote every 20 ms (M: answers it has had), at most 1500 times. */
const UDP_PINGER = `
const s = require('dgram').createSocket('udp4');
let seq = 0;
let got = 0;
s.on('message', () => got++);
const timer = setInterval(() => {
  s.send('seq ' + seq++ + ' got ' + got, Number(process.env.REMOTE_PORT), '127.0.0.1');
  if (seq >= 1500) clearInterval(timer);
}, 20);
`;

test("a guest's outbound UDP keeps its public address across a move: the remote sees one port, answers keep coming", async (t) => {
  const { proxy } = await startRecordsPair(t);
  const remote = dgram.createSocket('udp4');
  t.after(() => remote.close());
  const seen: Array<{ port: number; seq: number; got: number }> = [];
  remote.on('message', (msg, rinfo) => {
    const m = /^seq (\d+) got (\d+)$/.exec(msg.toString());
    if (!m) return;
    seen.push({ port: rinfo.port, seq: Number(m[1]), got: Number(m[2]) });
    remote.send('ack', rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => remote.bind(0, '127.0.0.1', resolve));
  const file = join(tempDir(t), 'pinger.js');
  writeFileSync(file, UDP_PINGER);
  const made = await deploy(proxy, file, {
    name: 'pinger',
    on: 'host-a',
    env: { REMOTE_PORT: String(remote.address().port) },
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const answered = (more: number, after: number) =>
    eventually(
      () => Promise.resolve(seen.some((d) => d.got >= after + more) ? true : undefined),
      `${more} more answers`,
    );
  await answered(10, 0);

  const r = await proxy.api<{ outcome: string | null }>('POST', '/api/guests/pinger/migrate', { to: 'host-b' });
  assert.equal(r.body.outcome, 'moved', JSON.stringify(r.body));
  const before = Math.max(...seen.map((d) => d.got));
  await answered(10, before);

  const ports = new Set(seen.map((d) => d.port));
  assert.equal(ports.size, 1, `datagrams came from ports ${[...ports].join(', ')}`);
  const seqs = seen.map((d) => d.seq);
  assert.ok(
    seqs.every((n, i) => i === 0 || n > (seqs[i - 1] ?? -1)),
    'the guest kept counting where it was',
  );
});

const CONNECTOR = `
const net = require('node:net');
console.log('connecting');
const socket = net.connect(Number(process.env.REMOTE_PORT), '127.0.0.1', () => {
  console.log('connected');
  socket.write('hello\\n');
});
socket.setEncoding('utf8');
socket.on('data', (text) => console.log('got ' + text.trim()));
socket.on('error', (err) => console.log('error ' + err.code));
socket.on('close', () => console.log('closed'));
`;

test('an outbound connection still opening when the guest freezes moves as an open connection', async (t) => {
  const remote = net.createServer();
  t.after(() => remote.close());
  const lines: string[] = [];
  let accepted: net.Socket | undefined;
  remote.once('connection', (socket) => {
    accepted = socket;
    socket.setEncoding('utf8').on('data', (d: string) => lines.push(...d.trim().split('\n')));
  });
  await new Promise<void>((resolve) => remote.listen(0, '127.0.0.1', resolve));
  const proxy = await startProxy(t);
  // host-a's connects wait 1.5 s before they open: the move's freeze comes while this one is opening.
  const a = startHost(t, proxy, 'host-a', { env: { ROAM_FAILPOINTS: 'tunnel.connect.beforeOpen=delay(1500)' } });
  const b = startHost(t, proxy, 'host-b');
  await Promise.all([a.waitFor(/joined the proxy/), b.waitFor(/joined the proxy/)]);
  const file = join(tempDir(t), 'connector.js');
  writeFileSync(file, CONNECTOR);
  const port = (remote.address() as net.AddressInfo).port;
  const made = await deploy(proxy, file, { name: 'connector', on: 'host-a', env: { REMOTE_PORT: String(port) } });
  assert.equal(made.status, 201, JSON.stringify(made.body));

  const r = await proxy.api<MigrationRow>('POST', '/api/guests/connector/migrate', { to: 'host-b' });
  assert.equal(r.body.outcome, 'moved', `${JSON.stringify(r.body)}\nhost-a:\n${a.output()}`);
  await a.waitFor(/waited \d+ ms after the freeze for 1 outbound connection\(s\) of connector still opening/);

  const socket = await eventually(
    () => Promise.resolve(lines.includes('hello') ? accepted : undefined),
    'the guest connects and says hello',
  );
  socket.write('welcome\n');
  const logs = () => proxy.api<Array<{ text: string }>>('GET', '/api/guests/connector/logs');
  const text = await eventually(async () => {
    const all = (await logs()).body.map((l) => l.text).join('');
    return all.includes('got welcome') ? all : undefined;
  }, 'the answer reaches the guest on host-b');
  assert.deepEqual(
    text.trim().split('\n'),
    ['connecting', 'connected', 'got welcome'],
    'one connect event, no error, nothing twice',
  );
  const guests = await proxy.api<Array<{ name: string; hostName: string }>>('GET', '/api/guests');
  assert.equal(guests.body.find((g) => g.name === 'connector')?.hostName, 'host-b');
});
