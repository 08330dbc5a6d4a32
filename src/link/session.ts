/**
 * A link session: one connection between the Proxy and a controller, carrying connection-level
 * frames (handshake, control messages, pings) and the frames of many streams. It owns the socket
 * and the frame decoder; streams (link/stream.ts) own their bytes and outlive the session.
 *
 * The session never blocks on one stream: every stream may have at most its window in flight,
 * the receiving side always reads the socket, so a slow stream only stops itself. When the
 * socket's own buffer is full, streams wait in a ready list and are flushed in turn on 'drain'.
 */
import { Buffer } from 'node:buffer';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { adoptWithOwnReads, type OwnReads } from '../common/own-reads.js';
import {
  FrameDecoder,
  encodeAck,
  encodeDataHeader,
  encodeDatagramHeader,
  encodeFrame,
  isWireError,
  type AttachFrame,
  type AttachInfo,
  type ConnectionFrame,
  type ConnectionOpenInfo,
  type Frame,
  type FrameLimits,
  type ImageOpenFrame,
  type OpenFrame,
  type StreamOpenInfo,
} from '../wire/index.js';
import { Outbox } from './outbox.js';
import { DEFAULT_WINDOW, EARLY_WINDOW, LinkStream, StreamResetError, type StreamCarrier } from './stream.js';

/** Socket bytes queued above which streams stop sending until 'drain'. */
const SOCKET_HIGH_WATER = 1024 * 1024;
/** How soon consumed bytes are acknowledged when too few have accumulated to send an ACK at once. */
const ACK_INTERVAL_MS = 20;
/** Moved-away stream ids remembered per session. */
const MAX_RETIRED = 65_536;
/**
 * Send window the streams of one session may hold beyond their initial windows, together. It
 * bounds what the peer buffers for this session's streams (with the initial window of each).
 */
const WINDOW_BUDGET = 16 * 1024 * 1024;
/**
 * What the peer may have sent early (behind OPENs this side has not answered yet), all streams
 * together, before the stream that goes over is reset: each may send EARLY_WINDOW.
 */
const EARLY_BUDGET = 16 * 1024 * 1024;
/** The buffer a session reads into when its socket reads through `onread` (`connect`, `accept`). */
const READ_BUFFER_BYTES = 64 * 1024;
/**
 * Reads up to this size are decoded from that buffer, reused, with each DATA or DATAGRAM payload
 * copied out (into Node's pooled small Buffers: cheap, no ArrayBuffer of their own).
 */
const SMALL_READ = 4096;
/** What a refused peer may still send, read and dropped, before the proxy stops reading it. */
const LINGER_READ_LIMIT = 256 * 1024;
/** How long a peer refused with a GOAWAY has to read it before its socket is destroyed. */
const GOAWAY_LINGER_MS = 2000;

export class LinkClosedError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface SessionHandler {
  /**
   * Whether to handle a frame at all (checked first). The proxy admits only HELLO from a peer
   * that has not authenticated: anything else must not even make it answer.
   */
  admit?(frame: Frame): boolean;
  /** A connection-level frame (hello, welcome, control, goaway; pings are answered here). */
  onFrame(frame: ConnectionFrame): void;
  /** The peer opens a stream: call `session.accept(frame)` or `session.reject(frame, ...)`. */
  onOpen?(frame: OpenFrame): void;
  /** The peer opens a stream that carries a checkpoint image: accept or reject it the same way. */
  onImage?(frame: ImageOpenFrame): void;
  /** The peer re-attaches a stream it had on an earlier session: call `session.resume(...)`. */
  onAttach?(frame: AttachFrame): void;
  /** The session ended (its streams are detached, not destroyed). */
  onClose?(error: Error | undefined): void;
  /** A datagram of a UDP flow (flows are unreliable: no offsets, nothing kept). */
  onDatagram?(flowId: number, payload: Uint8Array): void;
  /** The peer ended a flow (or refused one this side does not know). */
  onFlowReset?(flowId: number): void;
}

