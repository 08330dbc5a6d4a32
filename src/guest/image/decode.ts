/**
 * Decoding treats every image as hostile (invariant 5): the checksum catches damage, not malice, so
 * every length, offset and index is checked before it is used, and no declared size can make us
 * allocate beyond the caller's limits.
 */
import { RoamError } from '../../errors.js';
import { DiffError, RECORD_HEADER_BYTES, applyDiffs, type PagePlacer } from './diffs.js';
import { HeaderError, parseImageHeader } from './header.js';
import {
  DECODABLE_FORMAT_VERSIONS,
  DEFAULT_MAX_IMAGE_BYTES,
  DEFAULT_MAX_MEMORY_BYTES,
  DIGEST_BYTES,
  DIGEST_NAMES,
  IMAGE_FORMAT_VERSION,
  IMAGE_MAGIC,
  MAX_DEFLATE_RATIO,
  MAX_HEADER_BYTES,
  PAGE_SIZE,
  PREFIX_BYTES,
  SECTION_NAMES,
  digestKind,
  imageError,
  prefixCrc,
  type BaseMemory,
  type DecodeOptions,
  type DigestKind,
  type ImageContents,
  type ImageHeader,
  type ImageInfo,
  type SectionName,
} from './format.js';
import { copyToPages, zeroOtherPages } from './memory.js';
import {
  PLACE_ERRORS,
  PLACE_JOB_NUMBERS,
  PLACE_KIND,
  PLACE_NO_MEMORY,
  nativeCodec,
  type NativeCodec,
} from './native.js';
import {
  POOL_CONCURRENCY,
  checksum,
  checksumSync,
  inflateChunk,
  runPool,
  unlz4Chunk,
  unsnappyChunk,
  yieldToLoop,
} from './work.js';

interface Limits {
  maxImageBytes: number;
  maxMemoryBytes: number;
}

interface Framing {
  formatVersion: number;
  headerLength: number;
  totalLength: number;
  digest: DigestKind;
  /** Where the digest starts: every byte before it is hashed. */
  digestAt: number;
}

function limitsOf(options: DecodeOptions): Limits {
  const limit = (name: string, value: number | undefined, fallback: number): number => {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
      throw new RoamError('ROAM_ERR_USAGE', `${name} must be a non-negative number, got ${String(value)}`);
    }
    return value;
  };
  return {
    maxImageBytes: limit('maxImageBytes', options.maxImageBytes, DEFAULT_MAX_IMAGE_BYTES),
    maxMemoryBytes: limit('maxMemoryBytes', options.maxMemoryBytes, DEFAULT_MAX_MEMORY_BYTES),
  };
}

/** Strict UTF-8, made once: making a decoder cost more than decoding a header with it. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

const malformed = (message: string, cause?: unknown): RoamError =>
  imageError('ROAM_ERR_IMAGE_MALFORMED', `malformed checkpoint image: ${message}`, cause);

/**
 * Everything that can be checked before the checksum, in an order that names the real problem:
 * not an image, a version we cannot read, a damaged prefix, then lengths (so that a short image
 * is called truncated, although its digest is at the end).
 */
