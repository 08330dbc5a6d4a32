/**
 * Encoders. `encodeFrame` builds any frame as one buffer, checking every field and JSON message
 * first, so that we never send what a peer of the same version refuses. The hot frames have fast
 * paths: `encodeDataHeader` returns only the 16-byte header, so the caller can write it and the
 * payload back to back (`socket.cork(); socket.write(header); socket.write(payload); socket.uncork()`)
 * without copying the payload; `encodeAck` builds a 24-byte ACK directly.
 */
import { Buffer } from 'node:buffer';
import type { z } from 'zod';
import { WireError } from './errors.js';
import {
  ATTACH_FIXED_BYTES,
  FRAME_CODES,
  HEADER_BYTES,
  MAX_SMALL_PAYLOAD,
  MAX_U32,
  U64_BYTES,
  isConnectionFrameType,
  type Frame,
  type FrameTypeName,
} from './frame.js';
import { DEFAULT_LIMITS, resolveLimits, wireName, writeHeader, writeU64, type FrameLimits } from './header.js';
import { validate } from './json.js';
import {
  attachInfoSchema,
  controlMessageSchema,
  errorInfoSchema,
  joinSchema,
  streamOpenSchema,
  welcomeSchema,
} from './messages.js';

const utf8 = new TextEncoder();

function invalid(message: string, type?: FrameTypeName): WireError {
  return new WireError('WIRE_INVALID_ARGUMENT', message, type === undefined ? {} : { frameType: type });
}

function checkStreamId(streamId: number, type: FrameTypeName): void {
  if (!Number.isInteger(streamId) || streamId < 1 || streamId > MAX_U32) {
    throw invalid(
      `cannot encode ${wireName(type)}: streamId must be an integer from 1 to ${MAX_U32}, got ${String(streamId)}`,
      type,
    );
  }
}

function checkWindow(window: number, type: FrameTypeName): void {
  if (!Number.isInteger(window) || window < 1 || window > MAX_U32) {
    throw invalid(
      `cannot encode ${wireName(type)}: window must be an integer from 1 to ${MAX_U32}, got ${String(window)}`,
      type,
    );
  }
}

function checkU64(value: number, what: string, type: FrameTypeName): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw invalid(
      `cannot encode ${wireName(type)}: ${what} must be an integer from 0 to 2^53 - 1, got ${String(value)}`,
      type,
    );
  }
}

function tooLarge(type: FrameTypeName, length: number, limitName: string, limit: number): WireError {
  return new WireError(
    'WIRE_FRAME_TOO_LARGE',
    `cannot encode ${wireName(type)}: its payload is ${length} bytes, ${limitName} is ${limit}`,
    { frameType: type },
  );
}

function checkPayload(payload: unknown, type: FrameTypeName, maxPayload: number): Uint8Array {
  if (!(payload instanceof Uint8Array))
    throw invalid(`cannot encode ${wireName(type)}: payload must be a Uint8Array`, type);
  if (payload.length > maxPayload) throw tooLarge(type, payload.length, 'maxPayload', maxPayload);
  return payload;
}

/** A header plus `prefix` fixed bytes plus a UTF-8 JSON body, written straight into one buffer. */
function jsonFrame(
  type: FrameTypeName,
  streamId: number,
  aux: number,
  body: unknown,
  limit: number,
  limitName: string,
  prefix = 0,
): Uint8Array {
  const text = JSON.stringify(body);
  const length = Buffer.byteLength(text, 'utf8');
  if (length > limit) throw tooLarge(type, length, limitName, limit);
  const bytes = new Uint8Array(HEADER_BYTES + prefix + length);
  writeHeader(bytes, type, streamId, prefix + length, aux);
  utf8.encodeInto(text, bytes.subarray(HEADER_BYTES + prefix));
  return bytes;
}

function valid<T>(value: unknown, schema: z.ZodType<T>, type: FrameTypeName, what: string): T {
  return validate(value, schema, `cannot encode ${wireName(type)}: ${what}`, { frameType: type });
}

function u64Frame(type: FrameTypeName, streamId: number, value: number): Uint8Array {
  const bytes = new Uint8Array(HEADER_BYTES + U64_BYTES);
  writeHeader(bytes, type, streamId, U64_BYTES, 0);
  writeU64(bytes, HEADER_BYTES, value);
  return bytes;
}

/**
 * Encodes any frame into one new buffer. `limits` are the peer's decoder limits (the defaults
 * unless both sides were configured otherwise). Throws WireError: WIRE_INVALID_ARGUMENT for a bad
 * field, WIRE_BAD_MESSAGE for a JSON message that fails its schema, WIRE_FRAME_TOO_LARGE for a
 * payload above the limit.
 */
