/**
 * What a WebAssembly guest's checkpoint image holds, in the same image format as JavaScript guests
 * (src/guest/image: `meta.kind` is 'wasm'). The memory section is the guest's linear memory (zero
 * pages left out, compressed), the state section the host-side state as JSON (schema below), and
 * the files section a small container of four binary parts:
 *
 *    0  magic   8   "ROAMWSM\0"
 *    8  version u32 1
 *   12  lengths u32 x 4
 *   28  parts, in order: the instrumented module, the virtual file system, the mutable globals
 *       (each little-endian: i32/f32 4 bytes, i64/f64 8 bytes, in the module's order), and the
 *       unwound stack
 *
 * The instrumented module travels with the image, so a restore needs neither the original file nor
 * binaryen, and instantiates exactly the module that made the stack it rewinds.
 */
import { z } from 'zod';
import { RoamError } from '../errors.js';
import type { GlobalType } from './instrument.js';

const MAGIC = new Uint8Array([0x52, 0x4f, 0x41, 0x4d, 0x57, 0x53, 0x4d, 0x00]);
const VERSION = 1;
const PARTS = 4;
const HEADER_BYTES = 8 + 4 + 4 * PARTS;

export interface WasmParts {
  module: Uint8Array;
  files: Uint8Array;
  globals: Uint8Array;
  stack: Uint8Array;
}

const malformed = (message: string): RoamError =>
  new RoamError('ROAM_ERR_IMAGE_MALFORMED', `malformed WebAssembly checkpoint image: ${message}`);

export function encodeParts(parts: WasmParts): Uint8Array {
  const list = [parts.module, parts.files, parts.globals, parts.stack];
  const total = HEADER_BYTES + list.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  view.setUint32(8, VERSION, true);
  let at = HEADER_BYTES;
  list.forEach((p, i) => {
    view.setUint32(12 + i * 4, p.length, true);
    out.set(p, at);
    at += p.length;
  });
  return out;
}

export function decodeParts(bytes: Uint8Array): WasmParts {
  if (bytes.length < HEADER_BYTES || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw malformed('the files section is not a WebAssembly guest container');
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== VERSION) throw malformed(`container version ${version} is not ${VERSION}`);
  const parts: Uint8Array[] = [];
  let at = HEADER_BYTES;
  for (let i = 0; i < PARTS; i++) {
    const len = view.getUint32(12 + i * 4, true);
    if (at + len > bytes.length) throw malformed(`part ${i} (${len} bytes) extends past the container`);
    parts.push(bytes.subarray(at, at + len));
    at += len;
  }
  if (at !== bytes.length) throw malformed(`${bytes.length - at} unexpected bytes after the container's parts`);
  const [module, files, globals, stack] = parts as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
  return { module, files, globals, stack };
}

const GLOBAL_BYTES: Record<GlobalType, number> = { i32: 4, i64: 8, f32: 4, f64: 8 };

export function encodeGlobals(types: readonly GlobalType[], values: ReadonlyArray<number | bigint>): Uint8Array {
  const out = new Uint8Array(types.reduce((n, t) => n + GLOBAL_BYTES[t], 0));
  const view = new DataView(out.buffer);
  let at = 0;
  types.forEach((t, i) => {
    const v = values[i] ?? 0;
    if (t === 'i32') view.setInt32(at, Number(v), true);
    else if (t === 'i64') view.setBigInt64(at, BigInt(v), true);
    else if (t === 'f32') view.setFloat32(at, Number(v), true);
    else view.setFloat64(at, Number(v), true);
    at += GLOBAL_BYTES[t];
  });
  return out;
}