function readFraming(bytes: Uint8Array, limits: Limits): Framing {
  if (!(bytes instanceof Uint8Array)) throw malformed('expected a Uint8Array');
  const length = bytes.length;
  if (length > limits.maxImageBytes) {
    throw imageError(
      'ROAM_ERR_IMAGE_TOO_LARGE',
      `checkpoint image is too large: ${length} bytes, the limit (maxImageBytes) is ${limits.maxImageBytes}`,
    );
  }
  for (let i = 0; i < Math.min(length, IMAGE_MAGIC.length); i++) {
    if (bytes[i] !== IMAGE_MAGIC[i]) {
      throw imageError('ROAM_ERR_IMAGE_MALFORMED', 'not a Roam checkpoint image (wrong magic bytes)');
    }
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (length >= 10) {
    const version = view.getUint16(8, true);
    if (!DECODABLE_FORMAT_VERSIONS.includes(version)) {
      throw imageError(
        'ROAM_ERR_IMAGE_VERSION',
        `unsupported version ${version} of the checkpoint image format; this Roam supports versions ${listed(DECODABLE_FORMAT_VERSIONS)} ` +
          `and writes ${IMAGE_FORMAT_VERSION} (the image comes from a different Roam version, or is damaged)`,
      );
    }
  }
  if (length < PREFIX_BYTES) {
    throw imageError(
      'ROAM_ERR_IMAGE_TRUNCATED',
      `checkpoint image is truncated: ${length} bytes, less than its ${PREFIX_BYTES}-byte prefix`,
    );
  }
  if (view.getUint32(28, true) !== prefixCrc(bytes)) {
    throw imageError('ROAM_ERR_IMAGE_CHECKSUM', 'checkpoint image is damaged: prefix checksum mismatch');
  }
  const flags = view.getUint16(10, true);
  if (flags !== 0) throw malformed(`unknown flags 0x${flags.toString(16)}`);
  if (view.getUint32(24, true) !== 0) throw malformed('reserved prefix field is not zero');
  const headerLength = view.getUint32(12, true);
  const totalLength = Number(view.getBigUint64(16, true));
  if (totalLength > limits.maxImageBytes) {
    throw imageError(
      'ROAM_ERR_IMAGE_TOO_LARGE',
      `checkpoint image is too large: it declares ${totalLength} bytes, the limit (maxImageBytes) is ${limits.maxImageBytes}`,
    );
  }
  if (!Number.isSafeInteger(totalLength)) throw malformed(`declared length ${totalLength} is not a safe integer`);
  if (headerLength > MAX_HEADER_BYTES) {
    throw malformed(`header of ${headerLength} bytes is over the ${MAX_HEADER_BYTES}-byte maximum`);
  }
  const formatVersion = view.getUint16(8, true);
  const digest = digestKind(formatVersion);
  if (totalLength < PREFIX_BYTES + headerLength + DIGEST_BYTES[digest]) {
    throw malformed(`declared length ${totalLength} cannot hold its ${headerLength}-byte header`);
  }
  if (length < totalLength) {
    throw imageError(
      'ROAM_ERR_IMAGE_TRUNCATED',
      `checkpoint image is truncated: ${length} of its ${totalLength} bytes are present`,
    );
  }
  if (length > totalLength) throw malformed(`${length - totalLength} unexpected bytes after the end of the image`);
  return { formatVersion, headerLength, totalLength, digest, digestAt: totalLength - DIGEST_BYTES[digest] };
}

/** "1, 2 and 3" */
function listed(values: readonly number[]): string {
  return values.length < 2 ? values.join('') : `${values.slice(0, -1).join(', ')} and ${String(values.at(-1))}`;
}

/** The digest of everything before it, computed in slices (see work.ts's `checksum`). */
const digestOf = (bytes: Uint8Array, framing: Framing): Promise<Uint8Array> =>
  checksum(bytes.subarray(0, framing.digestAt), framing.digest);

function checkDigest(bytes: Uint8Array, framing: Framing, digest: Uint8Array): void {
  const stored = bytes.subarray(framing.digestAt, framing.totalLength);
  for (let i = 0; i < stored.length; i++) {
    if (stored[i] !== digest[i]) {
      throw imageError(
        'ROAM_ERR_IMAGE_CHECKSUM',
        `checkpoint image is damaged: checksum (${DIGEST_NAMES[framing.digest]}) mismatch`,
      );
    }
  }
}

interface ParsedImage {
  header: ImageHeader;
  info: ImageInfo;
  /** Absolute offset of each section's first stored byte. */
  starts: number[];
}

/** Parses and validates the header against the schema, the framing and the limits. */
function parseHeader(bytes: Uint8Array, framing: Framing, limits: Limits): ParsedImage {
  let json: unknown;
  try {
    const text = utf8.decode(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + framing.headerLength));
    json = JSON.parse(text);
  } catch (err) {
    throw malformed('header is not UTF-8 JSON', err);
  }
  let header: ImageHeader;
  try {
    header = parseImageHeader(json);
  } catch (err) {
    if (err instanceof HeaderError) throw malformed(`header field ${err.message}`);
    throw err;
  }

  const { byteLength, nonZeroPages } = header.memory;
  const diffPages = header.memory.diffPages ?? 0;
  const sectionCount = framing.formatVersion === 1 ? SECTION_NAMES.length - 1 : SECTION_NAMES.length;
  if (header.sections.length !== sectionCount) {
    throw malformed(
      `${header.sections.length} sections in a version ${framing.formatVersion} image, expected ${sectionCount}`,
    );
  }
  if ((header.memory.diffPages === undefined) !== (framing.formatVersion === 1)) {
    const problem = framing.formatVersion === 1 ? 'is not expected' : 'is missing';
    throw malformed(`memory.diffPages ${problem} in a version ${framing.formatVersion} image`);
  }
  if (diffPages > 0 && header.meta.base === undefined) {
    throw malformed(`${diffPages} pages are stored as diffs, but there is no base`);
  }
  if (byteLength % PAGE_SIZE !== 0) throw malformed(`memory size ${byteLength} is not a multiple of ${PAGE_SIZE}`);
  if (byteLength > limits.maxMemoryBytes) {
    throw imageError(
      'ROAM_ERR_IMAGE_TOO_LARGE',
      `checkpoint image memory of ${byteLength} bytes is too large: the limit (maxMemoryBytes) is ${limits.maxMemoryBytes}`,
    );
  }
  const totalPages = byteLength / PAGE_SIZE;
  if (nonZeroPages + diffPages > totalPages) {
    throw malformed(`${nonZeroPages} whole and ${diffPages} diffed pages in a memory of ${totalPages} pages`);
  }

  const payloadStart = PREFIX_BYTES + framing.headerLength;
  const payloadLength = framing.digestAt - payloadStart;
  const expectedRaw: Record<SectionName, number | undefined> = {
    pages: nonZeroPages * 4,
    memory: nonZeroPages * PAGE_SIZE,
    state: undefined,
    files: undefined,
    diffs: undefined,
  };
  const starts: number[] = [];
  let previousEnd = 0;
  header.sections.forEach((section, index) => {
    const name = SECTION_NAMES[index];
    if (section.name !== name) throw malformed(`section ${index} is '${section.name}', expected '${String(name)}'`);
    if (section.offset < previousEnd) throw malformed(`section '${name}' overlaps the section before it`);
    if (section.offset + section.storedBytes > payloadLength) {
      throw malformed(`section '${name}' extends past the end of the payload`);
    }
    previousEnd = section.offset + section.storedBytes;
    starts.push(payloadStart + section.offset);

    const expected = expectedRaw[name];
    if (expected !== undefined && section.rawBytes !== expected) {
      throw malformed(
        `section '${name}' holds ${section.rawBytes} bytes, expected ${expected} for ${nonZeroPages} pages`,
      );
    }
    if (name === 'diffs' && section.rawBytes > diffPages * (RECORD_HEADER_BYTES + PAGE_SIZE)) {
      throw malformed(`section 'diffs' holds ${section.rawBytes} bytes, more than ${diffPages} records can`);
    }
    if (expected === undefined && section.rawBytes > limits.maxImageBytes) {
      throw imageError(
        'ROAM_ERR_IMAGE_TOO_LARGE',
        `checkpoint image section '${name}' inflates to ${section.rawBytes} bytes, too large: the limit (maxImageBytes) is ${limits.maxImageBytes}`,
      );
    }
    let raw = 0;
    let stored = 0;
    section.chunks.forEach(([chunkRaw, chunkStored], chunk) => {
      if (chunkStored > chunkRaw || (section.encoding === 'none' && chunkStored !== chunkRaw)) {
        throw malformed(`section '${name}' chunk ${chunk} stores ${chunkStored} bytes for ${chunkRaw}`);
      }
      // Holds output allocation to a multiple of the image's size, whatever the header claims.
      if (chunkRaw > chunkStored * MAX_DEFLATE_RATIO) {
        throw malformed(
          `section '${name}' chunk ${chunk} claims more than deflate's maximum ratio of ${MAX_DEFLATE_RATIO}:1`,
        );
      }
      raw += chunkRaw;
      stored += chunkStored;
    });
    if (raw !== section.rawBytes || stored !== section.storedBytes) {
      throw malformed(`section '${name}' chunk table does not add up to its sizes`);
    }
  });

  const info: ImageInfo = {
    formatVersion: framing.formatVersion,
    meta: header.meta,
    memory: { byteLength, nonZeroPages, diffPages, totalPages },
    sections: header.sections.map(({ name, rawBytes, storedBytes, encoding }) => ({
      name,
      rawBytes,
      storedBytes,
      encoding,
    })),
    totalBytes: framing.totalLength,
  };
  return { header, info, starts };
}

