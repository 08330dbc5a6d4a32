/**
 * The frame layout, frame type codes, limits and the `Frame` union: the shape of everything the
 * proxy and a controller say to each other over their one control connection.
 *
 * Every frame is a 16-byte header in network byte order, then `payloadLength` bytes:
 *
 *     offset  size  field
 *          0     1  magic          0x52 ('R')
 *          1     1  version        WIRE_VERSION (1)
 *          2     1  type           FrameType code
 *          3     1  flags          reserved, must be 0 in version 1
 *          4     4  streamId       0 for connection frames, non-zero for stream frames
 *          8     4  payloadLength  checked against the type's limit as soon as the header is read
 *         12     4  aux            the stream window for OPEN, OPEN_OK and ATTACH; 0 for every other type
 *
 * Payloads by type (offsets are u64 on the wire, exposed as numbers, refused above 2^53 - 1):
 *
 *     HELLO     1  connection  JSON `join` message (controller -> proxy, first frame)
 *     WELCOME   2  connection  JSON `welcome` message (proxy -> controller, answer to HELLO)
 *     CONTROL   3  connection  JSON control message, typed by its `type` field, both ways
 *     PING      4  connection  u64 nonce (a timestamp or counter chosen by the sender)
 *     PONG      5  connection  u64 nonce, echoed from the PING
 *     GOAWAY    6  connection  JSON {code, message}: why the sender is closing the connection
 *     OPEN     16  stream      JSON {guest, protocol, direction, port, remote}; aux = window
 *     OPEN_OK  17  stream      empty; aux = window
 *     OPEN_FAIL 18 stream      JSON {code, message}, e.g. ECONNREFUSED
 *     DATA     19  stream      the stream's next bytes, in order
 *     ACK      20  stream      u64 offset: every byte of the peer's direction up to here is delivered
 *     FIN      21  stream      u64 final offset of the sender's direction (half-close)
 *     RST      22  stream      JSON {code, message}: the stream is aborted
 *     ATTACH   23  stream      u64 receivedOffset, u64 sentOffset, optional JSON tail; aux = window
 *     DATAGRAM 24  stream      one UDP datagram of the flow `streamId`
 *
 * Flow control: a side may send DATA up to (last offset the peer ACKed) + (window the peer gave in
 * OPEN, OPEN_OK or ATTACH). The opener of a stream may send DATA and FIN right behind its OPEN,
 * before the answer, up to EARLY_WINDOW (64 KiB; no window is smaller): the acceptor keeps them
 * until it decides, and drops them without a reset when it answers OPEN_FAIL. The codec only
 * carries the numbers; the session enforces them.
 */
import type {
  AttachInfo,
  ConnectionOpenInfo,
  ControlMessage,
  ErrorInfo,
  ImageOpenInfo,
  JoinMessage,
  WelcomeMessage,
} from './messages.js';

/** First byte of every frame: 'R'. */
export const WIRE_MAGIC = 0x52;
/** The framing version this build reads and writes. */
export const WIRE_VERSION = 1;
/** Bytes in every frame header. */
export const HEADER_BYTES = 16;

/** Largest value of a u32 header field. */
export const MAX_U32 = 0xffff_ffff;

/** Default limit for DATA and DATAGRAM payloads (and the default a sender should chunk at). */
export const DEFAULT_MAX_PAYLOAD = 256 * 1024;
/**
 * Default limit for CONTROL payloads. A `deploy` carries a bundle of up to 32 Mi characters as a
 * JSON string; mostly-ASCII JavaScript grows little when escaped, so 64 MiB leaves room for it.
 */
export const DEFAULT_MAX_CONTROL_PAYLOAD = 64 * 1024 * 1024;
/**
 * Fixed limit for the small JSON frames (HELLO, WELCOME, GOAWAY, OPEN, OPEN_FAIL, RST and the JSON
 * tail of ATTACH). Their schemas bound every string, so a valid message always fits, escaped.
 * An unauthenticated peer can therefore make us buffer at most this much for a HELLO.
 */
export const MAX_SMALL_PAYLOAD = 16 * 1024;
/** Bytes of the u64 payload of PING, PONG, ACK and FIN. */
export const U64_BYTES = 8;
/** Fixed part of an ATTACH payload: receivedOffset and sentOffset. */
export const ATTACH_FIXED_BYTES = 16;
/** Default stream window: bytes a side may send beyond the peer's last ACK. */
export const DEFAULT_STREAM_WINDOW = 256 * 1024;

/** Numeric frame type codes. Stable: never renumber, only add. */
export const FrameType = {
  HELLO: 1,
  WELCOME: 2,
  CONTROL: 3,
  PING: 4,
  PONG: 5,
  GOAWAY: 6,
  OPEN: 16,
  OPEN_OK: 17,
  OPEN_FAIL: 18,
  DATA: 19,
  ACK: 20,
  FIN: 21,
  RST: 22,
  ATTACH: 23,
  DATAGRAM: 24,
} as const;

