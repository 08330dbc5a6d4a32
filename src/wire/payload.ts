/**
 * Turns a checked header and its complete payload into a typed `Frame`. The header rules (sizes,
 * stream ids, aux) have already been enforced by `readHeader`; this checks what is inside.
 */
import { WireError, type WireErrorOptions } from './errors.js';
import { ATTACH_FIXED_BYTES, type AttachFrame, type Frame } from './frame.js';
import { readU64, wireName, type FrameHeader } from './header.js';
import { parseJson, parseJsonValue, validate } from './json.js';
import {
  CONTROL_PROTOCOL,
  attachInfoSchema,
  controlMessageSchema,
  errorInfoSchema,
  joinSchema,
  streamOpenSchema,
  welcomeSchema,
} from './messages.js';
import { checkReport } from './report.js';

function contextOf(h: FrameHeader): WireErrorOptions {
  return h.streamId === 0 ? { frameType: h.type } : { frameType: h.type, streamId: h.streamId };
}

/** The join message is checked for its protocol version first, so an old or new peer is told so. */
function parseJoin(bytes: Uint8Array, h: FrameHeader) {
  const context = contextOf(h);
  const value = parseJsonValue(bytes, 'HELLO payload', context);
  if (typeof value === 'object' && value !== null && 'protocol' in value) {
    const protocol: unknown = value.protocol;
    if (typeof protocol === 'number' && protocol !== CONTROL_PROTOCOL) {
      throw new WireError(
        'WIRE_UNSUPPORTED_VERSION',
        `unsupported version: the controller speaks control protocol ${protocol}, this proxy speaks protocol ${CONTROL_PROTOCOL}; run the same Roam release on the proxy and every host`,
        context,
      );
    }
  }
  return validate(value, joinSchema, 'HELLO payload (join message)', context);
}

/** `bytes[offset, offset + h.length)` is the payload; DATA and DATAGRAM payloads are views of it. */
export function parsePayload(h: FrameHeader, bytes: Uint8Array, offset: number): Frame {
  const { streamId, length } = h;
  switch (h.type) {
    case 'data':
      return { type: 'data', streamId, payload: bytes.subarray(offset, offset + length) };
    case 'ack':
      return { type: 'ack', streamId, offset: readU64(bytes, offset, 'the ACK offset', 'ack', streamId) };
    case 'datagram':
      return { type: 'datagram', streamId, payload: bytes.subarray(offset, offset + length) };
    case 'fin':
      return { type: 'fin', streamId, offset: readU64(bytes, offset, 'the FIN offset', 'fin', streamId) };
    case 'ping':
      return { type: 'ping', nonce: readU64(bytes, offset, 'the PING nonce', 'ping', 0) };
    case 'pong':
      return { type: 'pong', nonce: readU64(bytes, offset, 'the PONG nonce', 'pong', 0) };
    case 'openOk':
      return { type: 'openOk', streamId, window: h.aux };
    case 'attach': {
      const receivedOffset = readU64(bytes, offset, 'receivedOffset', 'attach', streamId);
      const sentOffset = readU64(bytes, offset + 8, 'sentOffset', 'attach', streamId);
      const frame: AttachFrame = { type: 'attach', streamId, window: h.aux, receivedOffset, sentOffset };
      if (length > ATTACH_FIXED_BYTES) {
        const tail = bytes.subarray(offset + ATTACH_FIXED_BYTES, offset + length);
        frame.info = parseJson(tail, attachInfoSchema, 'ATTACH tail', contextOf(h));
      }
      return frame;
    }
    default:
      return parseJsonFrame(h, bytes.subarray(offset, offset + length));
  }
}

function parseJsonFrame(h: FrameHeader, body: Uint8Array): Frame {
  const context = contextOf(h);
  const what = `${wireName(h.type)} payload`;
  const streamId = h.streamId;
  switch (h.type) {
    case 'hello':
      return { type: 'hello', message: parseJoin(body, h) };
    case 'welcome':
      return { type: 'welcome', message: parseJson(body, welcomeSchema, `${what} (welcome message)`, context) };
    case 'control': {
      const value = parseJsonValue(body, `${what} (control message)`, context);
      // Reports, every host's every interval, have a fast check; anything it does not pass, the schema judges.
      const message = checkReport(value) ?? validate(value, controlMessageSchema, `${what} (control message)`, context);
      return { type: 'control', message };
    }
    case 'goaway':
      return { type: 'goaway', ...parseJson(body, errorInfoSchema, what, context) };
    case 'open':
      return { type: 'open', streamId, window: h.aux, ...parseJson(body, streamOpenSchema, what, context) };
    case 'openFail':
      return { type: 'openFail', streamId, ...parseJson(body, errorInfoSchema, what, context) };
    case 'rst':
      return { type: 'rst', streamId, ...parseJson(body, errorInfoSchema, what, context) };
    default:
      // Every type is handled above or in parsePayload; reaching here is a bug in this module.
      throw new WireError('WIRE_MALFORMED', `no payload decoder for ${wireName(h.type)} frames`, context);
  }
}
