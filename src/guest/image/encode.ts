import { RoamError } from '../../errors.js';
import {
  DEFAULT_COMPRESSION_LEVEL,
  ENCODE_CHUNK_BYTES,
  PAGE_SIZE,
  SECTION_NAMES,
  WRITTEN_DIGEST,
  WRITTEN_DIGEST_BYTES,
  imageError,
  layoutImage,
  type BaseMemory,
  type ImageCodec,
  type SectionEncoding,
  type EncodeOptions,
  type ImageContents,
  type ImageHeader,
  type ImageMeta,
  type SectionHeader,
} from './format.js';
import { diffRecord } from './diffs.js';
import { HeaderError, parseImageMeta } from './header.js';
import { checkSnapshot, zeroPagesOf } from './memory.js';
import { POOL_CONCURRENCY, checksum, deflateChunk, lz4Chunk, runPool, snappyChunk, yieldToLoop } from './work.js';

const COPY_SLICE_BYTES = 4 * 1024 * 1024;
/** Bytes of pages compared against the base between two turns of the event loop. */
const DIFF_SLICE_BYTES = 1024 * 1024;

/** Page indices as u32 little-endian, whatever the host's byte order. */
function encodePageIndices(pages: Uint32Array): Uint8Array {
  const bytes = new Uint8Array(pages.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < pages.length; i++) view.setUint32(i * 4, pages[i] ?? 0, true);
  return bytes;
}

function encodeState(state: unknown): Uint8Array {
  let json: string | undefined;
  try {
    json = JSON.stringify(state);
  } catch (err) {
    throw imageError(
      'ROAM_ERR_IMAGE_MALFORMED',
      `cannot encode image: state is not JSON-serializable (${String(err)})`,
      err,
    );
  }
  // JSON.stringify returns undefined for undefined, functions and symbols, which would not round-trip.
  if (typeof json !== 'string') {
    throw imageError(
      'ROAM_ERR_IMAGE_MALFORMED',
      `cannot encode image: state of type ${typeof state} is not JSON-serializable`,
    );
  }
  return new TextEncoder().encode(json);
}

function packChunk(raw: Uint8Array, codec: ImageCodec, level: number, portable: boolean): Promise<Uint8Array> {
  switch (codec) {
    case 'none':
      return Promise.resolve(raw);
    case 'lz4':
      return lz4Chunk(raw, portable);
    case 'snappy':
      return snappyChunk(raw);
    case 'deflate':
      return deflateChunk(raw, level);
  }
}

/**
 * Encodes a checkpoint image (layout in format.ts). Compression runs on the thread pool in
 * independent chunks, so the caller's event loop stays free and every core is used. The caller
 * must not modify `contents` until the promise settles (chunks are read in place, not copied).
 */
export async function encodeImage(contents: ImageContents, options: EncodeOptions = {}): Promise<Uint8Array> {
  const level = options.level ?? DEFAULT_COMPRESSION_LEVEL;
  if (!Number.isInteger(level) || level < 0 || level > 9) {
    throw new RoamError('ROAM_ERR_USAGE', `compression level must be an integer from 0 to 9, got ${String(level)}`);
  }
  const codec: ImageCodec = options.codec ?? (options.level === undefined ? 'lz4' : level === 0 ? 'none' : 'deflate');
  const encoding: SectionEncoding = codec === 'lz4' || codec === 'snappy' ? codec : 'deflate-raw';
  let meta: ImageMeta;
  try {
    meta = parseImageMeta(contents.meta);
  } catch (err) {
    if (err instanceof HeaderError) throw imageError('ROAM_ERR_IMAGE_MALFORMED', `cannot encode image: ${err.message}`);
    throw err;
  }
  checkSnapshot(contents.memory, 'cannot encode image');
  if (!(contents.files instanceof Uint8Array)) {
    throw imageError('ROAM_ERR_IMAGE_MALFORMED', 'cannot encode image: files must be a Uint8Array');
  }

  const base = baseFor(contents, options.base);
  const { whole, wholeChunks, diffChunks, diffPages } = await splitPages(contents.memory, base);
  const chunksOf: Record<(typeof SECTION_NAMES)[number], Uint8Array[]> = {
    pages: slices(encodePageIndices(whole)),
    memory: wholeChunks,
    state: slices(encodeState(contents.state)),
    files: slices(contents.files),
    diffs: diffChunks,
  };

  // One flat job list over every section's chunks, so small sections do not wait for big ones.
  const jobs: Array<{ section: number; raw: Uint8Array }> = [];
  SECTION_NAMES.forEach((name, section) => {
    for (const raw of chunksOf[name]) jobs.push({ section, raw });
  });
  const stored: Uint8Array[] = new Array<Uint8Array>(jobs.length);
  await runPool(jobs.length, POOL_CONCURRENCY, async (index) => {
    const job = jobs[index];
    if (job === undefined) return;
    // Diffs are already small and quick to apply: only deflate, the size-first codec, packs them.
    // Nor is a tiny chunk worth a call into a codec on restore, for the few bytes it would save.
    const chunkCodec =
      (SECTION_NAMES[job.section] === 'diffs' || job.raw.length < VERBATIM_BELOW_BYTES) && codec !== 'deflate'
        ? 'none'
        : codec;
    const packed = await packChunk(job.raw, chunkCodec, level, options.portable === true);
    // Verbatim when compression does not help (stored === raw length marks such a chunk).
    stored[index] = packed.length < job.raw.length ? packed : job.raw;
  });

  const sections: SectionHeader[] = SECTION_NAMES.map((name) => ({
    name,
    offset: 0,
    storedBytes: 0,
    rawBytes: chunksOf[name].reduce((sum, raw) => sum + raw.length, 0),
    encoding: 'none',
    chunks: [],
  }));
  jobs.forEach((job, index) => {
    const section = sections[job.section];
    const bytes = stored[index];
    if (section === undefined || bytes === undefined) return;
    section.chunks.push([job.raw.length, bytes.length]);
    section.storedBytes += bytes.length;
    if (bytes.length < job.raw.length) section.encoding = encoding;
  });
  let payloadBytes = 0;
  for (const section of sections) {
    section.offset = payloadBytes;
    payloadBytes += section.storedBytes;
  }

  const header: ImageHeader = {
    meta,
    memory: {
      byteLength: contents.memory.byteLength,
      pageSize: PAGE_SIZE,
      nonZeroPages: whole.length,
      diffPages,
    },
    sections,
  };
  const { image, payloadOffset } = layoutImage(header, payloadBytes);
  let at = payloadOffset;
  let sinceYield = 0;
  for (const bytes of stored) {
    image.set(bytes, at);
    at += bytes.length;
    sinceYield += bytes.length;
    // Copying a large image (and faulting in its fresh pages) would otherwise block the loop for many ms.
    if (sinceYield >= COPY_SLICE_BYTES) {
      sinceYield = 0;
      await yieldToLoop();
    }
  }
  const digestAt = image.length - WRITTEN_DIGEST_BYTES;
  image.set(await checksum(image.subarray(0, digestAt), WRITTEN_DIGEST), digestAt);
  return image;
}

