/**
 * Checkpoint image format, version 3 (versions 1 and 2 still decode). Everything here is pure:
 * constants, types and the fixed-size prefix (header.ts checks the header, diffs.ts lays out the
 * diffs). Invariant 4 ("portable images") lives in this file: every multi-byte number is
 * little-endian and nothing depends on the host's word size or byte order.
 *
 * Layout (offsets in bytes):
 *
 *    0  magic        8   "ROAMIMG\0"
 *    8  version      u16 IMAGE_FORMAT_VERSION; magic and this field keep their place in every version
 *   10  flags        u16 0 (no flags are defined)
 *   12  headerLength u32 length of the header JSON
 *   16  totalLength  u64 length of the whole image, digest included
 *   24  reserved     u32 0
 *   28  prefixCrc    u32 CRC-32 (IEEE) of bytes 0..27
 *   32  header       UTF-8 JSON, `ImageHeader` below
 *   32+headerLength  payload: the sections' stored bytes
 *   totalLength-8    digest: XXH3-64 (seed 0, little-endian) of every preceding byte; versions 1 and
 *                    2 end in a CRC-32 (big-endian, 4 bytes) instead
 *
 * totalLength comes first so that a short image is reported as truncated rather than as a checksum
 * failure, and the prefix CRC makes a damaged length field read as damage, not as truncation.
 *
 * Sections, in this order, each exactly once:
 *   pages   u32 LE indices of the pages stored whole, strictly ascending
 *   memory  those pages' bytes, concatenated
 *   state   UTF-8 JSON of the host-side state
 *   files   the serialized virtual file system (opaque here)
 *   diffs   (version 2) pages stored as their differences from the base, one record each
 *           (layout in diffs.ts); only in an image with a base, and never a page `pages` lists
 * The memory is the base (`meta.base`; without one, zeros), with the listed pages and the diffs'
 * pages put in; every other page is the base's. A section's `offset` is relative to the start of
 * the payload (so the header does not depend on its own length). Sections may not overlap or leave
 * the payload. Each section is cut into chunks (`[rawBytes, storedBytes]`, in order) that are
 * encoded independently so that encode and decode use every core; a diffs chunk holds whole
 * records, so it applies on its own. In an 'lz4' section a chunk is one LZ4 block after its raw
 * length (u32 LE), in a 'snappy' section one Snappy block, in a 'deflate-raw' section one raw
 * deflate stream; in any of them, a chunk whose storedBytes equals its rawBytes is stored verbatim
 * (the encoder does that when compression does not shrink it, e.g. for random bytes). In a 'none'
 * section every chunk is verbatim.
 */
import { crc32 } from '../../common/crc32.js';
import { RoamError, type RoamErrorCode } from '../../errors.js';

export const IMAGE_FORMAT_VERSION = 3;
/** Versions this Roam decodes: 1 has no diffs section; 1 and 2 end in a CRC-32, not an XXH3-64. */
export const DECODABLE_FORMAT_VERSIONS: readonly number[] = [1, 2, 3];
export const IMAGE_MAGIC = new Uint8Array([0x52, 0x4f, 0x41, 0x4d, 0x49, 0x4d, 0x47, 0x00]); // "ROAMIMG\0"
export const PREFIX_BYTES = 32;

/**
 * How an image's last bytes check the rest. XXH3-64 since version 3, for speed: a restore hashes
 * the whole image before its guest may run, and here the 1 MiB bench guest's 1.66 MB image hashes
 * in 0.07 ms against CRC-32's 0.31, 31.5 MB in 1.27 ms against 5.77 (BENCHMARKS.md, session 12).
 * Only the streaming hasher is that fast: `xxh3.xxh64()`, the one-shot call, runs at a tenth of it.
 */
export type DigestKind = 'xxh3-64' | 'crc-32';
export const digestKind = (formatVersion: number): DigestKind => (formatVersion >= 3 ? 'xxh3-64' : 'crc-32');
export const DIGEST_BYTES: Record<DigestKind, number> = { 'xxh3-64': 8, 'crc-32': 4 };
export const DIGEST_NAMES: Record<DigestKind, string> = { 'xxh3-64': 'XXH3-64', 'crc-32': 'CRC-32' };
/** The digest of the version this Roam writes, and its length. */
export const WRITTEN_DIGEST = digestKind(IMAGE_FORMAT_VERSION);
export const WRITTEN_DIGEST_BYTES = DIGEST_BYTES[WRITTEN_DIGEST];
export const PAGE_SIZE = 65536 as const;

