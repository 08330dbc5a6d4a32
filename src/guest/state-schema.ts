/**
 * The host-side state in a checkpoint image, validated before use: an image is untrusted input
 * (it may come from another machine), and its checksum only proves it was not damaged on the way.
 * Written out by hand (src/common/validate.ts), as the image header is: every restore and every
 * move's target reads one, and zod took about 4 ms over the first state a process checked.
 * Unknown keys are dropped, not refused (as zod's objects did): the Roam version check is where an
 * image from another version is turned away.
 */
import { Buffer } from 'node:buffer';
import { RoamError } from '../errors.js';
import {
  ValidationError,
  type Fields,
  array,
  at,
  base64,
  boolean,
  finite,
  integer,
  nullable,
  object,
  oneOf,
  text,
} from '../common/validate.js';
import type { ClockState } from './host/clock.js';
import type { DgramState } from './host/dgram.js';
import type { LogRecord, LogState } from './host/log.js';
import type { NetState, ServerState, SocketState } from './host/net.js';
import type { TimerState } from './host/timers.js';
import type { AddressInfo, CarriedConnection, Endpoints } from './network/types.js';
import type { HostValue, SandboxLimits } from './sandbox/sandbox.js';

/** A value a held event carries, as JSON has it: bytes as `{ b64 }`, undefined as `{ undefined: true }`. */
export type HeldValue = string | number | boolean | null | { b64: string } | { undefined: true };

export interface GuestState {
  limits: SandboxLimits;
  argv: string[];
  clock: ClockState;
  timers: TimerState[];
  immediatePending: boolean;
  net: NetState;
  dgram: DgramState;
  log: LogState;
  cpuMs: number;
  /**
   * Events that reached the guest while it was frozen for the capture (for example a connect that
   * completed while a move waited for it), in order; the guest gets them where it resumes. Absent:
   * none.
   */
  held?: Array<[string, HeldValue[]]>;
}

const MAX_BYTES_B64 = 64 * 1024 * 1024;
/** An object of the state: these keys must be there; any others are dropped. */
const fields = (value: unknown, path: string, required: readonly string[]): Fields =>
  object(value, path, required, [], false);
const id = (v: unknown, path: string): number => integer(v, path, 1, Number.MAX_SAFE_INTEGER);
const port = (v: unknown, path: string): number => integer(v, path, 0, 65535);
const count = (v: unknown, path: string): number => finite(v, path, 0);
const host = (v: unknown, path: string): string | null => nullable(v, path, (h, p) => text(h, p, 0, 256));

function address(value: unknown, path: string): AddressInfo {
  const f = fields(value, path, ['address', 'family', 'port']);
  return {
    address: text(f['address'], at(path, 'address'), 0, 256),
    family: oneOf(f['family'], at(path, 'family'), ['IPv4', 'IPv6'] as const),
    port: port(f['port'], at(path, 'port')),
  };
}

function endpoints(value: unknown, path: string): Endpoints {
  const f = fields(value, path, ['localAddress', 'localPort', 'remoteAddress', 'remotePort', 'remoteFamily']);
  return {
    localAddress: text(f['localAddress'], at(path, 'localAddress'), 0, 256),
    localPort: port(f['localPort'], at(path, 'localPort')),
    remoteAddress: text(f['remoteAddress'], at(path, 'remoteAddress'), 0, 256),
    remotePort: port(f['remotePort'], at(path, 'remotePort')),
    remoteFamily: text(f['remoteFamily'], at(path, 'remoteFamily'), 0, 16),
  };
}

function carried(value: unknown, path: string): CarriedConnection {
  const f = fields(value, path, ['streamId', 'received', 'sent', 'acked', 'unacked', 'ended']);
  return {
    streamId: integer(f['streamId'], at(path, 'streamId'), 0, 0xffff_ffff),
    received: count(f['received'], at(path, 'received')),
    sent: count(f['sent'], at(path, 'sent')),
    acked: count(f['acked'], at(path, 'acked')),
    unacked: base64(f['unacked'], at(path, 'unacked'), MAX_BYTES_B64),
    ended: boolean(f['ended'], at(path, 'ended')),
  };
}

function socket(value: unknown, path: string): SocketState {
  const f = fields(value, path, ['id', 'endpoints', 'bytesIn', 'bytesOut', 'ref']);
  const out: SocketState = {
    id: id(f['id'], at(path, 'id')),
    endpoints: nullable(f['endpoints'], at(path, 'endpoints'), endpoints),
    bytesIn: count(f['bytesIn'], at(path, 'bytesIn')),
    bytesOut: count(f['bytesOut'], at(path, 'bytesOut')),
    ref: boolean(f['ref'], at(path, 'ref')),
  };
  if (f['paused'] !== undefined) out.paused = boolean(f['paused'], at(path, 'paused'));
  if (f['ended'] !== undefined) out.ended = boolean(f['ended'], at(path, 'ended'));
  if (f['link'] !== undefined) out.link = carried(f['link'], at(path, 'link'));
  return out;
}

function server(value: unknown, path: string): ServerState {
  const f = fields(value, path, ['id', 'request', 'address', 'ref']);
  const request = fields(f['request'], at(path, 'request'), ['port', 'host']);
  return {
    id: id(f['id'], at(path, 'id')),
    request: {
      port: port(request['port'], at(path, 'request.port')),
      host: host(request['host'], at(path, 'request.host')),
    },
    address: nullable(f['address'], at(path, 'address'), address),
    ref: boolean(f['ref'], at(path, 'ref')),
  };
}

