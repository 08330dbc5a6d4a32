/**
 * A stream's first bytes go right behind its OPEN, before the peer answers (src/link/session.ts,
 * `openStream`), over real loopback TCP: the acceptor keeps what came early until it decides, the
 * opener never sends more than EARLY_WINDOW unanswered, and a refused stream keeps every byte to be
 * opened again on another link, as the proxy does when a guest was frozen for a move.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import { INFO, digestOf, sha } from './helpers/link-streams.js';
import { LinkSession } from '../src/link/session.js';
import { EARLY_WINDOW } from '../src/link/stream.js';
import { FrameDecoder, type OpenFrame } from '../src/wire/index.js';

/** An acceptor that answers each OPEN only when the test says, and counts what it received. */
interface Acceptor {
  port: number;
  /** The OPENs not answered yet, in order. */
  opens: Array<{ frame: OpenFrame; session: LinkSession }>;
  /** Resolves with the next OPEN. */
  nextOpen(): Promise<{ frame: OpenFrame; session: LinkSession }>;
  /** Every byte received on the link so far. */
  received(): Buffer;
  /** Resolves once the bytes received include `needle` (or at least `bytes` bytes arrived). */
  until(check: (received: Buffer) => boolean): Promise<void>;
}

async function acceptor(t: TestContext): Promise<Acceptor> {
  const opens: Acceptor['opens'] = [];
  const chunks: Buffer[] = [];
  let waiters: Array<() => void> = [];
  let openWaiter: ((o: { frame: OpenFrame; session: LinkSession }) => void) | undefined;
  const sessions: LinkSession[] = [];
  const srv = net.createServer((socket) => {
    // Counted before the session reads them: what crossed the link, whatever the session made of it.
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      for (const wake of waiters) wake();
    });
    const session: LinkSession = new LinkSession(socket, {
      onFrame: () => {},
      onOpen: (frame) => {
        const open = { frame, session };
        if (openWaiter) openWaiter(open);
        else opens.push(open);
        openWaiter = undefined;
      },
    });
    sessions.push(session);
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of sessions) s.destroy();
    srv.close();
  });
  const received = (): Buffer => Buffer.concat(chunks);
  return {
    port: (srv.address() as net.AddressInfo).port,
    opens,
    nextOpen: () => {
      const first = opens.shift();
      return first ? Promise.resolve(first) : new Promise((resolve) => (openWaiter = resolve));
    },
    received,
    until: async (check) => {
      while (!check(received())) {
        await new Promise<void>((resolve) => waiters.push(resolve));
        waiters = [];
      }
    },
  };
}

async function opener(t: TestContext, port: number): Promise<LinkSession & { framesIn: string[] }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  // The types of the frames the far side sent, decoded on their own beside the session.
  const framesIn: string[] = [];
  const decoder = new FrameDecoder();
  socket.on('data', (chunk: Buffer) => framesIn.push(...decoder.push(chunk).map((f) => f.type)));
  const session = new LinkSession(socket, { onFrame: () => {} });
  t.after(() => session.destroy());
  return Object.assign(session, { framesIn });
}

test('the first bytes and the end cross the link before the answer, and the acceptor gets them all', async (t) => {
  const far = await acceptor(t);
  const session = await opener(t, far.port);
  const stream = session.newStream(1);
  const opened = session.openStream(stream, INFO);
  stream.end('hello, early');

  const { frame, session: farSession } = await far.nextOpen();
  // The payload is on the far side while its OPEN is still unanswered.
  await far.until((bytes) => bytes.includes('hello, early'));
  const accepted = farSession.accept(frame);
  const got = digestOf(accepted);
  await opened;
  assert.deepEqual(await got, { hash: sha(Buffer.from('hello, early')), bytes: 12 });
});

test('an unanswered stream sends at most EARLY_WINDOW, then the rest once it is accepted', async (t) => {
  const far = await acceptor(t);
  const session = await opener(t, far.port);
  const payload = randomBytes(4 * EARLY_WINDOW);
  const stream = session.newStream(1);
  const opened = session.openStream(stream, INFO);
  stream.end(payload);

  const { frame, session: farSession } = await far.nextOpen();
  await far.until((bytes) => bytes.length >= EARLY_WINDOW);
  // A round trip later, anything sent beyond the window would have arrived too.
  await session.ping();
  const before = far.received().length;
  assert.ok(before >= EARLY_WINDOW, `only ${before} bytes came early`);
  assert.ok(before < EARLY_WINDOW + 4096, `${before} bytes came before the answer, more than the early window`);

  const accepted = farSession.accept(frame);
  const got = digestOf(accepted);
  await opened;
  assert.deepEqual(await got, { hash: sha(payload), bytes: payload.length });
});

