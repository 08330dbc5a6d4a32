/**
 * Pre-copy bookkeeping (beyond the paper: send memory while the guest runs, then only what changed).
 *
 * The source keeps a shadow: a copy of exactly what the target's memory holds. The target starts
 * from the runtime template (its prepared sandbox loaded it), so the shadow does too; each round
 * sends the pages that differ from the shadow and copies them into it. Pages are compared by
 * content (native memcmp per 64-KiB page, stopping at the first difference), which finds every
 * change, including a page that went back to zero, without hooks in the guest.
 */
import snappy from 'snappy';
import { PAGE_SIZE } from '../guest/image/format.js';
import { copyToPages } from '../guest/image/memory.js';
import { RoamError } from '../errors.js';

/** Pages per peer message: 8 MiB raw, so compression, sending and applying overlap. */
export const PAGES_PER_MESSAGE = 128;

export class PageShadow {
  private shadow: Buffer;

  constructor(base: Uint8Array) {
    this.shadow = Buffer.from(base); // a copy: the target's memory as it starts
  }

  /** Indices of the pages of `memory` that differ from what the target holds. */
  dirty(memory: Uint8Array): Uint32Array {
    const buf = Buffer.from(memory.buffer, memory.byteOffset, memory.byteLength);
    const total = Math.floor(memory.byteLength / PAGE_SIZE);
    const shadowPages = Math.floor(this.shadow.length / PAGE_SIZE);
    const found = new Uint32Array(total);
    let count = 0;
    for (let page = 0, at = 0; page < total; page++, at += PAGE_SIZE) {
      if (page >= shadowPages) {
        // Beyond what the target holds, its memory is zero once grown.
        if (!isZero(buf, at)) found[count++] = page;
      } else if (buf.compare(this.shadow, at, at + PAGE_SIZE, at, at + PAGE_SIZE) !== 0) found[count++] = page;
    }
    return found.slice(0, count);
  }

  /** Copies `pages` of `memory` into the shadow and returns them packed: indices, then bytes. */
  take(memory: Uint8Array, pages: Uint32Array): { indices: Uint8Array; data: Buffer } {
    if (this.shadow.length < memory.byteLength) {
      const grown = Buffer.alloc(memory.byteLength);
      grown.set(this.shadow);
      this.shadow = grown;
    }
    const data = Buffer.allocUnsafe(pages.length * PAGE_SIZE);
    for (let i = 0; i < pages.length; i++) {
      const at = (pages[i] ?? 0) * PAGE_SIZE;
      const page = memory.subarray(at, at + PAGE_SIZE);
      data.set(page, i * PAGE_SIZE);
      this.shadow.set(page, at);
    }
    const indices = new Uint8Array(pages.length * 4);
    const view = new DataView(indices.buffer);
    for (let i = 0; i < pages.length; i++) view.setUint32(i * 4, pages[i] ?? 0, true);
    return { indices, data };
  }
}

const ZERO = Buffer.alloc(PAGE_SIZE);
function isZero(buf: Buffer, at: number): boolean {
  return buf.compare(ZERO, 0, PAGE_SIZE, at, at + PAGE_SIZE) === 0;
}

export type PageCodec = 'snappy' | 'none';

/** Messages smaller than this on the wire say little about the link (the socket buffers absorb them). */
const LINK_SAMPLE_BYTES = 1 << 20;

/**
 * Picks each page message's codec from what the move measured so far: compression pays only when
 * the link is slower than the compressor. Per raw byte, sending it plain costs `link`; compressed,
 * it costs `compress + ratio * link`. The first large message goes plain (it measures the link),
 * the next compressed (it measures the compressor and the ratio); from then on the cheaper one wins,
 * with the estimates kept up to date (moving averages). On a fast link between hosts (here: veth,
 * over 1 GB/s) that is plain; on a slow one (a 1 Gbit/s link and below), Snappy.
 */
export class CodecChooser {
  private link: number | undefined; // ms per wire byte, from the time a large message took to send
  private compress: number | undefined; // ms per raw byte
  private ratio = 1; // wire bytes / raw bytes, compressed

  constructor(private readonly fixed?: PageCodec) {}

  choose(): PageCodec {
    if (this.fixed) return this.fixed;
    if (this.link === undefined) return 'none';
    if (this.compress === undefined) return 'snappy';
    return this.compress + this.ratio * this.link < this.link ? 'snappy' : 'none';
  }

  /** What sending one message cost: `compressMs` (0 when plain) and `sendMs` (until the socket took it). */
  record(codec: PageCodec, rawBytes: number, wireBytes: number, compressMs: number, sendMs: number): void {
    const average = (old: number | undefined, sample: number): number =>
      old === undefined ? sample : (old + sample) / 2;
    if (wireBytes >= LINK_SAMPLE_BYTES) this.link = average(this.link, sendMs / wireBytes);
    if (codec === 'snappy' && rawBytes >= LINK_SAMPLE_BYTES) {
      this.compress = average(this.compress, compressMs / rawBytes);
      this.ratio = average(this.ratio, wireBytes / rawBytes);
    }
  }
}

/**
 * One message's body, as the parts to write one after the other (not copied into one buffer): the
 * page indices (u32 LE), then the pages, compressed with `codec`.
 */
export function packPages(indices: Uint8Array, data: Buffer, codec: PageCodec): Uint8Array[] {
  return [indices, codec === 'snappy' ? snappy.compressSync(data) : data];
}

/**
 * Writes a message's pages into `memory` (the target's sandbox memory, grown to the guest's size).
 * Every index and length is checked first: a body that passed its CRC can still be hostile.
 */
export function applyPackedPages(
  body: Uint8Array,
  count: number,
  codec: PageCodec,
  rawBytes: number,
  memory: Uint8Array,
): void {
  const fail = (message: string): never => {
    throw new RoamError('ROAM_ERR_IMAGE_MALFORMED', `a memory message of the move is malformed: ${message}`);
  };
  if (body.length < count * 4) fail(`${count} page indices do not fit in ${body.length} bytes`);
  if (rawBytes !== count * PAGE_SIZE) fail(`${rawBytes} raw bytes for ${count} pages`);
  const view = new DataView(body.buffer, body.byteOffset, count * 4);
  const pages = new Uint32Array(count);
  const total = Math.floor(memory.byteLength / PAGE_SIZE);
  for (let i = 0; i < count; i++) {
    const page = view.getUint32(i * 4, true);
    if (page >= total) fail(`page ${page} is beyond the memory's ${total} pages`);
    if (i > 0 && page <= (pages[i - 1] ?? 0)) fail('page indices are not ascending');
    pages[i] = page;
  }
  const stored = body.subarray(count * 4);
  let data: Uint8Array;
  if (codec === 'snappy') {
    try {
      data = snappy.uncompressSync(Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength), {
        asBuffer: true,
      }) as Buffer;
    } catch (err) {
      return fail(`its pages do not decompress: ${(err as Error).message}`);
    }
  } else data = stored;
  if (data.length !== rawBytes) fail(`${data.length} bytes of pages, expected ${rawBytes}`);
  copyToPages(data, 0, pages, memory);
}

/** `key=1.2 key=3.4`: a move's step timings for a log line. */
export function formatTimings(timings: Record<string, number>): string {
  return Object.entries(timings)
    .map(([key, ms]) => `${key}=${ms.toFixed(1)}`)
    .join(' ');
}
