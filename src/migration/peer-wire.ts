/**
 * The peer protocol: what a source controller and a target controller say on the direct
 * connection of a move (the paper's step 3, "the source opens a direct connection to the target").
 * Pure codec, no I/O.
 *
 * A message is a 20-byte prefix (magic, header length, body length, XXH3-64 of the body), a JSON
 * header validated by the schemas below, and a binary body (memory pages, the guest's state). The
 * body's hash catches an image damaged in transit before a single byte of it is applied; the
 * lengths are checked against fixed limits before anything is buffered.
 *
 * XXH3-64, not CRC-32 or XXH64: a move hashes every byte it sends on both sides, mostly bytes just
 * copied or just read (in cache), where XXH3 runs at about 18 GB/s here, XXH64 at 10.5 and zlib's
 * CRC-32 at about 2.
 */
import { xxh3 } from '@node-rs/xxhash';
import { z } from 'zod';
import { RoamError } from '../errors.js';
import { PAGE_SIZE } from '../guest/image/format.js';

export const PEER_MAGIC = 0x524d_5037; // "RMP7"
/**
 * The magics of the protocols before it (RMP1: a CRC-32 in a 16-byte prefix; RMP2: pages in
 * Snappy, not LZ4; RMP3: XXH64, not XXH3; RMP4: the state after the final pages, no `end`; RMP5:
 * no `freezing` and `holding` before the freeze; RMP6: whole 64-KiB pages only), refused with a clear
 * word rather than a confusing one.
 */
const OLDER_MAGICS = new Set([0x524d_5031, 0x524d_5032, 0x524d_5033, 0x524d_5034, 0x524d_5035, 0x524d_5036]);

/** A running hash of a message body, as the prefix carries it. */
type BodyHash = ReturnType<typeof xxh3.Xxh3.withSeed>;
export const bodyHash = (): BodyHash => xxh3.Xxh3.withSeed(0n);
export const PREFIX_BYTES = 20;
export const MAX_HEADER_BYTES = 1024 * 1024;
/** Largest body: a chunk of pages (at most PAGES_PER_MESSAGE, compressed or not) or a guest's state. */
export const MAX_BODY_BYTES = 256 * 1024 * 1024;

const id = z.string().min(1).max(128);
const count = z.int().min(0).max(Number.MAX_SAFE_INTEGER);
const codec = z.enum(['lz4', 'none']);

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
/**
 * The unit page messages carry: an OS page, a sixteenth of a WebAssembly page. A guest that
 * runs between two rounds changes a word here and there, so what changed of a 64-KiB page is mostly
 * one or two of its blocks: the bench's guests dirtied 0.4-1.0 MB of pages in 5-50 ms, and 0.02-0.09
 * MB of blocks. The last round, in the pause, sends only those.
 */
export const BLOCK_SIZE = 4096;
/**
 * Memory: `count` indices (u32 LE, ascending) of blocks of `block` bytes, then those blocks' bytes,
 * compressed with `codec`. Block `i` is memory bytes [i * block, (i + 1) * block).
 */
export const pagesSchema = z.object({
  type: z.literal('pages'),
  /** 0 for the first pre-copy round; the final round (after the freeze) has `final: true`. */
  round: z.int().min(0).max(1000),
  final: z.boolean(),
  byteLength: count,
  /** The source sends BLOCK_SIZE; a whole WebAssembly page is a block too. */
  block: z.union([z.literal(BLOCK_SIZE), z.literal(PAGE_SIZE)]),
  count: z
    .int()
    .min(0)
    .max(1 << 20),
  codec,
  rawBytes: count,
});
/**
 * Source -> target: the source freezes the guest next (after pre-copy; without it, right behind the
 * offer, answered after the `accept`). The target closes its gate on guest turns
 * (src/guest/turn-gate.ts) and answers `holding`: from then until the move is over its other guests
 * start no turn, so the pause never waits for one of theirs to end (a turn cannot be cut short).
 */
export const freezingSchema = z.object({ type: z.literal('freezing') });
/** Target -> source: turns are held here; the source may freeze. */
export const holdingSchema = z.object({ type: z.literal('holding') });
/**
 * The frozen guest's host-side state: the image's meta, its state JSON and its files, in that order.
 * Sent first after the freeze, so that the target rebuilds it while the final pages are on their way.
 */
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
/** Source -> target: the final round is complete, `count` blocks in it (the target checks them all came). */
export const endSchema = z.object({ type: z.literal('end'), count });
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
  freezingSchema,
  holdingSchema,
  stateSchema,
  endSchema,
  resumedSchema,
  failSchema,
]);
export type PeerHeader = z.infer<typeof peerHeaderSchema>;
export type OfferMessage = z.infer<typeof offerSchema>;
export type PagesMessage = z.infer<typeof pagesSchema>;
export type StateMessage = z.infer<typeof stateSchema>;

export interface PeerMessage {
  header: PeerHeader;
  /** The body; empty when a sink took it as it arrived (`streamed`). */
  body: Uint8Array;
  streamed?: boolean;
}

/**
 * Takes a message's body as it arrives instead of a buffer holding all of it (the target writes
 * memory pages straight into the sandbox this way). `write` and `end` may throw to refuse it.
 */
export interface BodySink {
  write(chunk: Uint8Array): void;
  end(): void;
}

/** Chooses a sink for a message, by its header (already validated); undefined buffers the body. */
export type SinkChooser = (header: PeerHeader, bodyBytes: number) => BodySink | undefined;