export const SECTION_NAMES = ['pages', 'memory', 'state', 'files', 'diffs'] as const;
export type SectionName = (typeof SECTION_NAMES)[number];
export const SECTION_ENCODINGS = ['lz4', 'snappy', 'deflate-raw', 'none'] as const;
export type SectionEncoding = (typeof SECTION_ENCODINGS)[number];

/** Default limits for decoding; callers that know better pass their own. */
export const DEFAULT_MAX_IMAGE_BYTES = 1024 * 1024 * 1024;
export const DEFAULT_MAX_MEMORY_BYTES = 4 * 1024 * 1024 * 1024;
/**
 * Chunk size the encoder uses. Measured on 2 cores with 64 MiB of heap-like memory: one stream per
 * section took about twice as long to encode and decode as 1-4 MiB chunks, which were equal within
 * noise; the smaller size spreads small guests (about 13 MiB of non-zero pages) over more threads.
 */
export const ENCODE_CHUNK_BYTES = 1024 * 1024;
/** Largest chunk a decoder accepts: bounds the buffer a single inflate may allocate. */
export const MAX_CHUNK_BYTES = 64 * 1024 * 1024;
/** The header is metadata plus a chunk table; 4 GiB of memory in 1-MiB chunks needs about 100 KB. */
export const MAX_HEADER_BYTES = 4 * 1024 * 1024;
export const DEFAULT_COMPRESSION_LEVEL = 1;
/**
 * Deflate spends at least 2 bits (length and distance codes) per 258-byte match, so no stream
 * inflates to more than 1032 times its size; a chunk table claiming more is lying.
 */
export const MAX_DEFLATE_RATIO = 1032;

export interface MemorySnapshot {
  /** Total linear memory size, a multiple of 65536. */
  byteLength: number;
  pageSize: 65536;
  /** Indices of the non-zero pages, strictly ascending. */
  pages: Uint32Array;
  /** Those pages' bytes concatenated: pages.length * 65536 bytes. */
  data: Uint8Array;
}

export interface ImageMeta {
  kind: 'js' | 'wasm';
  guestId: string;
  name: string;
  roamVersion: string;
  /** ISO 8601 date-time. */
  createdAt: string;
  /**
   * The base memory this image's pages are stored against (the id of Roam's runtime template):
   * pages equal to the base's are left out, and a restore starts from the base. Absent: the
   * memory section holds every non-zero page and nothing else is needed.
   */
  base?: string;
}

/** A base memory: the whole memory an image's pages are stored against, and its id (`meta.base`). */
export interface BaseMemory {
  id: string;
  full: Uint8Array;
}

export interface ImageContents {
  meta: ImageMeta;
  memory: MemorySnapshot;
  /** JSON-serializable host-side state; it round-trips as JSON does (no undefined, Date, BigInt). */
  state: unknown;
  /** The serialized virtual file system, opaque here. */
  files: Uint8Array;
}

export interface ImageInfo {
  formatVersion: number;
  meta: ImageMeta;
  /** nonZeroPages: stored whole; diffPages: stored as their differences from the base. */
  memory: { byteLength: number; nonZeroPages: number; diffPages: number; totalPages: number };
  sections: Array<{ name: string; rawBytes: number; storedBytes: number; encoding: string }>;
  totalBytes: number;
}

/** `roam guest inspect`'s word on the format: "v3 (checksum XXH3-64), written by roam 0.1.0 at ...". */
export function describeFormat(info: Pick<ImageInfo, 'formatVersion' | 'meta'>): string {
  const checksum = DIGEST_NAMES[digestKind(info.formatVersion)];
  return `v${info.formatVersion} (checksum ${checksum}), written by roam ${info.meta.roamVersion} at ${info.meta.createdAt}`;
}

