/**
 * One byte stream of a link (a remote connection carried between the Proxy and a controller).
 * Each direction counts bytes. The sender keeps every byte the receiver has not acknowledged as
 * consumed, and sends at most `window` bytes beyond the last acknowledgement: the acknowledgement
 * is both the flow-control credit (a slow reader slows only its own stream) and the point up to
 * which the sender may forget. A stream outlives the connection that carries it: when the link
 * drops it is detached, keeps its buffers, and re-attaches to a new connection from its offsets.
 */
import { Duplex } from 'node:stream';

export const DEFAULT_WINDOW = 256 * 1024;
/** Largest DATA frame payload a stream sends. */
export const MAX_CHUNK = 64 * 1024;

/** What a stream needs from the connection that carries it. */
export interface StreamCarrier {
  sendData(streamId: number, chunk: Uint8Array): void;
  sendAck(streamId: number, offset: number): void;
  sendFin(streamId: number, offset: number): void;
  sendRst(streamId: number, code: string, message: string): void;
  /** False while the connection's own send buffer is full; the carrier calls `flush()` later. */
  writable(): boolean;
}

export interface StreamOffsets {
  /** Bytes of the peer's direction received (and kept) by this side. */
  received: number;
  /** Bytes this side has produced into its direction. */
  sent: number;
}

/**
 * A stream's state as a checkpoint image carries it across a move: offsets, and the bytes this
 * side produced that the peer has not acknowledged (the peer resends what this side had received
 * but not consumed, so nothing of the other direction travels).
 */
export interface StreamSnapshot {
  id: number;
  /** Bytes of the peer's direction the reader consumed. */
  received: number;
  /** Bytes this side produced. */
  sent: number;
  /** Bytes of this side's direction the peer acknowledged. */
  acked: number;
  /** This side's bytes in [acked, sent). */
  unacked: Uint8Array;
  /** This side ended its direction (the FIN goes out after the last byte). */
  ended: boolean;
}

export class StreamResetError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class LinkStream extends Duplex {
  readonly id: number;
  readonly window: number;
  private carrier: StreamCarrier | undefined;

  // Outgoing: bytes in [acked, written) are kept; [acked, flushed) have been handed to a carrier.
  private readonly pending: Buffer[] = [];
  private pendingStart = 0; // offset of pending[0][0]
  private written = 0;
  private flushed = 0;
  private acked = 0;
  private heldWrite: (() => void) | undefined;
  private finalOffset: number | undefined;
  private finSent = false;
  private heldFinal: ((err?: Error | null) => void) | undefined;

  // Incoming: `received` bytes arrived, of which `received - readableLength` were consumed.
  private received = 0;
  private ackedToPeer = 0;
  private peerFinal: number | undefined;
  private resetByPeer = false;

  constructor(id: number, options: { window?: number; carrier?: StreamCarrier } = {}) {
    super({ allowHalfOpen: true, readableHighWaterMark: options.window ?? DEFAULT_WINDOW });
    this.id = id;
    this.window = options.window ?? DEFAULT_WINDOW;
    this.carrier = options.carrier;
  }

  /** A stream carried on from a snapshot taken on another host: attach it to resume. */
  static restore(snapshot: StreamSnapshot, window = DEFAULT_WINDOW): LinkStream {
    if (snapshot.unacked.length !== snapshot.sent - snapshot.acked || snapshot.acked > snapshot.sent) {
      throw new StreamResetError(
        'ROAM_STREAM_OFFSET',
        `stream ${snapshot.id}: a snapshot with ${snapshot.unacked.length} unacknowledged bytes does not match its offsets ${snapshot.acked}..${snapshot.sent}`,
      );
    }
    const stream = new LinkStream(snapshot.id, { window });
    stream.received = snapshot.received;
    stream.ackedToPeer = snapshot.received;
    stream.written = snapshot.sent;
    stream.acked = snapshot.acked;
    stream.flushed = snapshot.acked;
    stream.pendingStart = snapshot.acked;
    if (snapshot.unacked.length > 0) stream.pending.push(Buffer.from(snapshot.unacked));
    if (snapshot.ended) stream.end();
    return stream;
  }

  /**
   * The state to carry across a move (call while the reader is paused, the guest frozen). Writes
   * held back by the window are taken in first: they were written, so they travel.
   */
  snapshot(): StreamSnapshot {
    while (this.heldWrite) {
      const done = this.heldWrite;
      this.heldWrite = undefined;
      done(); // the Writable hands over its next buffered chunk synchronously
    }
    return {
      id: this.id,
      received: this.consumed(),
      sent: this.written,
      acked: this.acked,
      unacked: this.slice(this.acked, this.written),
      ended: this.writableEnded,
    };
  }

  get offsets(): StreamOffsets {
    return { received: this.received, sent: this.written };
  }

  /** Bytes this side still holds for the peer (sent or not, not yet acknowledged). */
  get unackedBytes(): number {
    return this.written - this.acked;
  }

  get attached(): boolean {
    return this.carrier !== undefined;
  }

  /** Whether `carrier` is the connection this stream runs on now. */
  carriedBy(carrier: StreamCarrier): boolean {
    return this.carrier === carrier;
  }

  /**
   * The connection carrying this stream went away: keep everything, send nothing. Given the
   * carrier that went away, a stream already carried on by a newer connection is left alone.
   */
  detach(from?: StreamCarrier): void {
    if (from === undefined || this.carrier === from) this.carrier = undefined;
  }

