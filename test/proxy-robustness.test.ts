/**
 * Robustness of the Proxy with real processes on loopback (DESIGN.md invariants 5 and 6, issue 3
 * sections 2, 5 and 6): hostile input at the live control port while a real host serves a real
 * client, eviction of a host that falls silent, end-to-end backpressure with far more bytes than
 * any buffer holds, and a restart of the proxy under running hosts and guests.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { FrameType, HEADER_BYTES, WIRE_MAGIC, WIRE_VERSION, encodeFrame } from '../src/wire/index.js';
import { ROOT, runRoam, tempDir, writeGuest } from './helpers/roam.js';
import { deploy, eventually, freePort, startHost, stop, type TestProxy } from './helpers/cluster.js';
import {
  MiB,
  ask,
  fdCount,
  goaways,
  launchProxy,
  mib,
  pidOf,
  rawPeer,
  sampleRss,
  sleep,
  within,
  type RawPeer,
} from './helpers/robustness.js';

interface HostRow {
  id: string;
  name: string;
  state: string;
}
interface GuestRow {
  name: string;
  state: string;
  hostName: string | null;
}
interface EventRow {
  id: number;
  kind: string;
  message: string;
}

// ---- raw frames ---------------------------------------------------------------------------------

/** A frame built by hand, so that any field can be wrong. */
function rawFrame(
  type: number,
  payload: Uint8Array = new Uint8Array(0),
  fields: { streamId?: number; length?: number; aux?: number; magic?: number; version?: number; flags?: number } = {},
): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header[0] = fields.magic ?? WIRE_MAGIC;
  header[1] = fields.version ?? WIRE_VERSION;
  header[2] = type;
  header[3] = fields.flags ?? 0;
  header.writeUInt32BE(fields.streamId ?? 0, 4);
  header.writeUInt32BE(fields.length ?? payload.length, 8);
  header.writeUInt32BE(fields.aux ?? 0, 12);
  return Buffer.concat([header, payload]);
}

const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

function join_(token: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { type: 'join', protocol: 1, token, hostId: randomUUID(), name: 'intruder', version: '0.1.0', ...extra };
}

/**
 * Sends `bytes` on a fresh connection and waits (at most `limitMs`) for the proxy to close it.
 * With `allowHalfOpen`, this side never closes: the proxy has to.
 */
async function attack(
  port: number,
  bytes: Uint8Array | Uint8Array[],
  options: { allowHalfOpen?: boolean; limitMs?: number } = {},
): Promise<{ peer: RawPeer; endedMs: number | null }> {
  const peer = rawPeer(port, { allowHalfOpen: options.allowHalfOpen ?? false });
  peer.socket.on('error', () => {});
  for (const chunk of Array.isArray(bytes) ? bytes : [bytes]) {
    if (peer.isClosed()) break;
    peer.socket.write(chunk);
    if (Array.isArray(bytes)) await sleep(5);
  }
  const endedMs = await within(peer.ended, options.limitMs ?? 10_000, null);
  return { peer, endedMs };
}

/** The proxy closed the connection in time, after a GOAWAY with a code (and said nothing malformed). */
function assertRefused(name: string, result: { peer: RawPeer; endedMs: number | null }, code?: RegExp): string {
  const { frames, error, partial } = result.peer.frames();
  assert.notEqual(result.endedMs, null, `${name}: the proxy did not close the connection within 10 s`);
  assert.equal(error, undefined, `${name}: the proxy sent bytes that do not decode: ${error}`);
  assert.equal(partial, false, `${name}: the proxy sent a truncated frame`);
  const last = frames.at(-1);
  assert.equal(last?.type, 'goaway', `${name}: the last frame before the close is a GOAWAY (got ${last?.type})`);
  const [reason] = goaways(frames).slice(-1);
  assert.ok(reason && reason.message.length > 0, `${name}: the GOAWAY says why`);
  if (code) assert.match(reason.code, code, `${name}: GOAWAY code (message: ${reason.message})`);
  return `${reason.code}: ${reason.message}`;
}

