/**
 * Sparse copies of a guest's linear memory. An idle QuickJS guest leaves about a third of its pages
 * untouched, so only non-zero pages are copied, stored and restored.
 */
import { Buffer } from 'node:buffer';
import { PAGE_SIZE, imageError, type MemorySnapshot } from './format.js';

const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

/** Whether a page (PAGE_SIZE bytes) is all zero: one native compare. */
function isZeroPage(page: Uint8Array): boolean {
  return ZERO_PAGE.compare(page) === 0;
}

/**
 * Finds the non-zero pages and copies only them. The test is Buffer#compare against a zero page:
 * native memcmp, stops at the first difference, and measured about 10x faster than a Uint32Array
 * or BigUint64Array loop on all-zero memory (the loop's worst case). Against a base, a page is
 * kept when it differs from the base's page, and compared with the (cached) zero page wherever
 * the base's page is zero: most of a guest's memory, read once instead of twice. Pages at or past
 * `end` (where the guest's heap ends: sandbox/heap-end.ts) are not read, and left out.
 */
export function snapshotMemory(memory: Uint8Array, base?: Uint8Array, end = memory.length): MemorySnapshot {
  const byteLength = memory.length;
  if (byteLength % PAGE_SIZE !== 0) {
    throw imageError(
      'ROAM_ERR_IMAGE_MALFORMED',
      `cannot snapshot memory of ${byteLength} bytes: not a multiple of the ${PAGE_SIZE}-byte page size`,
    );
  }
  const buf = Buffer.from(memory.buffer, memory.byteOffset, byteLength);
  const totalPages = Math.ceil(Math.min(byteLength, end) / PAGE_SIZE);
  const found = new Uint32Array(totalPages);
  let count = 0;
  const baseBuf = base ? Buffer.from(base.buffer, base.byteOffset, base.byteLength) : undefined;
  const baseZero = base ? zeroPagesOf(base) : undefined;
  for (let page = 0, offset = 0; page < totalPages; page++, offset += PAGE_SIZE) {
    const reference = baseBuf && baseZero?.[page] === 0 ? baseBuf : ZERO_PAGE;
    const at = reference === ZERO_PAGE ? 0 : offset;
    if (buf.compare(reference, at, at + PAGE_SIZE, offset, offset + PAGE_SIZE) !== 0) found[count++] = page;
  }
  const pages = found.slice(0, count);
  const data = uninitialized(count * PAGE_SIZE); // every byte is copied over below
  // Copy runs of consecutive pages with one memcpy each.
  for (let i = 0; i < count;) {
    const first = pages[i] ?? 0;
    let j = i + 1;
    while (j < count && pages[j] === first + (j - i)) j++;
    data.set(memory.subarray(first * PAGE_SIZE, (first + (j - i)) * PAGE_SIZE), i * PAGE_SIZE);
    i = j;
  }
  return { byteLength, pageSize: PAGE_SIZE, pages, data };
}

/**
 * A plain Uint8Array (not a Buffer, whose slice() is a view) of fresh memory that is not zeroed
 * first: for a copy that overwrites all of it, zeroing was a quarter of the copy's time.
 */
export function uninitialized(byteLength: number): Uint8Array {
  return new Uint8Array(Buffer.allocUnsafeSlow(byteLength).buffer, 0, byteLength);
}

/** Which whole pages of a base are zero (1) or not (0): found once per base, which never changes. */
const zeroPagesCache = new WeakMap<Uint8Array, Uint8Array>();

export function zeroPagesOf(base: Uint8Array): Uint8Array {
  let zero = zeroPagesCache.get(base);
  if (zero === undefined) {
    zero = new Uint8Array(Math.floor(base.length / PAGE_SIZE));
    for (let page = 0; page < zero.length; page++) {
      zero[page] = isZeroPage(base.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE)) ? 1 : 0;
    }
    zeroPagesCache.set(base, zero);
  }
  return zero;
}

/** Checks a snapshot's own consistency; `what` prefixes the message so callers can say whose it is. */
export function checkSnapshot(snapshot: MemorySnapshot, what: string): void {
  const { byteLength, pages, data } = snapshot;
  const fail = (message: string): never => {
    throw imageError('ROAM_ERR_IMAGE_MALFORMED', `${what}: ${message}`);
  };
  const pageSize: number = snapshot.pageSize;
  if (pageSize !== PAGE_SIZE) fail(`page size ${pageSize} is not ${PAGE_SIZE}`);
  if (!Number.isSafeInteger(byteLength) || byteLength < 0 || byteLength % PAGE_SIZE !== 0) {
    fail(`memory size ${byteLength} is not a multiple of ${PAGE_SIZE}`);
  }
  if (!(pages instanceof Uint32Array) || !(data instanceof Uint8Array)) fail('pages or data has the wrong type');
  if (data.length !== pages.length * PAGE_SIZE) {
    fail(`page data is ${data.length} bytes, expected ${pages.length} pages of ${PAGE_SIZE}`);
  }
  const totalPages = byteLength / PAGE_SIZE;
  let previous = -1;
  for (let i = 0; i < pages.length; i++) {
    const page = pages[i] ?? 0;
    if (page <= previous) fail(`page indices are not strictly ascending at position ${i}`);
    if (page >= totalPages) fail(`page index ${page} is beyond the memory's ${totalPages} pages`);
    previous = page;
  }
}

function checkFits(snapshot: MemorySnapshot, target: Uint8Array): void {
  checkSnapshot(snapshot, 'cannot restore memory');
  if (target.length < snapshot.byteLength) {
    throw imageError(
      'ROAM_ERR_IMAGE_TOO_LARGE',
      `cannot restore memory: the image's ${snapshot.byteLength} bytes are too large for a target of ${target.length} bytes`,
    );
  }
}

