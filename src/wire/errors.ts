/**
 * Every wire failure is a `WireError` with a stable `code`: tell them apart by the code, never by
 * the message text. Decode errors mean the peer sent something we will not act on; the owner of the
 * connection closes it with the error as the reason (invariant 5). Encode errors mean this process
 * tried to send something the protocol cannot carry, a local bug or an oversized input.
 *
 * | code                       | raised when                                                          |
 * | -------------------------- | -------------------------------------------------------------------- |
 * | `WIRE_BAD_MAGIC`           | the first byte of a frame is not 0x52 ('R'): not a Roam peer          |
 * | `WIRE_UNSUPPORTED_VERSION` | the frame version, or the join message's `protocol`, is not ours     |
 * | `WIRE_UNKNOWN_TYPE`        | the frame type code is not one we know                               |
 * | `WIRE_FRAME_TOO_LARGE`     | a declared payload length exceeds the limit for its frame type        |
 * | `WIRE_MALFORMED`           | a header field or binary payload breaks the framing rules            |
 * | `WIRE_BAD_MESSAGE`         | a JSON payload is not UTF-8 JSON or does not match its schema        |
 * | `WIRE_INVALID_ARGUMENT`    | a caller passed an option or frame field the codec cannot accept      |
 */
import type { FrameTypeName } from './frame.js';

export type WireErrorCode =
  | 'WIRE_BAD_MAGIC'
  | 'WIRE_UNSUPPORTED_VERSION'
  | 'WIRE_UNKNOWN_TYPE'
  | 'WIRE_FRAME_TOO_LARGE'
  | 'WIRE_MALFORMED'
  | 'WIRE_BAD_MESSAGE'
  | 'WIRE_INVALID_ARGUMENT';

export interface WireErrorOptions {
  cause?: unknown;
  /** The frame the error is about, when its header had been read. */
  frameType?: FrameTypeName;
  /** The stream the frame belonged to, when it was a stream frame. */
  streamId?: number;
}

export class WireError extends Error {
  override readonly name = 'WireError';
  readonly code: WireErrorCode;
  readonly frameType: FrameTypeName | undefined;
  readonly streamId: number | undefined;

  constructor(code: WireErrorCode, message: string, options: WireErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.frameType = options.frameType;
    this.streamId = options.streamId;
  }
}

export function isWireError(err: unknown, code?: WireErrorCode): err is WireError {
  return err instanceof WireError && (code === undefined || err.code === code);
}
