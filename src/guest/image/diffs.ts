/**
 * Pages stored as their differences from the base memory (the runtime template). A guest keeps
 * most of the runtime's pages but changes bytes all over them: on the 1 MiB bench guest, 62 pages
 * differ from the template, yet two thirds of their bytes are still the template's. A restore
 * starts from a sandbox that already holds the template, so it only has to write the runs that
 * differ: 1.6 MB of records instead of 4 MB of pages, copied rather than decompressed.
 *
 * One record per page, all numbers little-endian:
 *
 *   u32  page index
 *   u32  run count n (at least 1)
 *   n x  u16 start, u16 length - 1   in order, not overlapping, inside the page
 *   the runs' bytes, concatenated
 *
 * A record is never larger than the page (the encoder stores such a page whole), which bounds
 * what a hostile image can make us write per record.
 */
import { endianness } from 'node:os';
import { PAGE_SIZE } from './format.js';

export const RECORD_HEADER_BYTES = 8;
const RUN_BYTES = 4;
const WORDS = PAGE_SIZE / 4;
/**
 * Runs closer than this are merged, the equal bytes between them copied along. Applying a run
 * costs about as much as copying a hundred bytes: on the 1 MiB bench guest's pages, applied on
 * their own, merging gaps under 64 bytes instead of 16 cut the apply from 1.0 to 0.6 ms for 10%
 * more bytes. Whole restores could not tell gaps of 64 to 512 bytes apart.
 */
export const MERGE_GAP = 64;
/** A record no larger than a page holds at most this many runs. */
const MAX_RUNS = Math.floor(PAGE_SIZE / RUN_BYTES);

/** Where a record is wrong, for the decoder's error message. */
export class DiffError extends Error {}

/**
 * Finds where `page` differs from `base` (both PAGE_SIZE bytes) and returns the record that
 * turns the base into the page, or undefined when the record would not be smaller than the page
 * (or would be empty: the page is its base's). Compares 32-bit words: runs start and end on word
 * boundaries, which costs a few bytes per run and keeps the loop in JavaScript fast (a byte loop
 * took 0.5 ms per page).
 */
export function diffRecord(index: number, page: Uint8Array, base: Uint8Array): Uint8Array | undefined {
  const a = words(page, 0);
  const b = words(base, 1);
  const runs = runTable;
  let count = 0;
  let literal = 0;
  let w = nextDifference(a, b, 0);
  while (w < WORDS) {
    const start = w;
    let end = w + 1;
    for (;;) {
      w = nextDifference(a, b, end);
      if (w === WORDS || w - end >= MERGE_GAP / 4) break;
      end = w + 1;
    }
    literal += 4 * (end - start);
    if (count === MAX_RUNS || RUN_BYTES * (count + 1) + literal >= PAGE_SIZE) return undefined;
    runs[2 * count] = 4 * start;
    runs[2 * count + 1] = 4 * (end - start) - 1;
    count++;
  }
  if (count === 0) return undefined;

  const record = new Uint8Array(RECORD_HEADER_BYTES + RUN_BYTES * count + literal);
  const view = new DataView(record.buffer);
  view.setUint32(0, index, true);
  view.setUint32(4, count, true);
  let into = RECORD_HEADER_BYTES + RUN_BYTES * count;
  for (let r = 0; r < count; r++) {
    const from = runs[2 * r] ?? 0;
    const length = (runs[2 * r + 1] ?? 0) + 1;
    view.setUint16(RECORD_HEADER_BYTES + RUN_BYTES * r, from, true);
    view.setUint16(RECORD_HEADER_BYTES + RUN_BYTES * r + 2, length - 1, true);
    record.set(page.subarray(from, from + length), into);
    into += length;
  }
  return record;
}

/** The first word at or after `from` where `a` and `b` differ, or WORDS. */
function nextDifference(a: Int32Array, b: Int32Array, from: number): number {
  let w = from;
  while (w < WORDS && a[w] === b[w]) w++;
  return w;
}

