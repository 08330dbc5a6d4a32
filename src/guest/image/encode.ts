import { RoamError } from '../../errors.js';
import {
  DEFAULT_COMPRESSION_LEVEL,
  DIGEST_BYTES,
  ENCODE_CHUNK_BYTES,
  PAGE_SIZE,
  SECTION_NAMES,
  describeIssue,
  imageError,
  imageMetaSchema,
  layoutImage,
  type ImageCodec,
  type SectionEncoding,
  type EncodeOptions,
  type ImageContents,
  type ImageHeader,
  type SectionHeader,
} from './format.js';
import { checkSnapshot } from './memory.js';
import { POOL_CONCURRENCY, checksum, deflateChunk, lz4Chunk, runPool, snappyChunk, yieldToLoop } from './work.js';

const COPY_SLICE_BYTES = 4 * 1024 * 1024;

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

function packChunk(raw: Uint8Array, codec: ImageCodec, level: number): Promise<Uint8Array> {
  switch (codec) {
    case 'none':
      return Promise.resolve(raw);
    case 'lz4':
      return lz4Chunk(raw);
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
  const meta = imageMetaSchema.safeParse(contents.meta);
  if (!meta.success) {
    throw imageError('ROAM_ERR_IMAGE_MALFORMED', `cannot encode image: meta.${describeIssue(meta.error)}`);
  }
  checkSnapshot(contents.memory, 'cannot encode image');
  if (!(contents.files instanceof Uint8Array)) {
    throw imageError('ROAM_ERR_IMAGE_MALFORMED', 'cannot encode image: files must be a Uint8Array');
  }

  const raws: Record<(typeof SECTION_NAMES)[number], Uint8Array> = {
    pages: encodePageIndices(contents.memory.pages),
    memory: contents.memory.data,
    state: encodeState(contents.state),
    files: contents.files,
  };

  // One flat job list over every section's chunks, so small sections do not wait for big ones.
  const jobs: Array<{ section: number; raw: Uint8Array }> = [];
  SECTION_NAMES.forEach((name, section) => {
    const raw = raws[name];
    for (let offset = 0; offset < raw.length; offset += ENCODE_CHUNK_BYTES) {
      jobs.push({ section, raw: raw.subarray(offset, offset + ENCODE_CHUNK_BYTES) });
    }
  });
  const stored: Uint8Array[] = new Array<Uint8Array>(jobs.length);
  await runPool(jobs.length, POOL_CONCURRENCY, async (index) => {
    const job = jobs[index];
    if (job === undefined) return;
    const packed = await packChunk(job.raw, codec, level);
    // Verbatim when compression does not help (stored === raw length marks such a chunk).
    stored[index] = packed.length < job.raw.length ? packed : job.raw;
  });

  const sections: SectionHeader[] = SECTION_NAMES.map((name) => ({
    name,
    offset: 0,
    storedBytes: 0,
    rawBytes: raws[name].length,
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
    meta: meta.data,
    memory: {
      byteLength: contents.memory.byteLength,
      pageSize: PAGE_SIZE,
      nonZeroPages: contents.memory.pages.length,
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
  const digestAt = image.length - DIGEST_BYTES;
  image.set(await checksum(image.subarray(0, digestAt)), digestAt);
  return image;
}
