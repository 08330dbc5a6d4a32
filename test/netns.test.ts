/**
 * The multi-host test harness (test/helpers/netns.ts): namespaces that reach each other by
 * address and nothing else, a cable that can be cut, and a cleanup that leaves nothing behind,
 * even when the test process dies. Needs root and iproute2; skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { createNetwork, netnsAvailable, type TestNetwork } from './helpers/netns.js';
import { ROOT } from './helpers/roam.js';

const availability = netnsAvailable();
const skip = availability.ok ? false : `needs network namespaces: ${availability.reason}`;
const opts = { skip, timeout: 20_000 };

/** Echo server: prints `listening PORT`, answers `from ADDRESS: <data>`, logs what it receives. */
const SERVER = `
const net = require('node:net');
const server = net.createServer((s) => {
  console.log('accepted ' + s.remoteAddress);
  s.setEncoding('utf8');
  s.on('data', (d) => { console.log('received ' + d); s.write('from ' + s.localAddress + ': ' + d); });
  s.on('error', () => {});
});
server.listen(Number(process.argv[2] || 0), process.argv[1], () => console.log('listening ' + server.address().port));
`;

/** Connects to HOST PORT, sends `ping`, prints the answer or `error CODE` / `timeout`. */
const CLIENT = `
const net = require('node:net');
const [host, port, ms] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) });
s.setTimeout(Number(ms || 3000), () => { console.log('timeout'); process.exit(2); });
s.setEncoding('utf8');
s.on('connect', () => s.write('ping'));
s.on('data', (d) => { console.log(d); process.exit(0); });
s.on('error', (e) => { console.log('error ' + e.code); process.exit(1); });
`;

/** Dead: no such process, or a zombie (this machine's pid 1 does not reap orphans). */
function gone(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8')
      .replace(/^.*\) /s, '')
      .startsWith('Z');
  } catch {
    return true;
  }
}

