/**
 * The wire protocol between the Proxy and each Interface Controller: framing, frame types, control
 * message schemas and a streaming decoder. Pure: no sockets, no timers, no I/O.
 */
export {
  ATTACH_FIXED_BYTES,
  DEFAULT_MAX_CONTROL_PAYLOAD,
  DEFAULT_MAX_PAYLOAD,
  DEFAULT_STREAM_WINDOW,
  FRAME_CODES,
  FrameType,
  HEADER_BYTES,
  MAX_SMALL_PAYLOAD,
  MAX_U32,
  U64_BYTES,
  WIRE_MAGIC,
  WIRE_VERSION,
  isConnectionFrameType,
  type AckFrame,
  type AttachFrame,
  type ConnectionFrame,
  type ControlFrame,
  type DataFrame,
  type DatagramFrame,
  type FinFrame,
  type Frame,
  type FrameTypeCode,
  type FrameTypeName,
  type GoawayFrame,
  type HelloFrame,
  type OpenFailFrame,
  type OpenFrame,
  type ImageOpenFrame,
  type OpenOkFrame,
  type PingFrame,
  type PongFrame,
  type RstFrame,
  type StreamFrame,
  type WelcomeFrame,
} from './frame.js';
export { WireError, isWireError, type WireErrorCode, type WireErrorOptions } from './errors.js';
export { DEFAULT_LIMITS, type FrameLimits } from './header.js';
export { FrameDecoder, decodeFrame, type FrameDecoderOptions } from './decode.js';
export { encodeAck, encodeDataHeader, encodeDatagramHeader, encodeFrame } from './encode.js';
export * from './messages.js';
