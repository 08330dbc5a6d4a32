/**
 * Reading, checking and writing the 16-byte frame header, and the u32/u64 integers of the wire.
 * The header is checked in full (including the declared length against the limit for its type)
 * before a single payload byte is buffered.
 */
import { WireError } from './errors.js';
import {
  ATTACH_FIXED_BYTES,
  DEFAULT_MAX_CONTROL_PAYLOAD,
  DEFAULT_MAX_PAYLOAD,
  FRAME_CODES,
  FRAME_NAMES,
  FrameType,
  MAX_SMALL_PAYLOAD,
  MAX_U32,
  U64_BYTES,
  WIRE_MAGIC,
  WIRE_VERSION,
  isConnectionFrameType,
  usesWindow,
  type FrameTypeName,
} from './frame.js';

/** Payload limits a decoder enforces (and an encoder checks against, so peers agree by default). */
export interface FrameLimits {
  /** Largest DATA or DATAGRAM payload, in bytes. Default DEFAULT_MAX_PAYLOAD (256 KiB). */
  maxPayload: number;
  /** Largest CONTROL payload, in bytes. Default DEFAULT_MAX_CONTROL_PAYLOAD (64 MiB). */
  maxControlPayload: number;
}

export const DEFAULT_LIMITS: Readonly<FrameLimits> = Object.freeze({
  maxPayload: DEFAULT_MAX_PAYLOAD,
  maxControlPayload: DEFAULT_MAX_CONTROL_PAYLOAD,
});

/** Fills in defaults and checks the values; a bad option is WIRE_INVALID_ARGUMENT. */
export function resolveLimits(
  options: Partial<FrameLimits> | undefined,
  base: FrameLimits = DEFAULT_LIMITS,
): FrameLimits {
  const pick = (key: keyof FrameLimits): number => {
    const value = options?.[key];
    if (value === undefined) return base[key];
    if (!Number.isInteger(value) || value < 1 || value > MAX_U32) {
      throw new WireError(
        'WIRE_INVALID_ARGUMENT',
        `${key} must be an integer from 1 to ${MAX_U32} bytes, got ${String(value)}`,
      );
    }
    return value;
  };
  return { maxPayload: pick('maxPayload'), maxControlPayload: pick('maxControlPayload') };
}

/** A decoded header. The decoder reuses one instance, so copy fields you keep. */
export interface FrameHeader {
  type: FrameTypeName;
  streamId: number;
  length: number;
  aux: number;
}

const WIRE_NAMES = new Map<number, string>(Object.entries(FrameType).map(([key, code]) => [code, key]));

/** The upper-case wire name of a frame type, for messages: 'openOk' -> 'OPEN_OK'. */
export function wireName(type: FrameTypeName): string {
  return WIRE_NAMES.get(FRAME_CODES[type]) ?? type;
}

export function readU32(bytes: Uint8Array, offset: number): number {
  return (
    (bytes[offset] ?? 0) * 0x100_0000 +
    (((bytes[offset + 1] ?? 0) << 16) | ((bytes[offset + 2] ?? 0) << 8) | (bytes[offset + 3] ?? 0))
  );
}

export function writeU32(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = value >>> 24;
  bytes[offset + 1] = (value >>> 16) & 0xff;
  bytes[offset + 2] = (value >>> 8) & 0xff;
  bytes[offset + 3] = value & 0xff;
}

/** Largest high word of a u64 whose value is still a safe integer (2^53 - 1 >> 32). */
const MAX_SAFE_HIGH = 0x1f_ffff;

/** Reads a u64 as a number; a value above Number.MAX_SAFE_INTEGER is WIRE_MALFORMED. */
export function readU64(
  bytes: Uint8Array,
  offset: number,
  what: string,
  type: FrameTypeName,
  streamId: number,
): number {
  const high = readU32(bytes, offset);
  if (high > MAX_SAFE_HIGH) {
    throw new WireError(
      'WIRE_MALFORMED',
      `${what} in a ${wireName(type)} frame is above 2^53 - 1, the largest offset Roam handles`,
      { frameType: type, ...(streamId === 0 ? {} : { streamId }) },
    );
  }
  return high * 0x1_0000_0000 + readU32(bytes, offset + 4);
}