function datagramSocket(value: unknown, path: string): DgramState['sockets'][number] {
  const f = fields(value, path, ['id', 'request', 'address', 'ref']);
  const request = fields(f['request'], at(path, 'request'), ['type', 'port', 'host']);
  return {
    id: id(f['id'], at(path, 'id')),
    request: {
      type: oneOf(request['type'], at(path, 'request.type'), ['udp4', 'udp6'] as const),
      port: port(request['port'], at(path, 'request.port')),
      host: host(request['host'], at(path, 'request.host')),
    },
    address: nullable(f['address'], at(path, 'address'), address),
    ref: boolean(f['ref'], at(path, 'ref')),
  };
}

function timer(value: unknown, path: string): TimerState {
  const f = fields(value, path, ['id', 'remaining', 'ref']);
  return {
    id: id(f['id'], at(path, 'id')),
    remaining: count(f['remaining'], at(path, 'remaining')),
    ref: boolean(f['ref'], at(path, 'ref')),
  };
}

function logRecord(value: unknown, path: string): LogRecord {
  const f = fields(value, path, ['t', 'stream', 'text']);
  return {
    t: count(f['t'], at(path, 't')),
    stream: oneOf(f['stream'], at(path, 'stream'), ['out', 'err'] as const),
    text: text(f['text'], at(path, 'text')),
  };
}

function heldValue(value: unknown, path: string): HeldValue {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return finite(value, path);
  const f = object(value, path, [], ['b64', 'undefined']);
  if (Object.hasOwn(f, 'b64') && !Object.hasOwn(f, 'undefined'))
    return { b64: base64(f['b64'], at(path, 'b64'), MAX_BYTES_B64) };
  if (Object.hasOwn(f, 'undefined') && !Object.hasOwn(f, 'b64') && f['undefined'] === true) return { undefined: true };
  throw new ValidationError(`${path}: expected a string, number, boolean, null, { b64 } or { undefined: true }`);
}

/** The events held at the capture: [kind, values] pairs. */
export function parseHeld(value: unknown, path = 'held'): NonNullable<GuestState['held']> {
  return array(value, path, 100_000, (event, where) => {
    if (!Array.isArray(event) || event.length !== 2) throw new ValidationError(`${where}: expected [kind, values]`);
    return [text(event[0], at(where, 0), 0, 64), array(event[1], at(where, 1), 16, heldValue)];
  });
}

function guestState(value: unknown): GuestState {
  const required = ['limits', 'argv', 'clock', 'timers', 'immediatePending', 'net', 'dgram', 'log', 'cpuMs'];
  const f = fields(value, '(root)', required); // and `held`, optional
  const limits = fields(f['limits'], 'limits', ['memoryBytes', 'cpuBudgetMs', 'stackBytes']);
  const clock = fields(f['clock'], 'clock', ['wall', 'mono']);
  const net = fields(f['net'], 'net', ['nextId', 'sockets', 'servers']);
  const dgram = fields(f['dgram'], 'dgram', ['sockets']);
  const log = fields(f['log'], 'log', ['records', 'written']);
  const state: GuestState = {
    limits: {
      memoryBytes: integer(limits['memoryBytes'], 'limits.memoryBytes', 16 * 1024 * 1024, 4 * 1024 ** 3),
      cpuBudgetMs: integer(limits['cpuBudgetMs'], 'limits.cpuBudgetMs', 1, Number.MAX_SAFE_INTEGER),
      stackBytes: integer(limits['stackBytes'], 'limits.stackBytes', 1, 64 * 1024 * 1024),
    },
    argv: array(f['argv'], 'argv', 1024, (v, p) => text(v, p)),
    clock: { wall: count(clock['wall'], 'clock.wall'), mono: count(clock['mono'], 'clock.mono') },
    timers: array(f['timers'], 'timers', 1_000_000, timer),
    immediatePending: boolean(f['immediatePending'], 'immediatePending'),
    net: {
      nextId: id(net['nextId'], 'net.nextId'),
      sockets: array(net['sockets'], 'net.sockets', 100_000, socket),
      servers: array(net['servers'], 'net.servers', 10_000, server),
    },
    dgram: { sockets: array(dgram['sockets'], 'dgram.sockets', 10_000, datagramSocket) },
    log: {
      records: array(log['records'], 'log.records', 1_000_000, logRecord),
      written: count(log['written'], 'log.written'),
    },
    cpuMs: count(f['cpuMs'], 'cpuMs'),
  };
  if (f['held'] !== undefined) state.held = parseHeld(f['held']);
  return state;
}

export function parseGuestState(value: unknown): GuestState {
  try {
    return guestState(value);
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err;
    throw new RoamError('ROAM_ERR_IMAGE_MALFORMED', `the image's guest state is malformed at ${err.message}`);
  }
}

type HeldEvent = [string, HostValue[]];

/** Held events as the state carries them (JSON: bytes in base64, undefined kept apart from null). */
export function encodeHeld(held: readonly HeldEvent[]): NonNullable<GuestState['held']> {
  return held.map(([kind, args]) => [
    kind,
    args.map((a) =>
      a instanceof Uint8Array
        ? { b64: Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64') }
        : a === undefined
          ? { undefined: true as const }
          : a,
    ),
  ]);
}

export function decodeHeld(held: GuestState['held']): HeldEvent[] {
  return (held ?? []).map(([kind, args]) => [
    kind,
    args.map((a) =>
      a !== null && typeof a === 'object' ? ('b64' in a ? new Uint8Array(Buffer.from(a.b64, 'base64')) : undefined) : a,
    ),
  ]);
}