/** Where diffRecord notes its runs (reused: a fresh one per page cost more than its scan). */
const runTable = new Uint16Array(2 * MAX_RUNS);

/** Scratch pages for the rare page that is not aligned for a word view. */
const scratch = [new Int32Array(WORDS), new Int32Array(WORDS)] as const;

/** `page` as 32-bit words (their byte order does not matter: they are only compared). */
function words(page: Uint8Array, which: 0 | 1): Int32Array {
  if ((page.byteOffset & 3) === 0) return new Int32Array(page.buffer, page.byteOffset, WORDS);
  const copy = scratch[which];
  new Uint8Array(copy.buffer).set(page.subarray(0, PAGE_SIZE));
  return copy;
}

/** Runs shorter than this are copied in a loop rather than by `set()`. */
const SHORT_RUN_BYTES = 256;
/** Words are read in the order an Int32Array writes them, so that bytes land unchanged. */
const HOST_LITTLE_ENDIAN = endianness() === 'LE';

/** Where a record's page goes: checks its index and returns where it starts in the memory. */
export interface PagePlacer {
  place(index: number): number;
}

/**
 * Applies every record in `chunk` (whole records only). `pages.place(index)` checks a record's
 * page index and returns where that page starts in `memory`, which holds the page's base there.
 * (An object, not a closure: a new closure per call made the optimized code throw itself away.)
 * Every field is checked before the bytes it describes are written; on an error, pages already
 * written stay written (the caller throws the memory away).
 */
export function applyDiffs(chunk: Uint8Array, memory: Uint8Array, pages: PagePlacer): void {
  const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  // Runs are whole words, so short ones are copied a word at a time when the memory allows it.
  const words =
    (memory.byteOffset & 3) === 0 ? new Int32Array(memory.buffer, memory.byteOffset, memory.length >> 2) : undefined;
  let at = 0;
  while (at < chunk.length) {
    if (chunk.length - at < RECORD_HEADER_BYTES) throw new DiffError(`a record header is cut off at byte ${at}`);
    const index = view.getUint32(at, true);
    const count = view.getUint32(at + 4, true);
    const table = at + RECORD_HEADER_BYTES;
    if (count === 0 || count > MAX_RUNS) throw new DiffError(`page ${index}'s record has ${count} runs`);
    let bytes = table + RUN_BYTES * count;
    if (bytes > chunk.length) throw new DiffError(`page ${index}'s run table is cut off`);
    const base = pages.place(index);
    if (base < 0 || base + PAGE_SIZE > memory.length) throw new DiffError(`page ${index} is outside the memory`);
    let previousEnd = 0;
    for (let r = table; r < table + RUN_BYTES * count; r += RUN_BYTES) {
      const start = view.getUint16(r, true);
      const length = view.getUint16(r + 2, true) + 1;
      if (start < previousEnd || start + length > PAGE_SIZE) {
        throw new DiffError(`page ${index}'s runs overlap or leave the page`);
      }
      if (bytes + length > chunk.length) throw new DiffError(`page ${index}'s record is cut off`);
      const to = base + start;
      // Short runs are most of them: a loop beats making a view for set(), and words beat bytes
      // (the 1 MiB bench guest's 6474 runs: 0.18 ms, against 0.36 with bytes under 48 bytes).
      if (length < SHORT_RUN_BYTES && words !== undefined && ((to | length) & 3) === 0) {
        for (let w = to >> 2, i = bytes; i < bytes + length; i += 4) words[w++] = view.getInt32(i, HOST_LITTLE_ENDIAN);
      } else if (length < SHORT_RUN_BYTES) {
        for (let i = 0; i < length; i++) memory[to + i] = chunk[bytes + i] ?? 0;
      } else memory.set(chunk.subarray(bytes, bytes + length), to);
      bytes += length;
      previousEnd = start + length;
    }
    if (bytes - table > PAGE_SIZE) throw new DiffError(`page ${index}'s record is larger than the page`);
    at = bytes;
  }
}
