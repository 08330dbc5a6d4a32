/** For tests of link streams: what an OPEN says, and hashes that check every byte a stream carried. */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { StreamOpenInfo } from '../../src/wire/index.js';

/** An inbound TCP stream's OPEN. */
export const INFO: StreamOpenInfo = {
  guest: 'guest-1',
  protocol: 'tcp',
  direction: 'inbound',
  port: 80,
  remote: { address: '127.0.0.1', port: 5555, family: 'IPv4' },
};

/** The SHA-256 of `bytes`, in hex. */
export function sha(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Reads a stream to its end, returning the SHA-256 of everything and the byte count. */
export function digestOf(stream: Readable): Promise<{ hash: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    stream.on('data', (d: Buffer) => {
      hash.update(d);
      bytes += d.length;
    });
    stream.on('end', () => resolve({ hash: hash.digest('hex'), bytes }));
    stream.on('error', reject);
  });
}
