/**
 * Pre-copy bookkeeping (beyond the paper: send memory while the guest runs, then only what changed).
 *
 * The source keeps a shadow: a copy of exactly what the target's memory holds. The target starts
 * from the runtime template (its prepared sandbox loaded it), so a page not sent yet is compared
 * with the template; each round sends the pages that differ and copies them into the shadow.
 * Pages are compared by content (native memcmp per 64-KiB page, stopping at the first
 * difference), which finds every change, including a page that went back to zero, without hooks
 * in the guest. Of a changed page, only the 4-KiB blocks that differ from what the target holds
 * are sent (BLOCK_SIZE).
 */
import { compressSync as lz4Compress, uncompressSync as lz4Uncompress } from 'lz4-napi';
import { PAGE_SIZE } from '../guest/image/format.js';
import { lz4DeclaredLength } from '../guest/image/work.js';
import { RoamError } from '../errors.js';
import { BLOCK_SIZE, type BodySink, type PagesMessage, bodyHash } from './peer-wire.js';

/** Pages per peer message: 8 MiB raw at most, so compression, sending and applying overlap. */
export const PAGES_PER_MESSAGE = 128;

const BLOCKS_PER_PAGE = PAGE_SIZE / BLOCK_SIZE;

/**
 * A batch of blocks for one message: their indices (u32 LE, in `block`-byte units), then their
 * bytes in that order as views (one per run of consecutive blocks), never copied again on the way
 * to the socket.
 */
export interface PageBatch {
  indices: Uint8Array;
  parts: Uint8Array[];
  /** How many indices, and the bytes each stands for. */
  count: number;
  block: PagesMessage['block'];
  rawBytes: number;
  /** The plain body's hash (indices, then the parts), when it was computed on the way (`take`). */
  hash?: bigint;
}

/** `take` copies and hashes this much at a time: the hash reads what was just copied, in cache. */
const TAKE_SLICE_BYTES = 256 * 1024;

export class PageShadow {
  /** Per page: 1 once the target holds the shadow's copy of it; until then it holds the base's (or zeros). */
  private held: Uint8Array;
  private readonly base: Buffer;
  private readonly basePages: number;

  /**
   * `base` is what the target's memory starts as. `buffer` becomes the shadow: its contents do not
   * matter (a page counts only once `take` wrote it), so a buffer a past move used can serve again
   * without being cleared, and one written before is already faulted in.
   */
  constructor(
    base: Uint8Array,
    private buffer: Buffer = Buffer.alloc(0),
  ) {
    this.base = Buffer.from(base.buffer, base.byteOffset, base.byteLength);
    this.basePages = Math.floor(base.byteLength / PAGE_SIZE);
    this.held = new Uint8Array(Math.ceil(buffer.length / PAGE_SIZE));
  }

  /** The shadow's buffer, for the next move (its views must no longer be on their way to a socket). */
  get storage(): Buffer {
    return this.buffer;
  }

  /**
   * Indices of the pages of `memory` (those in [from, to), by default all) that differ from what
   * the target holds: the first `limit` of them at most (the caller scans on after the last).
   */
  dirty(memory: Uint8Array, from = 0, to = Infinity, limit = Infinity): Uint32Array {
    const buf = Buffer.from(memory.buffer, memory.byteOffset, memory.byteLength);
    const total = Math.min(to, Math.floor(memory.byteLength / PAGE_SIZE));
    const found = new Uint32Array(Math.max(0, Math.min(total - from, limit)));
    let count = 0;
    for (let page = from; page < total && count < found.length; page++)
      if (this.differs(buf, page)) found[count++] = page;
    return found.slice(0, count);
  }

  /**
   * About how many pages `dirty` would find (in [0, to)), from every `stride`-th page only: a stride of 8 costs
   * an eighth of a scan. (What a guest dirties comes in runs of pages, so the sample is rough; it
   * only decides whether another round is worth a scan.)
   */
  sampleDirty(memory: Uint8Array, stride: number, to = Infinity): number {
    const buf = Buffer.from(memory.buffer, memory.byteOffset, memory.byteLength);
    const total = Math.min(to, Math.floor(memory.byteLength / PAGE_SIZE));
    let count = 0;
    for (let page = 0; page < total; page += stride) if (this.differs(buf, page)) count++;
    return count * stride;
  }

