/**
 * The peer protocol: what a source controller and a target controller say on the direct
 * connection of a move (the paper's step 3, "the source opens a direct connection to the target").
 * Pure codec, no I/O.
 *
 * A message is a 16-byte prefix (magic, header length, body length, CRC-32 of the body), a JSON
 * header validated by the schemas below, and a binary body (memory pages, the guest's state). The
 * body's CRC catches an image damaged in transit before a single byte of it is applied; the
 * lengths are checked against fixed limits before anything is buffered.
 */
import zlib from 'node:zlib';
import { z } from 'zod';
import { RoamError } from '../errors.js';

export const PEER_MAGIC = 0x524d_5031; // "RMP1"
export const PREFIX_BYTES = 16;
export const MAX_HEADER_BYTES = 1024 * 1024;
/** Largest body: a chunk of pages (at most PAGES_PER_MESSAGE, compressed or not) or a guest's state. */
export const MAX_BODY_BYTES = 256 * 1024 * 1024;

const id = z.string().min(1).max(128);
const count = z.int().min(0).max(Number.MAX_SAFE_INTEGER);
const codec = z.enum(['snappy', 'none']);

/** Largest WebAssembly module an offer carries (the instrumented module: larger than the user's). */
export const MAX_OFFER_MODULE_BYTES = 64 * 1024 * 1024;

export const offerSchema = z
  .object({
    type: z.literal('offer'),
    /** The guest's kind; absent: 'js'. */
    kind: z.enum(['js', 'wasm']).optional(),
    migrationId: id,
    token: z.string().min(32).max(128),
    guestId: id,
    name: z.string().min(1).max(128),
    roamVersion: z.string().max(64),
    /**
     * What the pages are relative to: the runtime template's id for JavaScript (the target's prepared
     * sandbox holds it), 'zero' for WebAssembly (memory of zeros).
     */
    base: z.string().max(128),
    /** A JavaScript guest's sandbox limits. */
    limits: z.object({ memoryBytes: count, cpuBudgetMs: count, stackBytes: count }).optional(),
    /**
     * A WebAssembly guest: its instrumented module is the offer's body (`moduleBytes` long, this
     * SHA-256), compiled by the target before it accepts; and its limits.
     */
    wasm: z
      .object({
        moduleBytes: z.int().min(8).max(MAX_OFFER_MODULE_BYTES),
        sha256: z.string().regex(/^[0-9a-f]{64}$/),
        memoryLimit: count,
        sliceMs: z.number().positive().max(60_000),
      })
      .optional(),
    /** The guest's memory size now (the target grows and faults in that much ahead of time). */
    memoryBytes: count,
    /**
     * Whether pre-copy rounds come before the freeze: then the target does not fault the memory in
     * ahead of time (the rounds do, while the guest still runs). Absent: as if false.
     */
    precopy: z.boolean().optional(),
  })
  .refine(
    (o) =>
      o.kind === 'wasm'
        ? o.wasm !== undefined && o.limits === undefined
        : o.limits !== undefined && o.wasm === undefined,
    {
      message: "a JavaScript guest's offer has limits, a WebAssembly guest's has wasm, and neither has the other's",
      path: ['kind'],
    },
  );
export const acceptSchema = z.object({ type: z.literal('accept'), migrationId: id, prepareMs: z.number().min(0) });
/** Memory pages: `count` page indices (u32 LE) then their bytes, compressed with `codec`. */
export const pagesSchema = z.object({
  type: z.literal('pages'),
  /** 0 for the first pre-copy round; the final round (after the freeze) has `final: true`. */
  round: z.int().min(0).max(1000),
  final: z.boolean(),
  byteLength: count,
  count: z
    .int()
    .min(0)
    .max(1 << 20),
  codec,
  rawBytes: count,
});
/** The frozen guest's host-side state: the image's meta, its state JSON and its files, in that order. */
export const stateSchema = z.object({
  type: z.literal('state'),
  meta: z.object({
    guestId: id,
    name: z.string().min(1).max(128),
    roamVersion: z.string().max(64),
    base: z.string().max(128),
    createdAt: z.string().max(64),
  }),
  stateBytes: count,
  filesBytes: count,
});
/** Target -> source: the proxy committed the move and the guest runs on the target. */
export const resumedSchema = z.object({ type: z.literal('resumed'), restoreMs: z.number().min(0) });
/** Either side: the move cannot go on. */
export const failSchema = z.object({
  type: z.literal('fail'),
  step: z.string().max(32),
  code: z.string().min(1).max(64),
  message: z.string().max(16 * 1024),
});