/**
 * Chunks smaller than this are stored verbatim by the fast codecs (the default image's state and
 * files: 341 and 118 bytes on the 1 MiB bench guest, 22 and 49 bytes smaller in LZ4).
 */
const VERBATIM_BELOW_BYTES = 4096;

/** `raw` cut into chunks of ENCODE_CHUNK_BYTES (views, no copy). */
function slices(raw: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let offset = 0; offset < raw.length; offset += ENCODE_CHUNK_BYTES) {
    out.push(raw.subarray(offset, offset + ENCODE_CHUNK_BYTES));
  }
  return out;
}

/** The base to store pages against: the one `meta.base` names, or none. */
function baseFor(contents: ImageContents, base: BaseMemory | undefined): Uint8Array | undefined {
  if (base === undefined || contents.meta.base === undefined) return undefined;
  if (base.id !== contents.meta.base) {
    throw new RoamError(
      'ROAM_ERR_USAGE',
      `cannot encode image: its pages are stored against base ${contents.meta.base}, but base ${base.id} was given`,
    );
  }
  return base.full;
}

/**
 * Sorts the snapshot's pages: those the base has (non-zero there) become diff records when that is
 * smaller, the rest stay whole. Whole pages go into chunks that are views of the snapshot's data
 * (a chunk ends where a diffed page was, or at ENCODE_CHUNK_BYTES); diff records are packed into
 * chunks of whole records.
 */
async function splitPages(
  memory: ImageContents['memory'],
  base: Uint8Array | undefined,
): Promise<{ whole: Uint32Array; wholeChunks: Uint8Array[]; diffChunks: Uint8Array[]; diffPages: number }> {
  const { pages, data } = memory;
  const whole = new Uint32Array(pages.length);
  let wholeCount = 0;
  const wholeChunks: Uint8Array[] = [];
  let runStart = -1; // position (in `pages`) where the current run of whole pages began
  const endRun = (end: number): void => {
    if (runStart < 0) return;
    wholeChunks.push(...slices(data.subarray(runStart * PAGE_SIZE, end * PAGE_SIZE)));
    runStart = -1;
  };
  const diffChunks: Uint8Array[] = [];
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let diffPages = 0;
  let compared = 0;
  const baseZero = base ? zeroPagesOf(base) : undefined;
  for (let i = 0; i < pages.length; i++) {
    const index = pages[i] ?? 0;
    const page = data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
    let record: Uint8Array | undefined;
    if (base && baseZero?.[index] === 0) {
      record = diffRecord(index, page, base.subarray(index * PAGE_SIZE, (index + 1) * PAGE_SIZE));
      compared += PAGE_SIZE;
    }
    if (record === undefined) {
      whole[wholeCount++] = index;
      if (runStart < 0) runStart = i;
    } else {
      endRun(i);
      diffPages++;
      pending.push(record);
      pendingBytes += record.length;
      if (pendingBytes >= ENCODE_CHUNK_BYTES) {
        diffChunks.push(concat(pending, pendingBytes));
        pending = [];
        pendingBytes = 0;
      }
    }
    if (compared >= DIFF_SLICE_BYTES) {
      compared = 0;
      await yieldToLoop();
    }
  }
  endRun(pages.length);
  if (pendingBytes > 0) diffChunks.push(concat(pending, pendingBytes));
  return { whole: whole.slice(0, wholeCount), wholeChunks, diffChunks, diffPages };
}

function concat(parts: readonly Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