interface PendingOpen {
  stream: LinkStream;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** What the peer sent on a stream it opened, while this side decides whether to accept it. */
interface Deciding {
  chunks: Uint8Array[];
  bytes: number;
  fin: number | undefined;
  reset: { code: string; message: string } | undefined;
}

export class LinkSession implements StreamCarrier {
  private readonly decoder: FrameDecoder;
  private readonly streams = new Map<number, LinkStream>();
  private readonly opening = new Map<number, PendingOpen>();
  /** Streams the peer opened that this side has not yet accepted or refused, with what came early. */
  private readonly deciding = new Map<number, Deciding>();
  /** Bytes held in `deciding`. */
  private earlyBytes = 0;
  private readonly awaitingAttach = new Map<number, LinkStream>();
  private readonly flowsOpening = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private readonly ready = new Set<LinkStream>();
  /** What this turn of the event loop writes, handed to the socket at its end (outbox.ts). */
  private readonly outbox: Outbox;
  /** Each adopted stream's close listener, removed when this session ends (streams outlive it). */
  private readonly closeHandlers = new Map<LinkStream, () => void>();
  private closed = false;
  private lingerBytes = 0;
  private readonly pings = new Map<number, (error?: Error) => void>();
  private nextPing = 1;
  /** Ids of streams that moved to another host: their late frames are dropped without a reset. */
  private readonly retired = new Set<number>();
  /** Streams holding received bytes not yet acknowledged, and the timer that visits them. */
  private ackDue = new Set<LinkStream>();
  private ackTimer: NodeJS.Timeout | undefined;
  /** Send window granted to streams beyond their initial windows (at most WINDOW_BUDGET). */
  private windowGranted = 0;

  constructor(
    private readonly socket: Duplex,
    private readonly handler: SessionHandler,
    limits: Partial<FrameLimits> = {},
    readonly window = DEFAULT_WINDOW,
  ) {
    if (window < EARLY_WINDOW) throw new RangeError(`a link's window is at least ${EARLY_WINDOW} bytes, not ${window}`);
    this.decoder = new FrameDecoder({ ...limits, dataPieces: true });
    this.outbox = new Outbox(socket);
    // (A socket made by `connect` or `accept` reads through `onread` instead: it emits no 'data'.)
    socket.on('data', (chunk: Buffer) => this.onBytes(chunk));
    socket.on('drain', () => this.onDrain());
    socket.on('error', (err) => this.end(err));
    socket.on('close', () => this.end(undefined));
    (socket as { setNoDelay?: (b: boolean) => void }).setNoDelay?.(true);
  }

  /**
   * Connects to `host:port` and runs a session on that connection, reading through `ownReads`.
   */
  static connect(
    to: { host: string; port: number },
    handler: SessionHandler,
    limits: Partial<FrameLimits> = {},
    window = DEFAULT_WINDOW,
  ): { socket: net.Socket; session: LinkSession } {
    const reads = LinkSession.ownReads();
    const socket = net.connect({ host: to.host, port: to.port, noDelay: true, onread: reads.onread });
    const session = new LinkSession(socket, handler, limits, window);
    reads.bind(session);
    return { socket, session };
  }

  /**
   * Runs a session on a connection a server accepted, reading through `ownReads` where the
   * runtime allows it (src/common/own-reads.ts), else through the socket's 'data' events.
   */
  static accept(
    accepted: net.Socket,
    handler: SessionHandler,
    limits: Partial<FrameLimits> = {},
    window = DEFAULT_WINDOW,
  ): { socket: net.Socket; session: LinkSession } {
    const reads = LinkSession.ownReads();
    const socket = adoptWithOwnReads(accepted, reads.onread) ?? accepted;
    const session = new LinkSession(socket, handler, limits, window);
    reads.bind(session);
    return { socket, session };
  }