export function decodeGlobals(types: readonly GlobalType[], bytes: Uint8Array): Array<number | bigint> {
  const expected = types.reduce((n, t) => n + GLOBAL_BYTES[t], 0);
  if (bytes.length !== expected) {
    throw malformed(
      `the globals part holds ${bytes.length} bytes, the module's ${types.length} globals need ${expected}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  return types.map((t) => {
    const v =
      t === 'i32'
        ? view.getInt32(at, true)
        : t === 'i64'
          ? view.getBigInt64(at, true)
          : t === 'f32'
            ? view.getFloat32(at, true)
            : view.getFloat64(at, true);
    at += GLOBAL_BYTES[t];
    return v;
  });
}

const str = z.string().max(1 << 20);
const int = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const ids = z.array(int).max(1 << 16);

const fdEntry = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('stdio'), flags: int }),
  z.strictObject({ kind: z.literal('dir'), path: str, preopen: str.nullable(), flags: int }),
  z.strictObject({
    kind: z.literal('file'),
    path: str,
    vfsFd: int,
    pos: int,
    read: z.boolean(),
    write: z.boolean(),
    append: z.boolean(),
    flags: int,
  }),
  z.strictObject({ kind: z.literal('listener'), id: int, flags: int }),
  z.strictObject({ kind: z.literal('stream'), id: int, flags: int }),
]);

const address = z.strictObject({ address: str, family: z.enum(['IPv4', 'IPv6']), port: int });
const endpoints = z.strictObject({
  localAddress: str,
  localPort: int,
  remoteAddress: str,
  remotePort: int,
  remoteFamily: str,
});

export const wasmStateSchema = z.strictObject({
  format: z.literal(1),
  /** SHA-256 (hex) of the instrumented module in the files section, and of the user's original. */
  module: z.strictObject({ sha256: z.string().regex(/^[0-9a-f]{64}$/), source: z.string().regex(/^[0-9a-f]{64}$/) }),
  args: z.array(str).max(1 << 16),
  env: z.record(str, str),
  /** Which of the module's entry exports runs (see InstrumentedInfo.entries), and whether it began. */
  entry: z.strictObject({ index: int, started: z.boolean() }),
  /** What the guest waits for; null when it was captured before it began. */
  suspended: z
    .strictObject({
      wait: z.discriminatedUnion('kind', [
        z.strictObject({ kind: z.literal('yield') }),
        z.strictObject({ kind: z.literal('io'), read: ids, write: ids, until: z.number().nullable() }),
      ]),
      data: z.unknown(),
    })
    .nullable(),
  fds: z.array(z.tuple([int, fdEntry])).max(1 << 16),
  net: z.strictObject({
    nextId: int,
    listeners: z
      .array(
        z.strictObject({
          id: int,
          request: z.strictObject({ port: int, host: str.nullable() }),
          address: address.nullable(),
        }),
      )
      .max(1 << 16),
    streams: z
      .array(
        z.strictObject({
          id: int,
          endpoints: endpoints.nullable(),
          bytesIn: int,
          bytesOut: int,
          /** The connection itself, when the guest's network carries connections (the proxy tunnel). */
          link: z
            .strictObject({
              streamId: z.number().int().min(0).max(0xffff_ffff),
              received: int,
              sent: int,
              acked: int,
              unacked: z.base64().max(64 * 1024 * 1024),
              ended: z.boolean(),
            })
            .optional(),
          /** Bytes taken from the connection that the guest has not read yet (base64). */
          pending: z
            .base64()
            .max(16 * 1024 * 1024)
            .optional(),
          /** The peer ended its direction and the guest saw it; the guest shut its own. */
          ended: z.boolean().optional(),
          writeShut: z.boolean().optional(),
        }),
      )
      .max(1 << 16),
  }),
  clock: z.strictObject({ wall: z.number(), mono: z.number() }),
  random: z.strictObject({
    seed: z.string().regex(/^[0-9a-f]{64}$/),
    counter: int,
    spare: z
      .string()
      .regex(/^([0-9a-f]{2})*$/)
      .max(64),
  }),
  log: z.strictObject({
    records: z.array(z.strictObject({ t: z.number(), stream: z.enum(['out', 'err']), text: z.string() })),
    written: int,
  }),
  cpuMs: z.number().nonnegative(),
  limits: z.strictObject({ memoryBytes: int, sliceMs: z.number().positive() }),
});
export type WasmState = z.infer<typeof wasmStateSchema>;

export function parseWasmState(raw: unknown): WasmState {
  const parsed = wasmStateSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw malformed(`state field ${issue?.path.join('.') ?? '(root)'}: ${issue?.message ?? 'invalid'}`);
  }
  return parsed.data;
}
