/**
 * Hosts with their own addresses (issue 3, section 7): the real `roam proxy` and two real
 * `roam host` processes, each in its own network namespace with its own address, a client in a
 * namespace of its own and a remote server in another. The client reaches guests only through the
 * proxy's address; guests reach the remote server only through the proxy (the paper's NAT).
 *
 *     proxy   10.213.x.1   roam proxy --bind 10.213.x.1 --control-port 7400 --api-port 7480
 *     host-a  10.213.x.2   roam host --proxy 10.213.x.1:7400 --name host-a
 *     host-b  10.213.x.3   roam host --proxy 10.213.x.1:7400 --name host-b
 *     client  10.213.x.4   remote clients and the operator CLI (roam run/hosts/ps/logs --api ...)
 *     remote  10.213.x.5   an ordinary server on the outside that guests call
 *
 * The test process (root namespace) cannot reach the subnet; everything it observes goes through
 * processes inside the namespaces. Needs root and iproute2: skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { join } from 'node:path';
import { netnsAvailable } from './helpers/netns.js';
import { startNetnsCluster, until, type NetnsCluster } from './helpers/netns-cluster.js';
import { ROOT, writeGuest } from './helpers/roam.js';

const availability = netnsAvailable();
const skip = availability.ok ? false : `needs network namespaces: ${availability.reason}`;

interface HostRow {
  name: string;
  state: string;
  address: string | null;
  rttMs: number | null;
  metrics: {
    cpu: { cores: number; usage: number };
    memory: { totalBytes: number; freeBytes: number };
    network: { interfaces: string[] };
  } | null;
}
interface GuestRow {
  name: string;
  state: string;
  hostName: string | null;
  publish: Array<{ public: number; guest: number; protocol: string }>;
}
interface LogRecord {
  text: string;
}

/**
 * Runs in the client namespace: opens one connection per size to HOST:PORT at once, sends that
 * many random bytes on each, reads until as many came back, half-closes, and waits for the other
 * side's end. Prints one JSON line per connection.
 */
const ECHO_CLIENT = `
const net = require('node:net');
const { createHash, randomBytes } = require('node:crypto');
const [host, port, sizes] = process.argv.slice(1);
const sha = (b) => createHash('sha256').update(b).digest('hex');
function one(size) {
  return new Promise((resolve) => {
    const payload = randomBytes(size);
    const hash = createHash('sha256');
    let got = 0;
    let ended = false;
    let error = null;
    const s = net.connect(Number(port), host, () => s.write(payload));
    s.on('data', (d) => {
      hash.update(d);
      got += d.length;
      if (got >= size) s.end();
    });
    s.on('end', () => (ended = true));
    s.on('error', (e) => (error = e.code || e.message));
    s.on('close', () => resolve({ size, got, ended, error, sent: sha(payload), received: hash.digest('hex') }));
  });
}
Promise.all(sizes.split(',').map(Number).map(one)).then((r) => {
  for (const x of r) console.log(JSON.stringify(x));
});
`;

/** Runs in the client namespace: one connection to HOST:PORT; prints `error CODE` or `connected`. */
const PROBE = `
const s = require('node:net').connect(Number(process.argv[2]), process.argv[1]);
s.setTimeout(3000, () => { console.log('timeout'); process.exit(0); });
s.on('connect', () => { console.log('connected'); s.destroy(); });
s.on('error', (e) => console.log('error ' + e.code));
`;

/** Runs in the remote namespace: an ordinary TCP server that answers and logs who called. */
const REMOTE_SERVER = `
const net = require('node:net');
const server = net.createServer((s) => {
  console.log('accepted ' + s.remoteAddress);
  s.setEncoding('utf8');
  s.once('data', (d) => { console.log('received ' + d); s.end('pong: ' + d); });
  s.on('error', () => {});
});
server.listen(Number(process.argv[2]), process.argv[1], () => console.log('listening ' + server.address().port));
`;

/** The guest that connects out: to the remote server, then to a closed port there. */
const CALLER_GUEST = `
const net = require('net');
const host = process.env.REMOTE_HOST;
const c = net.connect(Number(process.env.REMOTE_PORT), host);
let text = '';
c.on('connect', () => c.write('ping from a guest'));
c.on('data', (d) => (text += d));
c.on('error', (e) => console.log('error: ' + e.code));
c.on('end', () => {
  console.log('got: ' + text);
  const bad = net.connect(Number(process.env.CLOSED_PORT), host);
  bad.on('connect', () => console.log('closed port answered?'));
  bad.on('error', (e) => console.log('refused: ' + e.code));
});
`;

