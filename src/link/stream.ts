/**
 * One byte stream of a link (a remote connection carried between the Proxy and a controller).
 * Each direction counts bytes. The sender keeps every byte the receiver has not acknowledged as
 * consumed, and sends at most `window` bytes beyond the last acknowledgement: the acknowledgement
 * is both the flow-control credit (a slow reader slows only its own stream) and the point up to
 * which the sender may forget. A stream outlives the connection that carries it: when the link
 * drops it is detached, keeps its buffers, and re-attaches to a new connection from its offsets.
 */
import { Duplex } from 'node:stream';

/**
 * Default window: the most a stream lets its peer send beyond its last ACK (its receive buffer's
 * bound, announced in OPEN, OPEN_OK and ATTACH), and the most it sends itself.
 */
export const DEFAULT_WINDOW = 4 * 1024 * 1024;
/**
 * The window a stream starts sending with. It doubles, up to the peer's window, each time an ACK
 * finds the stream held back by it, with bytes its carrier grants (`grantWindow`, bounded per
 * connection), and falls back here when everything sent has been acknowledged.
 */
export const INITIAL_WINDOW = 256 * 1024;
/**
 * What the opener of a stream may send right behind its OPEN, before the peer's answer gives its
 * window: a session's window is never smaller, so the acceptor always has room for it. It spares
 * a new connection's first bytes (a request, a greeting) a round trip on the link.
 */
export const EARLY_WINDOW = 64 * 1024;
/** Largest DATA frame payload a stream sends (the wire's default `maxPayload`). */
export const MAX_CHUNK = 256 * 1024;
/**
 * Received bytes consumed past the last ACK that make the next ACK go out (a quarter of the
 * initial window, or of the window if smaller): the peer never waits for an ACK whatever its
 * send window has grown to.
 */
const ACK_EVERY = 64 * 1024;
/** A frame gathered from more kept chunks than this is sent as one copied buffer. */
const MAX_PARTS = 8;

/** What a stream needs from the connection that carries it. */
export interface StreamCarrier {
  sendData(streamId: number, chunk: Uint8Array): void;
  /** One DATA frame of `length` bytes given in parts (views of the writer's chunks, not copied). */
  sendDataParts?(streamId: number, parts: readonly Uint8Array[], length: number): void;
  /**
   * Asks for `bytes` more send window beyond the initial one; returns what is granted (0 to
   * `bytes`). A carrier bounds the sum over its streams, which bounds what its peer must buffer.
   */
  grantWindow?(bytes: number): number;
  /** Returns window granted earlier. */
  releaseWindow?(bytes: number): void;
  /** This stream holds received bytes it has not acknowledged: call `ackNow()` a little later. */
  ackLater?(stream: LinkStream): void;
  sendAck(streamId: number, offset: number): void;
  sendFin(streamId: number, offset: number): void;
  sendRst(streamId: number, code: string, message: string): void;
  /** False while the connection's own send buffer is full; the carrier calls `flush()` later. */
  writable(): boolean;
  /** `stream` has bytes to send and found the connection full: call its `flush()` on drain. */
  flushLater?(stream: LinkStream): void;
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
  /** The most this side receives beyond its last ACK, and the most it ever sends. */
  readonly window: number;
  private carrier: StreamCarrier | undefined;

  // Outgoing: bytes in [acked, written) are kept; [acked, flushed) have been handed to a carrier.
  // They stay in the writer's own chunks: pending[head..] hold [pendingStart, written), whole
  // chunks (the first may start before `acked`), and pending[cursor] holds offset `flushed`.
  private readonly pending: Buffer[] = [];
  private head = 0;
  private pendingStart = 0; // offset of pending[head][0]
  private cursor = 0;
  private cursorStart = 0; // offset of pending[cursor][0]
  private written = 0;
  private flushed = 0;
  private acked = 0;
  /** Bytes this side may have in flight now: INITIAL_WINDOW plus `extraWindow` granted. */
  private sendWindow: number;
  private extraWindow = 0;
  /** The peer's window (what it said in OPEN, OPEN_OK or ATTACH): sendWindow never exceeds it. */
  private peerWindow: number;
  /** Set when flush() stopped at the window with bytes left to send. */
  private windowBound = false;
  private heldWrite: (() => void) | undefined;
  private finalOffset: number | undefined;
  private finSent = false;
  private heldFinal: ((err?: Error | null) => void) | undefined;

  // Incoming: `received` bytes arrived, of which `received - readableLength` were consumed.
  private received = 0;
  private ackedToPeer = 0;
  private readonly ackEvery: number;
  private peerFinal: number | undefined;
  private resetByPeer = false;
  /** See `readDirect`. */
  private directReader: ((chunk: Buffer) => void) | undefined;

