/**
 * A peer connection (one move, or several one after another: peer-pool.ts), as messages: `send`
 * respects the socket's backpressure, `next` waits for the next message with a deadline. Owns the
 * socket; `close()` ends it.
 */
import { Buffer } from 'node:buffer';
import type net from 'node:net';
import { adoptWithOwnReads } from '../common/own-reads.js';
import { RoamError } from '../errors.js';
import { PeerDecoder, encodePeer, type PeerHeader, type PeerMessage, type SinkChooser } from './peer-wire.js';

/** What a target's peer socket reads into: larger than Node's 64 KiB, as a move is one bulk transfer. */
const READ_BUFFER_BYTES = 256 * 1024;

export class PeerChannel {
  private readonly decoder = new PeerDecoder();
  private readonly inbox: PeerMessage[] = [];
  private waiter: { resolve: (m: PeerMessage) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  /** Bytes written to the socket, headers included. */
  bytesSent = 0;
  /** Settles once the last message sent has gone to the kernel (or the socket failed). */
  private inFlight: Promise<void> | undefined;
  /** Resolves when the channel fails: a send waiting for a write that will never complete stops waiting. */
  private readonly failed: Promise<void>;
  private onFailure: () => void = () => {};

  /** `ownReads`: the socket reads through `onread` into one buffer, handing each read to `onBytes`. */
  private constructor(
    readonly socket: net.Socket,
    ownReads = false,
  ) {
    this.failed = new Promise((resolve) => (this.onFailure = resolve));
    socket.setNoDelay(true);
    if (!ownReads) socket.on('data', (chunk: Buffer) => this.onBytes(chunk));
    socket.on('error', (err) =>
      this.fail(new RoamError('ROAM_ERR_MIGRATION', `the peer connection failed: ${err.message}`)),
    );
    socket.on('close', () => this.fail(new RoamError('ROAM_ERR_MIGRATION', 'the peer connection closed')));
  }

  /** A channel on a connection this side made (the source's: it reads little, acks and answers). */
  static connected(socket: net.Socket): PeerChannel {
    return new PeerChannel(socket);
  }

  /**
   * A channel on a connection the peer port accepted (a target's: it reads the whole guest). Its
   * socket reads into one buffer, reused (src/common/own-reads.ts): the decoder copies every byte
   * out (pages into the landing's memory), so no read needs a buffer of its own. (Reading plain
   * pages straight into that memory instead was no faster: BENCHMARKS.md, migration, sessions 8-9.)
   * Use `channel.socket`, not `accepted`, from then on.
   */
  static accept(accepted: net.Socket): PeerChannel {
    const buffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
    const bound: { channel?: PeerChannel } = {};
    const socket = adoptWithOwnReads(accepted, {
      buffer: () => buffer,
      callback: (bytes, into) => {
        bound.channel?.onBytes(into.subarray(0, bytes));
        return true;
      },
    });
    bound.channel = socket ? new PeerChannel(socket, true) : new PeerChannel(accepted);
    return bound.channel;
  }

  private onBytes(chunk: Uint8Array): void {
    if (this.failure) return;
    let messages: PeerMessage[];
    try {
      messages = this.decoder.push(chunk);
    } catch (err) {
      this.fail(err as Error);
      this.socket.destroy();
      return;
    }
    for (const m of messages) {
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w.resolve(m);
      } else this.inbox.push(m);
    }
  }

  get closed(): boolean {
    return this.failure !== undefined;
  }

  /** Open, with nothing received that no one has taken and no one waiting: a move may start on it. */
  get idle(): boolean {
    return this.failure === undefined && this.inbox.length === 0 && this.waiter === undefined;
  }

  /**
   * Sends a message (its body one buffer or parts that follow each other); resolves once the
   * message before it has gone to the kernel, so at most two are queued: the next one is made
   * while this one is still being sent, and a sender never outruns the socket. (Waiting for the
   * socket to drain instead left the link idle while each next message was made.) `hash`: the
   * body's, computed on the way (see `encodePeer`); `damage`: fault injection, one byte flipped.
   */
  async send(
    header: PeerHeader,
    body?: Uint8Array | readonly Uint8Array[],
    { hash, damage = false }: { hash?: bigint; damage?: boolean } = {},
  ): Promise<void> {
    if (this.failure) throw this.failure;
    const parts = encodePeer(header, body, hash);
    const last = parts.length - 1;
    const target = parts[last];
    if (damage && last >= 2 && target && target.length > 0) {
      // Fault injection: the hash was computed over the good bytes; flip one after it.
      const copy = Buffer.from(target);
      copy[copy.length >> 1] = (copy[copy.length >> 1] ?? 0) ^ 0xff;
      parts[last] = copy;
    }
    // Corked, the parts go to the kernel in one writev instead of one write each.
    const sent = new Promise<void>((resolve) => {
      this.socket.cork();
      parts.forEach((part, i) => {
        this.bytesSent += part.length;
        // (Writes complete in order; if the socket fails first, `failed` ends the wait.)
        if (i === last) this.socket.write(part, () => resolve());
        else if (part.length > 0) this.socket.write(part);
      });
      this.socket.uncork();
    });
    const before = this.inFlight;
    this.inFlight = sent;
    if (before) await Promise.race([before, this.failed]);
    // (Read again: it may have been set while this waited.)
    const failure = this.failure as Error | undefined;
    if (failure) throw failure;
  }

  /**
   * Resolves once the socket has handed everything written so far to the kernel: after that, the
   * buffers given to `send` may change (the source sends views of its page shadow, not copies).
   */
  flushed(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.socket.writableLength === 0) return Promise.resolve();
    // Writes complete in order: an empty write's callback comes after every earlier one's.
    return new Promise((resolve, reject) =>
      this.socket.write(new Uint8Array(0), (err) => (err ? reject(this.failure ?? err) : resolve())),
    );
  }

  /**
   * From now on, bodies `sinkFor` takes go to their sink as they arrive (see `PeerDecoder`);
   * `undefined` ends that (the move it wrote for is over).
   */
  streamBodies(sinkFor: SinkChooser | undefined): void {
    this.decoder.sinkFor = sinkFor;
  }

  /** The next message, or an error if none comes within `timeoutMs` or the connection fails. */
  next(timeoutMs: number, what: string): Promise<PeerMessage> {
    const queued = this.inbox.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new RoamError('ROAM_ERR_TIMEOUT', `no ${what} from the peer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  close(): void {
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.onFailure();
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(err);
  }
}