/** Validates framing, checksum and header without inflating anything. Synchronous: hashes the whole image in one go. */
export function inspectImage(bytes: Uint8Array, options: DecodeOptions = {}): ImageInfo {
  const limits = limitsOf(options);
  const framing = readFraming(bytes, limits);
  checkDigest(bytes, framing, checksumSync(bytes.subarray(0, framing.digestAt), framing.digest));
  return parseHeader(bytes, framing, limits).info;
}

/**
 * The same checks, hashing in slices between which the event loop runs: for a process that
 * relays traffic while it checks an image (the proxy, taking a backup image).
 */
export async function verifyImage(bytes: Uint8Array, options: DecodeOptions = {}): Promise<ImageInfo> {
  const limits = limitsOf(options);
  const framing = readFraming(bytes, limits);
  checkDigest(bytes, framing, await digestOf(bytes, framing));
  return parseHeader(bytes, framing, limits).info;
}

/**
 * What an image says it is (its framing and header, within the limits), without hashing it: for
 * choosing how to restore it. The restore itself checks the checksum before anything runs.
 */
export function readImageMeta(bytes: Uint8Array, options: DecodeOptions = {}): ImageInfo['meta'] {
  const limits = limitsOf(options);
  return parseHeader(bytes, readFraming(bytes, limits), limits).info.meta;
}