/** Writes a safe non-negative integer as a u64 (the caller has checked it). */
export function writeU64(bytes: Uint8Array, offset: number, value: number): void {
  writeU32(bytes, offset, Math.floor(value / 0x1_0000_0000));
  writeU32(bytes, offset + 4, value >>> 0);
}

export function writeHeader(
  bytes: Uint8Array,
  type: FrameTypeName,
  streamId: number,
  length: number,
  aux: number,
): void {
  bytes[0] = WIRE_MAGIC;
  bytes[1] = WIRE_VERSION;
  bytes[2] = FRAME_CODES[type];
  bytes[3] = 0;
  writeU32(bytes, 4, streamId);
  writeU32(bytes, 8, length);
  writeU32(bytes, 12, aux);
}

function hex(byte: number): string {
  return `0x${byte.toString(16).padStart(2, '0')}`;
}

function badMagic(byte: number, frameIndex: number): WireError {
  const expected = `expected ${hex(WIRE_MAGIC)} ('R')`;
  if (frameIndex > 0) {
    return new WireError(
      'WIRE_BAD_MAGIC',
      `lost frame sync: frame ${frameIndex + 1} starts with ${hex(byte)}, ${expected}; the peer sent a corrupt or mis-sized frame`,
    );
  }
  let hint = 'the peer does not speak the Roam wire protocol';
  if (byte === 0x16) hint = 'this looks like a TLS handshake: the control port does not speak TLS';
  else if (byte >= 0x41 && byte <= 0x5a) hint += ' (an upper-case letter: perhaps an HTTP request on the control port)';
  return new WireError('WIRE_BAD_MAGIC', `not a Roam peer: first byte ${hex(byte)}, ${expected}; ${hint}`);
}

/**
 * Checks the first `available` bytes of a header that has not fully arrived, so that a peer that
 * is not speaking Roam at all is refused from its first byte.
 */
export function checkHeaderPrefix(bytes: Uint8Array, available: number, frameIndex: number): void {
  if (available >= 1 && bytes[0] !== WIRE_MAGIC) throw badMagic(bytes[0] ?? 0, frameIndex);
  if (available >= 2 && bytes[1] !== WIRE_VERSION) throw unsupportedVersion(bytes[1] ?? 0);
  if (available >= 3 && FRAME_NAMES[bytes[2] ?? 0] === undefined) throw unknownType(bytes[2] ?? 0);
}

function unsupportedVersion(version: number): WireError {
  return new WireError(
    'WIRE_UNSUPPORTED_VERSION',
    `unsupported version: the peer speaks wire version ${version}, this Roam speaks version ${WIRE_VERSION}; run the same Roam release on the proxy and every host`,
  );
}

function unknownType(code: number): WireError {
  return new WireError(
    'WIRE_UNKNOWN_TYPE',
    `unknown frame type ${code}: the peer sent a frame this Roam does not know; run the same Roam release on the proxy and every host`,
  );
}

/** What the header of each frame type must look like, precomputed so the hot path is a lookup. */
interface TypeRule {
  type: FrameTypeName;
  /** Upper-case wire name, for messages. */
  name: string;
  /** Connection frame (streamId 0) rather than stream frame (streamId non-zero). */
  connection: boolean;
  /** aux carries a window (>= 1) rather than 0. */
  window: boolean;
  /** Which limit bounds the payload: a decoder option or a fixed number of bytes. */
  limit: 'maxPayload' | 'maxControlPayload' | number;
  min: number;
  /** The payload has exactly `min` bytes. */
  exact: boolean;
}