/** A guest UDP echo on port 53: answers every datagram with `echo ` and the datagram. */
const UDP_ECHO_GUEST = `
const dgram = require('dgram');
const s = dgram.createSocket('udp4');
s.on('message', (msg, rinfo) => s.send(Buffer.concat([Buffer.from('echo '), msg]), rinfo.port, rinfo.address));
s.on('error', (e) => console.log('udp error: ' + (e.code || e.message)));
s.on('listening', () => console.log('udp echo listening on ' + s.address().port));
s.bind(53);
`;

/**
 * Runs in the client namespace: from each of two sockets (two flows), sends COUNT datagrams one
 * at a time to HOST:PORT and waits for each answer (2 s each). Prints the answers as JSON.
 */
const UDP_CLIENT = `
const dgram = require('node:dgram');
const [host, port, count] = process.argv.slice(1);
async function flow(tag) {
  const s = dgram.createSocket('udp4');
  const answers = [];
  for (let i = 0; i < Number(count); i++) {
    const text = tag + ' ' + i;
    const answer = await new Promise((resolve) => {
      const timer = setTimeout(() => { s.removeAllListeners('message'); resolve(null); }, 2000);
      s.once('message', (m) => { clearTimeout(timer); resolve(m.toString()); });
      s.send(text, Number(port), host);
    });
    answers.push(answer);
  }
  s.close();
  return answers;
}
Promise.all([flow('flow-1'), flow('flow-2')]).then((r) => console.log(JSON.stringify(r)));
`;

/** A guest that sends a datagram to the remote server (again every 500 ms until answered). */
const UDP_CALLER_GUEST = `
const dgram = require('dgram');
const s = dgram.createSocket('udp4');
const send = () => s.send('ping over udp', Number(process.env.REMOTE_PORT), process.env.REMOTE_HOST);
const timer = setInterval(send, 500);
s.on('message', (m, r) => {
  clearInterval(timer);
  console.log('got: ' + m + ' from ' + r.address + ':' + r.port);
  s.close();
});
s.on('error', (e) => console.log('udp error: ' + (e.code || e.message)));
send();
`;

/** Runs in the remote namespace: an ordinary UDP server that answers and logs who sent. */
const REMOTE_UDP_SERVER = `
const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, r) => {
  console.log('from ' + r.address + ':' + r.port + ' ' + m);
  s.send('pong: ' + m, r.port, r.address);
});
s.bind(Number(process.argv[2]), process.argv[1], () => console.log('listening ' + s.address().port));
`;

/** An IPv4 address as /proc/net/udp prints it: the 32-bit value in host (little-endian) order. */
function hexAddress(address: string): string {
  return address
    .split('.')
    .reverse()
    .map((o) => Number(o).toString(16).toUpperCase().padStart(2, '0'))
    .join('');
}

