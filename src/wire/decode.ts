/**
 * The streaming decoder: bytes in, typed frames out, no I/O. Feed it whatever the socket gives
 * (frames split at any byte, many frames per chunk); it returns the frames completed by each chunk.
 *
 * Memory: a frame's header is checked, declared length included, before any of its payload is
 * buffered (as ws does with maxPayload), so the decoder never holds more than HEADER_BYTES plus the
 * limit for that frame's type. A payload that spans chunks is gathered in a buffer that grows with
 * the bytes that actually arrive (doubling from 64 KiB), so a peer that declares a large frame and
 * sends little of it costs little. Work is O(bytes): each byte is copied at most once into a frame
 * that spans chunks, plus amortised O(1) per byte for growth of large spanning payloads.
 *
 * With `dataPieces`, a DATA payload that spans chunks is not gathered at all: each chunk's share of
 * it comes out at once as a DATA frame of its own (a view of that chunk), so a stream's bytes are
 * never copied and the decoder holds nothing but header bytes. The pieces of one frame are
 * consecutive DATA frames of the same stream whose payloads add up to the declared length (a
 * receiver that counts bytes, as a link stream does, cannot tell them from whole frames). A piece
 * is never empty, though a frame that declared no payload is still one empty DATA frame.
 *
 * Lifetime: a DATA or DATAGRAM payload that arrived whole inside one chunk is a view of that chunk
 * (no copy). It is valid as long as the caller does not modify the chunk, and it keeps the chunk's
 * memory alive while held: `.slice()` it to keep a small payload for long. The decoder keeps no
 * reference to a chunk after `push` returns.
 *
 * Errors: any decode error is a `WireError`; the decoder is then poisoned, and every later `push`
 * or `end` throws the same error. Frames completed earlier in the same chunk are not returned:
 * the connection is closing, and the stream offsets (ACK/ATTACH) are what make delivery exact.
 */
import { WireError } from './errors.js';
import { HEADER_BYTES, type Frame } from './frame.js';
import {
  checkHeaderPrefix,
  readHeader,
  resolveLimits,
  wireName,
  type FrameHeader,
  type FrameLimits,
} from './header.js';
import { parsePayload } from './payload.js';

/** Options of a decoder; see `FrameLimits` for the defaults of the limits. */
export interface FrameDecoderOptions extends Partial<FrameLimits> {
  /**
   * Hand on a DATA payload that spans chunks in pieces, as it arrives, instead of gathering it
   * into one buffer (see above). Default false: every frame comes out whole. Fixed at construction.
   */
  dataPieces?: boolean;
}

/** First allocation for a payload that spans chunks; the buffer doubles from here as bytes arrive. */
const INITIAL_SPAN_BYTES = 64 * 1024;

export class FrameDecoder {
  private currentLimits: FrameLimits;
  /** Bytes of a header that arrived split across chunks. */
  private readonly headerBytes = new Uint8Array(HEADER_BYTES);
  private headerFill = 0;
  /** The header of the frame whose payload is being gathered (valid while `body` is defined). */
  private readonly header: FrameHeader = { type: 'data', streamId: 0, length: 0, aux: 0 };
  private body: Uint8Array | undefined;
  private bodyFill = 0;
  /** With `dataPieces`: payload bytes of the DATA frame in progress still to come (0 when none). */
  private dataLeft = 0;
  private readonly dataPieces: boolean;
  private failure: WireError | undefined;
  private decoded = 0;

  constructor(options: FrameDecoderOptions = {}) {
    this.currentLimits = resolveLimits(options);
    this.dataPieces = options.dataPieces === true;
  }

  /** The limits in force. */
  get limits(): Readonly<FrameLimits> {
    return { ...this.currentLimits };
  }

  /**
   * Changes the limits for frames whose header has not been read yet, e.g. a proxy that keeps
   * `maxControlPayload` small until the HELLO's token has been checked, then raises it.
   */
  setLimits(options: FrameDecoderOptions): void {
    this.currentLimits = resolveLimits(options, this.currentLimits);
  }

  /** Bytes held for the frame in progress: header bytes plus the payload buffer allocated so far. */
  get bufferedBytes(): number {
    return this.headerFill + (this.body?.length ?? 0);
  }

  /** Frames decoded since the decoder was made. */
  get framesDecoded(): number {
    return this.decoded;
  }

  /** The error that poisoned the decoder, if any. */
  get error(): WireError | undefined {
    return this.failure;
  }

  /** True when no partial frame is held (the connection may end here cleanly). */
  get idle(): boolean {
    return this.headerFill === 0 && this.body === undefined && this.dataLeft === 0;
  }

  /**
   * Decodes the frames that `chunk` completes, in order. Throws a `WireError` (and poisons the
   * decoder) on the first byte that breaks the protocol.
   */
  push(chunk: Uint8Array): Frame[] {
    if (this.failure !== undefined) throw this.failure;
    if (!(chunk instanceof Uint8Array)) {
      throw new WireError('WIRE_INVALID_ARGUMENT', `FrameDecoder.push expects a Uint8Array, got ${typeof chunk}`);
    }
    const frames: Frame[] = [];
    try {
      this.decodeInto(chunk, frames);
    } catch (err) {
      throw this.poison(err);
    }
    return frames;
  }