function allocate(size: number, what: string): Uint8Array {
  try {
    return new Uint8Array(size);
  } catch (err) {
    throw imageError('ROAM_ERR_IMAGE_TOO_LARGE', `cannot allocate ${size} bytes for the ${what}: too large`, err);
  }
}

function isBufferTooLarge(err: unknown): boolean {
  return err instanceof Error && 'code' in err && err.code === 'ERR_BUFFER_TOO_LARGE';
}

interface ChunkJob {
  section: number;
  chunk: number;
  raw: number;
  stored: number;
  /** Where the chunk's stored bytes start in the image. */
  from: number;
  /** Where its raw bytes start in its section. */
  to: number;
}

function chunkJobs(header: ImageHeader, starts: number[], sections: readonly number[]): ChunkJob[] {
  const jobs: ChunkJob[] = [];
  header.sections.forEach((section, index) => {
    if (!sections.includes(index)) return;
    let from = starts[index] ?? 0;
    let to = 0;
    section.chunks.forEach(([raw, stored], chunk) => {
      jobs.push({ section: index, chunk, raw, stored, from, to });
      from += stored;
      to += raw;
    });
  });
  return jobs;
}

/** The raw bytes of one compressed chunk (LZ4, Snappy or deflate), checked against its declared size. */
async function unpackChunk(bytes: Uint8Array, header: ImageHeader, job: ChunkJob): Promise<Uint8Array> {
  const input = bytes.subarray(job.from, job.from + job.stored);
  const encoding = header.sections[job.section]?.encoding;
  const where = `section '${String(SECTION_NAMES[job.section])}' chunk ${job.chunk}`;
  let out: Uint8Array;
  if (encoding === 'lz4' || encoding === 'snappy') {
    try {
      out = encoding === 'lz4' ? unlz4Chunk(input, job.raw) : await unsnappyChunk(input, job.raw);
    } catch (err) {
      const kind = encoding === 'lz4' ? 'an LZ4' : 'a Snappy';
      throw malformed(`${where} is not ${kind} block (${err instanceof Error ? err.message : String(err)})`, err);
    }
  } else {
    try {
      out = await inflateChunk(input, job.raw);
    } catch (err) {
      if (isBufferTooLarge(err)) throw malformed(`${where} inflates to more than its declared ${job.raw} bytes`, err);
      throw malformed(`${where} is not a valid deflate stream`, err);
    }
  }
  if (out.length !== job.raw) throw malformed(`${where} unpacks to ${out.length} bytes, declared ${job.raw}`);
  return out;
}

/** LZ4 chunks decode one after another for at most this long before the event loop gets a turn. */
const LZ4_SLICE_MS = 4;

/**
 * Hands each chunk's raw bytes to `sink`: a chunk stored verbatim at once (a view of the image),
 * an LZ4 chunk as this thread decodes it (work.ts, `unlz4Chunk`), the others as they come off the
 * thread pool. Every chunk of a small guest's image is stored verbatim (its pages as diffs, its
 * state and files too small to compress), and its restore then decodes nothing at all.
 */
