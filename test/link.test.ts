/**
 * The link between Proxy and controller, over real loopback TCP: streams carry bytes both ways in
 * order, a slow reader slows only its own stream with bounded buffers, and a stream survives its
 * connection: re-attached on a new one from its offsets, every byte arrives once, in order.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import { INFO, digestOf, sha } from './helpers/link-streams.js';
import { LinkSession, type SessionHandler } from '../src/link/session.js';
import type { LinkStream } from '../src/link/stream.js';
import type { AttachFrame, OpenFrame } from '../src/wire/index.js';

interface ServerSide {
  port: number;
  streams: LinkStream[];
  /** Resolves with each stream the peer opens. */
  nextStream(): Promise<LinkStream>;
  sessions: LinkSession[];
  /** Per session: whether it reads through its own buffer (`LinkSession.accept` adopted the socket). */
  ownReads: boolean[];
  /** Streams kept across sessions, by id (as the proxy keeps them for a host that reconnects). */
  kept: Map<number, LinkStream>;
}

async function server(t: TestContext, onStream: (s: LinkStream) => void = () => {}): Promise<ServerSide> {
  const streams: LinkStream[] = [];
  const kept = new Map<number, LinkStream>();
  const sessions: LinkSession[] = [];
  const ownReads: boolean[] = [];
  let waiter: ((s: LinkStream) => void) | undefined;
  // Accepted as the proxy accepts its hosts (own reads); the client side reads through 'data'.
  const srv = net.createServer((accepted) => {
    const handler: SessionHandler = {
      onFrame: () => {},
      onOpen: (frame: OpenFrame) => {
        const stream = session.accept(frame);
        streams.push(stream);
        kept.set(stream.id, stream);
        onStream(stream);
        waiter?.(stream);
      },
      onAttach: (frame: AttachFrame) => {
        const stream = kept.get(frame.streamId);
        if (stream) session.resume(stream, frame);
        else session.sendRst(frame.streamId, 'ROAM_STREAM_UNKNOWN', 'unknown');
      },
    };
    const { socket, session } = LinkSession.accept(accepted, handler);
    ownReads.push(socket !== accepted);
    sessions.push(session);
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of sessions) s.destroy();
    srv.close();
  });
  return {
    port: (srv.address() as net.AddressInfo).port,
    streams,
    sessions,
    ownReads,
    kept,
    nextStream: () => new Promise((resolve) => (waiter = resolve)),
  };
}

async function client(t: TestContext, port: number): Promise<{ session: LinkSession; socket: net.Socket }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const session = new LinkSession(socket, { onFrame: () => {} });
  t.after(() => session.destroy());
  return { session, socket };
}

test('a stream carries bytes both ways, in order, and half-closes', async (t) => {
  const srv = await server(t, (s) => s.pipe(s)); // echo
  const { session } = await client(t, srv.port);
  const stream = await session.open(1, INFO);
  const payload = randomBytes(8 * 1024 * 1024);
  const echoed = digestOf(stream);
  stream.end(payload);
  const got = await echoed;
  assert.equal(got.bytes, payload.length);
  assert.equal(got.hash, sha(payload));
  assert.equal(stream.unackedBytes, 0, 'everything acknowledged');
  assert.deepEqual(srv.ownReads, [true], 'the accepted side read through its own buffer');
});

test('the ping measures a round trip', async (t) => {
  const srv = await server(t);
  const { session } = await client(t, srv.port);
  const rtt = await session.ping();
  assert.ok(rtt >= 0 && Number.isFinite(rtt), `rtt ${rtt}`);
});

test('a slow reader holds back only its own stream, with bounded buffers', async (t) => {
  const srv = await server(t);
  const { session } = await client(t, srv.port);
  const slow = await session.open(1, INFO);
  const slowRemote = srv.streams[0];
  assert.ok(slowRemote);
  slowRemote.pause(); // the slow reader

  // Write far more than any buffer limit into the slow stream: the writer must be told to wait.
  const chunk = randomBytes(64 * 1024);
  let refused = false;
  for (let i = 0; i < 64 && !refused; i++) refused = !slow.write(chunk);
  assert.ok(refused, 'write() returned false under backpressure');

  // Meanwhile a second stream moves 4 MiB to a reader that keeps up.
  const fastRemote = srv.nextStream();
  const fast = await session.open(3, INFO);
  const payload = randomBytes(4 * 1024 * 1024);
  const received = digestOf(await fastRemote);
  fast.end(payload);
  assert.equal((await received).hash, sha(payload), 'the fast stream was not stalled');

  // The slow stream's bytes in flight never exceed its window on either side.
  assert.ok(slow.unackedBytes <= slow.window + chunk.length, `sender holds ${slow.unackedBytes}`);
  assert.ok(slowRemote.readableLength <= slowRemote.window, `receiver holds ${slowRemote.readableLength}`);

  // When the reader catches up, everything arrives.
  let got = 0;
  slowRemote.on('data', (d: Buffer) => (got += d.length));
  const drained = new Promise<void>((resolve) => slow.once('drain', resolve));
  slowRemote.resume();
  await drained;
  assert.ok(got > 0);
});