  /**
   * Call when the connection's bytes have ended. Throws WIRE_MALFORMED if they ended inside a
   * frame (a truncated frame), and poisons the decoder; otherwise does nothing.
   */
  end(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.idle) return;
    const where =
      this.dataLeft > 0
        ? `inside a DATA frame (${this.header.length - this.dataLeft} of ${this.header.length} payload bytes)`
        : this.body === undefined
          ? `inside a frame header (${this.headerFill} of ${HEADER_BYTES} bytes)`
          : `inside a ${wireName(this.header.type)} frame (${this.bodyFill} of ${this.header.length} payload bytes)`;
    throw this.poison(
      new WireError('WIRE_MALFORMED', `truncated frame: the connection ended ${where}`, this.errorContext()),
    );
  }

  private errorContext(): { frameType?: Frame['type']; streamId?: number } {
    if (this.body === undefined && this.dataLeft === 0) return {};
    const { type, streamId } = this.header;
    return streamId === 0 ? { frameType: type } : { frameType: type, streamId };
  }

  private poison(err: unknown): WireError {
    const error =
      err instanceof WireError
        ? err
        : new WireError('WIRE_MALFORMED', 'frame could not be decoded', { ...this.errorContext(), cause: err });
    this.failure = error;
    this.body = undefined;
    this.bodyFill = 0;
    this.dataLeft = 0;
    this.headerFill = 0;
    return error;
  }

  private decodeInto(chunk: Uint8Array, frames: Frame[]): void {
    const end = chunk.length;
    const header = this.header;
    let pos = 0;
    while (pos < end) {
      if (this.dataLeft > 0) {
        // The next piece of a DATA payload that spans chunks: a view, no copy.
        const take = Math.min(this.dataLeft, end - pos);
        frames.push({ type: 'data', streamId: header.streamId, payload: chunk.subarray(pos, pos + take) });
        this.dataLeft -= take;
        pos += take;
        if (this.dataLeft === 0) this.decoded++;
        continue;
      }
      if (this.body !== undefined) {
        pos = this.continueBody(chunk, pos, frames);
        continue;
      }
      if (this.headerFill === 0 && end - pos >= HEADER_BYTES) {
        readHeader(chunk, pos, this.currentLimits, this.decoded, header);
        pos += HEADER_BYTES;
      } else {
        const take = Math.min(HEADER_BYTES - this.headerFill, end - pos);
        for (let i = 0; i < take; i++) this.headerBytes[this.headerFill + i] = chunk[pos + i] ?? 0;
        this.headerFill += take;
        pos += take;
        if (this.headerFill < HEADER_BYTES) {
          checkHeaderPrefix(this.headerBytes, this.headerFill, this.decoded);
          return;
        }
        readHeader(this.headerBytes, 0, this.currentLimits, this.decoded, header);
        this.headerFill = 0;
      }
      const length = header.length;
      if (end - pos >= length) {
        // The whole payload is in this chunk: decode from a view, no copy.
        frames.push(parsePayload(header, chunk, pos));
        this.decoded++;
        pos += length;
      } else if (this.dataPieces && header.type === 'data') {
        this.dataLeft = length;
      } else {
        const available = end - pos;
        this.body = new Uint8Array(Math.min(length, Math.max(INITIAL_SPAN_BYTES, available)));
        this.body.set(chunk.subarray(pos, end), 0);
        this.bodyFill = available;
        pos = end;
      }
    }
  }

  /** Copies payload bytes of the frame in progress; emits it when complete. Returns the new position. */
  private continueBody(chunk: Uint8Array, pos: number, frames: Frame[]): number {
    let body = this.body as Uint8Array;
    const length = this.header.length;
    const take = Math.min(length - this.bodyFill, chunk.length - pos);
    const needed = this.bodyFill + take;
    if (needed > body.length) {
      const grown = new Uint8Array(Math.min(length, Math.max(body.length * 2, needed)));
      grown.set(body.subarray(0, this.bodyFill), 0);
      body = grown;
      this.body = grown;
    }
    body.set(chunk.subarray(pos, pos + take), this.bodyFill);
    this.bodyFill = needed;
    if (needed === length) {
      this.body = undefined;
      this.bodyFill = 0;
      frames.push(parsePayload(this.header, body, 0));
      this.decoded++;
    }
    return pos + take;
  }
}

/**
 * Decodes exactly one frame from `bytes` (a whole frame, nothing more). Throws WIRE_MALFORMED when
 * the bytes are truncated or carry more than one frame.
 */
export function decodeFrame(bytes: Uint8Array, options: FrameDecoderOptions = {}): Frame {
  const decoder = new FrameDecoder(options);
  const frames = decoder.push(bytes);
  decoder.end();
  const [frame] = frames;
  if (frame === undefined || frames.length !== 1) {
    throw new WireError('WIRE_MALFORMED', `expected exactly one frame, found ${frames.length}`);
  }
  return frame;
}