  constructor(id: number, options: { window?: number; carrier?: StreamCarrier } = {}) {
    super({ allowHalfOpen: true, readableHighWaterMark: options.window ?? DEFAULT_WINDOW });
    this.id = id;
    this.window = options.window ?? DEFAULT_WINDOW;
    this.peerWindow = this.window;
    this.sendWindow = Math.min(INITIAL_WINDOW, this.window);
    this.ackEvery = Math.max(1, Math.min(ACK_EVERY, Math.floor(this.window / 4)));
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
    stream.cursorStart = snapshot.acked;
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
      unacked: Buffer.concat(this.pending.slice(this.head)).subarray(this.acked - this.pendingStart),
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
   * The window the peer gave (OPEN, OPEN_OK or ATTACH): this side never has more than that in
   * flight. The carrier calls it before `attach`.
   */
  setPeerWindow(window: number): void {
    this.peerWindow = Math.max(1, window);
    this.sendWindow = Math.min(INITIAL_WINDOW + this.extraWindow, this.peerWindow, this.window);
  }

  /**
   * The peer accepted the stream, whose first bytes went out within EARLY_WINDOW: from now on its
   * own window holds, and what waited for it is sent.
   */
  opened(peerWindow: number): void {
    this.setPeerWindow(peerWindow);
    this.flush();
    this.releaseWrite();
  }

  /**
   * The connection carrying this stream went away: keep everything, send nothing. Given the
   * carrier that went away, a stream already carried on by a newer connection is left alone.
   */
  detach(from?: StreamCarrier): void {
    if (from === undefined || this.carrier === from) {
      this.resetWindow(this.carrier);
      this.carrier = undefined;
    }
  }

  /**
   * Carry on over a new connection. `peerReceived` is how much of our direction the peer holds:
   * we resend from there (bytes before it are acknowledged by implication).
   */
  attach(carrier: StreamCarrier, peerReceived: number): void {
    // A stream that has ended on this side (it may end before the peer acknowledged its last
    // bytes) has nothing left to resend.
    if (this.destroyed) return;
    if (peerReceived > this.written || peerReceived < this.acked) {
      throw new StreamResetError(
        'ROAM_STREAM_OFFSET',
        `stream ${this.id}: the peer holds ${peerReceived} bytes, outside what this side kept [${this.acked}, ${this.written}]`,
      );
    }
    // Window granted by an earlier connection goes back to it; this one starts afresh.
    if (this.carrier !== carrier) this.resetWindow(this.carrier);
    this.carrier = carrier;
    // Resend from what the peer holds. Holding is not consuming: the window still counts from the
    // last ACK, or a peer with unread bytes would be sent more than it has room for. The bytes
    // below stay kept until acknowledged too: a peer restored from an older checkpoint may come
    // back holding less than this one did (but never less than it acknowledged).
    this.flushed = peerReceived;
    this.finSent = false;
    this.seek(peerReceived);
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
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    // Flowing with nothing buffered, a pushed chunk would be emitted as 'data' at once anyway:
    // hand it over directly, without the Readable's work per chunk (see `readDirect`).
    if (this.directReader && this.readableFlowing === true && this.readableLength === 0) this.directReader(bytes);
    else this.push(bytes);
    this.maybeAck(false);
  }

  /**
   * Has every chunk that arrives while the stream flows with nothing buffered go to `reader` at
   * once, as a 'data' listener would get it but without the Readable's bookkeeping (a relay of
   * small messages spends a measurable share of each hop there). `reader` must also be a 'data'
   * listener of this stream: chunks buffered while it is paused still come as 'data', in order,
   * before any chunk comes directly again.
   */
  readDirect(reader: (chunk: Buffer) => void): void {
    this.directReader = reader;
  }

  onAck(offset: number): void {
    if (offset <= this.acked) return;
    if (offset > this.flushed && offset > this.written) {
      this.destroy(new StreamResetError('ROAM_STREAM_PROTOCOL', `stream ${this.id}: acknowledged bytes never sent`));
      return;
    }
    this.forget(offset);
    this.acked = offset;
    if (this.windowBound) {
      // The window, not the writer or the peer's reading, held this stream back: widen it.
      this.windowBound = false;
      this.growWindow();
    } else if (this.acked === this.written && this.extraWindow > 0) {
      // Everything arrived and nothing waits: an idle stream holds no more than the initial window.
      this.resetWindow(this.carrier);
    }
    this.flush();
    this.releaseWrite();
    this.releaseFinal();
  }

  private growWindow(): void {
    const cap = Math.min(this.window, this.peerWindow);
    const want = Math.min(this.sendWindow, cap - this.sendWindow);
    if (want <= 0) return;
    const granted = this.carrier?.grantWindow?.(want) ?? 0;
    this.sendWindow += granted;
    this.extraWindow += granted;
  }

  /** Back to the initial window; what `from` granted goes back to it. */
  private resetWindow(from: StreamCarrier | undefined): void {
    if (this.extraWindow > 0) from?.releaseWindow?.(this.extraWindow);
    this.extraWindow = 0;
    this.sendWindow = Math.min(INITIAL_WINDOW, this.window, this.peerWindow);
    this.windowBound = false;
  }

  /** Drops kept chunks that lie wholly below `offset`: the peer has them. */
  private forget(offset: number): void {
    const pending = this.pending;
    let head = this.head;
    while (head < pending.length) {
      const size = (pending[head] as Buffer).length;
      if (this.pendingStart + size > offset) break;
      pending[head] = EMPTY; // let it go now
      this.pendingStart += size;
      head++;
    }
    if (head === pending.length) {
      pending.length = 0;
      head = 0;
    } else if (head >= 64 && head * 2 >= pending.length) {
      pending.splice(0, head);
      this.cursor -= head;
      head = 0;
    }
    this.head = head;
    if (this.cursor < head || pending.length === 0) {
      this.cursor = head;
      this.cursorStart = this.pendingStart;
    }
  }

  /** Points the cursor at the kept chunk that holds `offset`. */
  private seek(offset: number): void {
    let index = this.head;
    let start = this.pendingStart;
    while (index < this.pending.length) {
      const size = (this.pending[index] as Buffer).length;
      if (start + size > offset) break;
      start += size;
      index++;
    }
    this.cursor = index;
    this.cursorStart = start;
  }

  onFin(offset: number): void {
    // Said again after a re-attach: the end was already taken.
    if (this.peerFinal === offset) return;
    this.peerFinal = offset;
    if (this.received === offset) {
      this.push(null);
      this.maybeAck(false);
    } else
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
    if (!carrier || this.destroyed) return;
    const edge = this.acked + this.sendWindow;
    while (this.flushed < this.written) {
      if (!carrier.writable()) {
        carrier.flushLater?.(this);
        break;
      }
      if (this.flushed >= edge) {
        this.windowBound = true;
        break;
      }
      const limit = Math.min(this.written, edge, this.flushed + MAX_CHUNK);
      const parts = this.sliceParts(limit);
      const length = limit - this.flushed;
      this.flushed = limit;
      if (parts.length === 1) carrier.sendData(this.id, parts[0] as Buffer);
      else if (parts.length <= MAX_PARTS && carrier.sendDataParts) carrier.sendDataParts(this.id, parts, length);
      else carrier.sendData(this.id, Buffer.concat(parts, length));
    }
    if (this.finalOffset !== undefined && this.flushed === this.finalOffset && !this.finSent) {
      // What this side consumed goes with its last frame: the peer may stop listening after it.
      this.maybeAck(true);
      this.finSent = true;
      carrier.sendFin(this.id, this.finalOffset);
      this.releaseFinal();
    }
  }

  /** The kept bytes in [flushed, to) as views of their chunks, moving the cursor past them. */
  private sliceParts(to: number): Buffer[] {
    const parts: Buffer[] = [];
    let from = this.flushed;
    while (from < to) {
      const chunk = this.pending[this.cursor] as Buffer;
      const end = this.cursorStart + chunk.length;
      const a = from - this.cursorStart;
      const b = Math.min(to, end) - this.cursorStart;
      parts.push(a === 0 && b === chunk.length ? chunk : chunk.subarray(a, b));
      from = this.cursorStart + b;
      if (from === end) {
        this.cursor++;
        this.cursorStart = end;
      }
    }
    return parts;
  }

  // --- Duplex ---

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (chunk.length > 0) {
      this.pending.push(chunk);
      this.written += chunk.length;
      this.flush();
    }
    // Hold the writer while more than a window is waiting: that is the backpressure it feels.
    if (this.written - this.acked > this.sendWindow) this.heldWrite = () => callback();
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
    this.resetWindow(this.carrier);
    this.pending.length = 0;
    this.head = 0;
    this.cursor = 0;
    this.releaseWrite();
    callback(error);
  }

