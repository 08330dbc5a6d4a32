/**
 * The heavy lifting, kept from holding the caller's event loop long: deflate, inflate and LZ4
 * compression run on the libuv thread pool, several chunks at a time; LZ4 decompression and hashing
 * run on the calling thread, in slices between event-loop turns.
 */
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { xxh3 } from '@node-rs/xxhash';
import { compress as lz4Compress, uncompressSync as lz4UncompressSync } from 'lz4-napi';
import { compress as snappyCompress, uncompress as snappyUncompress } from 'snappy';
import type { DigestKind } from './format.js';
import { LZ4HC_LEVEL, nativeCodec } from './native.js';

const deflateRawAsync = promisify(zlib.deflateRaw);
const inflateRawAsync = promisify(zlib.inflateRaw);

/**
 * Chunks in flight: twice the libuv pool (4 threads by default), so a thread never idles while the
 * main thread handles a completion; more only holds more chunk buffers (measured: 8 beat 2 and 4).
 */
export const POOL_CONCURRENCY = 2 * Math.max(1, Math.min(64, Number(process.env['UV_THREADPOOL_SIZE']) || 4));

/**
 * Runs `job(i)` for i in [0, count) with at most `limit` in flight. On the first failure it starts
 * nothing new, lets in-flight jobs finish (no stray rejections, no work left behind) and rethrows.
 */
export async function runPool(count: number, limit: number, job: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  let failure: unknown;
  const worker = async (): Promise<void> => {
    while (!failed && next < count) {
      const index = next++;
      try {
        await job(index);
      } catch (err) {
        if (!failed) {
          failed = true;
          failure = err;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  if (failed) throw failure;
}

export function deflateChunk(raw: Uint8Array, level: number): Promise<Uint8Array> {
  // A larger output buffer than zlib's 16-KiB default means fewer thread-pool round trips per chunk.
  return deflateRawAsync(raw, { level, chunkSize: Math.max(16 * 1024, raw.length >>> 2) });
}

/**
 * Inflates one chunk that must come to exactly `rawBytes`. The output buffer is rawBytes + 1 so
 * a correct stream finishes in one pass with no reallocation, and maxOutputLength makes a stream
 * that would produce more fail as soon as it tries: a zip bomb cannot allocate past its declaration.
 */
export function inflateChunk(stored: Uint8Array, rawBytes: number): Promise<Uint8Array> {
  return inflateRawAsync(stored, {
    chunkSize: Math.max(64, rawBytes + 1),
    maxOutputLength: rawBytes,
  });
}

/**
 * One LZ4 block with its raw length prepended (4 bytes, little-endian), as lz4_flex writes it:
 * LZ4HC by the native codec when there is one (native.ts, LZ4HC_LEVEL), else lz4_flex's fast mode.
 * Measured on the 1 and 16 MiB bench heaps: lz4_flex makes the same size as Snappy in the same
 * time, but decompresses in a third of the time (24 ms against 67 ms for 23.5 MiB on one core).
 */
export function lz4Chunk(raw: Uint8Array, portable = false): Promise<Uint8Array> {
  const native = portable ? undefined : nativeCodec();
  if (native) return native.compressChunk(raw, LZ4HC_LEVEL);
  return lz4Compress(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength));
}

/** The raw length an LZ4 chunk declares (its 4-byte prefix), or -1 if it is too short to have one. */
export function lz4DeclaredLength(block: Uint8Array): number {
  if (block.length < 4) return -1;
  return new DataView(block.buffer, block.byteOffset, 4).getUint32(0, true);
}

/**
 * Decompresses one LZ4 chunk that must come to exactly `rawBytes`; the declared length is checked
 * first, so a lying block cannot make the decoder allocate more than the header promised.
 *
 * On the calling thread, not the thread pool: a 1 MiB chunk takes about half a millisecond here,
 * and its output comes from this thread's warm heap (src/common/node-flags.ts, malloc settings).
 * On the pool, four threads of two cores wrote into memory of their own, mostly fresh: measured
 * by bench:checkpoint (BENCH_SIZES=1,16, two runs each way, alternating), the 16 MiB guest's
 * restore (23.5 MB in LZ4 chunks of 1 MiB) took 52.8-60.5 ms through the pool and 10.7-13.7 ms
 * here. The caller yields to the event loop between chunks (`unpackChunks`).
 */
export function unlz4Chunk(stored: Uint8Array, rawBytes: number): Uint8Array {
  const declared = lz4DeclaredLength(stored);
  if (declared !== rawBytes) throw new Error(`declares ${declared} bytes, the header ${rawBytes}`);
  return lz4UncompressSync(Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength));
}

export async function snappyChunk(raw: Uint8Array): Promise<Uint8Array> {
  return snappyCompress(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength));
}

/** The uncompressed length a Snappy block declares (its varint preamble), or -1 if unreadable. */
export function snappyDeclaredLength(block: Uint8Array): number {
  let value = 0;
  for (let i = 0, shift = 0; i < 5 && i < block.length; i++, shift += 7) {
    const byte = block[i] ?? 0;
    value += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) return value;
  }
  return -1;
}