function protocolError(message: string): RoamError {
  return new RoamError('ROAM_ERR_PEER_PROTOCOL', message);
}

/**
 * Encodes one message as the buffers to write: prefix, header, then the body (one buffer, or parts
 * that follow each other; not copied). `hash`: the body's, if the caller computed it on the way
 * (`bodyHash`, over the same bytes in the same order).
 */
export function encodePeer(
  header: PeerHeader,
  body: Uint8Array | readonly Uint8Array[] = new Uint8Array(0),
  hash?: bigint,
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
  let digest = hash;
  if (digest === undefined) {
    const running = bodyHash();
    for (const part of parts) running.update(part);
    digest = running.digest();
  }
  prefix.writeBigUInt64BE(digest, 12);
  return [prefix, json, ...parts];
}

/**
 * Streaming decoder. Reads the prefix and the header (checked against the limits, then parsed and
 * validated), then the body: into a buffer of exactly its declared size, or, when `sinkFor` gives a
 * sink for that header, into the sink chunk by chunk. Either way the body's hash is checked when
 * its last byte arrives, before the message is handed on; a sink has then seen damaged bytes, so
 * its owner must drop what it wrote when the decoder throws. A damaged or hostile stream is a
 * RoamError.
 */
export class PeerDecoder {
  private prefix = Buffer.alloc(PREFIX_BYTES);
  private prefixFill = 0;
  /** The header's bytes while they arrive. */
  private headerBuf: Buffer | undefined;
  private headerFill = 0;
  /** The message whose body is arriving. */
  private current: { header: PeerHeader; body: Buffer | undefined; sink: BodySink | undefined } | undefined;
  private bodyLength = 0;
  private bodyFill = 0;
  private expected = 0n;
  private running = bodyHash();

  constructor(public sinkFor?: SinkChooser) {}

  push(chunk: Uint8Array): PeerMessage[] {
    const out: PeerMessage[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.current) {
        const n = Math.min(this.bodyLength - this.bodyFill, chunk.length - at);
        const part = chunk.subarray(at, at + n);
        this.running.update(part);
        if (this.current.sink) this.current.sink.write(part);
        else this.current.body?.set(part, this.bodyFill);
        this.bodyFill += n;
        at += n;
        if (this.bodyFill === this.bodyLength) out.push(this.finishBody());
      } else if (this.headerBuf) {
        const n = Math.min(this.headerBuf.length - this.headerFill, chunk.length - at);
        this.headerBuf.set(chunk.subarray(at, at + n), this.headerFill);
        this.headerFill += n;
        at += n;
        if (this.headerFill === this.headerBuf.length) {
          this.startBody();
          if (this.bodyLength === 0) out.push(this.finishBody());
        }
      } else {
        const n = Math.min(PREFIX_BYTES - this.prefixFill, chunk.length - at);
        this.prefix.set(chunk.subarray(at, at + n), this.prefixFill);
        this.prefixFill += n;
        at += n;
        if (this.prefixFill === PREFIX_BYTES) this.startFrame();
      }
    }
    return out;
  }

  private startFrame(): void {
    const magic = this.prefix.readUInt32BE(0);
    if (OLDER_MAGICS.has(magic)) {
      throw protocolError('the peer speaks an older peer protocol: run the same Roam version on both hosts');
    }
    if (magic !== PEER_MAGIC) throw protocolError('not a Roam peer connection (bad magic)');
    const headerLength = this.prefix.readUInt32BE(4);
    this.bodyLength = this.prefix.readUInt32BE(8);
    this.expected = this.prefix.readBigUInt64BE(12);
    if (headerLength === 0 || headerLength > MAX_HEADER_BYTES) {
      throw protocolError(`a peer message header of ${headerLength} bytes is outside 1..${MAX_HEADER_BYTES}`);
    }
    if (this.bodyLength > MAX_BODY_BYTES) {
      throw protocolError(`a peer message body of ${this.bodyLength} bytes is larger than ${MAX_BODY_BYTES}`);
    }
    this.headerBuf = Buffer.allocUnsafe(headerLength);
    this.headerFill = 0;
    this.prefixFill = 0;
  }

  private startBody(): void {
    const text = (this.headerBuf as Buffer).toString('utf8');
    this.headerBuf = undefined;
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw protocolError('a peer message header is not JSON');
    }
    // Without zod's compiled parsers: compiling one costs 0.5-2 ms the first time a process meets
    // each message type, and a target meets `state`, the final `pages` and `end` in a move's pause
    // (the three, the first time: 4.2 ms compiled, 0.9 jitless). Later parses take 2-13 µs either way.
    const parsed = peerHeaderSchema.safeParse(json, { jitless: true });
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw protocolError(
        `a peer message header is malformed at ${issue?.path.join('.') ?? ''}: ${issue?.message ?? ''}`,
      );
    }
    const sink = this.sinkFor?.(parsed.data, this.bodyLength);
    this.current = {
      header: parsed.data,
      sink,
      body: sink ? undefined : Buffer.allocUnsafe(this.bodyLength),
    };
    this.bodyFill = 0;
    this.running = bodyHash();
  }

  private finishBody(): PeerMessage {
    const { header, body, sink } = this.current as NonNullable<PeerDecoder['current']>;
    this.current = undefined;
    if (this.running.digest() !== this.expected) {
      throw protocolError('checksum mismatch: a peer message was damaged in transit');
    }
    if (sink) {
      sink.end();
      return { header, body: new Uint8Array(0), streamed: true };
    }
    return { header, body: body ?? new Uint8Array(0) };
  }
}