/** A client connection through the guest that stays open across the whole test. */
function persistentClient(port: number) {
  const socket = net.connect(port, '127.0.0.1');
  let buffered = Buffer.alloc(0);
  let waiter: (() => void) | undefined;
  let closed = false;
  socket.on('data', (d: Buffer) => {
    buffered = Buffer.concat([buffered, d]);
    waiter?.();
  });
  socket.on('error', () => {});
  socket.on('close', () => {
    closed = true;
    waiter?.();
  });
  return {
    socket,
    /** Writes `text` and waits for it to come back whole. */
    async echo(text: string, timeoutMs = 10_000): Promise<string> {
      assert.equal(closed, false, 'the client connection through the guest is still open');
      buffered = Buffer.alloc(0);
      socket.write(text);
      const deadline = Date.now() + timeoutMs;
      while (buffered.length < Buffer.byteLength(text)) {
        if (closed) throw new Error(`the client connection closed (got ${JSON.stringify(buffered.toString())})`);
        if (Date.now() > deadline) throw new Error(`no echo within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          waiter = resolve;
          setTimeout(resolve, 100);
        });
      }
      return buffered.toString();
    },
  };
}

// ---- 1. hostile input ---------------------------------------------------------------------------

test('hostile input at the live control port: every bad connection is closed with a reason; the proxy, its memory and a live client stay fine', async (t) => {
  const proxy = await launchProxy(t, {}, ['--report-interval', '200']);
  const host = startHost(t, proxy, 'host-a');
  await host.waitFor(/joined the proxy/);
  const port = await freePort();
  const made = await deploy(proxy, join(ROOT, 'examples/echo-server.js'), {
    name: 'echo',
    publish: [{ public: port, guest: 7000, protocol: 'tcp' }],
    env: { PORT: '7000' },
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));

  const client = persistentClient(port);
  t.after(() => client.socket.destroy());
  assert.equal(await client.echo('before the attacks\n'), 'before the attacks\n');

  const control = proxy.controlPort;
  const pid = pidOf(proxy.process);
  // Let the proxy settle before taking its measurements.
  await sleep(500);
  const fdBase = fdCount(pid);
  const overall = sampleRss({ proxy: pid });
  const hostA = (await proxy.api<HostRow[]>('GET', '/api/hosts')).body.find((h) => h.name === 'host-a');
  assert.equal(hostA?.state, 'up');

  /** The proxy is up, answers its API, still has host-a, and the client still gets its echo. */
  const stillServing = async (after: string): Promise<void> => {
    assert.equal(proxy.process.child.exitCode, null, `the proxy exited after ${after}`);
    const hosts = await proxy.api<HostRow[]>('GET', '/api/hosts');
    assert.equal(hosts.status, 200, `the API answers after ${after}`);
    assert.deepEqual(
      hosts.body.map((h) => [h.name, h.state]),
      [['host-a', 'up']],
      `host-a is the only host, still up, after ${after}`,
    );
    const text = `still here after ${after}\n`;
    assert.equal(await client.echo(text), text, `the client's connection works after ${after}`);
  };

  await t.test('(a) random bytes and random frame sequences (fast-check)', async () => {
    const codes = Object.values(FrameType) as number[];
    const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
    const header = fc
      .record({
        magic: fc.oneof(fc.constant(WIRE_MAGIC), fc.integer({ min: 0, max: 255 })),
        version: fc.oneof(fc.constant(WIRE_VERSION), fc.integer({ min: 0, max: 255 })),
        type: fc.oneof(fc.constantFrom(...codes), fc.integer({ min: 0, max: 255 })),
        flags: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 255 })),
        streamId: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 16 }), u32),
        aux: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 1 << 20 }), u32),
        payload: fc.uint8Array({ maxLength: 96 }),
        length: fc.option(u32, { nil: undefined }),
      })
      .map((h) => rawFrame(h.type, h.payload, h));
    const valid = fc.oneof(
      fc.integer({ min: 0, max: 2 ** 40 }).map((nonce) => Buffer.from(encodeFrame({ type: 'ping', nonce }))),
      fc
        .tuple(fc.integer({ min: 1, max: 64 }), fc.uint8Array({ maxLength: 64 }))
        .map(([streamId, payload]) => Buffer.from(encodeFrame({ type: 'data', streamId, payload }))),
      fc
        .tuple(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 0, max: 1 << 30 }))
        .map(([streamId, offset]) => Buffer.from(encodeFrame({ type: 'ack', streamId, offset }))),
    );
    const sequence = fc.array(fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 64 }), header, valid), {
      minLength: 1,
      maxLength: 8,
    });
    const seed = Date.now() ^ (Math.random() * 0x7fff_ffff);
    t.diagnostic(`fast-check seed ${seed}`);
    const samples = fc.sample(sequence, { numRuns: 50, seed });
    const rss = sampleRss({ proxy: pid });
    const results = await Promise.all(samples.map((chunks) => attack(control, chunks)));
    const growth = rss.stop();
    const failures: string[] = [];
    results.forEach((r, i) => {
      try {
        assertRefused(`sequence ${i}`, r);
      } catch (err) {
        const hex = (samples[i] ?? []).map((c) => Buffer.from(c).toString('hex')).join(' | ');
        failures.push(`${(err as Error).message}\n    sent: ${hex}`);
      }
    });
    assert.deepEqual(failures, [], `seed ${seed}: ${failures.length} of 50 sequences were not refused properly`);
    assert.ok((growth.proxy ?? 0) < 50 * MiB, `proxy RSS grew by ${mib(growth.proxy ?? 0)}`);
    await stillServing('random frames');
  });

  await t.test('(b) a valid-looking header that declares a 4 GiB payload', async () => {
    const rss = sampleRss({ proxy: pid });
    const cases: Array<[string, number, number]> = [
      ['HELLO', FrameType.HELLO, 0],
      ['CONTROL', FrameType.CONTROL, 0],
      ['DATA', FrameType.DATA, 1],
      ['DATAGRAM', FrameType.DATAGRAM, 1],
      ['OPEN', FrameType.OPEN, 1],
      ['ATTACH', FrameType.ATTACH, 1],
    ];
    const filler = Buffer.alloc(256 * 1024, 0x41);
    for (const [name, type, streamId] of cases) {
      const header = rawFrame(type, undefined, {
        streamId,
        length: 0xffff_ffff,
        aux: type === FrameType.OPEN || type === FrameType.ATTACH ? 65536 : 0,
      });
      // The header, then payload bytes as if the 4 GiB were on their way.
      const r = await attack(control, [header, filler, filler, filler, filler]);
      assertRefused(`${name} declaring 4 GiB`, r, /^WIRE_FRAME_TOO_LARGE$/);
    }
    // Just below the unauthenticated limit, announced and never finished: the handshake deadline.
    const slow = await attack(control, rawFrame(FrameType.HELLO, Buffer.alloc(100, 0x20), { length: 16 * 1024 }));
    assertRefused('a HELLO that never completes', slow, /^ROAM_ERR_UNAUTHORIZED$/);
    const growth = rss.stop();
    assert.ok((growth.proxy ?? 0) < 50 * MiB, `proxy RSS grew by ${mib(growth.proxy ?? 0)}`);
    await stillServing('4 GiB headers');
  });

  await t.test('(c) a HELLO with a wrong join token, also with the id of the joined host', async () => {
    const wrong = await attack(control, encodeFrame({ type: 'hello', message: join_('not-the-token') as never }));
    assert.match(assertRefused('wrong token', wrong, /^ROAM_ERR_UNAUTHORIZED$/), /wrong join token/);
    // Claiming to be host-a with a wrong token must not disturb the real host-a.
    const spoof = await attack(
      control,
      encodeFrame({
        type: 'hello',
        message: join_('not-the-token', { hostId: hostA?.id, name: 'host-a' }) as never,
      }),
    );
    assertRefused('wrong token with the id of host-a', spoof, /^ROAM_ERR_UNAUTHORIZED$/);
    const events = await proxy.api<EventRow[]>('GET', '/api/events?limit=1000');
    assert.ok(
      events.body.filter((e) => e.kind === 'host.refused').length >= 2,
      'the refused joins are in the event log',
    );
    assert.equal(
      events.body.some((e) => e.kind === 'host.disconnected'),
      false,
      'host-a never lost its connection',
    );
    await stillServing('wrong tokens');
  });

  await t.test('(d) a HELLO with invalid JSON or a payload that fails the schema', async () => {
    const token = proxy.joinToken;
    const cases: Array<[string, Uint8Array, RegExp]> = [
      ['not JSON', rawFrame(FrameType.HELLO, Buffer.from('{"type":"join",')), /^WIRE_BAD_MESSAGE$/],
      ['not UTF-8', rawFrame(FrameType.HELLO, Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), /^WIRE_BAD_MESSAGE$/],
      ['JSON null', rawFrame(FrameType.HELLO, json(null)), /^WIRE_BAD_MESSAGE$/],
      ['an empty payload', rawFrame(FrameType.HELLO), /^WIRE_BAD_MESSAGE$/],
      ['missing fields', rawFrame(FrameType.HELLO, json({ type: 'join', token })), /^WIRE_BAD_MESSAGE$/],
      [
        'a host id that is not a UUID',
        rawFrame(FrameType.HELLO, json(join_(token, { hostId: '../../etc/passwd' }))),
        /^WIRE_BAD_MESSAGE$/,
      ],
      [
        'a name of the wrong type',
        rawFrame(FrameType.HELLO, json(join_(token, { name: { $gt: '' } }))),
        /^WIRE_BAD_MESSAGE$/,
      ],
      [
        'a __proto__ key',
        rawFrame(FrameType.HELLO, Buffer.from(`{"__proto__":{"admin":true},${JSON.stringify(join_('x')).slice(1)}`)),
        /^ROAM_ERR_UNAUTHORIZED$/,
      ],
      [
        'deeply nested arrays',
        rawFrame(FrameType.HELLO, Buffer.from('['.repeat(8000) + ']'.repeat(8000))),
        /^WIRE_BAD_MESSAGE$/,
      ],
      [
        'a CONTROL message before any HELLO',
        encodeFrame({ type: 'control', message: { type: 'leave', reason: 'bye' } }),
        /^ROAM_ERR_UNAUTHORIZED$/,
      ],
      [
        'a GOAWAY with a schema-breaking body',
        rawFrame(FrameType.GOAWAY, json({ code: 'no spaces allowed', message: 1 })),
        /^WIRE_BAD_MESSAGE$/,
      ],
    ];
    const results = await Promise.all(cases.map(([, bytes]) => attack(control, bytes)));
    cases.forEach(([name, , code], i) => assertRefused(name, results[i] as { peer: RawPeer; endedMs: number }, code));
    await stillServing('bad HELLOs');
  });

  await t.test('(e) frames of an unknown version, type or control protocol', async () => {
    const cases: Array<[string, Uint8Array, RegExp]> = [
      ['wire version 2', rawFrame(FrameType.PING, Buffer.alloc(8), { version: 2 }), /^WIRE_UNSUPPORTED_VERSION$/],
      ['wire version 0', rawFrame(FrameType.HELLO, json(join_('x')), { version: 0 }), /^WIRE_UNSUPPORTED_VERSION$/],
      ['wire version 255 alone', Buffer.from([WIRE_MAGIC, 255]), /^WIRE_UNSUPPORTED_VERSION$/],
      ['frame type 99', rawFrame(99, Buffer.alloc(4)), /^WIRE_UNKNOWN_TYPE$/],
      ['frame type 0', rawFrame(0), /^WIRE_UNKNOWN_TYPE$/],
      [
        'control protocol 2 in the HELLO',
        rawFrame(FrameType.HELLO, json(join_(proxy.joinToken, { protocol: 2 }))),
        /^WIRE_UNSUPPORTED_VERSION$/,
      ],
      ['non-zero flags', rawFrame(FrameType.PING, Buffer.alloc(8), { flags: 0x80 }), /^WIRE_MALFORMED$/],
      ['TLS client hello', Buffer.from('16030100a5010000a10303', 'hex'), /^WIRE_BAD_MAGIC$/],
      ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), /^WIRE_BAD_MAGIC$/],
    ];
    const results = await Promise.all(cases.map(([, bytes]) => attack(control, bytes)));
    cases.forEach(([name, , code], i) => assertRefused(name, results[i] as { peer: RawPeer; endedMs: number }, code));
    await stillServing('unknown versions');
  });

  await t.test('(f) a connection that sends nothing is closed after the handshake deadline', async () => {
    const r = await attack(control, []);
    assertRefused('a silent connection', r, /^ROAM_ERR_UNAUTHORIZED$/);
    assert.ok((r.endedMs ?? 0) >= 4000, `closed after ${Math.round(r.endedMs ?? 0)} ms: not before the deadline`);
    await stillServing('a silent connection');
  });

  await t.test('(g) 200 connections at once, each with a partial header or HELLO, then silence', async () => {
    const rss = sampleRss({ proxy: pid });
    const partialHello = rawFrame(FrameType.HELLO, Buffer.from('{"type":"join","tok'), { length: 16 * 1024 });
    const attempts = Array.from({ length: 200 }, (_, i) =>
      attack(control, i % 2 === 0 ? Buffer.from([WIRE_MAGIC, WIRE_VERSION, FrameType.HELLO, 0, 0]) : partialHello, {
        limitMs: 12_000,
      }),
    );
    // While they stall, the host and the client carry on.
    await sleep(1000);
    await stillServing('200 stalled connections (while they stall)');
    const results = await Promise.all(attempts);
    const growth = rss.stop();
    const late = results.filter((r) => r.endedMs === null || r.endedMs > 10_000).length;
    assert.equal(late, 0, `${late} of 200 stalled connections were not closed within 10 s`);
    results.forEach((r, i) => assertRefused(`stalled connection ${i}`, r, /^ROAM_ERR_UNAUTHORIZED$/));
    assert.ok((growth.proxy ?? 0) < 50 * MiB, `proxy RSS grew by ${mib(growth.proxy ?? 0)}`);
    await stillServing('200 stalled connections');
  });

  await t.test('(h) floods of frames the proxy answers, from a peer that never reads the answers', async () => {
    // Before any HELLO the proxy answers a PING with a PONG and a DATA frame for a stream it does not
    // have with an RST. A peer that sends them without reading makes the answers queue up.
    const floods: Array<[string, Buffer]> = [
      ['PING', Buffer.from(encodeFrame({ type: 'ping', nonce: 1 }))],
      [
        'DATA for an unknown stream',
        Buffer.from(encodeFrame({ type: 'data', streamId: 7, payload: new Uint8Array(1) })),
      ],
    ];
    const problems: string[] = [];
    for (const [name, frame] of floods) {
      const rss = sampleRss({ proxy: pid }, 20);
      const peer = rawPeer(control, { read: false });
      peer.socket.on('error', () => {});
      const burst = Buffer.concat(Array.from({ length: Math.ceil((96 * 1024) / frame.length) }, () => frame));
      let sent = 0;
      const until = Date.now() + 3000; // inside the 5 s handshake deadline
      while (Date.now() < until && !peer.isClosed()) {
        if (!peer.socket.write(burst)) {
          // At most 200 ms for 'drain' (the proxy may stop reading); the listener goes with the wait.
          let onDrain = (): void => {};
          await within(new Promise<void>((r) => peer.socket.once('drain', (onDrain = r))), 200, null);
          peer.socket.off('drain', onDrain);
        }
        sent += burst.length;
      }
      const growth = rss.stop().proxy ?? 0;
      peer.socket.destroy();
      t.diagnostic(`${name} flood: sent ${mib(sent)} in 3 s; proxy RSS peak growth ${mib(growth)}`);
      if (growth >= 50 * MiB)
        problems.push(
          `a ${name} flood of ${mib(sent)} from a peer that reads nothing grew the proxy by ${mib(growth)}`,
        );
      await sleep(500);
    }
    assert.deepEqual(problems, [], 'the answers to a peer that does not read are bounded');
    await stillServing('floods');
  });

  await t.test('(i) peers that keep their side open after the GOAWAY are still closed by the proxy', async () => {
    const before = fdCount(pid);
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        attack(control, i % 2 ? Buffer.from('garbage\n') : rawFrame(FrameType.PING, Buffer.alloc(8), { version: 9 }), {
          allowHalfOpen: true,
        }),
      ),
    );
    results.forEach((r, i) => assertRefused(`half-open peer ${i}`, r));
    // Those peers never close: the proxy has to let go of the sockets by itself.
    const held = await eventually(
      () => Promise.resolve(fdCount(pid) <= before + 2 ? true : undefined),
      'fds',
      10_000,
    ).then(
      () => null,
      () => 'timeout',
    );
    const open = fdCount(pid) - before;
    for (const r of results) r.peer.socket.destroy();
    assert.equal(
      held,
      null,
      `10 s after refusing 50 peers that keep their side open, the proxy still holds ${open} more descriptors than before`,
    );
    await stillServing('half-open peers');
  });

  const growth = overall.stop();
  t.diagnostic(
    `proxy RSS over all attacks: peak growth ${mib(growth.proxy ?? 0)}; descriptors ${fdBase} before, ${fdCount(pid)} after`,
  );
  await stillServing('all the attacks');
});