  private differs(buf: Buffer, page: number): boolean {
    const at = page * PAGE_SIZE;
    const against = this.holds(page);
    return against ? buf.compare(against, at, at + PAGE_SIZE, at, at + PAGE_SIZE) !== 0 : !isZero(buf, at);
  }

  /**
   * What the target's copy of `page` is, at the page's own offset: the shadow's once it was sent,
   * else the base's. Undefined beyond the base: zeros (the target's memory grows with zeros).
   */
  private holds(page: number): Buffer | undefined {
    return this.held[page] === 1 ? this.buffer : page < this.basePages ? this.base : undefined;
  }

  /**
   * The blocks of `pages` in `memory` that differ from what the target holds, as block indices.
   * Beyond the base, a page the target was never sent goes whole: it is mostly a large guest's
   * first round, where comparing with zeros would read every page once more for little.
   */
  private changedBlocks(buf: Buffer, pages: Uint32Array): Uint32Array {
    const blocks = new Uint32Array(pages.length * BLOCKS_PER_PAGE);
    let count = 0;
    for (const page of pages) {
      const against = this.holds(page);
      const first = page * BLOCKS_PER_PAGE;
      for (let b = 0; b < BLOCKS_PER_PAGE; b++) {
        const at = (first + b) * BLOCK_SIZE;
        if (!against || buf.compare(against, at, at + BLOCK_SIZE, at, at + BLOCK_SIZE) !== 0)
          blocks[count++] = first + b;
      }
    }
    return blocks.subarray(0, count);
  }

  /**
   * Copies `pages` of the running guest's `memory` into the shadow and returns their changed
   * blocks as views of the shadow: the one copy a page needs while the guest can still change it. The views are valid until the shadow changes again, so the sender waits until the
   * socket has taken them (see `PeerChannel.flushed`) before the next round's `take`.
   */
  take(memory: Uint8Array, pages: Uint32Array): PageBatch {
    if (this.buffer.length < memory.byteLength) {
      // Only held pages matter; the rest of the new buffer stays untouched (not faulted in).
      const grown = Buffer.alloc(memory.byteLength);
      forRuns(heldPages(this.held), PAGE_SIZE, (at, length) => grown.set(this.buffer.subarray(at, at + length), at));
      this.buffer = grown;
      const held = new Uint8Array(Math.ceil(grown.length / PAGE_SIZE));
      held.set(this.held);
      this.held = held;
    }
    const source = Buffer.from(memory.buffer, memory.byteOffset, memory.byteLength);
    const blocks = this.changedBlocks(source, pages); // against what the shadow holds before the copy
    // Pages are copied whole (the buffer may hold another move's bytes in a page not held yet, and
    // the few pages of a later round cost little), and only their changed blocks sent.
    const batch = viewBlocks(this.buffer, blocks);
    const hash = bodyHash().update(batch.indices);
    // The parts are the blocks' runs, in order: `hashUpTo` hashes them as far as the copy has come.
    let part = 0;
    let partDone = 0; // bytes of parts[part] hashed
    const hashUpTo = (end: number): void => {
      for (; part < batch.parts.length; part++, partDone = 0) {
        const view = batch.parts[part] as Uint8Array;
        const start = view.byteOffset - this.buffer.byteOffset;
        const upTo = Math.min(view.length, end - start);
        if (upTo > partDone) hash.update(view.subarray(partDone, upTo));
        if (upTo < view.length) {
          partDone = Math.max(partDone, upTo);
          return;
        }
      }
    };
    const copy = (at: number, length: number): void => {
      // A slice at a time, hashed at once: the hash reads what was just copied, still in cache.
      for (let from = at, end = at + length; from < end; from += TAKE_SLICE_BYTES) {
        const to = Math.min(from + TAKE_SLICE_BYTES, end);
        this.buffer.set(memory.subarray(from, to), from);
        hashUpTo(to);
      }
    };
    forRuns(pages, PAGE_SIZE, copy);
    hashUpTo(Infinity);
    for (const page of pages) this.held[page] = 1;
    return { ...batch, hash: hash.digest() };
  }

  /**
   * The changed blocks of `pages` as views of `memory` itself, not copies: for a frozen guest's
   * last round (its memory does not change until the move is decided, and the peer connection is
   * gone before it runs again).
   */
  view(memory: Uint8Array, pages: Uint32Array): PageBatch {
    const source = Buffer.from(memory.buffer, memory.byteOffset, memory.byteLength);
    return viewBlocks(memory, this.changedBlocks(source, pages));
  }
}