function ruleFor(type: FrameTypeName): TypeRule {
  const base = { type, name: wireName(type), connection: isConnectionFrameType(type), window: usesWindow(type) };
  switch (type) {
    case 'data':
    case 'datagram':
      return { ...base, limit: 'maxPayload', min: 0, exact: false };
    case 'control':
      return { ...base, limit: 'maxControlPayload', min: 0, exact: false };
    case 'ping':
    case 'pong':
    case 'ack':
    case 'fin':
      return { ...base, limit: U64_BYTES, min: U64_BYTES, exact: true };
    case 'openOk':
      return { ...base, limit: 0, min: 0, exact: true };
    case 'attach':
      return { ...base, limit: ATTACH_FIXED_BYTES + MAX_SMALL_PAYLOAD, min: ATTACH_FIXED_BYTES, exact: false };
    default:
      return { ...base, limit: MAX_SMALL_PAYLOAD, min: 0, exact: false };
  }
}

/** Rules indexed by type code (undefined for unassigned codes). */
const RULES: readonly (TypeRule | undefined)[] = FRAME_NAMES.map((type) =>
  type === undefined ? undefined : ruleFor(type),
);

function malformed(rule: TypeRule, streamId: number, message: string): WireError {
  return new WireError('WIRE_MALFORMED', message, {
    frameType: rule.type,
    ...(streamId === 0 ? {} : { streamId }),
  });
}

function checkLength(rule: TypeRule, streamId: number, length: number, limits: FrameLimits): void {
  const max = typeof rule.limit === 'number' ? rule.limit : limits[rule.limit];
  if (rule.exact) {
    if (length !== rule.min) {
      throw malformed(
        rule,
        streamId,
        `a ${rule.name} frame must have a ${rule.min}-byte payload, this one declares ${length}`,
      );
    }
  } else if (length > max) {
    const limitName = typeof rule.limit === 'number' ? `the fixed limit for ${rule.name}` : rule.limit;
    throw new WireError(
      'WIRE_FRAME_TOO_LARGE',
      `frame too large: a ${rule.name} frame declares ${length} payload bytes, ${limitName} is ${max}`,
      { frameType: rule.type, ...(streamId === 0 ? {} : { streamId }) },
    );
  } else if (length < rule.min) {
    throw malformed(
      rule,
      streamId,
      `a ${rule.name} frame needs at least ${rule.min} payload bytes, this one declares ${length}`,
    );
  }
}

/**
 * Reads and checks the header at `offset` (16 bytes must be there) into `out`. `frameIndex` counts
 * frames decoded so far on the connection (it only shapes error messages).
 */
export function readHeader(
  bytes: Uint8Array,
  offset: number,
  limits: FrameLimits,
  frameIndex: number,
  out: FrameHeader,
): void {
  const magic = bytes[offset] ?? 0;
  if (magic !== WIRE_MAGIC) throw badMagic(magic, frameIndex);
  const version = bytes[offset + 1] ?? 0;
  if (version !== WIRE_VERSION) throw unsupportedVersion(version);
  const code = bytes[offset + 2] ?? 0;
  const rule = RULES[code];
  if (rule === undefined) throw unknownType(code);
  const flags = bytes[offset + 3] ?? 0;
  const streamId = readU32(bytes, offset + 4);
  const length = readU32(bytes, offset + 8);
  const aux = readU32(bytes, offset + 12);

  checkLength(rule, streamId, length, limits);
  if (flags !== 0) {
    throw malformed(rule, streamId, `a ${rule.name} frame has flags ${hex(flags)}; flags must be 0 in wire version 1`);
  }
  if (rule.connection) {
    if (streamId !== 0) {
      throw malformed(
        rule,
        streamId,
        `a ${rule.name} frame belongs to the connection and must have streamId 0, got ${streamId}`,
      );
    }
  } else if (streamId === 0) {
    throw malformed(rule, streamId, `a ${rule.name} frame belongs to a stream and must have a non-zero streamId`);
  }
  if (rule.window) {
    if (aux === 0) {
      throw malformed(rule, streamId, `a ${rule.name} frame must grant a window of at least 1 byte (aux), got 0`);
    }
  } else if (aux !== 0) {
    throw malformed(rule, streamId, `a ${rule.name} frame must have aux 0, got ${aux}`);
  }
  out.type = rule.type;
  out.streamId = streamId;
  out.length = length;
  out.aux = aux;
}
