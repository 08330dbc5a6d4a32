/**
 * Where a guest's heap ends. QuickJS allocates through Emscripten's malloc, which takes memory
 * from `sbrk`; the current break lives in one variable in the linear memory, and nothing at or
 * above it is in use: static data and the stack lie below the heap, and memory the allocator
 * takes from sbrk again is never assumed to be zero (built without mmap, its calloc clears every
 * block). So a capture can leave the pages above the break out: they are zero, or hold only what
 * a freed block left there. For a small guest that is 40% of its memory not read while frozen.
 *
 * The module exports no way to read the break, so the variable is found once per process, in a
 * throwaway instance: two allocations larger than its free memory each move the break past their
 * own end, and of the words of the module's data segments that moved so, the break is the
 * highest. If the probe finds none (a different build of the module), every page is read, as
 * before.
 */
import { instantiate, quickjsBinary } from './module.js';

const PROBE_BYTES = 2 * 1024 * 1024;

let probed: Promise<number | undefined> | undefined;

/**
 * The address of the allocator's break variable in every QuickJS instance, if found. A probe that
 * fails (no memory for its instance, say) finds nothing: guests start all the same.
 */
export function breakAddress(): Promise<number | undefined> {
  probed ??= probeBreakAddress().catch(() => undefined);
  return probed;
}

async function probeBreakAddress(): Promise<number | undefined> {
  // The break starts at the heap's base, a constant: so its variable lies in a data segment, and
  // only those few KiB are searched (reading all the untouched memory below the heap would fault).
  const words = dataSegments(await quickjsBinary()).flatMap(([start, end]) => {
    const found: number[] = [];
    for (let at = start - (start % 4); at < end; at += 4) found.push(at);
    return found;
  });
  const instance = await instantiate(64 * 1024 * 1024);
  const read = (at: number): number => {
    const memory = instance.memory.buffer;
    return at + 4 <= memory.byteLength ? new DataView(memory).getUint32(at, true) : 0;
  };
  const size = (): number => instance.memory.buffer.byteLength;
  const first = instance.malloc(PROBE_BYTES);
  if (first === 0) return undefined;
  const candidates = words
    .filter((at) => at < first)
    .map((at) => ({ at, value: read(at) }))
    .filter(({ value }) => value >= first + PROBE_BYTES && value <= size());
  const second = instance.malloc(PROBE_BYTES);
  if (second === 0) return undefined;
  let best: { at: number; value: number } | undefined;
  for (const { at, value: before } of candidates) {
    const value = read(at);
    const moved = value >= second + PROBE_BYTES && value > before && value <= size();
    if (moved && (best === undefined || value > best.value)) best = { at, value };
  }
  return best?.at;
}

/**
 * The [start, end) of each active data segment placed at a constant address in a WebAssembly
 * binary, or none if the binary cannot be read so.
 */
export function dataSegments(binary: Uint8Array): Array<[number, number]> {
  let at = 8;
  const byte = (): number => {
    const value = binary[at++];
    if (value === undefined) throw new RangeError('truncated');
    return value;
  };
  const unsigned = (): number => {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
    }
    throw new RangeError('LEB128 too long');
  };
  const signed32 = (): number => {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = byte();
      result |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) return shift < 25 && b & 0x40 ? result | (-1 << (shift + 7)) : result;
    }
    throw new RangeError('LEB128 too long');
  };
  try {
    if (new DataView(binary.buffer, binary.byteOffset, 4).getUint32(0, true) !== 0x6d736100) return [];
    while (at < binary.length) {
      const id = byte();
      const size = unsigned();
      if (id !== 11) {
        at += size;
        continue;
      }
      const ranges: Array<[number, number]> = [];
      for (let count = unsigned(); count > 0; count--) {
        const flags = unsigned();
        if (flags === 1) {
          const length = unsigned(); // passive: copied in by code, at no fixed place
          at += length;
          continue;
        }
        if (flags !== 0 && flags !== 2) return [];
        if (flags === 2) unsigned(); // past the memory's index
        if (byte() !== 0x41) return []; // i32.const
        const offset = signed32();
        if (byte() !== 0x0b) return []; // end
        const length = unsigned();
        ranges.push([offset, offset + length]);
        at += length;
      }
      return ranges;
    }
  } catch {
    return [];
  }
  return [];
}

/**
 * The bytes of `memory` below which everything in use lies: the break rounded up to `page`, or
 * the whole memory when the break is unknown or implausible.
 */
export function heapEnd(memory: Uint8Array, address: number | undefined, page: number): number {
  if (address === undefined || address + 4 > memory.length) return memory.length;
  const brk = new DataView(memory.buffer, memory.byteOffset, memory.byteLength).getUint32(address, true);
  if (brk <= address || brk > memory.length) return memory.length;
  return Math.min(memory.length, Math.ceil(brk / page) * page);
}
