/**
 * Joins a remote peer's TCP socket and a link stream, both ways, with backpressure end to end:
 * `pipe` pauses the side that writes into a full one (a link stream is full when its window is),
 * a half-close travels as FIN, an error or reset as RST. Counts the bytes each way.
 */
import type net from 'node:net';
import type { LinkStream } from '../link/stream.js';

export interface RelayStats {
  /** Remote peer to guest. */
  bytesIn: number;
  /** Guest to remote peer. */
  bytesOut: number;
}

export function relay(remote: net.Socket, link: LinkStream, onClose: (stats: RelayStats) => void): RelayStats {
  const stats: RelayStats = { bytesIn: 0, bytesOut: 0 };
  let closed = false;
  const finish = (): void => {
    if (closed) return;
    closed = true;
    onClose(stats);
  };
  remote.on('data', (chunk: Buffer) => (stats.bytesIn += chunk.length));
  link.on('data', (chunk: Buffer) => (stats.bytesOut += chunk.length));
  remote.pipe(link);
  link.pipe(remote);
  remote.on('error', (err) => link.destroy(err));
  link.on('error', () => remote.resetAndDestroy());
  // Both directions ended (or one side died): the stream is over.
  remote.on('close', () => {
    if (!link.destroyed && !(link.writableFinished && link.readableEnded)) {
      // The remote went away without a clean close of both halves: abort the guest's side too.
      if (!link.writableEnded) link.destroy();
    }
    finish();
  });
  link.on('close', () => {
    if (!remote.destroyed) remote.destroySoon();
    finish();
  });
  return stats;
}