  /**
   * Carry on over a new connection. `peerReceived` is how much of our direction the peer holds:
   * we resend from there (bytes before it are acknowledged by implication).
   */
  attach(carrier: StreamCarrier, peerReceived: number): void {
    if (peerReceived > this.written || peerReceived < this.acked) {
      throw new StreamResetError(
        'ROAM_STREAM_OFFSET',
        `stream ${this.id}: the peer holds ${peerReceived} bytes, outside what this side kept [${this.acked}, ${this.written}]`,
      );
    }
    this.carrier = carrier;
    // Resend from what the peer holds. Holding is not consuming: the window still counts from the
    // last ACK, or a peer with unread bytes would be sent more than it has room for.
    this.flushed = peerReceived;
    this.finSent = false;
    this.forget(peerReceived);
    this.flush();
    // Our last ACK may have been lost with the old connection: say again what we consumed, or a
    // sender whose window looks full would wait for it forever.
    this.ackedToPeer = 0;
    this.maybeAck(true);
  }

  // --- from the carrier ---

  onData(chunk: Uint8Array): void {
    if (this.resetByPeer || this.destroyed) return;
    if (this.peerFinal !== undefined) {
      this.destroy(new StreamResetError('ROAM_STREAM_PROTOCOL', `stream ${this.id}: data after the end`));
      return;
    }
    if (this.received + chunk.length - this.consumed() > this.window) {
      // The peer ignored our window: a protocol violation, not something to buffer.
      this.destroy(new StreamResetError('ROAM_STREAM_WINDOW', `stream ${this.id}: the peer overran its window`));
      return;
    }
    this.received += chunk.length;
    this.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.maybeAck(false);
  }

  onAck(offset: number): void {
    if (offset <= this.acked) return;
    if (offset > this.flushed && offset > this.written) {
      this.destroy(new StreamResetError('ROAM_STREAM_PROTOCOL', `stream ${this.id}: acknowledged bytes never sent`));
      return;
    }
    this.forget(offset);
    this.acked = offset;
    this.flush();
    this.releaseWrite();
  }

  /** Drops kept bytes below `offset`: the peer has them. */
  private forget(offset: number): void {
    let drop = offset - this.pendingStart;
    while (drop > 0 && this.pending.length > 0) {
      const head = this.pending[0] as Buffer;
      if (head.length <= drop) {
        this.pending.shift();
        drop -= head.length;
        this.pendingStart += head.length;
      } else {
        this.pending[0] = head.subarray(drop);
        this.pendingStart += drop;
        drop = 0;
      }
    }
  }

  onFin(offset: number): void {
    // Said again after a re-attach: the end was already taken.
    if (this.peerFinal === offset) return;
    this.peerFinal = offset;
    if (this.received === offset) this.push(null);
    else
      this.destroy(
        new StreamResetError(
          'ROAM_STREAM_PROTOCOL',
          `stream ${this.id}: ended at ${offset}, received ${this.received}`,
        ),
      );
  }

  onRst(code: string, message: string): void {
    this.resetByPeer = true;
    this.destroy(new StreamResetError(code, message));
  }

  /** Sends what the window and the connection allow. The carrier calls it when it can take more. */
  flush(): void {
    const carrier = this.carrier;
    if (!carrier) return;
    while (this.flushed < this.written && this.flushed - this.acked < this.window && carrier.writable()) {
      const limit = Math.min(this.written, this.acked + this.window, this.flushed + MAX_CHUNK);
      carrier.sendData(this.id, this.slice(this.flushed, limit));
      this.flushed = limit;
    }
    if (this.finalOffset !== undefined && this.flushed === this.finalOffset && !this.finSent) {
      this.finSent = true;
      carrier.sendFin(this.id, this.finalOffset);
      const done = this.heldFinal;
      this.heldFinal = undefined;
      done?.();
    }
  }

  // --- Duplex ---

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.pending.push(chunk);
    this.written += chunk.length;
    this.flush();
    // Hold the writer while more than a window is waiting: that is the backpressure it feels.
    if (this.written - this.acked > this.window) this.heldWrite = () => callback();
    else callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.finalOffset = this.written;
    this.heldFinal = callback;
    this.flush();
  }

  override _read(): void {
    this.maybeAck(false);
  }

  override _destroy(error: Error | null, callback: (error: Error | null) => void): void {
    if (!this.resetByPeer && this.carrier && !(this.finSent && this.peerFinal !== undefined)) {
      const code = error instanceof StreamResetError ? error.code : 'ROAM_STREAM_ABORTED';
      this.carrier.sendRst(this.id, code, error?.message ?? 'stream closed');
    }
    this.pending.length = 0;
    this.releaseWrite();
    callback(error);
  }

  private consumed(): number {
    return this.received - this.readableLength;
  }

  /** Acknowledges consumed bytes once a quarter window has accumulated (or when asked to). */
  private maybeAck(force: boolean): void {
    if (!this.carrier) return;
    const consumed = this.consumed();
    if (consumed > this.ackedToPeer && (force || consumed - this.ackedToPeer >= this.window / 4)) {
      this.ackedToPeer = consumed;
      this.carrier.sendAck(this.id, consumed);
    }
  }

  /** Acknowledges everything consumed so far (the carrier calls it when its link goes quiet). */
  ackNow(): void {
    this.maybeAck(true);
  }

  private releaseWrite(): void {
    if (this.heldWrite && this.written - this.acked <= this.window) {
      const done = this.heldWrite;
      this.heldWrite = undefined;
      done();
    }
  }

  /** The kept bytes in [from, to) as one buffer (a view when they lie in one chunk). */
  private slice(from: number, to: number): Uint8Array {
    let offset = this.pendingStart;
    const parts: Buffer[] = [];
    for (const chunk of this.pending) {
      const end = offset + chunk.length;
      if (end > from && offset < to)
        parts.push(chunk.subarray(Math.max(0, from - offset), Math.min(chunk.length, to - offset)));
      if (end >= to) break;
      offset = end;
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
  }
}
