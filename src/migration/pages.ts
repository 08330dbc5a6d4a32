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

/** One message's body: the page indices (u32 LE), then the pages, compressed with `codec`. */
export function packPages(indices: Uint8Array, data: Buffer, codec: PageCodec): Buffer {
  const stored = codec === 'snappy' ? snappy.compressSync(data) : data;
  return Buffer.concat([indices, stored]);
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
