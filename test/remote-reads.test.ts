/**
 * src/proxy/remote-reads.ts: a remote socket adopted to read into a shared small buffer or a
 * growing one of its own, over real loopback connections. Every chunk handed on is kept and
 * hashed only at the end, so a chunk overwritten by a later read would show.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import { adoptWithOwnReads } from '../src/common/own-reads.js';
import { RemoteReads } from '../src/proxy/remote-reads.js';

const sha = (parts: readonly Uint8Array[]): string => {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest('hex');
};

/** A server whose accepted sockets are adopted as the proxy adopts them; `onSocket` gets each with its reads. */
async function server(t: TestContext, onSocket: (socket: net.Socket, reads: RemoteReads) => void): Promise<net.Server> {
  const sockets = new Set<net.Socket>();
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    s.close();
  });
  const s = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (accepted) => {
    const reads = new RemoteReads();
    const socket = adoptWithOwnReads(accepted, reads, { allowHalfOpen: true, pauseOnCreate: true });
    assert.ok(socket, 'Node 20 lets an accepted socket be adopted');
    sockets.add(socket);
    onSocket(socket, reads);
  });
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return s;
}

function connect(t: TestContext, s: net.Server): Promise<net.Socket> {
  const { port } = s.address() as net.AddressInfo;
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1', () => resolve(c));
    t.after(() => c.destroy());
    c.once('error', reject);
  });
}

test('bulk and small writes arrive whole and in order, bulk in reads larger than 64 KiB, none overwritten', async (t) => {
  const kept: Buffer[] = [];
  let ended!: () => void;
  const done = new Promise<void>((resolve) => (ended = resolve));
  const s = await server(t, (socket, reads) => {
    reads.deliverTo((chunk) => kept.push(chunk));
    socket.on('end', () => ended());
    socket.resume();
  });
  const c = await connect(t, s);
  const sent: Buffer[] = [];
  const write = (b: Buffer): Promise<void> => {
    sent.push(b);
    return new Promise((resolve) => (c.write(b) ? resolve() : c.once('drain', resolve)));
  };
  // Small messages (the shared buffer), a bulk run (buffers of its own), small again, bulk again.
  for (let i = 0; i < 50; i++) await write(randomBytes(1 + (i % 300)));
  for (let i = 0; i < 64; i++) await write(randomBytes(128 * 1024));
  for (let i = 0; i < 50; i++) {
    await write(randomBytes(1 + i));
    await new Promise((resolve) => setImmediate(resolve));
  }
  for (let i = 0; i < 32; i++) await write(randomBytes(200 * 1024));
  c.end();
  await done;
  assert.equal(sha(kept), sha(sent), 'every byte, in order, and no chunk changed after it was handed on');
  const largest = Math.max(...kept.map((k) => k.length));
  assert.ok(largest > 64 * 1024, `a bulk run reads more than Node's 64 KiB at a time (largest read: ${largest})`);
});

test('an adopted socket reads nothing before resume, and stays half-open after the peer ends', async (t) => {
  const kept: Buffer[] = [];
  let adopted!: (pair: { socket: net.Socket; reads: RemoteReads }) => void;
  const ready = new Promise<{ socket: net.Socket; reads: RemoteReads }>((resolve) => (adopted = resolve));
  const s = await server(t, (socket, reads) => {
    reads.deliverTo((chunk) => kept.push(chunk));
    adopted({ socket, reads });
  });
  const c = await connect(t, s);
  const { socket } = await ready;
  c.write('hello, ');
  c.end('world');
  // Paused on creation: give the bytes time to arrive, and see that none were read.
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(kept.length, 0, 'nothing read before resume');
  const ended = new Promise<void>((resolve) => socket.once('end', resolve));
  socket.resume();
  await ended;
  assert.equal(Buffer.concat(kept).toString(), 'hello, world');
  // Half-open: the peer ended its side; this side can still answer.
  const answer = new Promise<string>((resolve) => {
    let text = '';
    c.setEncoding('utf8').on('data', (d: string) => (text += d));
    c.on('end', () => resolve(text));
  });
  socket.end('answered after the peer ended');
  assert.equal(await answer, 'answered after the peer ended');
});

test('what is read before there is a receiver is kept for it, in order', async (t) => {
  let adopted!: (pair: { socket: net.Socket; reads: RemoteReads }) => void;
  const ready = new Promise<{ socket: net.Socket; reads: RemoteReads }>((resolve) => (adopted = resolve));
  const s = await server(t, (socket, reads) => adopted({ socket, reads }));
  const c = await connect(t, s);
  const { socket, reads } = await ready;
  const sent = [randomBytes(100), randomBytes(40 * 1024), randomBytes(7)];
  for (const part of sent) c.write(part);
  c.end();
  const ended = new Promise<void>((resolve) => socket.once('end', resolve));
  socket.resume();
  await ended;
  const kept: Buffer[] = [];
  reads.deliverTo((chunk) => kept.push(chunk));
  assert.equal(sha(kept), sha(sent));
});