export function encodeFrame(frame: Frame, limits?: Partial<FrameLimits>): Uint8Array {
  if (typeof frame !== 'object' || frame === null || !Object.hasOwn(FRAME_CODES, frame.type)) {
    throw invalid(`cannot encode a frame of unknown type ${String((frame as { type?: unknown } | null)?.type)}`);
  }
  const { maxPayload, maxControlPayload } = limits === undefined ? DEFAULT_LIMITS : resolveLimits(limits);
  const type = frame.type;
  if (!isConnectionFrameType(type)) checkStreamId((frame as { streamId: number }).streamId, type);
  const small = 'the fixed limit';
  switch (frame.type) {
    case 'data':
    case 'datagram': {
      const payload = checkPayload(frame.payload, type, maxPayload);
      const bytes = new Uint8Array(HEADER_BYTES + payload.length);
      writeHeader(bytes, type, frame.streamId, payload.length, 0);
      bytes.set(payload, HEADER_BYTES);
      return bytes;
    }
    case 'ack':
    case 'fin':
      checkU64(frame.offset, 'offset', type);
      return u64Frame(type, frame.streamId, frame.offset);
    case 'ping':
    case 'pong':
      checkU64(frame.nonce, 'nonce', type);
      return u64Frame(type, 0, frame.nonce);
    case 'openOk': {
      checkWindow(frame.window, type);
      const bytes = new Uint8Array(HEADER_BYTES);
      writeHeader(bytes, type, frame.streamId, 0, frame.window);
      return bytes;
    }
    case 'attach': {
      checkWindow(frame.window, type);
      checkU64(frame.receivedOffset, 'receivedOffset', type);
      checkU64(frame.sentOffset, 'sentOffset', type);
      let bytes: Uint8Array;
      if (frame.info === undefined) {
        bytes = new Uint8Array(HEADER_BYTES + ATTACH_FIXED_BYTES);
        writeHeader(bytes, type, frame.streamId, ATTACH_FIXED_BYTES, frame.window);
      } else {
        const info = valid(frame.info, attachInfoSchema, type, 'info');
        bytes = jsonFrame(type, frame.streamId, frame.window, info, MAX_SMALL_PAYLOAD, small, ATTACH_FIXED_BYTES);
      }
      writeU64(bytes, HEADER_BYTES, frame.receivedOffset);
      writeU64(bytes, HEADER_BYTES + U64_BYTES, frame.sentOffset);
      return bytes;
    }
    case 'hello':
      return jsonFrame(type, 0, 0, valid(frame.message, joinSchema, type, 'join message'), MAX_SMALL_PAYLOAD, small);
    case 'welcome':
      return jsonFrame(
        type,
        0,
        0,
        valid(frame.message, welcomeSchema, type, 'welcome message'),
        MAX_SMALL_PAYLOAD,
        small,
      );
    case 'control':
      return jsonFrame(
        type,
        0,
        0,
        valid(frame.message, controlMessageSchema, type, 'control message'),
        maxControlPayload,
        'maxControlPayload',
      );
    case 'goaway':
      return jsonFrame(type, 0, 0, valid(frame, errorInfoSchema, type, 'payload'), MAX_SMALL_PAYLOAD, small);
    case 'open':
      checkWindow(frame.window, type);
      return jsonFrame(
        type,
        frame.streamId,
        frame.window,
        valid(frame, streamOpenSchema, type, 'payload'),
        MAX_SMALL_PAYLOAD,
        small,
      );
    case 'openFail':
    case 'rst':
      return jsonFrame(
        type,
        frame.streamId,
        0,
        valid(frame, errorInfoSchema, type, 'payload'),
        MAX_SMALL_PAYLOAD,
        small,
      );
  }
}

function streamHeader(type: 'data' | 'datagram', streamId: number, length: number, maxPayload: number): Uint8Array {
  checkStreamId(streamId, type);
  if (!Number.isInteger(length) || length < 0) {
    throw invalid(
      `cannot encode ${wireName(type)}: length must be a non-negative integer, got ${String(length)}`,
      type,
    );
  }
  if (length > maxPayload) throw tooLarge(type, length, 'maxPayload', maxPayload);
  const bytes = new Uint8Array(HEADER_BYTES);
  writeHeader(bytes, type, streamId, length, 0);
  return bytes;
}

/**
 * The 16-byte header of a DATA frame whose `length` payload bytes the caller writes right after it.
 * Split larger writes into frames of at most `maxPayload` (the peer's limit, default 256 KiB).
 */
export function encodeDataHeader(streamId: number, length: number, maxPayload = DEFAULT_LIMITS.maxPayload): Uint8Array {
  return streamHeader('data', streamId, length, maxPayload);
}

/** The 16-byte header of a DATAGRAM frame; the datagram's bytes follow it. */
export function encodeDatagramHeader(
  streamId: number,
  length: number,
  maxPayload = DEFAULT_LIMITS.maxPayload,
): Uint8Array {
  return streamHeader('datagram', streamId, length, maxPayload);
}

/** A complete ACK frame (24 bytes): every byte of the peer's direction below `offset` is delivered. */
export function encodeAck(streamId: number, offset: number): Uint8Array {
  checkStreamId(streamId, 'ack');
  checkU64(offset, 'offset', 'ack');
  return u64Frame('ack', streamId, offset);
}