export const peerHeaderSchema = z.discriminatedUnion('type', [
  offerSchema,
  acceptSchema,
  pagesSchema,
  stateSchema,
  resumedSchema,
  failSchema,
]);
export type PeerHeader = z.infer<typeof peerHeaderSchema>;
export type OfferMessage = z.infer<typeof offerSchema>;
export type PagesMessage = z.infer<typeof pagesSchema>;
export type StateMessage = z.infer<typeof stateSchema>;

export interface PeerMessage {
  header: PeerHeader;
  body: Uint8Array;
}

function protocolError(message: string): RoamError {
  return new RoamError('ROAM_ERR_PEER_PROTOCOL', message);
}

/**
 * Encodes one message as the buffers to write: prefix, header, then the body (one buffer, or parts
 * that follow each other; not copied).
 */
export function encodePeer(
  header: PeerHeader,
  body: Uint8Array | readonly Uint8Array[] = new Uint8Array(0),
): Uint8Array[] {
  const parts: Uint8Array[] = body instanceof Uint8Array ? [body] : [...body];
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  if (json.length > MAX_HEADER_BYTES)
    throw protocolError(`a ${header.type} header of ${json.length} bytes is too large`);
  const length = parts.reduce((sum, part) => sum + part.length, 0);
  if (length > MAX_BODY_BYTES) throw protocolError(`a ${header.type} body of ${length} bytes is too large`);
  const prefix = Buffer.alloc(PREFIX_BYTES);
  prefix.writeUInt32BE(PEER_MAGIC, 0);
  prefix.writeUInt32BE(json.length, 4);
  prefix.writeUInt32BE(length, 8);
  prefix.writeUInt32BE(
    parts.reduce((crc, part) => zlib.crc32(part, crc), 0),
    12,
  );
  return [prefix, json, ...parts];
}

/**
 * Streaming decoder. Gathers one message at a time into a buffer of exactly its declared size
 * (checked against the limits first); a damaged or hostile stream is a RoamError.
 */
export class PeerDecoder {
  private prefix = Buffer.alloc(PREFIX_BYTES);
  private prefixFill = 0;
  private frame: Buffer | undefined;
  private frameFill = 0;
  private headerLength = 0;
  private crc = 0;

  push(chunk: Uint8Array): PeerMessage[] {
    const out: PeerMessage[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (!this.frame) {
        const n = Math.min(PREFIX_BYTES - this.prefixFill, chunk.length - at);
        this.prefix.set(chunk.subarray(at, at + n), this.prefixFill);
        this.prefixFill += n;
        at += n;
        if (this.prefixFill < PREFIX_BYTES) break;
        this.startFrame();
        continue;
      }
      const n = Math.min(this.frame.length - this.frameFill, chunk.length - at);
      this.frame.set(chunk.subarray(at, at + n), this.frameFill);
      this.frameFill += n;
      at += n;
      if (this.frameFill === this.frame.length) out.push(this.finishFrame());
    }
    return out;
  }

  private startFrame(): void {
    if (this.prefix.readUInt32BE(0) !== PEER_MAGIC) throw protocolError('not a Roam peer connection (bad magic)');
    this.headerLength = this.prefix.readUInt32BE(4);
    const bodyLength = this.prefix.readUInt32BE(8);
    this.crc = this.prefix.readUInt32BE(12);
    if (this.headerLength === 0 || this.headerLength > MAX_HEADER_BYTES) {
      throw protocolError(`a peer message header of ${this.headerLength} bytes is outside 1..${MAX_HEADER_BYTES}`);
    }
    if (bodyLength > MAX_BODY_BYTES) {
      throw protocolError(`a peer message body of ${bodyLength} bytes is larger than ${MAX_BODY_BYTES}`);
    }
    this.frame = Buffer.allocUnsafe(this.headerLength + bodyLength);
    this.frameFill = 0;
    this.prefixFill = 0;
  }

  private finishFrame(): PeerMessage {
    const frame = this.frame as Buffer;
    this.frame = undefined;
    const body = frame.subarray(this.headerLength);
    if (zlib.crc32(body) !== this.crc) {
      throw protocolError('checksum mismatch: a peer message was damaged in transit');
    }
    let json: unknown;
    try {
      json = JSON.parse(frame.toString('utf8', 0, this.headerLength));
    } catch {
      throw protocolError('a peer message header is not JSON');
    }
    const parsed = peerHeaderSchema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw protocolError(
        `a peer message header is malformed at ${issue?.path.join('.') ?? ''}: ${issue?.message ?? ''}`,
      );
    }
    return { header: parsed.data, body };
  }
}