async function unpackChunks(
  bytes: Uint8Array,
  header: ImageHeader,
  jobs: readonly ChunkJob[],
  sink: (raw: Uint8Array, job: ChunkJob) => void,
): Promise<void> {
  const lz4: ChunkJob[] = [];
  const pooled: ChunkJob[] = [];
  for (const job of jobs) {
    if (job.stored === job.raw) sink(bytes.subarray(job.from, job.from + job.stored), job);
    else (header.sections[job.section]?.encoding === 'lz4' ? lz4 : pooled).push(job);
  }
  if (lz4.length === 0 && pooled.length === 0) return;
  const onThisThread = async (): Promise<void> => {
    let since = performance.now();
    for (const job of lz4) {
      if (performance.now() - since > LZ4_SLICE_MS) {
        await yieldToLoop();
        since = performance.now();
      }
      sink(await unpackChunk(bytes, header, job), job);
    }
  };
  await Promise.all([
    onThisThread(),
    runPool(pooled.length, POOL_CONCURRENCY, async (index) => {
      const job = pooled[index];
      if (job !== undefined) sink(await unpackChunk(bytes, header, job), job);
    }),
  ]);
}

const PAGES = 0;
const MEMORY = 1;
const STATE = 2;
const FILES = 3;
const DIFFS = 4;

/** Decodes the small sections (page list, state, files) into buffers of their own. */
async function decodeSmallSections(
  bytes: Uint8Array,
  header: ImageHeader,
  starts: number[],
  info: ImageInfo,
): Promise<{ pages: Uint32Array; state: unknown; files: Uint8Array }> {
  const outputs = header.sections.map((section, index) =>
    index === MEMORY || index === DIFFS ? new Uint8Array(0) : allocate(section.rawBytes, `'${section.name}' section`),
  );
  await unpackChunks(bytes, header, chunkJobs(header, starts, [PAGES, STATE, FILES]), (raw, job) =>
    outputs[job.section]?.set(raw, job.to),
  );
  const [pageBytes, , stateBytes, files] = outputs;
  if (pageBytes === undefined || stateBytes === undefined || files === undefined) throw malformed('missing sections');

  const pages = new Uint32Array(info.memory.nonZeroPages);
  const pageView = new DataView(pageBytes.buffer, pageBytes.byteOffset, pageBytes.byteLength);
  let previous = -1;
  for (let i = 0; i < pages.length; i++) {
    const page = pageView.getUint32(i * 4, true);
    if (page <= previous) throw malformed(`page indices are not strictly ascending at position ${i}`);
    if (page >= info.memory.totalPages) {
      throw malformed(`page index ${page} is beyond the memory's ${info.memory.totalPages} pages`);
    }
    pages[i] = page;
    previous = page;
  }

  let state: unknown;
  try {
    state = JSON.parse(utf8.decode(stateBytes));
  } catch (err) {
    throw malformed('state section is not UTF-8 JSON', err);
  }
  return { pages, state, files };
}

/**
 * Unpacks the memory and diffs sections, handing each chunk's raw bytes and its job (section,
 * chunk, offset in the section) to `sink` (a verbatim chunk as a view of the image, not a copy).
 */
async function decodePages(
  bytes: Uint8Array,
  header: ImageHeader,
  starts: number[],
  sink: (raw: Uint8Array, job: ChunkJob) => void,
): Promise<void> {
  await unpackChunks(bytes, header, chunkJobs(header, starts, [MEMORY, DIFFS]), sink);
}

/**
 * The bookkeeping of the diffs' pages: each record's page must be in the memory, not stored whole
 * and not diffed twice, and there must be as many as the header says. A page goes to its place in
 * the target memory, or, with `packed` (a buffer of diffed pages), to the next free slot there,
 * starting as its base's page (zero beyond the base).
 */
class DiffPages implements PagePlacer {
  private readonly seen: Uint8Array;
  readonly indices: number[] = [];

  constructor(
    totalPages: number,
    whole: Uint32Array,
    private readonly expected: number,
    private readonly packed?: { into: Uint8Array; base: Uint8Array | undefined },
  ) {
    this.seen = new Uint8Array(totalPages);
    for (const page of whole) this.seen[page] = 1;
  }