/**
 * How chunks are compressed. LZ4 is the default: restore time (a migration's pause) matters more
 * than size. Measured on a 110 MiB QuickJS heap (2 cores), Snappy compressed to 36% in 156 ms and
 * decompressed in 112 ms, where deflate level 1 made 24% in 650 ms and took 308 ms to inflate; on
 * the bench heaps LZ4 makes the same size as Snappy in the same time and decompresses 3x faster.
 * Images with Snappy sections (the default before) still decode.
 */
export type ImageCodec = 'lz4' | 'snappy' | 'deflate' | 'none';

export interface EncodeOptions {
  /** Default 'lz4'; giving only `level` selects deflate (level 0 stores verbatim). */
  codec?: ImageCodec;
  /** zlib level 0-9 for the deflate codec. Default 1: about as small as 6 on heaps, much faster. */
  level?: number;
  /**
   * The base `contents.meta.base` names: pages it has (non-zero there) are stored as their
   * differences from it. Without it every page is stored whole. The diffs are compressed only by
   * deflate (the codec that puts size first): LZ4 would halve them again but, measured on the 1 MiB
   * bench guest, double the time to put them in (about 4 ms against 2), and restore time is what
   * LZ4 is for.
   */
  base?: BaseMemory;
  /** LZ4 by lz4_flex even where the native codec (native.ts) is built: for comparing the two. */
  portable?: boolean;
}

export interface DecodeOptions {
  /** Largest image accepted, and largest inflated state or files section. Default 1 GiB. */
  maxImageBytes?: number;
  /** Largest guest linear memory accepted. Default 4 GiB (the wasm32 maximum). */
  maxMemoryBytes?: number;
  /** The image's base, for `decodeImage` of an image with diffs (which it turns into whole pages). */
  base?: BaseMemory;
  /** `decodeImageInto` by the portable path even where the native codec is built. */
  portable?: boolean;
}

export interface SectionHeader {
  name: SectionName;
  /** Relative to the start of the payload. */
  offset: number;
  storedBytes: number;
  rawBytes: number;
  encoding: SectionEncoding;
  /** `[rawBytes, storedBytes]` of each chunk, in order. */
  chunks: Array<[number, number]>;
}

/** The header JSON, as header.ts's `parseImageHeader` checks it. */
export interface ImageHeader {
  meta: ImageMeta;
  memory: {
    byteLength: number;
    pageSize: typeof PAGE_SIZE;
    nonZeroPages: number;
    /** Version 2 only. */
    diffPages?: number;
  };
  /** Version 1 has no diffs section. */
  sections: SectionHeader[];
}

export function imageError(code: RoamErrorCode, message: string, cause?: unknown): RoamError {
  return new RoamError(code, message, cause === undefined ? undefined : { cause });
}

/** CRC-32 (IEEE 802.3) of the prefix's first 28 bytes. */
export const prefixCrc = (bytes: Uint8Array): number => crc32(bytes.subarray(0, 28));

export interface ImagePrefix {
  formatVersion: number;
  flags: number;
  headerLength: number;
  totalLength: number;
}

export function writePrefix(target: Uint8Array, prefix: ImagePrefix): void {
  const view = new DataView(target.buffer, target.byteOffset, PREFIX_BYTES);
  target.set(IMAGE_MAGIC, 0);
  view.setUint16(8, prefix.formatVersion, true);
  view.setUint16(10, prefix.flags, true);
  view.setUint32(12, prefix.headerLength, true);
  view.setBigUint64(16, BigInt(prefix.totalLength), true);
  view.setUint32(24, 0, true);
  view.setUint32(28, prefixCrc(target), true);
}

/**
 * Allocates a whole image and writes its prefix and header; the caller fills the payload at
 * `payloadOffset` and the digest into the last WRITTEN_DIGEST_BYTES.
 */
export function layoutImage(header: ImageHeader, payloadBytes: number): { image: Uint8Array; payloadOffset: number } {
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const payloadOffset = PREFIX_BYTES + headerBytes.length;
  const totalLength = payloadOffset + payloadBytes + WRITTEN_DIGEST_BYTES;
  const image = new Uint8Array(totalLength);
  writePrefix(image, {
    formatVersion: IMAGE_FORMAT_VERSION,
    flags: 0,
    headerLength: headerBytes.length,
    totalLength,
  });
  image.set(headerBytes, PREFIX_BYTES);
  return { image, payloadOffset };
}
