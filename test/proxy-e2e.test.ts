/**
 * The data path end to end, with real processes on loopback: `roam proxy`, `roam host`, a guest
 * deployed through the API, and remote clients talking to it at the proxy's published port.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROOT, tempDir, writeGuest } from './helpers/roam.js';
import { deploy, eventually, freePort, startHost, startProxy, stop } from './helpers/cluster.js';

interface HostRow {
  name: string;
  state: string;
  rttMs: number | null;
  metrics: { cpu: { cores: number; usage: number }; memory: { totalBytes: number } } | null;
}
interface EventRow {
  kind: string;
  message: string;
}

function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Sends `payload` and reads until as many bytes came back; returns their hash. */
function echo(port: number, payload: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const hash = createHash('sha256');
    let got = 0;
    socket.on('data', (d: Buffer) => {
      hash.update(d);
      got += d.length;
      if (got >= payload.length) {
        socket.destroy();
        resolve(hash.digest('hex'));
      }
    });
    socket.on('error', reject);
    socket.write(payload);
  });
}

test('a host joins, reports its health, and runs a guest that remote clients reach through the proxy', async (t) => {
  const proxy = await startProxy(t, ['--report-interval', '200']);
  const host = startHost(t, proxy, 'host-a');
  await host.waitFor(/joined the proxy/);

  const hosts = await eventually(async () => {
    const r = await proxy.api<HostRow[]>('GET', '/api/hosts');
    return r.body[0]?.metrics && r.body[0].rttMs !== null ? r.body : undefined;
  }, 'a report and a ping');
  assert.equal(hosts[0]?.name, 'host-a');
  assert.equal(hosts[0]?.state, 'up');
  assert.ok((hosts[0]?.metrics?.cpu.cores ?? 0) >= 1);
  assert.ok((hosts[0]?.metrics?.memory.totalBytes ?? 0) > 0);

  const port = await freePort();
  const made = await deploy(proxy, join(ROOT, 'examples/echo-server.js'), {
    name: 'echo',
    publish: [{ public: port, guest: 7000, protocol: 'tcp' }],
    env: { PORT: '7000' },
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  assert.equal(made.body.hostName, 'host-a');

  const payload = randomBytes(4 * 1024 * 1024);
  assert.equal(await echo(port, payload), sha(payload), 'every byte back, in order');
  const [a, b] = await Promise.all([
    echo(port, payload.subarray(0, 100_000)),
    echo(port, payload.subarray(7, 300_007)),
  ]);
  assert.equal(a, sha(payload.subarray(0, 100_000)));
  assert.equal(b, sha(payload.subarray(7, 300_007)));

  const logs = await proxy.api<Array<{ text: string }>>('GET', '/api/guests/echo/logs');
  assert.match(logs.body.map((r) => r.text).join(''), /echo server listening on 7000/);
  const events = await proxy.api<EventRow[]>('GET', '/api/events');
  assert.deepEqual(
    events.body.map((e) => e.kind).filter((k) => k.startsWith('host.') || k.startsWith('guest.')),
    ['host.joined', 'guest.started'],
  );
});

test('a guest connects out through the proxy; a refused destination is the usual error', async (t) => {
  const proxy = await startProxy(t);
  const host = startHost(t, proxy, 'host-a');
  await host.waitFor(/joined the proxy/);

  // A server on the "outside" that the guest calls; it sees the proxy's address, not the host's.
  const seen: string[] = [];
  const outside = net.createServer((s) => {
    seen.push(s.remoteAddress ?? '');
    s.end('hello from outside');
  });
  await new Promise<void>((resolve) => outside.listen(0, '127.0.0.1', resolve));
  t.after(() => outside.close());
  const outsidePort = (outside.address() as net.AddressInfo).port;
  const closedPort = await freePort();

  const file = writeGuest(
    tempDir(t),
    'caller.js',
    `const net = require('net');
const c = net.connect(Number(process.env.OUT), '127.0.0.1');
let text = '';
c.on('data', (d) => (text += d));
c.on('end', () => {
  console.log('got: ' + text);
  const bad = net.connect(Number(process.env.CLOSED), '127.0.0.1');
  bad.on('error', (e) => console.log('refused: ' + e.code));
});`,
  );
  const made = await deploy(proxy, file, {
    name: 'caller',
    env: { OUT: String(outsidePort), CLOSED: String(closedPort) },
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const logs = await eventually(async () => {
    const r = await proxy.api<Array<{ text: string }>>('GET', '/api/guests/caller/logs');
    const text = r.body.map((x) => x.text).join('');
    return /refused: /.test(text) ? text : undefined;
  }, 'the guest to report');
  assert.match(logs, /got: hello from outside/);
  assert.match(logs, /refused: ECONNREFUSED/);
  assert.deepEqual(seen, ['127.0.0.1']);
});

test('a wrong join token is refused with a clear message', async (t) => {
  const proxy = await startProxy(t);
  const host = startHost(t, proxy, 'intruder', { token: 'not-the-token' });
  const result = await host.exited;
  assert.notEqual(result.code, 0);
  assert.match(result.stderr, /refused to let this host join: wrong join token/);
  const hosts = await proxy.api<HostRow[]>('GET', '/api/hosts');
  assert.deepEqual(hosts.body, []);
});

test('a host that leaves says so; its guests stop with an event', async (t) => {
  const proxy = await startProxy(t);
  const host = startHost(t, proxy, 'host-a');
  await host.waitFor(/joined the proxy/);
  const made = await deploy(proxy, join(ROOT, 'examples/counter.ts'), { name: 'counter', env: { TICKS: '100000' } });
  assert.equal(made.status, 201);
  await stop(host);
  const events = await eventually(async () => {
    const r = await proxy.api<EventRow[]>('GET', '/api/events');
    return r.body.some((e) => e.kind === 'guest.stopped') ? r.body : undefined;
  }, 'the leave to arrive');
  assert.ok(events.some((e) => e.kind === 'host.left'));
  const hosts = await proxy.api<HostRow[]>('GET', '/api/hosts');
  assert.equal(hosts.body[0]?.state, 'left');
});

test('the link drops three times in the middle of a transfer: the host reconnects, re-attaches, and no byte is lost', async (t) => {
  const proxy = await startProxy(t);
  // The host reaches the proxy through a relay the test can cut.
  const cut = new Set<net.Socket>();
  const relay = net.createServer((inbound) => {
    const outbound = net.connect(proxy.controlPort, '127.0.0.1');
    cut.add(inbound);
    cut.add(outbound);
    inbound.pipe(outbound).pipe(inbound);
    inbound.on('error', () => outbound.destroy());
    outbound.on('error', () => inbound.destroy());
    inbound.on('close', () => outbound.destroy());
    outbound.on('close', () => inbound.destroy());
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of cut) s.destroy();
    relay.close();
  });
  const host = startHost(t, proxy, 'host-a', { port: (relay.address() as net.AddressInfo).port });
  await host.waitFor(/joined the proxy/);

  const port = await freePort();
  const made = await deploy(proxy, join(ROOT, 'examples/echo-server.js'), {
    name: 'echo',
    publish: [{ public: port, guest: 7000, protocol: 'tcp' }],
    env: { PORT: '7000' },
  });
  assert.equal(made.status, 201);

  const payload = randomBytes(16 * 1024 * 1024);
  const socket = net.connect(port, '127.0.0.1');
  const hash = createHash('sha256');
  let got = 0;
  let closedEarly = false;
  let cuts = 0;
  socket.on('close', () => (closedEarly = got < payload.length));
  const done = new Promise<void>((resolve, reject) => {
    socket.on('error', reject);
    socket.on('data', (d: Buffer) => {
      hash.update(d);
      got += d.length;
      if (got > ((cuts + 1) * payload.length) / 4 && cuts < 3) {
        // Cut the host's link a quarter, half and three quarters of the way through.
        cuts++;
        for (const s of cut) s.destroy();
        cut.clear();
      }
      if (got >= payload.length) resolve();
    });
  });
  socket.write(payload);
  await done;
  assert.equal(cuts, 3);
  assert.equal(closedEarly, false, 'the client connection never closed');
  assert.equal(hash.digest('hex'), sha(payload), 'every byte once, in order');
  const events = await proxy.api<EventRow[]>('GET', '/api/events');
  assert.ok(
    events.body.some((e) => e.kind === 'host.disconnected'),
    'the link really dropped',
  );
  socket.destroy();
});

test('UDP: each remote is a flow to the guest and back; a guest sends out through the proxy', async (t) => {
  const proxy = await startProxy(t);
  const host = startHost(t, proxy, 'host-a');
  await host.waitFor(/joined the proxy/);

  // An outside UDP service the guest asks once at start.
  const outside = dgram.createSocket('udp4');
  outside.on('message', (msg, rinfo) => outside.send(`outside heard ${msg.toString()}`, rinfo.port, rinfo.address));
  await new Promise<void>((resolve) => outside.bind(0, '127.0.0.1', resolve));
  t.after(() => outside.close());

  const file = writeGuest(
    tempDir(t),
    'udp-echo.js',
    `const dgram = require('dgram');
const s = dgram.createSocket('udp4');
s.on('message', (msg, rinfo) => {
  if (rinfo.port === Number(process.env.OUT)) console.log('reply: ' + msg);
  else s.send('echo ' + msg, rinfo.port, rinfo.address);
});
s.bind(53, () => s.send('hello', Number(process.env.OUT), '127.0.0.1'));`,
  );
  const port = await freePort();
  const made = await deploy(proxy, file, {
    name: 'udp',
    publish: [{ public: port, guest: 53, protocol: 'udp' }],
    env: { OUT: String(outside.address().port) },
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));

  // Two clients: each is its own flow, and each gets its own replies.
  const ask = async (text: string): Promise<string> => {
    const c = dgram.createSocket('udp4');
    t.after(() => c.close());
    const reply = new Promise<string>((resolve) => c.on('message', (m) => resolve(m.toString())));
    // Datagrams may be lost: send a few times (bounded), the first reply counts.
    for (let i = 0; i < 20; i++) {
      c.send(text, port, '127.0.0.1');
      const got = await Promise.race([reply, new Promise<undefined>((r) => setTimeout(() => r(undefined), 200))]);
      if (got !== undefined) return got;
    }
    throw new Error('no UDP reply');
  };
  assert.equal(await ask('one'), 'echo one');
  assert.equal(await ask('two'), 'echo two');
  const logs = await eventually(async () => {
    const r = await proxy.api<Array<{ text: string }>>('GET', '/api/guests/udp/logs');
    const text = r.body.map((x) => x.text).join('');
    return /reply: /.test(text) ? text : undefined;
  }, 'the outside reply');
  assert.match(logs, /reply: outside heard hello/);
});