  place(index: number): number {
    if (index >= this.seen.length)
      throw new DiffError(`page ${index} is beyond the memory's ${this.seen.length} pages`);
    if (this.seen[index] !== 0) throw new DiffError(`page ${index} is stored twice`);
    if (this.indices.length === this.expected)
      throw new DiffError(`more diffed pages than the header's ${this.expected}`);
    this.seen[index] = 1;
    this.indices.push(index);
    if (this.packed === undefined) return index * PAGE_SIZE;
    const at = (this.indices.length - 1) * PAGE_SIZE;
    const { into, base } = this.packed;
    if (base && (index + 1) * PAGE_SIZE <= base.length)
      into.set(base.subarray(index * PAGE_SIZE, (index + 1) * PAGE_SIZE), at);
    return at;
  }

  apply(raw: Uint8Array, chunk: number, memory: Uint8Array): void {
    try {
      applyDiffs(raw, memory, this);
    } catch (err) {
      if (err instanceof DiffError) throw malformed(`section 'diffs' chunk ${chunk}: ${err.message}`);
      throw err;
    }
  }

  checkComplete(): void {
    if (this.indices.length !== this.expected) {
      throw malformed(`section 'diffs' holds ${this.indices.length} pages, the header says ${this.expected}`);
    }
  }
}

/** The base an image with diffs needs, checked against the one given. */
function baseOf(header: ImageHeader, base: BaseMemory | undefined): Uint8Array {
  if (base === undefined || base.id !== header.meta.base) {
    throw imageError(
      'ROAM_ERR_IMAGE_VERSION',
      `unsupported version: the image's pages are stored against base ${String(header.meta.base)}, and ` +
        (base === undefined ? 'no base was given to decode them' : `this Roam's base is ${base.id}`),
    );
  }
  return base.full;
}

/**
 * Decodes and fully validates a checkpoint image. The caller must not modify `bytes` until the
 * promise settles. Chunks unpack in parallel on the thread pool while the checksum is computed.
 * An image with diffs needs its base (`options.base`) to make whole pages of them.
 */
export async function decodeImage(
  bytes: Uint8Array,
  options: DecodeOptions = {},
): Promise<{ info: ImageInfo; contents: ImageContents }> {
  const limits = limitsOf(options);
  const framing = readFraming(bytes, limits);
  return checkedAgainstDigest(bytes, framing, async () => {
    const { header, info, starts } = parseHeader(bytes, framing, limits);
    const base = info.memory.diffPages > 0 ? baseOf(header, options.base) : undefined;
    const wholeData = allocate(header.sections[MEMORY]?.rawBytes ?? 0, "'memory' section");
    const diffData = allocate(info.memory.diffPages * PAGE_SIZE, 'diffed pages');
    const small = await decodeSmallSections(bytes, header, starts, info);
    const diffs = new DiffPages(info.memory.totalPages, small.pages, info.memory.diffPages, {
      into: diffData,
      base,
    });
    await decodePages(bytes, header, starts, (raw, job) => {
      if (job.section === MEMORY) wholeData.set(raw, job.to);
      else diffs.apply(raw, job.chunk, diffData);
    });
    diffs.checkComplete();
    return {
      info,
      contents: {
        meta: { ...header.meta },
        memory: mergePages(info.memory.byteLength, small.pages, wholeData, diffs.indices, diffData),
        state: small.state,
        files: small.files,
      },
    };
  });
}

/**
 * Runs `decode` while the image's checksum is computed, and checks the checksum after it, also
 * when it threw: a damaged image shows as a checksum failure first, whatever else it broke.
 */
async function checkedAgainstDigest<T>(bytes: Uint8Array, framing: Framing, decode: () => Promise<T>): Promise<T> {
  const digest = digestOf(bytes, framing);
  let result: T;
  try {
    result = await decode();
  } catch (err) {
    checkDigest(bytes, framing, await digest);
    throw err;
  }
  checkDigest(bytes, framing, await digest);
  return result;
}

/** One snapshot of the whole pages and the diffed ones (in the order they came), pages ascending. */
function mergePages(
  byteLength: number,
  whole: Uint32Array,
  wholeData: Uint8Array,
  diffed: readonly number[],
  diffData: Uint8Array,
): ImageContents['memory'] {
  if (diffed.length === 0) return { byteLength, pageSize: PAGE_SIZE, pages: whole, data: wholeData };
  const order = diffed.map((page, position) => ({ page, position })).sort((a, b) => a.page - b.page);
  const pages = new Uint32Array(whole.length + diffed.length);
  const data = allocate(pages.length * PAGE_SIZE, 'memory');
  let w = 0;
  let d = 0;
  for (let i = 0; i < pages.length; i++) {
    const next = order[d];
    const fromWhole = w < whole.length && (next === undefined || (whole[w] ?? 0) < next.page);
    const [page, from, at] = fromWhole
      ? [whole[w] ?? 0, wholeData, w++ * PAGE_SIZE]
      : [next?.page ?? 0, diffData, (order[d++]?.position ?? 0) * PAGE_SIZE];
    pages[i] = page;
    data.set(from.subarray(at, at + PAGE_SIZE), i * PAGE_SIZE);
  }
  return { byteLength, pageSize: PAGE_SIZE, pages, data };
}

