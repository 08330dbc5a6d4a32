/**
 * How the proxy reads a remote peer's socket (src/common/own-reads.ts): into a buffer that grows
 * while reads keep filling it, instead of Node's new 64 KiB buffer per read. A bulk upload then
 * arrives in reads of up to 256 KiB, a quarter of the reads, frames and writes to the link.
 *
 * Every socket starts on one small buffer that all of them share: what a read put there is copied
 * out before the callback returns (reads run one at a time), so an idle or chatty connection holds
 * no buffer of its own. A read that fills it moves the socket to a buffer of its own, handed on
 * without a copy whenever a read fills at least half of it (the next read then goes to a new one,
 * twice as large after a full read, up to the largest); a small read sends it back to the shared one.
 */
import type { OwnReads } from '../common/own-reads.js';

/** The shared buffer: reads up to this size are copied out (into Node's pooled small buffers below 4 KiB). */
const SHARED_BYTES = 16 * 1024;
const FIRST_OWN_BYTES = 64 * 1024;
const LARGEST_OWN_BYTES = 256 * 1024;

let shared: Buffer | undefined;

export class RemoteReads implements OwnReads {
  private own: Buffer | undefined;
  /** Takes each chunk read; it is the receiver's to keep (never overwritten). */
  private receiver: ((chunk: Buffer) => void) | undefined;
  /** Read before there was a receiver (the socket is made paused, so normally nothing). */
  private early: Buffer[] = [];

  /** From now on, what is read goes to `receiver` (what came before it first). */
  deliverTo(receiver: (chunk: Buffer) => void): void {
    this.receiver = receiver;
    for (const chunk of this.early.splice(0)) receiver(chunk);
  }

  private deliver(chunk: Buffer): void {
    if (this.receiver) this.receiver(chunk);
    else this.early.push(chunk);
  }

  readonly buffer = (): Uint8Array => this.own ?? (shared ??= Buffer.allocUnsafeSlow(SHARED_BYTES));

  readonly callback = (bytes: number, into: Uint8Array): boolean => {
    const view = Buffer.from(into.buffer, into.byteOffset, bytes);
    if (into !== this.own) {
      // The shared buffer: copy out; a full one says more is coming.
      this.deliver(Buffer.from(view));
      if (bytes === into.length) this.own = Buffer.allocUnsafeSlow(FIRST_OWN_BYTES);
    } else if (bytes * 2 >= into.length) {
      // Handed on as it is; the next read goes to a new buffer.
      const next = bytes === into.length ? Math.min(into.length * 2, LARGEST_OWN_BYTES) : into.length;
      this.own = Buffer.allocUnsafeSlow(next);
      this.deliver(view);
    } else {
      this.deliver(Buffer.from(view));
      if (bytes <= SHARED_BYTES) this.own = undefined;
    }
    return true; // (backpressure pauses the socket itself: `socket.pause()`)
  };
}