/**
 * Decompresses one Snappy chunk that must come to exactly `rawBytes`; the declared length is
 * checked first, so a lying block cannot make us allocate more than the header promised.
 */
export async function unsnappyChunk(stored: Uint8Array, rawBytes: number): Promise<Uint8Array> {
  const declared = snappyDeclaredLength(stored);
  if (declared !== rawBytes) throw new Error(`declares ${declared} bytes, the header ${rawBytes}`);
  const out = await snappyUncompress(Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength));
  return typeof out === 'string' ? Buffer.from(out) : out;
}

/** Lets pending I/O callbacks and timers run before continuing a long computation. */
export function yieldToLoop(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}

/** The digest is computed this much at a time, other work running between (about 0.6 ms each). */
const DIGEST_SLICE_BYTES = 16 * 1024 * 1024;

/**
 * An image's digest (format.ts, `digestKind`): XXH3-64 little-endian, or for images of versions 1
 * and 2 CRC-32 big-endian. Computed in slices, yielding between them.
 */
export async function checksum(bytes: Uint8Array, kind: DigestKind): Promise<Uint8Array> {
  const digest = digester(kind);
  for (let offset = 0; offset < bytes.length; offset += DIGEST_SLICE_BYTES) {
    if (offset > 0) await yieldToLoop();
    digest.update(bytes.subarray(offset, offset + DIGEST_SLICE_BYTES));
  }
  return digest.bytes();
}

export function checksumSync(bytes: Uint8Array, kind: DigestKind): Uint8Array {
  return digester(kind).update(bytes).bytes();
}

interface Digester {
  update(bytes: Uint8Array): Digester;
  bytes(): Uint8Array;
}

function digester(kind: DigestKind): Digester {
  return kind === 'xxh3-64' ? new Xxh3Digest() : new Crc32Digest();
}

class Xxh3Digest implements Digester {
  // The streaming hasher: `xxh3.xxh64()`, the one-shot call, runs at a tenth of its speed here.
  private readonly hash = xxh3.Xxh3.withSeed(0n);

  update(bytes: Uint8Array): this {
    this.hash.update(bytes);
    return this;
  }

  bytes(): Uint8Array {
    const out = new Uint8Array(8);
    new DataView(out.buffer).setBigUint64(0, this.hash.digest(), true);
    return out;
  }
}

class Crc32Digest implements Digester {
  private crc = 0;

  update(bytes: Uint8Array): this {
    this.crc = zlib.crc32(bytes, this.crc);
    return this;
  }

  bytes(): Uint8Array {
    const out = new Uint8Array(4);
    new DataView(out.buffer).setUint32(0, this.crc >>> 0, false);
    return out;
  }
}