  private consumed(): number {
    return this.received - this.readableLength;
  }

  /**
   * Acknowledges consumed bytes once ACK_EVERY of them (at most a quarter window) have accumulated,
   * or when asked to; bytes held back longer are acknowledged by the carrier's `ackLater`.
   */
  private maybeAck(force: boolean): void {
    const carrier = this.carrier;
    if (!carrier) return;
    const consumed = this.consumed();
    if (
      consumed > this.ackedToPeer &&
      (force || consumed - this.ackedToPeer >= this.ackEvery || consumed === this.peerFinal)
    ) {
      this.ackedToPeer = consumed;
      carrier.sendAck(this.id, consumed);
    }
    if (this.received > this.ackedToPeer) carrier.ackLater?.(this);
  }

  /** Acknowledges everything consumed so far (the carrier calls it when its link goes quiet). */
  ackNow(): void {
    this.maybeAck(true);
  }

  /**
   * The writable side finishes once the peer has acknowledged every byte up to the FIN: until
   * then the stream stays open and keeps them, so a link that drops in between can still resend
   * them on re-attach.
   */
  private releaseFinal(): void {
    if (!this.heldFinal || !this.finSent || this.acked < (this.finalOffset ?? Infinity)) return;
    const done = this.heldFinal;
    this.heldFinal = undefined;
    done();
  }

  private releaseWrite(): void {
    if (this.heldWrite && this.written - this.acked <= this.sendWindow) {
      const done = this.heldWrite;
      this.heldWrite = undefined;
      done();
    }
  }
}

const EMPTY = Buffer.alloc(0);