describe(
  'hosts with their own addresses: proxy, hosts, client and remote server in network namespaces',
  { skip },
  () => {
    let c: NetnsCluster;
    /** The proxy's address, where clients reach published ports. */
    let proxy: string;

    before(
      async () => {
        c = await startNetnsCluster({ hosts: ['host-a', 'host-b'], others: ['client', 'remote'] });
        proxy = c.proxyAddress;
      },
      { timeout: 30_000 },
    );
    after(() => c?.close());

    async function logs(name: string): Promise<string> {
      const records = await c.roamJson<LogRecord[]>('client', ['logs', name]);
      return records.map((r) => r.text).join('');
    }

    it(
      'both hosts join and the proxy lists each at its own address, with metrics and an RTT',
      { timeout: 20_000 },
      async () => {
        const hosts = await until(async () => {
          const rows = await c.roamJson<HostRow[]>('client', ['hosts']);
          return rows.length === 2 && rows.every((h) => h.metrics !== null && h.rttMs !== null) ? rows : undefined;
        }, 'both hosts to report and be pinged');
        const byName = new Map(hosts.map((h) => [h.name, h]));
        for (const name of ['host-a', 'host-b']) {
          const h = byName.get(name);
          assert.ok(h, `${name} is in roam hosts: ${JSON.stringify(hosts)}`);
          assert.equal(h.state, 'up');
          assert.equal(h.address, c.net.address(name), `${name} is listed at its namespace's address`);
          assert.notEqual(h.address, proxy);
          assert.ok(typeof h.rttMs === 'number' && h.rttMs >= 0, `${name} rtt ${h.rttMs}`);
          assert.ok((h.metrics?.cpu.cores ?? 0) >= 1);
          assert.ok((h.metrics?.memory.totalBytes ?? 0) > 0);
          // Measured inside the host's own namespace: its one veth, not the machine's interfaces.
          assert.deepEqual(h.metrics?.network.interfaces, ['eth0']);
        }
      },
    );

    it(
      'a client in its own namespace gets every byte back from a guest echo server on host-a',
      { timeout: 30_000 },
      async () => {
        const run = await c.roam('client', [
          'run',
          join(ROOT, 'examples/echo-server.js'),
          '--name',
          'echo',
          '--publish',
          '8080:7000',
          '--on',
          'host-a',
          '--env',
          'PORT=7000',
          '--json',
        ]);
        assert.equal(run.code, 0, `roam run: ${run.stdout}${run.stderr}`);
        assert.equal((JSON.parse(run.stdout) as GuestRow).hostName, 'host-a');
        await until(
          async () => ((await logs('echo')).includes('echo server listening on 7000') ? true : undefined),
          'the echo guest to listen',
        );

        const sizes = [2 * 1024 * 1024, 100_000, 1];
        const r = await c.net.exec('client', process.execPath, ['-e', ECHO_CLIENT, proxy, '8080', sizes.join(',')], {
          timeoutMs: 20_000,
        });
        assert.equal(r.code, 0, r.stderr);
        const results = r.stdout
          .trim()
          .split('\n')
          .map(
            (l) =>
              JSON.parse(l) as {
                size: number;
                got: number;
                ended: boolean;
                error: string | null;
                sent: string;
                received: string;
              },
          );
        assert.equal(results.length, sizes.length);
        for (const x of results) {
          assert.equal(x.error, null, `connection of ${x.size} bytes: ${x.error}`);
          assert.equal(x.got, x.size, 'as many bytes back as sent');
          assert.equal(x.received, x.sent, `every byte of ${x.size} back, in order`);
          assert.ok(x.ended, 'the guest ended its side after the client did (half-close carried both ways)');
        }

        // The guest's port exists only behind the proxy: host-a itself does not listen on it.
        const direct = await c.net.exec('client', process.execPath, ['-e', PROBE, c.net.address('host-a'), '7000']);
        assert.equal(direct.stdout.trim(), 'error ECONNREFUSED');
        const guests = await c.roamJson<GuestRow[]>('client', ['ps']);
        const echo = guests.find((g) => g.name === 'echo');
        assert.equal(echo?.hostName, 'host-a');
        assert.equal(echo?.state, 'running');
      },
    );

    it('curl in the client namespace reaches a guest HTTP server on host-b, twice', { timeout: 30_000 }, async () => {
      const run = await c.roam('client', [
        'run',
        join(ROOT, 'examples/http-server.js'),
        '--name',
        'web',
        '--publish',
        '8081:8080',
        '--on',
        'host-b',
        '--env',
        'PORT=8080',
        '--json',
      ]);
      assert.equal(run.code, 0, `roam run: ${run.stdout}${run.stderr}`);
      assert.equal((JSON.parse(run.stdout) as GuestRow).hostName, 'host-b');
      await until(
        async () => ((await logs('web')).includes('http server listening on 8080') ? true : undefined),
        'the web guest to listen',
      );

      for (const visit of [1, 2]) {
        const r = await c.net.exec('client', 'curl', [
          '-sS',
          '--max-time',
          '10',
          '-w',
          '\nstatus %{http_code}',
          `http://${proxy}:8081/`,
        ]);
        assert.equal(r.code, 0, `curl: ${r.stderr}`);
        const [body, status] = r.stdout.split('\nstatus ');
        assert.equal(status, '200');
        assert.equal(body, `hello from a roaming guest: visit ${visit}, ${visit} lines in its own file\n`);
      }
    });

    it(
      "a guest on host-a connects out: the remote server sees the proxy's address, the guest gets the answer",
      { timeout: 30_000 },
      async () => {
        const remote = c.net.address('remote');
        const server = c.net.spawn('remote', process.execPath, ['-e', REMOTE_SERVER, remote, '9000']);
        await server.waitFor(/listening 9000/);

        const file = writeGuest(c.dir, 'caller.js', CALLER_GUEST);
        const run = await c.roam('client', [
          'run',
          file,
          '--name',
          'caller',
          '--on',
          'host-a',
          '--env',
          `REMOTE_HOST=${remote}`,
          '--env',
          'REMOTE_PORT=9000',
          '--env',
          'CLOSED_PORT=9001',
          '--json',
        ]);
        assert.equal(run.code, 0, `roam run: ${run.stdout}${run.stderr}`);
        assert.equal((JSON.parse(run.stdout) as GuestRow).hostName, 'host-a');

        const text = await until(async () => {
          const t = await logs('caller');
          return /refused: |error: |answered/.test(t) ? t : undefined;
        }, 'the caller guest to report');
        assert.match(text, /got: pong: ping from a guest/);
        assert.match(text, /refused: ECONNREFUSED/);

        const accepted = [...server.output().matchAll(/accepted (\S+)/g)].map((m) => m[1]);
        assert.deepEqual(accepted, [proxy], 'the connection came from the proxy (NAT), not from host-a');
        assert.notEqual(accepted[0], c.net.address('host-a'));
        assert.match(server.output(), /received ping from a guest/);
      },
    );

    it('a client sends datagrams to a guest UDP echo on host-b through the proxy', { timeout: 30_000 }, async () => {
      const file = writeGuest(c.dir, 'udp-echo.js', UDP_ECHO_GUEST);
      const run = await c.roam('client', [
        'run',
        file,
        '--name',
        'udp-echo',
        '--publish',
        '5353:53/udp',
        '--on',
        'host-b',
        '--json',
      ]);
      assert.equal(run.code, 0, `roam run: ${run.stdout}${run.stderr}`);
      assert.equal((JSON.parse(run.stdout) as GuestRow).hostName, 'host-b');
      // The proxy holds a UDP socket on the published port, at its own address.
      const sockets = await c.net.exec('proxy', 'cat', ['/proc/net/udp']);
      assert.match(sockets.stdout, new RegExp(`^\\s*\\d+: ${hexAddress(proxy)}:14E9 `, 'm'), sockets.stdout);
      const started = await until(async () => {
        const text = await logs('udp-echo');
        return /udp error|udp echo listening/.test(text) ? text : undefined;
      }, 'the UDP guest to listen');
      assert.match(started, /udp echo listening on 53/);

      const r = await c.net.exec('client', process.execPath, ['-e', UDP_CLIENT, proxy, '5353', '10'], {
        timeoutMs: 20_000,
      });
      assert.equal(r.code, 0, r.stderr);
      const answers = JSON.parse(r.stdout) as Array<Array<string | null>>;
      assert.equal(answers.length, 2);
      for (const [f, flow] of answers.entries()) {
        assert.deepEqual(
          flow,
          Array.from({ length: 10 }, (_, i) => `echo flow-${f + 1} ${i}`),
          `flow ${f + 1}: every datagram answered, to its own sender`,
        );
      }
    });

    it(
      "a guest on host-b sends a datagram out: the remote sees the proxy's address and its answer comes back",
      { timeout: 30_000 },
      async () => {
        const remote = c.net.address('remote');
        const server = c.net.spawn('remote', process.execPath, ['-e', REMOTE_UDP_SERVER, remote, '9053']);
        await server.waitFor(/listening 9053/);

        const file = writeGuest(c.dir, 'udp-caller.js', UDP_CALLER_GUEST);
        const run = await c.roam('client', [
          'run',
          file,
          '--name',
          'udp-caller',
          '--on',
          'host-b',
          '--env',
          `REMOTE_HOST=${remote}`,
          '--env',
          'REMOTE_PORT=9053',
          '--json',
        ]);
        assert.equal(run.code, 0, `roam run: ${run.stdout}${run.stderr}`);
        const text = await until(async () => {
          const t = await logs('udp-caller');
          return /got: |udp error/.test(t) ? t : undefined;
        }, 'the UDP caller guest to report');
        assert.match(text, new RegExp(`got: pong: ping over udp from ${remote.replaceAll('.', '\\.')}:9053`));

        const from = [...server.output().matchAll(/from (\S+):\d+/g)].map((m) => m[1]);
        assert.ok(from.length >= 1, server.output());
        for (const address of from)
          assert.equal(address, proxy, 'the datagram came from the proxy (NAT), not from host-b');
      },
    );
  },
);