test('a refused stream keeps every byte and sends it all again when opened on another link', async (t) => {
  const first = await acceptor(t);
  const second = await acceptor(t);
  const a = await opener(t, first.port);
  const b = await opener(t, second.port);
  const head = randomBytes(1000);
  const tail = randomBytes(300_000);

  const stream = a.newStream(7);
  const refused = a.openStream(stream, INFO);
  stream.write(head);
  const open = await first.nextOpen();
  await first.until((bytes) => bytes.includes(head));
  open.session.reject(open.frame, 'ROAM_ERR_MOVING', 'the guest is moving to another host');
  await assert.rejects(refused, { code: 'ROAM_ERR_MOVING' });
  // The refusing side dropped what came early without a reset: a round trip later the stream is whole.
  await a.ping();
  assert.equal(stream.destroyed, false);

  const reopened = b.openStream(stream, INFO);
  stream.end(tail);
  const again = await second.nextOpen();
  const got = digestOf(again.session.accept(again.frame));
  await reopened;
  assert.deepEqual(await got, { hash: sha(Buffer.concat([head, tail])), bytes: head.length + tail.length });
});

test('a stream refused and opened again at once on the same link is not reset by what it sent before', async (t) => {
  const far = await acceptor(t);
  const session = await opener(t, far.port);
  const head = randomBytes(1000);
  const more = randomBytes(2000);
  const tail = randomBytes(3000);

  const stream = session.newStream(9);
  const refused = session.openStream(stream, INFO);
  stream.write(head);
  const first = await far.nextOpen();
  await far.until((bytes) => bytes.includes(head));
  first.session.reject(first.frame, 'ROAM_ERR_MOVING', 'the guest is moving to another host');
  // Sent before the refusal arrives: the far side reads it after refusing (and must not reset).
  stream.write(more);
  await assert.rejects(refused, { code: 'ROAM_ERR_MOVING' });
  const reopened = session.openStream(stream, INFO);
  const second = await far.nextOpen();
  const got = digestOf(second.session.accept(second.frame));
  await reopened;
  stream.end(tail);
  assert.deepEqual(await got, {
    hash: sha(Buffer.concat([head, more, tail])),
    bytes: head.length + more.length + tail.length,
  });
  // Had the far side answered the bytes it dropped with a reset, that reset could have come after
  // the second OPEN and ended the stream it opened.
  assert.equal(session.framesIn.includes('rst'), false, `the far side sent ${session.framesIn.join(', ')}`);
});

test('a stream the opener resets before the answer is reset when accepted', async (t) => {
  const far = await acceptor(t);
  const session = await opener(t, far.port);
  const stream = session.newStream(3);
  void session.openStream(stream, INFO).catch(() => {});
  stream.write('doomed');
  stream.destroy();
  const { frame, session: farSession } = await far.nextOpen();
  // OPEN, DATA and RST: all three have arrived once 'doomed' has and a ping came back.
  await far.until((bytes) => bytes.includes('doomed'));
  await session.ping();
  const accepted = farSession.accept(frame);
  const error = await new Promise<Error>((resolve) => accepted.once('error', resolve));
  assert.equal((error as Error & { code?: string }).code, 'ROAM_STREAM_ABORTED');
});

test('what unanswered streams sent early is bounded per link: the streams beyond 16 MiB are reset', async (t) => {
  const far = await acceptor(t);
  const session = await opener(t, far.port);
  const streams = Array.from({ length: 300 }, (_, i) => session.newStream(2 * i + 1));
  const resets: string[] = [];
  for (const stream of streams) {
    void session.openStream(stream, INFO).catch(() => {});
    stream.on('error', (err: Error & { code?: string }) => resets.push(err.code ?? err.message));
    stream.write(Buffer.alloc(EARLY_WINDOW, 1));
  }
  // Once every early byte has arrived, the resets were sent before the answer to a ping.
  await far.until((bytes) => bytes.length >= 300 * EARLY_WINDOW);
  await session.ping();
  // 16 MiB hold 256 streams' 64 KiB each; the other 44 were reset, none of the first 256.
  assert.deepEqual(resets, Array<string>(44).fill('ROAM_STREAM_WINDOW'));
  assert.equal(
    streams.slice(0, 256).some((s) => s.destroyed),
    false,
  );
});