function heldPages(held: Uint8Array): Uint32Array {
  const pages: number[] = [];
  held.forEach((h, page) => h === 1 && pages.push(page));
  return Uint32Array.from(pages);
}

/** How long a move's shadow buffer is kept for the next move (a drain moves guests one after another). */
const SHADOW_KEEP_MS = 30_000;

/**
 * Keeps the last move's shadow buffer for the next one. Written once, its memory is faulted in: a
 * first write to fresh memory costs about 0.65 ms per MiB here, seven times a warm copy, and a
 * fresh shadow for a 64-MiB guest is about 100 MiB of it. The guest that moved away freed at least
 * as much as is kept, and it is let go after `SHADOW_KEEP_MS` without a move.
 */
export class ShadowBuffers {
  private kept: Buffer | undefined;
  private timer: NodeJS.Timeout | undefined;

  /**
   * A buffer of at least `bytes`: the kept one if it is large enough, else a new one an eighth
   * larger (a guest's memory only grows, and the next move of this guest should find it large
   * enough).
   */
  take(bytes: number): Buffer {
    const kept = this.kept;
    this.drop();
    return kept && kept.length >= bytes ? kept : Buffer.alloc(Math.ceil((bytes * 9) / 8 / PAGE_SIZE) * PAGE_SIZE);
  }

  /** Keeps `buffer` for a while (the larger of it and the one kept, if moves ran side by side). */
  give(buffer: Buffer): void {
    if (this.kept && this.kept.length > buffer.length) return;
    this.drop();
    this.kept = buffer;
    this.timer = setTimeout(() => this.drop(), SHADOW_KEEP_MS);
    this.timer.unref();
  }

  close(): void {
    this.drop();
  }

  private drop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.kept = undefined;
  }
}

/** `blocks` (ascending indices) of `memory` as a batch of views, one per run of consecutive blocks. */
export function viewBlocks(memory: Uint8Array, blocks: Uint32Array): PageBatch {
  const parts: Uint8Array[] = [];
  forRuns(blocks, BLOCK_SIZE, (at, length) => parts.push(memory.subarray(at, at + length)));
  const indices = new Uint8Array(blocks.length * 4);
  const view = new DataView(indices.buffer);
  for (let i = 0; i < blocks.length; i++) view.setUint32(i * 4, blocks[i] ?? 0, true);
  return { indices, parts, count: blocks.length, block: BLOCK_SIZE, rawBytes: blocks.length * BLOCK_SIZE };
}

/** Calls `each(byteOffset, byteLength)` once per run of consecutive indices of `unit` bytes each. */
function forRuns(indices: Uint32Array, unit: number, each: (at: number, length: number) => void): void {
  for (let i = 0; i < indices.length;) {
    const first = indices[i] ?? 0;
    let j = i + 1;
    while (j < indices.length && indices[j] === first + (j - i)) j++;
    each(first * unit, (j - i) * unit);
    i = j;
  }
}

const ZERO = Buffer.alloc(PAGE_SIZE);
function isZero(buf: Buffer, at: number): boolean {
  return buf.compare(ZERO, 0, PAGE_SIZE, at, at + PAGE_SIZE) === 0;
}

export type PageCodec = 'lz4' | 'none';

/** Messages smaller than this on the wire say little about the link (the socket buffers absorb them). */
const LINK_SAMPLE_BYTES = 1 << 20;

/**
 * What LZ4 is taken to cost before it was measured for this target: 3 ns per raw byte, to 0.42 of
 * the size (8 MiB of the 16-MiB bench guest's pages here: 270-360 MB/s, 0.424). By it, plain pays on
 * links faster than about 190 MB/s.
 */
const LZ4_PRIOR = { compress: 3e-6, ratio: 0.42 };

/**
 * Picks each page message's codec from what the move measured so far: compression pays only when
 * the link is slower than the compressor. Per raw byte, sending it plain costs `link`; compressed,
 * it costs `compress + ratio * link`. The first large message goes plain (it measures the link),
 * the next compressed (it measures the compressor and the ratio); from then on the cheaper one wins,
 * with the estimates kept up to date (moving averages). On a fast link between hosts (here: veth,
 * over 1 GB/s) that is plain; on a slow one (a 1 Gbit/s link and below), LZ4.
 *
 * In the pause (`paused`), nothing is tried out: the guest waits for every millisecond there, and a
 * process's first LZ4 calls are slow (33 ms to compress a 1 MiB guest's last pages, its first move in
 * `roam demo`). Until LZ4 was measured, the pause goes by LZ4_PRIOR.
 */
