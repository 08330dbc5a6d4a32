/**
 * src/common/own-reads.ts: an accepted socket handed to a new socket that reads into the caller's
 * buffer, over real loopback connections.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { test } from 'node:test';
import { adoptWithOwnReads } from '../src/common/own-reads.js';

const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

test('an adopted socket reads every byte into the given buffer, answers, and leaves its server free to close', async () => {
  const payload = randomBytes(6 * 1024 * 1024);
  const buffer = Buffer.alloc(64 * 1024);
  const hash = createHash('sha256');
  let reads = 0;
  let intoOther = 0;
  let adopted: net.Socket | undefined;
  const server = net.createServer((accepted) => {
    adopted = adoptWithOwnReads(accepted, {
      buffer: () => buffer,
      callback: (bytes, into) => {
        if (into !== buffer) intoOther++;
        hash.update(into.subarray(0, bytes));
        reads++;
        return true;
      },
    });
    assert.ok(adopted, 'Node 20 lets the handle be adopted');
    assert.ok(accepted.destroyed, 'the shell is destroyed');
    adopted.on('end', () => adopted?.end(`${reads > 0 ? hash.digest('hex') : 'none'}`));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const client = net.connect(port, '127.0.0.1');
  let reply = '';
  client.setEncoding('utf8').on('data', (text: string) => (reply += text));
  client.end(payload);
  await new Promise<void>((resolve) => client.on('close', () => resolve()));
  assert.equal(reply, sha(payload), 'every byte arrived once, in order');
  assert.equal(intoOther, 0);
  assert.ok(reads >= payload.length / buffer.length, `${reads} reads`);
  // The shell no longer counts as the server's connection: close() calls back.
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  assert.ok(adopted?.destroyed || adopted?.closed);
});

test('a socket that cannot be adopted is left as it is', () => {
  const unconnected = new net.Socket();
  assert.equal(adoptWithOwnReads(unconnected, { buffer: () => Buffer.alloc(16), callback: () => true }), undefined);
  assert.equal(unconnected.destroyed, false);
  unconnected.destroy();
});