/**
 * Everything but the memory (checked against the checksum): for looking into an image, whatever
 * base its pages are stored against.
 */
export async function decodeImageState(
  bytes: Uint8Array,
  options: DecodeOptions = {},
): Promise<{ info: ImageInfo; meta: ImageContents['meta']; state: unknown; files: Uint8Array }> {
  const limits = limitsOf(options);
  const framing = readFraming(bytes, limits);
  return checkedAgainstDigest(bytes, framing, async () => {
    const { header, info, starts } = parseHeader(bytes, framing, limits);
    const small = await decodeSmallSections(bytes, header, starts, info);
    return { info, meta: { ...header.meta }, state: small.state, files: small.files };
  });
}

export interface DecodedInto {
  info: ImageInfo;
  meta: ImageContents['meta'];
  state: unknown;
  files: Uint8Array;
}

/**
 * Decodes an image straight into a guest's memory: `target(byteLength, state)` returns the view to
 * write (a prepared sandbox's memory, at least byteLength long; the state tells its limits; for an
 * image stored against a base (`meta.base`), the target must already hold that base, zeros beyond
 * it). Each chunk's pages are copied (and each diff applied) to their place as the chunk lands,
 * and without a base every other page of the target is zeroed, so the memory never passes
 * through an intermediate buffer. On any error the target's contents are undefined: the caller
 * throws that sandbox away (nothing writes to it any more once this settles).
 */
export async function decodeImageInto(
  bytes: Uint8Array,
  target: (byteLength: number, state: unknown, meta: ImageContents['meta']) => Uint8Array | Promise<Uint8Array>,
  options: DecodeOptions = {},
): Promise<DecodedInto> {
  const limits = limitsOf(options);
  const framing = readFraming(bytes, limits);
  let digest: Promise<Uint8Array> | undefined;
  let pagesDone: Promise<void> | undefined;
  try {
    const { header, info, starts } = parseHeader(bytes, framing, limits);
    const native = options.portable === true ? undefined : nativeCodec();
    const jobs = native && placeJobs(header, starts);
    const smallDone = decodeSmallSections(bytes, header, starts, info);
    let into: ((raw: Uint8Array, job: ChunkJob) => void) | undefined = undefined;
    const early: Array<[Uint8Array, ChunkJob]> = [];
    if (!jobs) {
      // Every compressed chunk starts unpacking at once; while that goes on, this thread hashes
      // the image, readies the target and applies the diffs. Chunks that land before the target
      // is ready wait for it.
      pagesDone = decodePages(bytes, header, starts, (raw, job) => {
        if (into) into(raw, job);
        else early.push([raw, job]);
      });
      pagesDone.catch(() => undefined); // awaited below: not an unhandled rejection meanwhile
      digest = digestOf(bytes, framing);
    }
    const small = await smallDone;
    const memory = await target(info.memory.byteLength, small.state, header.meta);
    if (memory.length < info.memory.byteLength) {
      throw imageError(
        'ROAM_ERR_IMAGE_TOO_LARGE',
        `the image's ${info.memory.byteLength} bytes of memory do not fit the target's ${memory.length}`,
      );
    }
    const { pages } = small;
    const decoded = { info, meta: { ...header.meta }, state: small.state, files: small.files };
    if (native && jobs) {
      // Helper threads place the pages while this one hashes the image, then joins them;
      // nothing writes to the memory once finished.
      const placing = startPlacing(native, bytes, jobs, pages, info, memory);
      let problem: NativeRefusal | undefined;
      try {
        digest = digestOf(bytes, framing);
        await digest;
      } finally {
        problem = placing.finish();
      }
      checkDigest(bytes, framing, await digest);
      if (problem !== undefined) await placePortably(bytes, header, starts, pages, info, memory, problem);
    } else {
      const { sink, diffs } = portableSink(pages, info, memory);
      into = sink;
      for (const [raw, job] of early.splice(0)) into(raw, job);
      await pagesDone;
      diffs.checkComplete();
      checkDigest(bytes, framing, await (digest ?? digestOf(bytes, framing)));
    }
    // Without a base, every page the image does not list is zero; with one, the caller loaded it.
    if (header.meta.base === undefined) zeroOtherPages(pages, memory);
    return decoded;
  } catch (err) {
    // No chunk is left decompressing (or being placed) behind the caller's back, and a damaged
    // image shows as a checksum failure first, whatever else it broke.
    await pagesDone?.catch(() => undefined);
    checkDigest(bytes, framing, await (digest ?? digestOf(bytes, framing)));
    throw err;
  }
}