function namespaces(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

function ours(net: TestNetwork): string[] {
  return namespaces().filter((n) => n === net.id || n.startsWith(`${net.id}-`));
}

async function startServer(net: TestNetwork, node: string) {
  const server = net.spawn(node, process.execPath, ['-e', SERVER, net.address(node)]);
  const port = Number((await server.waitFor(/listening (\d+)/))[1]);
  return { server, port };
}

test('nodes in their own namespaces reach each other by address', opts, async (t) => {
  const net = await createNetwork({ nodes: ['server', 'client', 'other'] });
  t.after(() => net.close());

  assert.equal(ours(net).length, 4, 'three nodes and the bridge');
  const addresses = net.nodes.map((n) => net.address(n));
  assert.equal(new Set(addresses).size, 3);
  const [prefix] = net.subnet.split('.0/24');
  for (const a of addresses) assert.ok(a.startsWith(`${prefix}.`), `${a} in ${net.subnet}`);

  const { server, port } = await startServer(net, 'server');
  for (const node of ['client', 'other']) {
    const r = await net.exec(node, process.execPath, ['-e', CLIENT, net.address('server'), String(port)]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stdout.trim(), `from ${net.address('server')}: ping`);
    // The server sees each client by the client's own address.
    await server.waitFor(new RegExp(`accepted ${net.address(node).replaceAll('.', '\\.')}`));
  }

  // Loopback is up in every namespace and private to it.
  const loop = `
    const net = require('node:net');
    const srv = net.createServer((s) => s.end('loopback ok')).listen(0, '127.0.0.1', () => {
      net.connect(srv.address().port, '127.0.0.1').on('data', (d) => { console.log(String(d)); process.exit(0); });
    });`;
  for (const node of net.nodes) {
    const r = await net.exec(node, process.execPath, ['-e', loop]);
    assert.equal(r.stdout.trim(), 'loopback ok', `${node}: ${r.stderr}`);
  }
});

test("the namespaces cannot reach the machine's real network", opts, async (t) => {
  const net = await createNetwork({ nodes: ['a', 'b'], subnet: '10.213.250.0/24' });
  t.after(() => net.close());
  assert.equal(net.address('a'), '10.213.250.1');
  assert.equal(net.address('b'), '10.213.250.2');

  // A server on the root namespace's loopback is not the namespace's loopback.
  const outside = createServer((s) => s.end('leak')).listen(0, '127.0.0.1');
  t.after(() => outside.close());
  await new Promise((resolve) => outside.once('listening', resolve));
  const port = (outside.address() as AddressInfo).port;
  const r = await net.exec('a', process.execPath, ['-e', CLIENT, '127.0.0.1', String(port), '2000']);
  assert.equal(r.stdout.trim(), 'error ECONNREFUSED');

  for (const node of net.nodes) {
    // Only the test subnet is routed: no default route, so no packet can leave.
    const routes = await net.exec(node, 'ip', ['-4', 'route', 'show']);
    assert.equal(routes.stdout.trim().split('\n').length, 1, routes.stdout);
    assert.match(routes.stdout, /^10\.213\.250\.0\/24 dev eth0 /);
    const get = await net.exec(node, 'ip', ['route', 'get', '192.0.2.1']);
    assert.notEqual(get.code, 0);
    assert.match(get.stderr, /unreachable/i);
  }

  // Nothing of the test network appears in the root namespace: no veth end, no bridge, no address.
  const rootLinks = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
  assert.ok(!rootLinks.includes(net.id), rootLinks);
  const rootAddrs = execFileSync('ip', ['-o', '-4', 'addr', 'show'], { encoding: 'utf8' });
  assert.ok(!rootAddrs.includes('10.213.250.'), rootAddrs);
});

test('setLink down cuts a node off, bounded; up restores it and stalled bytes arrive', opts, async (t) => {
  const net = await createNetwork({ nodes: ['server', 'client'] });
  t.after(() => net.close());
  const { server, port } = await startServer(net, 'server');
  const host = net.address('server');

  // A long-lived connection opened before the cut: it must stall, not reset.
  const held = net.spawn(
    'client',
    process.execPath,
    [
      '-e',
      `const s = require('node:net').connect(${port}, '${host}', () => console.log('connected'));
       s.setEncoding('utf8');
       s.on('data', (d) => console.log('got ' + d));
       s.on('error', (e) => console.log('error ' + e.code));
       s.on('close', () => console.log('closed'));
       process.stdin.on('data', (d) => s.write(d));`,
    ],
    { stdin: 'pipe' },
  );
  await held.waitFor(/connected/);

  await net.setLink('server', 'down');
  const started = Date.now();
  const cut = await net.exec('client', process.execPath, ['-e', CLIENT, host, String(port), '1500']);
  assert.notEqual(cut.code, 0);
  assert.match(cut.stdout, /timeout|error EHOSTUNREACH/);
  assert.ok(Date.now() - started < 5000, 'the failed attempt is bounded');

  held.child.stdin?.write('during the cut');
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.doesNotMatch(server.output(), /during the cut/);

  await net.setLink('server', 'up');
  const back = await net.exec('client', process.execPath, ['-e', CLIENT, host, String(port), '3000']);
  assert.equal(back.stdout.trim(), `from ${host}: ping`);
  // TCP retransmits the bytes written during the cut; the old connection carries on.
  await server.waitFor(/received during the cut/, 10_000);
  await held.waitFor(/got from .*: during the cut/, 5000);
  assert.doesNotMatch(held.output(), /error|closed/);
});

test('close() ends every process, removes every namespace, and is idempotent', opts, async () => {
  const net = await createNetwork({ nodes: ['a', 'b'] });
  assert.equal(ours(net).length, 3);
  // One process that ignores SIGTERM and has a grandchild of its own in the namespace.
  const stubborn = net.spawn('a', process.execPath, [
    '-e',
    `process.on('SIGTERM', () => console.log('ignoring SIGTERM'));
     const g = require('node:child_process').spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { detached: true, stdio: 'ignore' });
     console.log('grandchild ' + g.pid);
     setInterval(() => {}, 1000);`,
  ]);
  const grandchild = Number((await stubborn.waitFor(/grandchild (\d+)/))[1]);
  const polite = net.spawn('b', 'sleep', ['30']);

  const started = Date.now();
  await net.close(300);
  assert.ok(Date.now() - started < 5000);
  assert.deepEqual(ours(net), []);
  assert.equal((await polite.exited).signal, 'SIGTERM');
  assert.equal((await stubborn.exited).signal, 'SIGKILL');
  assert.match(stubborn.output(), /ignoring SIGTERM/);
  assert.ok(gone(grandchild), `grandchild ${grandchild} is gone`);

  await net.close(); // a no-op
  assert.throws(() => net.spawn('a', 'true'), /closed/);
});

/** Runs a child Node process that builds a network with the harness, then does `then`. */
function child(then: string) {
  const script = `
    import { createNetwork } from ${JSON.stringify(join(ROOT, 'test', 'helpers', 'netns.ts'))};
    const net = await createNetwork({ nodes: ['x', 'y'] });
    net.spawn('x', 'sleep', ['30']);
    console.log('network ' + net.id);
    ${then}`;
  const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  p.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const id = new Promise<string>((resolve, reject) => {
    p.stdout.on('data', () => {
      const m = /network (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    p.on('close', () => reject(new Error(`child ended before creating its network:\n${out}`)));
  });
  const closed = new Promise<void>((resolve) => p.on('close', () => resolve()));
  return { p, id, closed };
}

function left(id: string): string[] {
  return namespaces().filter((n) => n === id || n.startsWith(`${id}-`));
}

test('a test process that exits or is terminated without close() leaves nothing', opts, async () => {
  const exiting = child('process.exit(3);');
  const id1 = await exiting.id;
  await exiting.closed;
  assert.deepEqual(left(id1), []);

  const terminated = child('setInterval(() => {}, 1000);');
  const id2 = await terminated.id;
  assert.equal(left(id2).length, 3);
  terminated.p.kill('SIGTERM');
  await terminated.closed;
  assert.equal(terminated.p.signalCode, 'SIGTERM', 'the signal keeps its usual effect');
  assert.deepEqual(left(id2), []);
});

test('namespaces leaked by a crashed run are deleted by the next createNetwork', opts, async (t) => {
  const crashed = child('setInterval(() => {}, 1000);');
  const id = await crashed.id;
  crashed.p.kill('SIGKILL'); // no hook runs
  await crashed.closed;
  assert.equal(left(id).length, 3, 'leaked');

  const net = await createNetwork({ nodes: ['a'] });
  t.after(() => net.close());
  assert.deepEqual(left(id), []);
  assert.equal(ours(net).length, 2);
});