  /**
   * Reads into a buffer of the session's (Node's `onread`) instead of a new 64 KiB ArrayBuffer
   * per read, and without the Readable stream's work per chunk: measured by bench:relay on a
   * link, that is less CPU per message and less latency for small ones. The decoder hands out
   * DATA payloads as views of what was read, and a view must not see the buffer overwritten by
   * the next read, so: a small read's payloads are copied out and the buffer is reused; a read
   * that filled at least half of the buffer is handed out as it is, and the next read goes to a
   * fresh buffer (so what the views pin is at most twice their bytes); one in between is copied
   * to a buffer of its exact size.
   */
  private static ownReads(): { onread: OwnReads; bind: (session: LinkSession) => void } {
    let buffer: Buffer | undefined;
    let session: LinkSession | undefined;
    const onread: OwnReads = {
      buffer: () => (buffer ??= Buffer.allocUnsafeSlow(READ_BUFFER_BYTES)),
      callback: (bytes, into) => {
        // (`session` is bound in the same turn the socket is made, turns before it can read.)
        if (session && !session.readFrom(into, bytes)) buffer = undefined;
        return true; // go on reading (a lingering session pauses the socket itself)
      },
    };
    return { onread, bind: (s) => (session = s) };
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** Raises the decoder's limits (after the peer authenticated, control frames may be large). */
  setLimits(limits: Partial<FrameLimits>): void {
    this.decoder.setLimits(limits);
  }

  /** A connection-level frame: it goes out right after this callback (see `Outbox.pushUrgent`). */
  send(frame: ConnectionFrame): void {
    if (!this.closed) this.outbox.pushUrgent(encodeFrame(frame));
  }

  /** A connection-level frame handed to the socket now, behind what was queued before it. */
  sendNow(frame: ConnectionFrame): void {
    if (this.closed) return;
    this.outbox.push(encodeFrame(frame));
    this.outbox.flush();
  }

  /** Round-trip time to the peer, from a PING answered by a PONG. */
  ping(timeoutMs = 5000): Promise<number> {
    const nonce = this.nextPing++;
    const t0 = performance.now();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pings.delete(nonce);
        reject(new LinkClosedError('ROAM_LINK_TIMEOUT', `no answer to a ping within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pings.set(nonce, (error) => {
        clearTimeout(timer);
        if (error) reject(error);
        else resolve(performance.now() - t0);
      });
      this.send({ type: 'ping', nonce });
    });
  }

  /** Opens a new stream; resolves when the peer accepts it, rejects with its reason otherwise. */
  async open(streamId: number, info: StreamOpenInfo): Promise<LinkStream> {
    const stream = this.newStream(streamId);
    try {
      await this.openStream(stream, info);
    } catch (err) {
      stream.destroy();
      throw err;
    }
    return stream;
  }

  /** A stream with this session's window, to open with `openStream`. */
  newStream(streamId: number): LinkStream {
    return new LinkStream(streamId, { window: this.window });
  }

  /**
   * Opens `stream` on this link and lets it send at once: up to EARLY_WINDOW of its bytes go right
   * behind the OPEN, so a new connection's first bytes do not wait a round trip for the answer.
   * Resolves when the peer accepts. When it refuses, the stream is let go with everything written
   * to it kept (the peer dropped what it sent): destroy it, or open it again (here or on another
   * link) and it sends all of it again.
   */
  openStream(stream: LinkStream, info: StreamOpenInfo): Promise<void> {
    const streamId = stream.id;
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new LinkClosedError('ROAM_LINK_CLOSED', 'the link is closed'));
        return;
      }
      if (stream.destroyed) {
        reject(new StreamResetError('ROAM_STREAM_ABORTED', `stream ${streamId} was closed before it opened`));
        return;
      }
      this.opening.set(streamId, { stream, resolve, reject });
      this.write(encodeFrame({ type: 'open', streamId, window: this.window, ...info }));
      this.adopt(stream);
      stream.setPeerWindow(Math.min(EARLY_WINDOW, this.window));
      stream.attach(this, 0);
    });
  }

  /** Opens a UDP flow (datagrams, unreliable); resolves when the peer accepts it. */
  openFlow(flowId: number, info: ConnectionOpenInfo): Promise<void> {
    return new Promise((resolve, reject) => {
      this.flowsOpening.set(flowId, { resolve, reject });
      this.write(encodeFrame({ type: 'open', streamId: flowId, window: this.window, ...info }));
    });
  }

  acceptFlow(frame: OpenFrame): void {
    this.write(encodeFrame({ type: 'openOk', streamId: frame.streamId, window: this.window }));
  }

  /** Sends one datagram of a flow; dropped (as UDP may) when the connection is backed up. */
  sendDatagram(flowId: number, payload: Uint8Array): boolean {
    if (!this.writable()) return false;
    this.outbox.push(encodeDatagramHeader(flowId, payload.length));
    this.outbox.push(payload);
    return true;
  }

  accept(frame: OpenFrame | ImageOpenFrame): LinkStream {
    const stream = new LinkStream(frame.streamId, { window: this.window, carrier: this });
    stream.setPeerWindow(frame.window);
    this.adopt(stream);
    this.write(encodeFrame({ type: 'openOk', streamId: frame.streamId, window: this.window }));
    const early = this.takeEarly(frame.streamId);
    if (early) {
      for (const chunk of early.chunks) stream.onData(chunk);
      if (early.fin !== undefined) stream.onFin(early.fin);
      if (early.reset) stream.onRst(early.reset.code, early.reset.message);
    }
    return stream;
  }

  reject(frame: OpenFrame | ImageOpenFrame, code: string, message: string): void {
    this.write(encodeFrame({ type: 'openFail', streamId: frame.streamId, code, message }));
    // What the peer sent early, and still sends before it reads this, is dropped without a word.
    if (this.takeEarly(frame.streamId)) this.retire([frame.streamId]);
  }

  /**
   * Carries on a stream from an earlier session: tells the peer what this side holds, and resumes
   * sending from what the peer says it holds (when its ATTACH comes back).
   */
  attach(stream: LinkStream, info?: AttachInfo): void {
    this.awaitingAttach.set(stream.id, stream);
    this.sendAttach(stream, info);
  }

  /** Answers a peer's ATTACH for a stream this side kept: both sides resume from the offsets. */
  resume(stream: LinkStream, frame: AttachFrame): void {
    this.sendAttach(stream);
    this.bind(stream, frame.receivedOffset, frame.window);
  }

  /**
   * Forgets streams that now live elsewhere (their guest moved to another host). Frames the peer
   * still sends for them before it switches are dropped quietly: a reset would end the remote
   * connection, which carries on at the other host.
   */
  retire(ids: Iterable<number>): void {
    for (const id of ids) {
      this.retired.add(id);
      this.streams.get(id)?.detach(this);
      this.streams.delete(id);
    }
    // Bounded: ids are never reused, and the peer switches within a round trip or two.
    for (const id of this.retired) {
      if (this.retired.size <= MAX_RETIRED) break;
      this.retired.delete(id);
    }
  }

  /** Ends the session: streams are detached (they keep their bytes for the next session). */
  close(): void {
    this.flushBatch();
    this.socket.end();
    this.end(undefined);
  }

  destroy(error?: Error): void {
    this.flushBatch();
    this.socket.destroy();
    this.end(error);
  }

  /**
   * Refuses the peer: says why in a GOAWAY, lets it be sent, and lets go of the socket whatever
   * the peer does (a peer that never reads or never closes cannot hold it).
   */
  refuse(code: string, message: string): void {
    if (this.closed) return;
    this.send({ type: 'goaway', code, message: message.slice(0, 1000) });
    this.flushBatch();
    // A lingering close, as HTTP servers do: end our side but keep reading (and dropping) what
    // the peer still sends. Closing at once would answer its next bytes with a reset, and a reset
    // can take the GOAWAY with it before the peer reads it.
    this.socket.end();
    setTimeout(() => this.socket.destroy(), GOAWAY_LINGER_MS).unref();
    this.end(new LinkClosedError(code, message));
  }

  // --- StreamCarrier ---

  writable(): boolean {
    return !this.closed && this.socket.writableLength + this.outbox.queuedBytes < SOCKET_HIGH_WATER;
  }

  sendData(streamId: number, chunk: Uint8Array): void {
    this.outbox.push(encodeDataHeader(streamId, chunk.length));
    this.outbox.push(chunk);
    this.whenFull(streamId);
  }

  sendDataParts(streamId: number, parts: readonly Uint8Array[], length: number): void {
    this.outbox.push(encodeDataHeader(streamId, length));
    for (const part of parts) this.outbox.push(part);
    this.whenFull(streamId);
  }

  flushLater(stream: LinkStream): void {
    if (this.streams.get(stream.id) === stream) this.ready.add(stream);
  }

  grantWindow(bytes: number): number {
    const granted = Math.max(0, Math.min(bytes, WINDOW_BUDGET - this.windowGranted));
    this.windowGranted += granted;
    return granted;
  }

  releaseWindow(bytes: number): void {
    this.windowGranted = Math.max(0, this.windowGranted - bytes);
  }

  /**
   * Acknowledge quiet streams too, so the sender can forget what was delivered (and a stream's
   * offsets in a checkpoint stay close to what the guest really consumed). Only streams that
   * hold unacknowledged bytes are visited, so idle streams cost nothing.
   */
  ackLater(stream: LinkStream): void {
    if (this.closed) return;
    this.ackDue.add(stream);
    this.ackTimer ??= setTimeout(() => this.ackDueNow(), ACK_INTERVAL_MS).unref();
  }

  sendAck(streamId: number, offset: number): void {
    this.write(encodeAck(streamId, offset));
  }

  sendFin(streamId: number, offset: number): void {
    this.write(encodeFrame({ type: 'fin', streamId, offset }));
  }

  sendRst(streamId: number, code: string, message: string): void {
    this.write(encodeFrame({ type: 'rst', streamId, code, message: message.slice(0, 1000) }));
    this.streams.delete(streamId);
  }

  // --- internals ---

  /** Bytes the peer sent behind its OPEN, kept until this side accepts the stream (or drops them). */
  private early(streamId: number, payload: Uint8Array): void {
    const early = this.deciding.get(streamId) as Deciding;
    if (early.reset) return;
    const over =
      early.bytes + payload.length > EARLY_WINDOW
        ? `more than ${EARLY_WINDOW} bytes before it was accepted`
        : this.earlyBytes + payload.length > EARLY_BUDGET
          ? `more than ${EARLY_BUDGET} bytes wait in streams not accepted yet`
          : undefined;
    if (over !== undefined) {
      const message = `stream ${streamId}: ${over}`;
      early.reset = { code: 'ROAM_STREAM_WINDOW', message };
      this.earlyBytes -= early.bytes;
      early.chunks = [];
      early.bytes = 0;
      this.write(encodeFrame({ type: 'rst', streamId, code: early.reset.code, message }));
      return;
    }
    early.chunks.push(payload);
    early.bytes += payload.length;
    this.earlyBytes += payload.length;
  }

  /** Removes a stream from those being decided, with what it sent early. */
  private takeEarly(streamId: number): Deciding | undefined {
    const early = this.deciding.get(streamId);
    if (!early) return undefined;
    this.deciding.delete(streamId);
    this.earlyBytes -= early.bytes;
    return early;
  }

  /** Lets go of a stream this session adopted (it stays whole, for another connection to carry). */
  private disown(stream: LinkStream): void {
    const onClose = this.closeHandlers.get(stream);
    if (!onClose) return;
    stream.off('close', onClose);
    onClose();
  }

  private whenFull(streamId: number): void {
    if (this.writable()) return;
    const stream = this.streams.get(streamId);
    if (stream) this.ready.add(stream);
  }

  private ackDueNow(): void {
    this.ackTimer = undefined;
    const due = this.ackDue;
    this.ackDue = new Set();
    // A stream whose reader has not consumed everything comes back through ackLater.
    for (const stream of due) if (this.streams.get(stream.id) === stream && !stream.destroyed) stream.ackNow();
  }

  private sendAttach(stream: LinkStream, info?: AttachInfo): void {
    const { received, sent } = stream.offsets;
    this.write(
      encodeFrame({
        type: 'attach',
        streamId: stream.id,
        window: this.window,
        receivedOffset: received,
        sentOffset: sent,
        ...(info ? { info } : {}),
      }),
    );
  }

  private adopt(stream: LinkStream): void {
    if (this.streams.get(stream.id) === stream) return;
    this.streams.set(stream.id, stream);
    const onClose = (): void => {
      if (this.streams.get(stream.id) === stream) this.streams.delete(stream.id);
      this.ready.delete(stream);
      this.ackDue.delete(stream);
      this.closeHandlers.delete(stream);
    };
    stream.once('close', onClose);
    this.closeHandlers.set(stream, onClose);
  }

  private bind(stream: LinkStream, peerReceived: number, peerWindow: number): void {
    if (stream.destroyed) return; // ended here already: nothing to carry on
    this.adopt(stream);
    stream.setPeerWindow(peerWindow);
    try {
      stream.attach(this, peerReceived);
    } catch (err) {
      stream.destroy(err as Error);
    }
  }

  private write(bytes: Uint8Array): void {
    if (this.closed) return;
    this.outbox.push(bytes);
  }

  /**
   * Sends what this turn has queued now (before the socket ends or is destroyed). Otherwise every
   * frame written in one turn of the event loop goes out at its end in one write to the socket:
   * measured by bench:relay, a syscall per frame (an ACK, an OPEN) was a fifth of the proxy's time.
   */
  private flushBatch(): void {
    this.outbox.flush();
  }

  /**
   * `bytes` were read into `buffer` (see `connect`). Returns whether `buffer` may take the next
   * read: false when views of it were handed out.
   */
  private readFrom(buffer: Uint8Array, bytes: number): boolean {
    const chunk = buffer.subarray(0, bytes);
    if (bytes <= SMALL_READ) {
      this.onBytes(chunk, true);
      return true;
    }
    if (bytes * 2 >= buffer.length) {
      this.onBytes(chunk);
      return false;
    }
    this.onBytes(Buffer.from(chunk));
    return true;
  }

  /** `copyPayloads`: the chunk will be overwritten, so no payload may stay a view of it. */
  private onBytes(chunk: Uint8Array, copyPayloads = false): void {
    if (this.closed) {
      // Refused: lingering, dropping what still comes, up to a bound (a flood is not read on).
      this.lingerBytes += chunk.length;
      if (this.lingerBytes > LINGER_READ_LIMIT) (this.socket as { pause?: () => void }).pause?.();
      return;
    }
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      // Hostile or broken input: say why, then close; never buffer on.
      const code = isWireError(err) ? err.code : 'WIRE_MALFORMED';
      const message = err instanceof Error ? err.message : String(err);
      this.refuse(code, message);
      return;
    }
    for (const frame of frames) {
      if (this.closed) return;
      if (copyPayloads && (frame.type === 'data' || frame.type === 'datagram')) {
        frame.payload = copyOut(frame.payload);
      }
      this.onFrame(frame);
    }
  }

  private onFrame(frame: Frame): void {
    if (this.handler.admit && !this.handler.admit(frame)) return;
    switch (frame.type) {
      case 'ping':
        // An answer, not data: a peer that does not read its answers gets no more of them.
        if (this.writable()) this.send({ type: 'pong', nonce: frame.nonce });
        return;
      case 'pong':
        this.pings.get(frame.nonce)?.();
        this.pings.delete(frame.nonce);
        return;
      case 'hello':
      case 'welcome':
      case 'control':
      case 'goaway':
        this.handler.onFrame(frame);
        return;
      case 'open':
        if (this.streams.has(frame.streamId) || this.deciding.has(frame.streamId)) {
          this.reject(frame, 'ROAM_STREAM_EXISTS', `stream ${frame.streamId} is already open`);
          return;
        }
        this.deciding.set(frame.streamId, { chunks: [], bytes: 0, fin: undefined, reset: undefined });
        if (frame.direction === 'image') {
          if (this.handler.onImage) this.handler.onImage(frame);
          else this.reject(frame, 'ROAM_STREAM_REFUSED', 'this side does not take images');
        } else if (this.handler.onOpen) this.handler.onOpen(frame);
        else this.reject(frame, 'ROAM_STREAM_REFUSED', 'this side does not accept streams');
        return;
      case 'openOk': {
        const flow = this.flowsOpening.get(frame.streamId);
        if (flow) {
          this.flowsOpening.delete(frame.streamId);
          flow.resolve();
          return;
        }
        const pending = this.opening.get(frame.streamId);
        if (!pending) return;
        this.opening.delete(frame.streamId);
        pending.stream.opened(frame.window);
        pending.resolve();
        return;
      }
      case 'openFail': {
        const flow = this.flowsOpening.get(frame.streamId);
        this.flowsOpening.delete(frame.streamId);
        flow?.reject(Object.assign(new Error(frame.message), { code: frame.code }));
        const pending = this.opening.get(frame.streamId);
        if (!pending) return;
        this.opening.delete(frame.streamId);
        // Refused: the peer dropped what the stream sent early; it keeps all of it for another try.
        this.disown(pending.stream);
        pending.stream.detach(this);
        pending.reject(Object.assign(new Error(frame.message), { code: frame.code }));
        return;
      }
      case 'attach': {
        const waiting = this.awaitingAttach.get(frame.streamId);
        if (waiting) {
          this.awaitingAttach.delete(frame.streamId);
          this.bind(waiting, frame.receivedOffset, frame.window);
        } else if (this.handler.onAttach) this.handler.onAttach(frame);
        else this.sendRst(frame.streamId, 'ROAM_STREAM_UNKNOWN', `no stream ${frame.streamId} to attach`);
        return;
      }
      case 'data':
        if (this.deciding.size > 0 && this.deciding.has(frame.streamId)) this.early(frame.streamId, frame.payload);
        else this.streamFor(frame.streamId)?.onData(frame.payload);
        return;
      case 'ack':
        this.streamFor(frame.streamId, false)?.onAck(frame.offset);
        return;
      case 'fin': {
        const early = this.deciding.get(frame.streamId);
        if (early) early.fin ??= frame.offset;
        else this.streamFor(frame.streamId)?.onFin(frame.offset);
        return;
      }
      case 'rst': {
        const early = this.deciding.get(frame.streamId);
        if (early) {
          early.reset ??= { code: frame.code, message: frame.message };
          return;
        }
        const stream = this.streams.get(frame.streamId);
        this.streams.delete(frame.streamId);
        // A reset from a connection that no longer carries the stream (it moved on, to a newer
        // link or another host) is stale: the stream lives on where it is carried now.
        if (stream && !stream.carriedBy(this)) return;
        if (stream) stream.onRst(frame.code, frame.message);
        else this.handler.onFlowReset?.(frame.streamId);
        return;
      }
      case 'datagram':
        this.handler.onDatagram?.(frame.streamId, frame.payload);
        return;
    }
  }

  /**
   * The stream a frame is for. Without one, the peer is told with an RST, unless `answer` is false:
   * an ACK needs no answer, and a stream that sent its FIN may close before the peer's last ACKs
   * for its bytes arrive (answering those reset the peer's stream while it was still reading).
   */
  private streamFor(id: number, answer = true): LinkStream | undefined {
    const stream = this.streams.get(id);
    if (stream && !stream.carriedBy(this)) {
      // Re-attached to a newer connection: what still trickles in here is stale (the offsets
      // exchanged there already decided where the bytes resume). Dropping it keeps them exact.
      this.streams.delete(id);
      return undefined;
    }
    if (!stream && answer && !this.retired.has(id) && this.writable()) {
      // Frames for a stream we do not have (closed, or never opened): tell the peer, unless it
      // does not even read what we say.
      this.write(encodeFrame({ type: 'rst', streamId: id, code: 'ROAM_STREAM_UNKNOWN', message: `no stream ${id}` }));
    }
    return stream;
  }

  private onDrain(): void {
    for (const stream of [...this.ready]) {
      if (!this.writable()) return;
      this.ready.delete(stream);
      stream.flush();
    }
  }

  private end(error: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    for (const stream of this.streams.values()) stream.detach(this);
    for (const [stream, onClose] of this.closeHandlers) stream.off('close', onClose);
    this.closeHandlers.clear();
    for (const stream of this.awaitingAttach.values()) stream.detach(this);
    for (const flow of this.flowsOpening.values()) {
      flow.reject(new LinkClosedError('ROAM_LINK_CLOSED', 'the link closed before the flow opened'));
    }
    this.flowsOpening.clear();
    for (const pending of this.opening.values()) {
      pending.reject(new LinkClosedError('ROAM_LINK_CLOSED', 'the link closed before the stream opened'));
    }
    this.streams.clear();
    this.opening.clear();
    this.deciding.clear();
    this.earlyBytes = 0;
    this.awaitingAttach.clear();
    this.ready.clear();
    this.ackDue.clear();
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    const closed = new LinkClosedError('ROAM_LINK_CLOSED', 'the link closed');
    for (const settle of this.pings.values()) settle(closed);
    this.pings.clear();
    this.handler.onClose?.(error);
  }
}

/** A copy of `bytes` in a Buffer of its own (from Node's pool when small). */
function copyOut(bytes: Uint8Array): Buffer {
  const copy = Buffer.allocUnsafe(bytes.length);
  copy.set(bytes);
  return copy;
}

export { StreamResetError };