export class CodecChooser {
  private link: number | undefined; // ms per wire byte, from the time a large message took to send
  private compress: number | undefined; // ms per raw byte
  private ratio = 1; // wire bytes / raw bytes, compressed

  constructor(private readonly fixed?: PageCodec) {}

  choose(paused = false): PageCodec {
    if (this.fixed) return this.fixed;
    if (this.link === undefined) return 'none';
    if (this.compress === undefined && !paused) return 'lz4';
    const lz4 = this.compress === undefined ? LZ4_PRIOR : { compress: this.compress, ratio: this.ratio };
    return lz4.compress + lz4.ratio * this.link < this.link ? 'lz4' : 'none';
  }

  /** Whether a large message to this target has been timed yet (`sendMs` knows the link). */
  get measured(): boolean {
    return this.link !== undefined;
  }

  /** How long `bytes` would take to send plain, as the link was measured; undefined before a measure. */
  sendMs(bytes: number): number | undefined {
    return this.link === undefined ? undefined : this.link * bytes;
  }

  /**
   * What sending one message cost: `compressMs` (0 when plain) and `sendMs` (until its send
   * returned, which is when the message before it had reached the kernel: in a steady stream, the
   * link's time per message).
   */
  record(codec: PageCodec, rawBytes: number, wireBytes: number, compressMs: number, sendMs: number): void {
    const average = (old: number | undefined, sample: number): number =>
      old === undefined ? sample : (old + sample) / 2;
    if (wireBytes >= LINK_SAMPLE_BYTES) this.link = average(this.link, sendMs / wireBytes);
    if (codec === 'lz4' && rawBytes >= LINK_SAMPLE_BYTES) {
      this.compress = average(this.compress, compressMs / rawBytes);
      this.ratio = average(this.ratio, wireBytes / rawBytes);
    }
  }
}

/**
 * One message's body, as the parts to write one after the other (not copied into one buffer): the
 * page indices (u32 LE), then the pages, compressed with `codec` (LZ4: one block after its raw
 * length, u32 LE, as image chunks are; the target checks that length before it decodes).
 */
export function packPages(batch: PageBatch, codec: PageCodec): Uint8Array[] {
  if (codec === 'none') return [batch.indices, ...batch.parts];
  const raw = batch.parts.length === 1 ? (batch.parts[0] as Uint8Array) : Buffer.concat(batch.parts);
  return [batch.indices, lz4Compress(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength))];
}

function malformed(message: string): never {
  throw new RoamError('ROAM_ERR_IMAGE_MALFORMED', `a memory message of the move is malformed: ${message}`);
}

/**
 * Writes a plain page message's body into `memory` (the target's sandbox memory, grown to the
 * guest's size) as its bytes arrive: the indices first, all checked before a byte is written (a
 * body can be hostile), then each run of consecutive blocks in its place. No buffer holds the
 * message on the way.
 */
export class PageWriter {
  private readonly indexBytes: Uint8Array;
  private indexFill = 0;
  /** Where each run of blocks goes: start and end byte offsets in `memory`, in turn. */
  private runs: number[] | undefined;
  private run = 0;
  private runDone = 0; // bytes of the current run written
  private written = 0;

  constructor(
    private readonly count: number,
    private readonly rawBytes: number,
    private readonly memory: Uint8Array,
    private readonly block: number,
  ) {
    if (rawBytes !== count * block) malformed(`${rawBytes} raw bytes for ${count} blocks of ${block}`);
    this.indexBytes = new Uint8Array(count * 4);
    if (count === 0) this.runs = [];
  }