test('a stream survives its connection: re-attached from its offsets, no byte lost or repeated', async (t) => {
  const srv = await server(t);
  const first = await client(t, srv.port);
  const stream = await first.session.open(7, INFO);
  const remote = srv.streams[0];
  assert.ok(remote);
  const payload = randomBytes(6 * 1024 * 1024);
  const received = digestOf(remote);

  // Write a first part, cut the connection in the middle of the transfer, write the rest.
  const cut = 2 * 1024 * 1024 + 12345;
  let progressed = 0;
  const midway = new Promise<void>((resolve) =>
    remote.on('data', (d: Buffer) => {
      progressed += d.length;
      if (progressed > 1024 * 1024) resolve();
    }),
  );
  stream.write(payload.subarray(0, cut));
  await midway;
  const gone = new Promise<void>((resolve) => first.socket.once('close', () => resolve()));
  first.socket.destroy();
  await gone;
  stream.write(payload.subarray(cut, cut + 1024 * 1024)); // written while no connection exists
  assert.equal(stream.attached, false, 'the stream is detached, not destroyed');

  // A new connection; the client re-attaches the stream and goes on.
  const second = await client(t, srv.port);
  second.session.attach(stream);
  stream.end(payload.subarray(cut + 1024 * 1024));
  const got = await received;
  assert.equal(got.bytes, payload.length, 'every byte arrived once');
  assert.equal(got.hash, sha(payload), 'in order');
});

test('garbage on the link closes that connection with a reason; the server goes on', async (t) => {
  const srv = await server(t, (s) => s.pipe(s));
  const raw = net.connect(srv.port, '127.0.0.1');
  const reply: Buffer[] = [];
  raw.on('data', (d: Buffer) => reply.push(d));
  const closed = new Promise<void>((resolve) => raw.on('close', () => resolve()));
  raw.on('error', () => {});
  raw.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await closed;
  assert.match(Buffer.concat(reply).toString('latin1'), /WIRE_BAD_MAGIC/, 'a GOAWAY says why');

  const { session } = await client(t, srv.port);
  const stream = await session.open(1, INFO);
  const echoed = digestOf(stream);
  stream.end('still serving');
  assert.equal((await echoed).bytes, 'still serving'.length);
});

test('any number of dropped connections: both directions re-attach every time, nothing lost', async (t) => {
  const srv = await server(t, (s) => s.pipe(s)); // echo
  let conn = await client(t, srv.port);
  const stream = await conn.session.open(9, INFO);
  const payload = randomBytes(8 * 1024 * 1024);
  const echoed = digestOf(stream);
  let received = 0;
  let cuts = 0;
  let cutting = false;
  stream.on('data', (d: Buffer) => {
    received += d.length;
    // Every 512 KiB echoed, drop the connection and make a new one.
    if (cutting || received < (cuts + 1) * 512 * 1024 || cuts >= 10) return;
    cutting = true;
    cuts++;
    const old = conn;
    old.socket.once('close', () => {
      void client(t, srv.port).then((next) => {
        conn = next;
        next.session.attach(stream);
        cutting = false;
      });
    });
    old.socket.destroy();
  });
  stream.end(payload);
  const got = await echoed;
  assert.equal(cuts, 10, 'the connection really dropped ten times');
  assert.equal(got.bytes, payload.length);
  assert.equal(got.hash, sha(payload), 'both directions intact');
});

test(
  'a session that makes its own connection reads into one buffer: bytes held by a paused reader stay intact',
  { timeout: 60_000 },
  async (t) => {
    // Reads of every size: small ones (payloads copied out of the reused read buffer), middling and
    // large ones (handed out as views). The reader is paused meanwhile, so every payload is still
    // held when later reads arrive: a view of a reused buffer would show their bytes instead.
    const sizes: number[] = [];
    let total = 0;
    for (let i = 0; total < 3 * 1024 * 1024; i++) {
      const size =
        i % 7 === 0
          ? 40_000 + ((i * 7919) % 150_000)
          : i % 5 === 0
            ? 5_000 + ((i * 104_729) % 25_000)
            : 1 + ((i * 31) % 3000);
      sizes.push(size);
      total += size;
    }
    const payload = randomBytes(total);
    const srv = await server(t, (stream) => {
      // One write per turn, so that the client's reads come in many sizes.
      let at = 0;
      let i = 0;
      const next = (): void => {
        const size = sizes[i++];
        if (size === undefined) {
          stream.end();
          return;
        }
        stream.write(payload.subarray(at, at + size));
        at += size;
        setImmediate(next);
      };
      next();
    });
    const { session } = LinkSession.connect({ host: '127.0.0.1', port: srv.port }, { onFrame: () => {} });
    t.after(() => session.destroy());
    const stream = await session.open(1, INFO);
    stream.end();
    stream.pause();
    // Let the reads pile up behind the paused reader (up to the sender's first window, as nothing
    // is acknowledged meanwhile), then read everything.
    await new Promise<void>((resolve) => {
      const poll = (): void => {
        if (stream.readableLength >= 128 * 1024) resolve();
        else setTimeout(poll, 10);
      };
      poll();
    });
    const digest = digestOf(stream);
    stream.resume(); // (paused by hand: a new 'data' listener does not resume it)
    const got = await digest;
    assert.equal(got.bytes, total);
    assert.equal(got.hash, sha(payload));
  },
);