/**
 * Writes a snapshot into `target` (a guest's memory, possibly reused and dirty): non-zero pages
 * are copied, every other byte of target, including any beyond byteLength, is zeroed.
 */
export function restoreMemory(snapshot: MemorySnapshot, target: Uint8Array): void {
  checkFits(snapshot, target);
  copyToPages(snapshot.data, 0, snapshot.pages, target);
  zeroOtherPages(snapshot.pages, target);
}

/** Copies raw bytes of a memory section (starting at `sectionOffset`) to their pages in `memory`. */
export function copyToPages(raw: Uint8Array, sectionOffset: number, pages: Uint32Array, memory: Uint8Array): void {
  let done = 0;
  while (done < raw.length) {
    const at = sectionOffset + done;
    const index = Math.floor(at / PAGE_SIZE);
    const within = at % PAGE_SIZE;
    // Extend over pages that are consecutive in memory too: one copy for the whole run.
    let run = 1;
    while (pages[index + run] === (pages[index] ?? 0) + run && (run + 1) * PAGE_SIZE - within <= raw.length - done)
      run++;
    const n = Math.min(run * PAGE_SIZE - within, raw.length - done);
    memory.set(raw.subarray(done, done + n), (pages[index] ?? 0) * PAGE_SIZE + within);
    done += n;
  }
}

/**
 * Zeroes every page of `memory` that is not in `pages`, writing only to pages that are not zero
 * already: a fresh sandbox's untouched pages stay untouched (no page faults for nothing).
 */
export function zeroOtherPages(pages: Uint32Array, memory: Uint8Array): void {
  const buf = Buffer.from(memory.buffer, memory.byteOffset, memory.byteLength);
  const total = Math.floor(memory.length / PAGE_SIZE);
  let next = 0;
  for (let page = 0; page < total; page++) {
    if (next < pages.length && pages[next] === page) {
      next++;
      continue;
    }
    const offset = page * PAGE_SIZE;
    if (buf.compare(ZERO_PAGE, 0, PAGE_SIZE, offset, offset + PAGE_SIZE) !== 0) buf.fill(0, offset, offset + PAGE_SIZE);
  }
  if (memory.length % PAGE_SIZE !== 0) memory.fill(0, total * PAGE_SIZE);
}

/**
 * Writes a snapshot's pages into `target` and leaves every other page as it is: for an image
 * stored against a base, when `target` already holds that base.
 */
export function applyPages(snapshot: MemorySnapshot, target: Uint8Array): void {
  checkFits(snapshot, target);
  copyToPages(snapshot.data, 0, snapshot.pages, target);
}

/** What a live copy takes between two turns of the guest. */
export const LIVE_SLICE_BYTES = 8 * 1024 * 1024;

/** A live copy of a guest's memory, and which of its pages were all zero when copied. */
export interface LiveCopy {
  bytes: Buffer;
  /** 1 where the copy's page is all zero: catchUp reads such a page of memory against a cached zero page. */
  zero: Uint8Array;
}

/**
 * A live copy, the first half of a capture with a short pause: copies a running guest's memory
 * in slices, letting the event loop (and so the guest) run between them. `memory` gives the view
 * now (a grown memory is a new buffer); the copy stops early once `running()` says no. Each slice
 * is checked for zero pages just after its copy, while it is still in the cache.
 */
export async function copyLive(
  memory: () => Uint8Array,
  running: () => boolean,
  sliceBytes = LIVE_SLICE_BYTES,
): Promise<LiveCopy> {
  const bytes = Buffer.allocUnsafe(memory().byteLength);
  const zero = new Uint8Array(Math.floor(bytes.length / PAGE_SIZE));
  for (let at = 0; at < bytes.length && running(); at += sliceBytes) {
    const end = Math.min(at + sliceBytes, bytes.length);
    bytes.set(memory().subarray(at, end), at);
    for (let page = Math.ceil(at / PAGE_SIZE); (page + 1) * PAGE_SIZE <= end; page++) {
      zero[page] = isZeroPage(bytes.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE)) ? 1 : 0;
    }
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return { bytes, zero };
}

/**
 * The second half, with the guest frozen: brings a live copy up to `memory` by copying again every
 * page whose contents differ (found by compare, as pre-copy finds them) and whatever it grew by.
 * A page that was zero in the copy is compared with a cached zero page, so most of a small
 * guest's memory is read once, not twice. Pages at or past `end` (where the guest's heap ends) are
 * not in use and are left as the copy has them. Returns the copy, now the frozen memory.
 */
export function catchUp(memory: Uint8Array, copy: LiveCopy, end = memory.length): Buffer {
  let out = copy.bytes;
  if (memory.byteLength !== out.length) {
    out = Buffer.allocUnsafe(memory.byteLength);
    copy.bytes.copy(out, 0, 0, Math.min(copy.bytes.length, out.length));
    if (out.length > copy.bytes.length) out.set(memory.subarray(copy.bytes.length), copy.bytes.length);
  }
  const live = Buffer.from(memory.buffer, memory.byteOffset, memory.byteLength);
  const used = Math.min(live.length, Math.ceil(end / PAGE_SIZE) * PAGE_SIZE);
  for (let page = 0, at = 0; at < used; page++, at += PAGE_SIZE) {
    const stop = Math.min(at + PAGE_SIZE, used);
    // (The zero map covers whole pages only: a partial last page is compared with the copy.)
    const same =
      copy.zero[page] === 1
        ? live.compare(ZERO_PAGE, 0, PAGE_SIZE, at, stop) === 0
        : live.compare(out, at, stop, at, stop) === 0;
    if (!same) live.copy(out, at, at, stop);
  }
  return out;
}