  write(chunk: Uint8Array): void {
    let at = 0;
    if (!this.runs) {
      const n = Math.min(this.indexBytes.length - this.indexFill, chunk.length);
      this.indexBytes.set(chunk.subarray(0, n), this.indexFill);
      this.indexFill += n;
      at = n;
      if (this.indexFill < this.indexBytes.length) return;
      this.runs = this.checkIndices();
    }
    const runs = this.runs;
    while (at < chunk.length) {
      if (this.written >= this.rawBytes) malformed(`more than the ${this.rawBytes} bytes of its ${this.count} blocks`);
      const start = runs[this.run] ?? 0;
      const length = (runs[this.run + 1] ?? 0) - start;
      const n = Math.min(length - this.runDone, chunk.length - at);
      this.memory.set(chunk.subarray(at, at + n), start + this.runDone);
      this.written += n;
      this.runDone += n;
      at += n;
      if (this.runDone === length) {
        this.run += 2;
        this.runDone = 0;
      }
    }
  }

  /** The body is over: it must have held every block. */
  end(): void {
    if (!this.runs || this.written !== this.rawBytes) {
      malformed(`${this.indexFill + this.written} bytes of blocks, expected ${this.count * 4 + this.rawBytes}`);
    }
  }

  private checkIndices(): number[] {
    const view = new DataView(this.indexBytes.buffer);
    const total = Math.floor(this.memory.byteLength / this.block);
    const runs: number[] = [];
    let previous = -1;
    for (let i = 0; i < this.count; i++) {
      const index = view.getUint32(i * 4, true);
      if (index >= total) malformed(`block ${index} is beyond the memory's ${total} blocks of ${this.block} bytes`);
      if (index <= previous) malformed('block indices are not ascending');
      if (index === previous + 1 && runs.length > 0) runs[runs.length - 1] = (index + 1) * this.block;
      else runs.push(index * this.block, (index + 1) * this.block);
      previous = index;
    }
    return runs;
  }
}

/**
 * A compressed page message's body, gathered as it arrives and applied (`applyPackedPages`) when
 * it is complete and its hash checked: at that moment, in the order the messages came, as plain
 * messages are written. (Applied any later, an older copy of a page could land over a newer one
 * that a plain message after it had already written.)
 */
export class PackedPageSink {
  private readonly body: Uint8Array;
  private fill = 0;

  constructor(
    bodyBytes: number,
    private readonly layout: PageLayout,
    private readonly memory: Uint8Array,
  ) {
    this.body = new Uint8Array(bodyBytes);
  }

  write(chunk: Uint8Array): void {
    if (this.fill + chunk.length > this.body.length) malformed('more bytes than its body declares');
    this.body.set(chunk, this.fill);
    this.fill += chunk.length;
  }

  end(): void {
    applyPackedPages(this.body.subarray(0, this.fill), this.layout, this.memory);
  }
}

/** What a page message's header says of its body. */
export type PageLayout = Pick<PagesMessage, 'count' | 'block' | 'codec' | 'rawBytes'>;

/**
 * Where a page message's body goes as it arrives: a plain one straight into `memory`, a
 * compressed one gathered and applied once whole. Either way in arrival order.
 */
export function pageSink(header: PagesMessage, bodyBytes: number, memory: Uint8Array): BodySink {
  return header.codec === 'none'
    ? new PageWriter(header.count, header.rawBytes, memory, header.block)
    : new PackedPageSink(bodyBytes, header, memory);
}

/** Writes a whole (buffered) page message's body into `memory`: see `PageWriter`. */
export function applyPackedPages(body: Uint8Array, layout: PageLayout, memory: Uint8Array): void {
  const { count, codec, rawBytes } = layout;
  const writer = new PageWriter(count, rawBytes, memory, layout.block);
  if (body.length < count * 4) malformed(`${count} block indices do not fit in ${body.length} bytes`);
  if (codec === 'none') writer.write(body);
  else {
    writer.write(body.subarray(0, count * 4));
    const stored = body.subarray(count * 4);
    const declared = lz4DeclaredLength(stored);
    if (declared !== rawBytes) malformed(`its LZ4 block declares ${declared} bytes, expected ${rawBytes}`);
    let data: Buffer;
    try {
      data = lz4Uncompress(Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength));
    } catch (err) {
      return malformed(`its blocks do not decompress: ${(err as Error).message}`);
    }
    if (data.length !== rawBytes) malformed(`${data.length} bytes of blocks, expected ${rawBytes}`);
    writer.write(data);
  }
  writer.end();
}

/** `key=1.2 key=3.4`: a move's step timings for a log line. */
export function formatTimings(timings: Record<string, number>): string {
  return Object.entries(timings)
    .map(([key, ms]) => `${key}=${ms.toFixed(1)}`)
    .join(' ');
}