// ---- guests used below ----------------------------------------------------------------------------

/** Counts its connections (its state shows whether it is still the same guest), then echoes. */
const COUNTING_ECHO = `const net = require('net');
let n = 0;
net.createServer((s) => {
  n++;
  s.write('connection ' + n + '\\n');
  s.pipe(s);
  s.on('error', () => s.destroy());
}).listen(Number(process.env.PORT), () => console.log('counting echo listening'));
`;

async function countingEcho(t: { after(fn: () => void): void }, proxy: TestProxy, port: number): Promise<void> {
  const file = writeGuest(tempDir(t), 'counting-echo.js', COUNTING_ECHO);
  const made = await deploy(proxy, file, {
    name: 'counter',
    publish: [{ public: port, guest: 7000, protocol: 'tcp' }],
    env: { PORT: '7000' },
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
}

/** Resolves with the connection error code once connecting to `port` fails, or undefined if it works. */
function connectError(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(undefined);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

// ---- 2. eviction ---------------------------------------------------------------------------------

/** Stops process `pid` (SIGSTOP); the function returned, or the end of the test, lets it go on. */
function stopProcess(t: { after: (fn: () => void) => void }, pid: number): () => void {
  let stopped = true;
  process.kill(pid, 'SIGSTOP');
  const go = (): void => {
    if (!stopped) return;
    stopped = false;
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // already gone
    }
  };
  t.after(go);
  return go;
}

test('a host that falls silent (SIGSTOP) is evicted after 5 report intervals; woken up, it rejoins and its guest runs on', async (t) => {
  const proxy = await launchProxy(t, {}, ['--report-interval', '200']);
  const host = startHost(t, proxy, 'host-a');
  await host.waitFor(/joined the proxy/);
  const hostPid = pidOf(host);
  const port = await freePort();
  await countingEcho(t, proxy, port);
  assert.equal(await ask(port, 'hi'), 'connection 1');
  const hostId = (await proxy.api<HostRow[]>('GET', '/api/hosts')).body[0]?.id;

  // A client with an open connection to the guest when its host goes silent.
  const open = net.connect(port, '127.0.0.1');
  open.on('error', () => {});
  const openClosed = new Promise<number>((resolve) => open.once('close', () => resolve(performance.now())));
  await new Promise((r) => open.once('data', r));

  let historyAtEviction: Array<string | null> | undefined;
  const frozenAt = performance.now();
  const thaw = stopProcess(t, hostPid);
  try {
    const evicted = await eventually(
      async () => {
        const hosts = await proxy.api<HostRow[]>('GET', '/api/hosts');
        return hosts.body[0]?.state === 'evicted' ? performance.now() : undefined;
      },
      'host-a to be evicted',
      10_000,
    );
    const after = evicted - frozenAt;
    t.diagnostic(`evicted ${Math.round(after)} ms after SIGSTOP (5 intervals of 200 ms = 1000 ms)`);
    // The last report may have come up to one interval before the stop; the check runs every interval.
    assert.ok(after >= 700, `evicted after ${Math.round(after)} ms: not before 5 report intervals of silence`);
    assert.ok(after <= 3000, `evicted after ${Math.round(after)} ms: promptly after 5 report intervals`);

    const guests = await proxy.api<GuestRow[]>('GET', '/api/guests');
    assert.deepEqual(
      guests.body.map((g) => [g.name, g.state]),
      [['counter', 'lost']],
    );
    const events = (await proxy.api<EventRow[]>('GET', '/api/events')).body.map((e) => e.kind);
    assert.ok(events.includes('host.evicted'), `events: ${events.join(', ')}`);
    assert.ok(events.includes('guest.lost'), `events: ${events.join(', ')}`);
    assert.ok(events.indexOf('guest.lost') > events.indexOf('host.evicted'), 'the guest is lost with its host');
    // The public port of a lost guest refuses new clients instead of hanging them.
    assert.equal(await connectError(port), 'ECONNREFUSED');
    const closedAt = await within(openClosed, 5000, null);
    t.diagnostic(
      closedAt === null
        ? 'the open client connection was still open 5 s after the eviction'
        : `the open client connection was closed ${Math.round(closedAt - frozenAt)} ms after SIGSTOP`,
    );

    // The eviction goes into the host's history with its reason (the basis of the availability
    // model); checked at the end, so that the rejoin below is checked whatever this finds.
    const Database = (await import('better-sqlite3')).default;
    const db = new Database(join(proxy.dataDir, 'roam.db'), { readonly: true, fileMustExist: true });
    historyAtEviction = (
      db
        .prepare('SELECT end_reason AS reason FROM host_sessions WHERE host_id = ? ORDER BY joined_at')
        .all(hostId) as Array<{ reason: string | null }>
    ).map((r) => r.reason);
    db.close();
  } finally {
    thaw();
  }

  // Woken up, the host finds its connection gone, reconnects as a new session and reports its guest.
  await host.waitFor(/joined the proxy[\s\S]*joined the proxy/, 15_000);
  const [rejoined] = await eventually(async () => {
    const hosts = await proxy.api<HostRow[]>('GET', '/api/hosts');
    return hosts.body[0]?.state === 'up' ? hosts.body : undefined;
  }, 'host-a to be up again');
  assert.equal(rejoined?.id, hostId, 'the same host (its id is stable)');
  await eventually(async () => {
    const guests = await proxy.api<GuestRow[]>('GET', '/api/guests');
    return guests.body[0]?.state === 'running' ? true : undefined;
  }, 'the guest to be running again');
  const reply = await eventually(() => ask(port, 'hi').catch(() => undefined), 'the published port to work again');
  assert.equal(reply, 'connection 3', 'the same guest, its state kept (two connections before the eviction)');
  const kinds = (await proxy.api<EventRow[]>('GET', '/api/events')).body.map((e) => e.kind);
  t.diagnostic(`events: ${kinds.join(', ')}`);
  const tail = kinds.slice(kinds.indexOf('host.evicted'));
  assert.ok(
    tail.includes('host.joined') && tail.includes('guest.found'),
    `events after the eviction: ${tail.join(', ')}`,
  );
  const Database = (await import('better-sqlite3')).default;
  const db = new Database(join(proxy.dataDir, 'roam.db'), { readonly: true, fileMustExist: true });
  const sessions = db.prepare('SELECT COUNT(*) AS n FROM host_sessions WHERE host_id = ?').get(hostId) as { n: number };
  db.close();
  assert.equal(sessions.n, 2, 'the rejoin is a new session in the history');
  assert.deepEqual(historyAtEviction, ['evicted'], 'the session of the silent host ended by eviction in the history');
});

test('a proxy that was held up itself (SIGSTOP) reads the reports that waited before it judges a host silent', async (t) => {
  const proxy = await launchProxy(t, {}, ['--report-interval', '200']);
  const host = startHost(t, proxy, 'host-a');
  await host.waitFor(/joined the proxy/);
  const lastSeen = async (): Promise<number | null> =>
    (await proxy.api<Array<HostRow & { lastSeen: number | null }>>('GET', '/api/hosts')).body[0]?.lastSeen ?? null;
  await eventually(async () => ((await lastSeen()) !== null ? true : undefined), 'a first report', 10_000);
  const wake = stopProcess(t, pidOf(proxy.process));
  // 7.5 report intervals (the limit is 5): the host reports into the proxy's socket all along.
  await sleep(1500);
  const wokeAt = Date.now();
  wake();
  // Judged after two more reports, which show the proxy reading again.
  await eventually(
    async () => ((await lastSeen()) ?? 0) > wokeAt + 400 || undefined,
    'reports after the proxy woke',
    10_000,
  );
  const hosts = await proxy.api<HostRow[]>('GET', '/api/hosts');
  assert.deepEqual(
    hosts.body.map((h) => [h.name, h.state]),
    [['host-a', 'up']],
  );
  const events = (await proxy.api<EventRow[]>('GET', '/api/events')).body.map((e) => e.kind);
  assert.ok(!events.includes('host.evicted'), `events: ${events.join(', ')}`);
  assert.equal(host.output().match(/^roam host .* joined the proxy/gm)?.length, 1, 'the host never had to join again');
});

// ---- 3. backpressure end to end --------------------------------------------------------------------

const CHUNK = 64 * 1024;

/** Reads a little every 100 ms (pausing its socket in between) and echoes what it read. */
const SLOW_READER = `const net = require('net');
const QUOTA = Number(process.env.QUOTA);
net.createServer((s) => {
  let budget = QUOTA;
  let total = 0;
  let pauses = 0;
  s.on('data', (d) => {
    total += d.length;
    s.write(d);
    budget -= d.length;
    if (budget <= 0 && !s.isPaused()) {
      s.pause();
      pauses++;
    }
  });
  const timer = setInterval(() => {
    budget = QUOTA;
    s.resume();
  }, 100);
  s.on('end', () => {
    clearInterval(timer);
    console.log('slow reader read ' + total + ' bytes, paused ' + pauses + ' times');
    s.end();
  });
  s.on('close', () => clearInterval(timer));
  s.on('error', () => {});
}).listen(7000, () => console.log('slow reader listening'));
`;

/** The block the fast writer repeats (numbered in its first 4 bytes): the same function runs in the test. */
function makeBlock(seed: number): Buffer {
  const b = Buffer.alloc(CHUNK);
  let x = seed >>> 0;
  for (let k = 0; k < b.length; k++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    b[k] = x >>> 24;
  }
  return b;
}

/** Writes TOTAL bytes as fast as its socket takes them; tells a side channel how far it got. */
const FAST_WRITER = `const net = require('net');
const CHUNK = ${CHUNK};
${makeBlock.toString().replace(/: number|: Buffer/g, '')}
const TOTAL = Number(process.env.TOTAL);
const block = makeBlock(Number(process.env.SEED));
const report = net.connect(Number(process.env.REPORT), '127.0.0.1');
report.on('error', () => {});
net.createServer((s) => {
  let i = 0;
  let wrote = 0;
  let falses = 0;
  let drains = 0;
  s.on('error', () => {});
  const say = (more) => report.write(JSON.stringify(Object.assign({ wrote, falses, drains }, more)) + '\\n');
  const tick = setInterval(() => say({}), 50);
  const pump = () => {
    while (wrote < TOTAL) {
      const chunk = Buffer.from(block);
      chunk.writeUInt32BE(i++, 0);
      wrote += chunk.length;
      if (!s.write(chunk)) {
        falses++;
        s.once('drain', () => {
          drains++;
          pump();
        });
        return;
      }
    }
    clearInterval(tick);
    say({ done: true });
    console.log('fast writer wrote ' + wrote + ' bytes; write() said false ' + falses + ' times, drain came ' + drains + ' times');
    s.end();
  };
  pump();
}).listen(7000, () => console.log('fast writer listening'));
`;

test('backpressure end to end: a guest that reads slowly holds back a client that pushes 128 MiB; memory stays bounded; every byte arrives', async (t) => {
  const proxy = await launchProxy(t);
  const host = startHost(t, proxy, 'host-a');
  await host.waitFor(/joined the proxy/);
  const port = await freePort();
  const QUOTA = 2 * MiB; // the guest reads at most about 2 MiB per 100 ms
  const file = writeGuest(tempDir(t), 'slow-reader.js', SLOW_READER);
  const made = await deploy(proxy, file, {
    name: 'slow',
    publish: [{ public: port, guest: 7000, protocol: 'tcp' }],
    env: { QUOTA: String(QUOTA) },
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  assert.equal(await ask(port, 'warm up\n'), 'warm up');
  await sleep(500);

  const TOTAL = 128 * MiB; // far more than any buffer on the way, and than the memory bounds below
  const payload = randomBytes(TOTAL);
  const rss = sampleRss({ proxy: pidOf(proxy.process), host: pidOf(host) });
  const socket = net.connect(port, '127.0.0.1');
  t.after(() => socket.destroy());
  const hash = createHash('sha256');
  let received = 0;
  let handed = 0;
  let falses = 0;
  let blockedMs = 0;
  let maxLead = 0;
  const lead = setInterval(() => {
    maxLead = Math.max(maxLead, handed - socket.writableLength - received);
  }, 20);
  const echoed = new Promise<void>((resolve, reject) => {
    socket.on('data', (d: Buffer) => {
      hash.update(d);
      received += d.length;
      if (received >= TOTAL) resolve();
    });
    socket.on('error', reject);
    socket.on('close', () => (received < TOTAL ? reject(new Error(`closed after ${received} bytes`)) : resolve()));
  });
  const t0 = performance.now();
  await new Promise((r) => socket.once('connect', r));
  for (let off = 0; off < TOTAL; off += CHUNK) {
    if (!socket.write(payload.subarray(off, off + CHUNK))) {
      falses++;
      const w = performance.now();
      await new Promise((r) => socket.once('drain', r));
      blockedMs += performance.now() - w;
    }
    handed += CHUNK;
  }
  const wroteMs = performance.now() - t0;
  // The client does not half-close here (see the half-close test): it waits for the whole echo.
  await within(echoed, 120_000, null);
  clearInterval(lead);
  socket.end();
  const totalMs = performance.now() - t0;
  const growth = rss.stop();
  t.diagnostic(
    `client: wrote ${mib(TOTAL)} in ${Math.round(wroteMs)} ms, write() false ${falses} times, ${Math.round(blockedMs)} ms waiting for drain; ` +
      `all echoed after ${Math.round(totalMs)} ms; most in flight ${mib(maxLead)}; RSS growth proxy ${mib(growth.proxy ?? 0)}, host ${mib(growth.host ?? 0)}`,
  );
  assert.equal(received, TOTAL, 'the guest read (and echoed) every byte');
  assert.equal(hash.digest('hex'), createHash('sha256').update(payload).digest('hex'), 'every byte once, in order');
  // At (2 MiB + one 64 KiB chunk) per 100 ms, 128 MiB take at least 6 s: the client was held back.
  const fastest = (TOTAL / ((QUOTA + CHUNK) * 10)) * 1000;
  assert.ok(
    wroteMs >= fastest * 0.7,
    `the client's writes took ${Math.round(wroteMs)} ms, the guest reads for ${Math.round(fastest)} ms`,
  );
  assert.ok(
    falses > 0 && blockedMs >= wroteMs * 0.5,
    `the client waited for 'drain' ${Math.round(blockedMs)} of ${Math.round(wroteMs)} ms`,
  );
  assert.ok(maxLead < 32 * MiB, `at most ${mib(maxLead)} were between the client and the guest at any time`);
  assert.ok((growth.proxy ?? 0) < 50 * MiB, `proxy RSS grew by ${mib(growth.proxy ?? 0)}`);
  assert.ok((growth.host ?? 0) < 100 * MiB, `host RSS grew by ${mib(growth.host ?? 0)}`);
  const logs = await eventually(async () => {
    const r = await proxy.api<Array<{ text: string }>>('GET', '/api/guests/slow/logs');
    const text = r.body.map((x) => x.text).join('');
    return text.includes(`slow reader read ${TOTAL} bytes`) ? text : undefined;
  }, 'the guest to log what it read');
  assert.match(logs, new RegExp(`slow reader read ${TOTAL} bytes`));
});

test('backpressure end to end: a client that reads slowly holds back a guest that writes 128 MiB; the guest feels it; memory stays bounded', async (t) => {
  const proxy = await launchProxy(t);
  const host = startHost(t, proxy, 'host-a');
  await host.waitFor(/joined the proxy/);

  // The guest tells this side channel how far it got (it connects out through the proxy).
  const progress: Array<{ wrote: number; falses: number; drains: number; done?: boolean }> = [];
  let clientReceived = 0;
  let maxLead = 0;
  let doneAt = 0;
  const channel = net.createServer((s) => {
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      text += d;
      for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n')) {
        const p = JSON.parse(text.slice(0, i)) as (typeof progress)[number];
        text = text.slice(i + 1);
        progress.push(p);
        maxLead = Math.max(maxLead, p.wrote - clientReceived);
        if (p.done) doneAt = performance.now();
      }
    });
    s.on('error', () => {});
  });
  await new Promise<void>((resolve) => channel.listen(0, '127.0.0.1', resolve));
  t.after(() => channel.close());

  const TOTAL = 128 * MiB; // far more than any buffer on the way, and than the memory bounds below
  const SEED = 0x5eed;
  const port = await freePort();
  const file = writeGuest(tempDir(t), 'fast-writer.js', FAST_WRITER);
  const made = await deploy(proxy, file, {
    name: 'fast',
    publish: [{ public: port, guest: 7000, protocol: 'tcp' }],
    env: { TOTAL: String(TOTAL), SEED: String(SEED), REPORT: String((channel.address() as net.AddressInfo).port) },
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const expected = createHash('sha256');
  const block = makeBlock(SEED);
  for (let i = 0; i < TOTAL / CHUNK; i++) {
    block.writeUInt32BE(i, 0);
    expected.update(block);
  }
  await sleep(500);

  const rss = sampleRss({ proxy: pidOf(proxy.process), host: pidOf(host) });
  const QUOTA = 2 * MiB; // this client reads about 2 MiB per 100 ms
  const socket = net.connect(port, '127.0.0.1');
  t.after(() => socket.destroy());
  const hash = createHash('sha256');
  let budget = QUOTA;
  const t0 = performance.now();
  const timer = setInterval(() => {
    budget = QUOTA;
    socket.resume();
  }, 100);
  const done = new Promise<void>((resolve, reject) => {
    socket.on('data', (d: Buffer) => {
      hash.update(d);
      clientReceived += d.length;
      budget -= d.length;
      if (budget <= 0) socket.pause();
    });
    socket.on('end', () => resolve());
    socket.on('error', reject);
  });
  await within(done, 120_000, null);
  clearInterval(timer);
  const readMs = performance.now() - t0;
  const growth = rss.stop();
  await eventually(() => Promise.resolve(doneAt ? true : undefined), 'the guest to say it is done', 5000).catch(
    () => {},
  );
  const last = progress.at(-1);
  t.diagnostic(
    `client read ${mib(clientReceived)} in ${Math.round(readMs)} ms; guest done writing after ${Math.round(doneAt - t0)} ms, ` +
      `write() false ${last?.falses} times, drain ${last?.drains} times; guest ahead of the client by at most ${mib(maxLead)}; ` +
      `RSS growth proxy ${mib(growth.proxy ?? 0)}, host ${mib(growth.host ?? 0)}`,
  );
  assert.equal(clientReceived, TOTAL, 'the client got every byte');
  assert.equal(hash.digest('hex'), expected.digest('hex'), 'every byte once, in order');
  assert.equal(last?.done, true, 'the guest finished writing');
  const slowest = (TOTAL / ((QUOTA + CHUNK) * 10)) * 1000;
  assert.ok(readMs >= slowest * 0.7, `the client read for ${Math.round(readMs)} ms`);
  // The guest was slowed to the reader's pace: it finished writing close to when the client finished reading.
  assert.ok(
    doneAt - t0 >= readMs * 0.6,
    `the guest finished writing after ${Math.round(doneAt - t0)} ms of ${Math.round(readMs)}`,
  );
  assert.ok(
    (last?.falses ?? 0) > 0 && (last?.drains ?? 0) > 0,
    'the guest saw write() return false and waited for drain',
  );
  assert.ok(maxLead < 32 * MiB, `the guest was ahead of the client by at most ${mib(maxLead)}`);
  assert.ok((growth.proxy ?? 0) < 50 * MiB, `proxy RSS grew by ${mib(growth.proxy ?? 0)}`);
  assert.ok((growth.host ?? 0) < 100 * MiB, `host RSS grew by ${mib(growth.host ?? 0)}`);
});

test('half-close: a client that sends everything and shuts down its side still gets the whole echo, then the end', async (t) => {
  const proxy = await launchProxy(t);
  const host = startHost(t, proxy, 'host-a');
  await host.waitFor(/joined the proxy/);
  const port = await freePort();
  const made = await deploy(proxy, join(ROOT, 'examples/echo-server.js'), {
    name: 'echo',
    publish: [{ public: port, guest: 7000, protocol: 'tcp' }],
    env: { PORT: '7000' },
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const payload = randomBytes(1 * MiB);
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  t.after(() => socket.destroy());
  const hash = createHash('sha256');
  let received = 0;
  const outcome = new Promise<string>((resolve) => {
    socket.on('data', (d: Buffer) => {
      hash.update(d);
      received += d.length;
    });
    socket.on('end', () => resolve('end'));
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code ?? err.message}`));
    socket.on('close', () => resolve('close'));
  });
  // Like `nc -N` or a client that signals the end of its request: everything, then FIN.
  socket.end(payload);
  const how = await within(outcome, 20_000, 'nothing within 20 s');
  assert.equal(
    received,
    payload.length,
    `the client got ${received} of ${payload.length} bytes back before the connection ended (${how})`,
  );
  assert.equal(how, 'end', 'the echo ends with a clean end, not an error');
  assert.equal(hash.digest('hex'), createHash('sha256').update(payload).digest('hex'));
});

// ---- 4. proxy restart ------------------------------------------------------------------------------

test('a restart of the proxy (graceful, then a crash) on the same data directory: hosts rejoin, guests keep running, ports and history come back', async (t) => {
  const first = await launchProxy(t, {}, ['--report-interval', '200']);
  const place = first.place;
  const host = startHost(t, first, 'host-a');
  await host.waitFor(/joined the proxy/);
  const port = await freePort();
  await countingEcho(t, first, port);
  assert.equal(await ask(port, 'hi'), 'connection 1');
  const [hostBefore] = (await first.api<HostRow[]>('GET', '/api/hosts')).body;
  assert.equal(hostBefore?.name, 'host-a');

  let proxy = first;
  let connections = 1;
  for (const how of ['SIGTERM', 'SIGKILL'] as const) {
    // Stop the proxy: with SIGTERM it shuts down in order; SIGKILL is a crash.
    if (how === 'SIGTERM') await stop(proxy.process);
    else {
      proxy.process.child.kill('SIGKILL');
      await proxy.process.exited;
    }
    assert.equal(await connectError(port), 'ECONNREFUSED', `no one listens on the public port after ${how}`);
    await sleep(300);
    const downFor = performance.now();
    proxy = await launchProxy(t, place, ['--report-interval', '200']);
    assert.equal(proxy.controlPort, place.controlPort);
    assert.equal(proxy.joinToken, first.joinToken, 'the same join token (stored in the data directory)');

    // The host reconnects by itself (with backoff) and reports the guest it still runs.
    const hosts = await eventually(
      async () => {
        const r = await proxy.api<HostRow[]>('GET', '/api/hosts');
        return r.body[0]?.state === 'up' ? r.body : undefined;
      },
      `host-a to rejoin after ${how}`,
      20_000,
    );
    assert.deepEqual(
      hosts.map((h) => [h.id, h.name]),
      [[hostBefore?.id, 'host-a']],
      'the host history kept host-a (one host, the same id)',
    );
    await eventually(
      async () => {
        const r = await proxy.api<GuestRow[]>('GET', '/api/guests');
        return r.body[0]?.state === 'running' ? true : undefined;
      },
      `the guest to be reported running after ${how}`,
      20_000,
    );
    const reply = await eventually(
      () => ask(port, 'hi').catch(() => undefined),
      `the public port to work after ${how}`,
      20_000,
    );
    connections++;
    t.diagnostic(
      `after ${how}: serving again ${Math.round(performance.now() - downFor)} ms after the new proxy started`,
    );
    assert.equal(reply, `connection ${connections}`, `the same guest kept running through the restart (${how})`);

    // The operator's view through the `roam` command.
    const ps = await runRoam([
      'ps',
      '--json',
      '--api',
      `http://127.0.0.1:${proxy.apiPort}`,
      '--admin-token',
      proxy.adminToken,
    ]);
    assert.equal(ps.code, 0, ps.stderr);
    const listed = JSON.parse(ps.stdout) as GuestRow[];
    assert.deepEqual(
      listed.map((g) => [g.name, g.state, g.hostName]),
      [['counter', 'running', 'host-a']],
    );
    const events = (await proxy.api<EventRow[]>('GET', '/api/events?limit=1000')).body.map((e) => e.kind);
    assert.ok(events.includes('guest.started'), 'the event log survived the restart');
    assert.equal(events.filter((e) => e === 'proxy.started').length, how === 'SIGTERM' ? 2 : 3);
    assert.ok(events.lastIndexOf('guest.found') > events.lastIndexOf('proxy.started'), `events: ${events.join(', ')}`);
  }
  // The host never restarted its guest and never exited.
  assert.equal(host.child.exitCode, null);
  assert.equal((host.output().match(/started guest counter/g) ?? []).length, 1);
});