export type FrameTypeCode = (typeof FrameType)[keyof typeof FrameType];

/** Connection-level frames: streamId must be 0. */
export interface HelloFrame {
  type: 'hello';
  message: JoinMessage;
}
export interface WelcomeFrame {
  type: 'welcome';
  message: WelcomeMessage;
}
export interface ControlFrame {
  type: 'control';
  message: ControlMessage;
}
export interface PingFrame {
  type: 'ping';
  nonce: number;
}
export interface PongFrame {
  type: 'pong';
  nonce: number;
}
export interface GoawayFrame extends ErrorInfo {
  type: 'goaway';
}

/** Stream frames: streamId is 1..2^32-1. */
interface OpenHeader {
  type: 'open';
  streamId: number;
  /** Bytes the opener lets the peer send beyond the opener's last ACK (1..2^32-1). */
  window: number;
}
/** OPEN of a stream or flow that carries a connection. */
export type OpenFrame = OpenHeader & ConnectionOpenInfo;
/** OPEN of a stream that carries a checkpoint image. */
export type ImageOpenFrame = OpenHeader & ImageOpenInfo;
export interface OpenOkFrame {
  type: 'openOk';
  streamId: number;
  /** Bytes the accepter lets the opener send beyond the accepter's last ACK (1..2^32-1). */
  window: number;
}
export interface OpenFailFrame extends ErrorInfo {
  type: 'openFail';
  streamId: number;
}
export interface DataFrame {
  type: 'data';
  streamId: number;
  /**
   * The bytes. A decoded payload may be a view into the chunk passed to `FrameDecoder.push` (a
   * Buffer if the chunk was one): it stays valid while that chunk is not modified, and keeps the
   * chunk's memory alive while held. A payload that spanned chunks is a fresh, exactly sized copy.
   */
  payload: Uint8Array;
}
export interface AckFrame {
  type: 'ack';
  streamId: number;
  /** Every byte of the peer's direction below this offset has been delivered (cumulative). */
  offset: number;
}
export interface FinFrame {
  type: 'fin';
  streamId: number;
  /** Total bytes the sender's direction carried; it sends no more DATA. */
  offset: number;
}
export interface RstFrame extends ErrorInfo {
  type: 'rst';
  streamId: number;
}
export interface AttachFrame {
  type: 'attach';
  streamId: number;
  /** Receive window granted to the peer from here on (1..2^32-1). */
  window: number;
  /** Bytes of the peer's direction this side has delivered. */
  receivedOffset: number;
  /** Bytes this side has produced on its own direction. */
  sentOffset: number;
  /** Optional JSON tail. */
  info?: AttachInfo;
}
export interface DatagramFrame {
  type: 'datagram';
  streamId: number;
  /** One datagram; the same lifetime rule as `DataFrame.payload`. */
  payload: Uint8Array;
}

export type ConnectionFrame = HelloFrame | WelcomeFrame | ControlFrame | PingFrame | PongFrame | GoawayFrame;
export type StreamFrame =
  | OpenFrame
  | ImageOpenFrame
  | OpenOkFrame
  | OpenFailFrame
  | DataFrame
  | AckFrame
  | FinFrame
  | RstFrame
  | AttachFrame
  | DatagramFrame;
export type Frame = ConnectionFrame | StreamFrame;
export type FrameTypeName = Frame['type'];

/** Frame type name -> wire code. */
export const FRAME_CODES: { readonly [K in FrameTypeName]: FrameTypeCode } = {
  hello: FrameType.HELLO,
  welcome: FrameType.WELCOME,
  control: FrameType.CONTROL,
  ping: FrameType.PING,
  pong: FrameType.PONG,
  goaway: FrameType.GOAWAY,
  open: FrameType.OPEN,
  openOk: FrameType.OPEN_OK,
  openFail: FrameType.OPEN_FAIL,
  data: FrameType.DATA,
  ack: FrameType.ACK,
  fin: FrameType.FIN,
  rst: FrameType.RST,
  attach: FrameType.ATTACH,
  datagram: FrameType.DATAGRAM,
};

/** Wire code -> frame type name, for codes 0..255 (undefined where no type is assigned). */
export const FRAME_NAMES: readonly (FrameTypeName | undefined)[] = (() => {
  const names = new Array<FrameTypeName | undefined>(256).fill(undefined);
  for (const [name, code] of Object.entries(FRAME_CODES)) names[code] = name as FrameTypeName;
  return names;
})();

const CONNECTION_TYPES: ReadonlySet<FrameTypeName> = new Set(['hello', 'welcome', 'control', 'ping', 'pong', 'goaway']);

/** True for frames that belong to the connection (streamId 0), false for stream frames. */
export function isConnectionFrameType(type: FrameTypeName): boolean {
  return CONNECTION_TYPES.has(type);
}

/** Types whose header `aux` field carries the stream window; every other type must send aux = 0. */
export function usesWindow(type: FrameTypeName): boolean {
  return type === 'open' || type === 'openOk' || type === 'attach';
}