/** Where the portable path puts each chunk into `memory`: whole pages to their place, diffs applied. */
function portableSink(
  pages: Uint32Array,
  info: ImageInfo,
  memory: Uint8Array,
): { sink: (raw: Uint8Array, job: ChunkJob) => void; diffs: DiffPages } {
  const diffs = new DiffPages(info.memory.totalPages, pages, info.memory.diffPages);
  const sink = (raw: Uint8Array, job: ChunkJob): void => {
    if (job.section === MEMORY) copyToPages(raw, job.to, pages, memory);
    else diffs.apply(raw, job.chunk, memory);
  };
  return { sink, diffs };
}

/**
 * The native codec's jobs (native.ts) for every memory and diffs chunk, or undefined when one of
 * them is in an encoding it does not decode (Snappy, deflate).
 */
function placeJobs(header: ImageHeader, starts: number[]): Float64Array | undefined {
  const jobs = chunkJobs(header, starts, [MEMORY, DIFFS]);
  const out = new Float64Array(jobs.length * PLACE_JOB_NUMBERS);
  for (const [i, job] of jobs.entries()) {
    const verbatim = job.stored === job.raw;
    if (!verbatim && header.sections[job.section]?.encoding !== 'lz4') return undefined;
    const kind =
      job.section === MEMORY
        ? verbatim
          ? PLACE_KIND.memoryVerbatim
          : PLACE_KIND.memoryLz4
        : verbatim
          ? PLACE_KIND.diffsVerbatim
          : PLACE_KIND.diffsLz4;
    out.set([kind, job.from, job.stored, job.raw, job.to], i * PLACE_JOB_NUMBERS);
  }
  return out;
}

interface NativeRefusal {
  /** A negative code of PLACE_ERRORS, or 0 for a count that does not match the header. */
  code: number;
  message: string;
}

/**
 * Starts placing the memory and diffs chunks with the native codec; `finish()` completes it and
 * says what went wrong first, if anything.
 */
function startPlacing(
  native: NativeCodec,
  bytes: Uint8Array,
  jobs: Float64Array,
  pages: Uint32Array,
  info: ImageInfo,
  memory: Uint8Array,
): { finish(): NativeRefusal | undefined } {
  const seen = new Uint8Array(info.memory.totalPages);
  for (const page of pages) seen[page] = 1;
  const placement = native.placeStart(bytes, jobs, pages, seen, memory);
  return {
    finish: () => {
      const results = native.placeFinish(placement);
      let records = 0;
      for (const [job, result] of results.entries()) {
        if (result < 0) {
          const why = PLACE_ERRORS[result] ?? `failed (${result})`;
          return { code: result, message: `chunk ${job} of the pages ${why}` };
        }
        records += result;
      }
      if (records !== info.memory.diffPages) {
        return { code: 0, message: `the diffs hold ${records} pages, the header says ${info.memory.diffPages}` };
      }
      return undefined;
    },
  };
}

/**
 * The portable path over the same memory, after the native codec refused: its error names the
 * fault. Records write only their runs, always the same bytes, so applying them again over what
 * the native codec wrote gives the same page. Should the portable path find nothing wrong, only a
 * native codec short of memory is believed; any other disagreement refuses the image.
 */
async function placePortably(
  bytes: Uint8Array,
  header: ImageHeader,
  starts: number[],
  pages: Uint32Array,
  info: ImageInfo,
  memory: Uint8Array,
  refusal: NativeRefusal,
): Promise<void> {
  const { sink, diffs } = portableSink(pages, info, memory);
  await decodePages(bytes, header, starts, sink);
  diffs.checkComplete();
  if (refusal.code !== PLACE_NO_MEMORY) throw malformed(refusal.message);
}
