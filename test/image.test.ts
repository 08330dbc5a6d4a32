import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import zlib from 'node:zlib';
import fc from 'fast-check';
import { compress as lz4Compress } from 'lz4-napi';
import { crc32 } from '../src/common/crc32.js';
import { RoamError, isRoamError, type RoamErrorCode } from '../src/errors.js';
import { applyDiffs, diffRecord } from '../src/guest/image/diffs.js';
import { checkImageHeader, isImageHeader, parseImageHeader } from '../src/guest/image/header.js';
import {
  IMAGE_FORMAT_VERSION,
  catchUp,
  copyLive,
  decodeImage,
  decodeImageInto,
  decodeImageState,
  encodeImage,
  inspectImage,
  restoreMemory,
  snapshotMemory,
  type ImageContents,
  type ImageMeta,
  type MemorySnapshot,
} from '../src/guest/image/index.js';
import {
  DECODABLE_FORMAT_VERSIONS,
  DIGEST_BYTES,
  WRITTEN_DIGEST_BYTES,
  digestKind,
  ENCODE_CHUNK_BYTES,
  PAGE_SIZE,
  PREFIX_BYTES,
  writePrefix,
  type ImageHeader,
  type SectionName,
} from '../src/guest/image/format.js';
import { nativeCodec, nativeCodecProblem } from '../src/guest/image/native.js';
import { checksumSync } from '../src/guest/image/work.js';

const PAGE = PAGE_SIZE;

/** Deterministic xorshift32, so failures reproduce. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

function randomBytes(length: number, seed: number): Uint8Array {
  const next = rng(seed);
  const out = new Uint8Array(length);
  const words = new Uint32Array(out.buffer, 0, length >>> 2);
  for (let i = 0; i < words.length; i++) words[i] = next();
  for (let i = words.length * 4; i < length; i++) out[i] = next() & 0xff;
  return out;
}

/** Fills one page with small object-like records (header words, pointers, random ids, short strings). */
function fillHeapPage(memory: Uint8Array, page: number, next: () => number): void {
  const view = new DataView(memory.buffer, memory.byteOffset + page * PAGE, PAGE);
  const names = new TextEncoder().encode('session/api/v1/items?user=');
  for (let off = 0; off + 32 <= PAGE; off += 32) {
    view.setUint32(off, 1 + (next() % 3), true);
    view.setUint32(off + 4, 0x2000 + (next() % 4) * 0x40, true);
    view.setUint32(off + 8, 0x100000 + page * PAGE + off, true);
    view.setUint32(off + 12, next(), true);
    if (next() % 2 === 0) memory.set(names.subarray(0, 16), page * PAGE + off + 16);
  }
}

/** A memory of `pages` pages: some zero, some heap-like, some random, in runs. */
function mixedMemory(pages: number, seed: number): Uint8Array {
  const next = rng(seed);
  const memory = new Uint8Array(pages * PAGE);
  for (let page = 0; page < pages; page++) {
    const roll = next() % 10;
    if (roll < 3) continue;
    if (roll < 8) fillHeapPage(memory, page, next);
    else memory.set(randomBytes(PAGE, next()), page * PAGE);
  }
  return memory;
}

const META: ImageMeta = {
  kind: 'js',
  guestId: 'guest-7f3a',
  name: 'web',
  roamVersion: '0.1.0',
  createdAt: '2025-01-02T03:04:05.678Z',
};

const STATE = {
  streams: [{ id: 1, remote: '203.0.113.9:51234', deliveredIn: 1234, writtenOut: 987654321 }],
  timers: [{ id: 3, due: 1.5, repeat: null }],
  text: 'héllo ✓ \u0000 \ud83d\ude00',
  nested: { a: [true, false, null, -0.25, 1e300] },
};

function contentsOf(
  memory: Uint8Array,
  state: unknown = STATE,
  files: Uint8Array = new Uint8Array([1, 2, 3]),
): ImageContents {
  return { meta: META, memory: snapshotMemory(memory), state, files };
}

function assertSameContents(actual: ImageContents, expected: ImageContents): void {
  assert.deepEqual(actual.meta, expected.meta);
  assert.equal(actual.memory.byteLength, expected.memory.byteLength);
  assert.equal(actual.memory.pageSize, PAGE);
  assert.deepEqual(Array.from(actual.memory.pages), Array.from(expected.memory.pages));
  assert.ok(Buffer.from(actual.memory.data).equals(expected.memory.data), 'memory data differs');
  assert.deepEqual(actual.state, JSON.parse(JSON.stringify(expected.state)));
  assert.ok(Buffer.from(actual.files).equals(expected.files), 'files differ');
}

async function rejectsWith(promise: Promise<unknown>, code: RoamErrorCode, pattern?: RegExp): Promise<RoamError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(
      isRoamError(err, code),
      `expected ${code}, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`,
    );
    if (pattern !== undefined) assert.match(err.message, pattern);
    return err;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

function throwsWith(fn: () => unknown, code: RoamErrorCode, pattern?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isRoamError(err, code), `expected ${code}, got ${String(err)}`);
    if (pattern !== undefined) assert.match(err.message, pattern);
    return true;
  });
}

// --- re-framing: builds images with a valid prefix CRC and checksum around arbitrary contents, so
// the tests can reach the checks that come after the checksum.

interface Parts {
  header: ImageHeader;
  sections: Record<SectionName, Uint8Array>;
}

function split(image: Uint8Array): Parts {
  const headerLength = new DataView(image.buffer, image.byteOffset).getUint32(12, true);
  const header = parseImageHeader(
    JSON.parse(new TextDecoder().decode(image.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength))),
  );
  const payload = PREFIX_BYTES + headerLength;
  const sections = {} as Record<SectionName, Uint8Array>;
  for (const s of header.sections)
    sections[s.name] = image.slice(payload + s.offset, payload + s.offset + s.storedBytes);
  return { header, sections };
}

function frame(headerBytes: Uint8Array, payload: Uint8Array, version = IMAGE_FORMAT_VERSION): Uint8Array {
  const kind = digestKind(version);
  const total = PREFIX_BYTES + headerBytes.length + payload.length + DIGEST_BYTES[kind];
  const image = new Uint8Array(total);
  writePrefix(image, {
    formatVersion: version,
    flags: 0,
    headerLength: headerBytes.length,
    totalLength: total,
  });
  image.set(headerBytes, PREFIX_BYTES);
  image.set(payload, PREFIX_BYTES + headerBytes.length);
  const digestAt = total - DIGEST_BYTES[kind];
  image.set(checksumSync(image.subarray(0, digestAt), kind), digestAt);
  return image;
}

/** Lays the sections out contiguously (recomputing offsets) and frames the result. */
function join(parts: Parts, headerJson?: unknown): Uint8Array {
  let offset = 0;
  const chunks: Uint8Array[] = [];
  for (const s of parts.header.sections) {
    const bytes = parts.sections[s.name];
    s.offset = offset;
    offset += bytes.length;
    chunks.push(bytes);
  }
  return frame(new TextEncoder().encode(JSON.stringify(headerJson ?? parts.header)), Buffer.concat(chunks));
}

function section(parts: Parts, name: SectionName): ImageHeader['sections'][number] {
  const found = parts.header.sections.find((s) => s.name === name);
  assert.ok(found);
  return found;
}

/** Replaces a section with a single chunk of the given stored bytes. */
function replaceSection(parts: Parts, name: SectionName, stored: Uint8Array, rawBytes: number): void {
  const s = section(parts, name);
  parts.sections[name] = stored;
  s.storedBytes = stored.length;
  s.rawBytes = rawBytes;
  s.chunks = [[rawBytes, stored.length]];
  s.encoding = stored.length === rawBytes ? 'none' : 'deflate-raw';
}

// A small image (a few KB) for exhaustive byte-level tests, and its contents.
const smallMemory = new Uint8Array(4 * PAGE);
fillHeapPage(smallMemory, 1, rng(5));
smallMemory[3 * PAGE + 100] = 42;
const smallContents = contentsOf(smallMemory);
const smallImage = await encodeImage(smallContents);

describe('crc32', () => {
  it('is zlib.crc32 for every length, on both sides of the table loop', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), (bytes) => {
        assert.equal(crc32(bytes), zlib.crc32(bytes) >>> 0);
      }),
    );
    for (const length of [0, 1, 28, 1024, 1025]) {
      const bytes = Uint8Array.from({ length }, (_, i) => (i * 151 + 7) & 0xff);
      assert.equal(crc32(bytes), zlib.crc32(bytes) >>> 0, `${length} bytes`);
    }
  });
});

describe('snapshotMemory', () => {
  it('finds exactly the non-zero pages, including a single byte at either end of a page', () => {
    const memory = new Uint8Array(8 * PAGE);
    memory[1 * PAGE] = 1; // first byte
    memory[3 * PAGE + PAGE - 1] = 2; // last byte
    memory[4 * PAGE + 12345] = 3;
    memory[5 * PAGE + 4] = 0x80; // a word that would read as -0 through a Float64Array
    memory.fill(9, 7 * PAGE);
    const snap = snapshotMemory(memory);
    assert.equal(snap.byteLength, 8 * PAGE);
    assert.equal(snap.pageSize, PAGE);
    assert.deepEqual(Array.from(snap.pages), [1, 3, 4, 5, 7]);
    assert.equal(snap.data.length, 5 * PAGE);
    snap.pages.forEach((page, i) => {
      assert.ok(
        Buffer.from(snap.data.subarray(i * PAGE, (i + 1) * PAGE)).equals(
          memory.subarray(page * PAGE, (page + 1) * PAGE),
        ),
      );
    });
  });

  it('copies, rather than aliases, and handles all-zero, empty and unaligned memories', () => {
    const memory = new Uint8Array(2 * PAGE).fill(1);
    const snap = snapshotMemory(memory);
    memory.fill(0);
    assert.equal(snap.data[0], 1);
    assert.equal(snapshotMemory(new Uint8Array(3 * PAGE)).pages.length, 0);
    assert.equal(snapshotMemory(new Uint8Array(0)).byteLength, 0);
    const backing = new Uint8Array(3 * PAGE + 1);
    backing[PAGE + 1] = 7;
    const unaligned = new Uint8Array(backing.buffer, 1, 3 * PAGE);
    assert.deepEqual(Array.from(snapshotMemory(unaligned).pages), [1]);
  });

  it('refuses a memory that is not whole pages', () => {
    throwsWith(() => snapshotMemory(new Uint8Array(PAGE + 1)), 'ROAM_ERR_IMAGE_MALFORMED', /multiple/);
  });
});

describe('copyLive / catchUp', () => {
  it('brings a live copy up to the memory: pages that were zero, changed, zeroed or grown since', async () => {
    let memory = new Uint8Array(6 * PAGE);
    memory[1 * PAGE + 5] = 1; // non-zero in the copy, changed later
    memory[2 * PAGE + 9] = 2; // non-zero in the copy, zeroed later
    memory[4 * PAGE + 3] = 3; // non-zero in the copy, unchanged
    const copy = await copyLive(
      () => memory,
      () => true,
      2 * PAGE,
    );
    assert.deepEqual([...copy.zero], [1, 0, 0, 1, 0, 1]);
    memory[1 * PAGE + 5] = 7;
    memory[2 * PAGE + 9] = 0;
    memory[3 * PAGE] = 4; // zero in the copy, written at its first byte
    memory[5 * PAGE + PAGE - 1] = 5; // and at its last
    const grown = new Uint8Array(8 * PAGE);
    grown.set(memory);
    grown[7 * PAGE + 1] = 6; // beyond the copy
    memory = grown;
    assert.deepEqual(catchUp(memory, copy), Buffer.from(memory));
  });

  it('copies again whatever a copy that stopped early left out', async () => {
    const memory = new Uint8Array(4 * PAGE).fill(9);
    let slices = 0;
    const copy = await copyLive(
      () => memory,
      () => slices++ < 1,
      PAGE,
    );
    assert.deepEqual([...copy.zero], [0, 0, 0, 0]);
    assert.deepEqual(catchUp(memory, copy), Buffer.from(memory));
  });
});

describe('restoreMemory', () => {
  it('restores into a larger, dirty target and zeroes every other byte', () => {
    const memory = mixedMemory(16, 11);
    const snap = snapshotMemory(memory);
    const target = new Uint8Array(24 * PAGE).fill(0xaa);
    restoreMemory(snap, target);
    assert.ok(Buffer.from(target.subarray(0, memory.length)).equals(memory));
    assert.ok(target.subarray(memory.length).every((b) => b === 0));
  });

  it('restores an all-zero snapshot by zeroing the target', () => {
    const target = new Uint8Array(2 * PAGE).fill(1);
    restoreMemory(snapshotMemory(new Uint8Array(PAGE)), target);
    assert.ok(target.every((b) => b === 0));
  });

  it('refuses a target that is too small and an inconsistent snapshot', () => {
    const snap = snapshotMemory(mixedMemory(4, 3));
    throwsWith(() => restoreMemory(snap, new Uint8Array(3 * PAGE)), 'ROAM_ERR_IMAGE_TOO_LARGE', /too large/);
    const bad: MemorySnapshot = {
      ...snap,
      pages: Uint32Array.from([2, 1]),
      data: new Uint8Array(2 * PAGE),
    };
    throwsWith(() => restoreMemory(bad, new Uint8Array(4 * PAGE)), 'ROAM_ERR_IMAGE_MALFORMED', /ascending/);
    const outside: MemorySnapshot = {
      ...snap,
      pages: Uint32Array.from([4]),
      data: new Uint8Array(PAGE),
    };
    throwsWith(() => restoreMemory(outside, new Uint8Array(8 * PAGE)), 'ROAM_ERR_IMAGE_MALFORMED', /beyond/);
  });
});

describe('encodeImage / decodeImage round trip', () => {
  it('round-trips a small image and reports it in info and inspectImage', async () => {
    const { info, contents } = await decodeImage(smallImage);
    assertSameContents(contents, smallContents);
    assert.equal(info.formatVersion, IMAGE_FORMAT_VERSION);
    assert.deepEqual(info.meta, META);
    assert.deepEqual(info.memory, { byteLength: 4 * PAGE, nonZeroPages: 2, diffPages: 0, totalPages: 4 });
    assert.deepEqual(
      info.sections.map((s) => s.name),
      ['pages', 'memory', 'state', 'files', 'diffs'],
    );
    assert.equal(info.sections[1]?.rawBytes, 2 * PAGE);
    assert.equal(info.totalBytes, smallImage.length);
    assert.deepEqual(inspectImage(smallImage), info);
  });

  it('round-trips random (incompressible) pages, stored verbatim', async () => {
    const memory = new Uint8Array(6 * PAGE);
    memory.set(randomBytes(3 * PAGE, 99), PAGE);
    const contents = contentsOf(memory, [1, 'two'], randomBytes(5000, 4));
    const image = await encodeImage(contents);
    const { info, contents: decoded } = await decodeImage(image);
    assertSameContents(decoded, contents);
    assert.equal(info.sections[1]?.encoding, 'none');
    assert.ok(image.length < 3 * PAGE + 5000 + 2048);
  });

  it('round-trips an all-zero memory, empty files and scalar states', async () => {
    for (const state of [null, 0, 'x', false, []]) {
      const contents = contentsOf(new Uint8Array(10 * PAGE), state, new Uint8Array(0));
      const { info, contents: decoded } = await decodeImage(await encodeImage(contents));
      assertSameContents(decoded, contents);
      assert.equal(info.memory.nonZeroPages, 0);
      assert.equal(info.sections[0]?.rawBytes, 0);
    }
  });

  it('uses LZ4 by default, and decodes straight into a dirty target memory', async () => {
    const memory = mixedMemory(56, 99);
    const contents = contentsOf(memory, STATE, mixedMemory(3, 5));
    const image = await encodeImage(contents);
    const { info, contents: decoded } = await decodeImage(image);
    assertSameContents(decoded, contents);
    assert.equal(info.sections[1]?.encoding, 'lz4');
    assert.ok((info.sections[1]?.storedBytes ?? 0) < (info.sections[1]?.rawBytes ?? 0) * 0.8, 'LZ4 shrank nothing');

    const target = new Uint8Array(memory.length + 3 * PAGE).fill(0xa7);
    const into = await decodeImageInto(image, (byteLength, state) => {
      assert.equal(byteLength, memory.length);
      assert.deepEqual(state, JSON.parse(JSON.stringify(STATE)));
      return target;
    });
    assert.ok(Buffer.from(target.subarray(0, memory.length)).equals(memory), 'memory restored in place');
    assert.ok(
      target.subarray(memory.length).every((b) => b === 0),
      'and everything past it zeroed',
    );
    assert.equal(into.info.memory.nonZeroPages, contents.memory.pages.length);
    assert.ok(Buffer.from(into.files).equals(contents.files));
  });

  it('stores chunks under 4 KiB verbatim with the fast codecs, and deflates them all the same', async () => {
    const compressible = { log: 'x'.repeat(3000) }; // about 3 KB of JSON that LZ4 would shrink
    const contents = contentsOf(mixedMemory(4, 3), compressible, new Uint8Array(2000));
    for (const codec of ['lz4', 'snappy'] as const) {
      const image = await encodeImage(contents, { codec });
      const { info, contents: decoded } = await decodeImage(image);
      assertSameContents(decoded, contents);
      const state = info.sections.find((section) => section.name === 'state');
      const files = info.sections.find((section) => section.name === 'files');
      assert.equal(state?.encoding, 'none', `${codec}: state`);
      assert.equal(state?.storedBytes, state?.rawBytes);
      assert.equal(files?.encoding, 'none', `${codec}: files`);
    }
    const deflated = await decodeImage(await encodeImage(contents, { codec: 'deflate' }));
    const state = deflated.info.sections.find((section) => section.name === 'state');
    assert.equal(state?.encoding, 'deflate-raw');
    assert.ok((state?.storedBytes ?? Infinity) < 200, 'deflate still packs a small chunk');
    // A larger state is compressed as before.
    const big = await decodeImage(await encodeImage(contentsOf(mixedMemory(4, 3), { log: 'x'.repeat(10_000) })));
    assert.equal(big.info.sections.find((section) => section.name === 'state')?.encoding, 'lz4');
  });

  it('still decodes Snappy images (the default before LZ4)', async () => {
    const memory = mixedMemory(40, 17);
    const contents = contentsOf(memory, STATE, mixedMemory(2, 3));
    const image = await encodeImage(contents, { codec: 'snappy' });
    const { info, contents: decoded } = await decodeImage(image);
    assert.equal(info.sections[1]?.encoding, 'snappy');
    assertSameContents(decoded, contents);
  });

  it('refuses to decode into a target smaller than the image memory', async () => {
    const memory = mixedMemory(4, 3);
    const image = await encodeImage(contentsOf(memory), { codec: 'snappy' });
    await rejectsWith(
      decodeImageInto(image, () => new Uint8Array(10)),
      'ROAM_ERR_IMAGE_TOO_LARGE',
    );
  });

  it('round-trips a realistic mix across many chunks at levels 0, 1 and 9', async () => {
    const memory = mixedMemory(56, 2024); // 3.5 MiB: several chunks
    const files = mixedMemory(24, 7); // 1.5 MiB of files: chunked too
    const contents = contentsOf(memory, STATE, files);
    const sizes: number[] = [];
    for (const level of [0, 1, 9]) {
      const image = await encodeImage(contents, { level });
      sizes.push(image.length);
      const { info, contents: decoded } = await decodeImage(image);
      assertSameContents(decoded, contents);
      assert.ok(info.sections[1] !== undefined && info.sections[1].rawBytes > 2 * ENCODE_CHUNK_BYTES);
      assert.ok((info.sections[3]?.rawBytes ?? 0) > ENCODE_CHUNK_BYTES);
      assert.equal(info.sections[1].encoding, level === 0 ? 'none' : 'deflate-raw');
      const target = new Uint8Array(memory.length + PAGE).fill(0x5c);
      restoreMemory(decoded.memory, target);
      assert.ok(Buffer.from(target.subarray(0, memory.length)).equals(memory));
    }
    assert.ok((sizes[1] ?? 0) < (sizes[0] ?? 0) * 0.8, `compression had no effect: ${sizes.join(', ')}`);
  });

  it('refuses contents it could not decode again', async () => {
    await rejectsWith(
      encodeImage({ ...smallContents, meta: { ...META, guestId: '' } }),
      'ROAM_ERR_IMAGE_MALFORMED',
      /guestId/,
    );
    await rejectsWith(
      encodeImage({ ...smallContents, meta: { ...META, createdAt: 'yesterday' } }),
      'ROAM_ERR_IMAGE_MALFORMED',
      /createdAt/,
    );
    await rejectsWith(encodeImage({ ...smallContents, state: undefined }), 'ROAM_ERR_IMAGE_MALFORMED', /JSON/);
    await rejectsWith(encodeImage({ ...smallContents, state: { n: 1n } }), 'ROAM_ERR_IMAGE_MALFORMED', /JSON/);
    const snap = smallContents.memory;
    await rejectsWith(
      encodeImage({ ...smallContents, memory: { ...snap, data: snap.data.subarray(1) } }),
      'ROAM_ERR_IMAGE_MALFORMED',
      /page data/,
    );
    await rejectsWith(encodeImage(smallContents, { level: 10 }), 'ROAM_ERR_USAGE');
  });
});

// --- pages stored as diffs against a base -------------------------------------------------------

function flip(bytes: Uint8Array, at: number, xor: number): void {
  bytes[at] = (bytes[at] ?? 0) ^ xor;
}

/**
 * A base of 24 pages (zero, heap-like and random ones) and a memory of 28 built on it: some of the
 * base's pages changed in a few places (first and last bytes included), one rewritten in full, one
 * left as it was, one zero page of the base filled, and pages past the base's end.
 */
function basedMemory(): { base: Uint8Array; memory: Uint8Array } {
  const base = mixedMemory(24, 11);
  const memory = new Uint8Array(28 * PAGE);
  memory.set(base);
  const nonZero = (page: number): boolean => base.subarray(page * PAGE, (page + 1) * PAGE).some((b) => b !== 0);
  const changed = Array.from({ length: 24 }, (_, page) => page).filter(nonZero);
  const next = rng(3);
  for (const page of changed.slice(0, -2)) {
    for (let k = 0; k < 40; k++) flip(memory, page * PAGE + (next() % PAGE), 1 + (next() % 255));
  }
  const first = changed[0] ?? 0;
  flip(memory, first * PAGE, 0xff);
  flip(memory, first * PAGE + PAGE - 1, 0xff);
  memory.set(randomBytes(PAGE, 9), (changed.at(-2) ?? 0) * PAGE); // every byte new: stored whole
  const zero = Array.from({ length: 24 }, (_, page) => page).find((page) => !nonZero(page)) ?? 0;
  fillHeapPage(memory, zero, rng(4));
  fillHeapPage(memory, 25, rng(6));
  memory[27 * PAGE + 5] = 1;
  return { base, memory };
}

const BASE_ID = 'runtime-test-base';

function basedContents(): { base: Uint8Array; memory: Uint8Array; contents: ImageContents } {
  const { base, memory } = basedMemory();
  return {
    base,
    memory,
    contents: {
      meta: { ...META, base: BASE_ID },
      memory: snapshotMemory(memory, base),
      state: STATE,
      files: new Uint8Array([4, 5]),
    },
  };
}

describe('diffRecord / applyDiffs', () => {
  it('turns any base page into any page, in records never larger than the page', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: PAGE, maxLength: PAGE }),
        fc.array(fc.tuple(fc.nat(PAGE - 1), fc.nat(300), fc.integer({ min: 1, max: 255 })), { maxLength: 60 }),
        (basePage, edits) => {
          const page = basePage.slice();
          for (const [at, length, xor] of edits)
            for (let i = at; i < Math.min(PAGE, at + length + 1); i++) flip(page, i, xor);
          const record = diffRecord(7, page, basePage);
          if (record === undefined) return;
          assert.ok(record.length - 8 < PAGE);
          const memory = new Uint8Array(9 * PAGE);
          memory.set(basePage, 7 * PAGE);
          applyDiffs(record, memory, { place: (index) => index * PAGE });
          assert.ok(Buffer.from(memory.subarray(7 * PAGE, 8 * PAGE)).equals(page));
        },
      ),
      { numRuns: 60 },
    );
  });

  it('leaves out pages equal to their base and pages that changed everywhere', () => {
    const basePage = randomBytes(PAGE, 1);
    assert.equal(diffRecord(0, basePage.slice(), basePage), undefined);
    assert.equal(diffRecord(0, randomBytes(PAGE, 2), basePage), undefined);
    const page = basePage.slice();
    flip(page, 1000, 1);
    assert.equal(diffRecord(0, page, basePage)?.length, 8 + 4 + 4, 'one word-aligned run of 4 bytes');
  });

  it('applies runs of any alignment and length, also into a memory view that is not word-aligned', () => {
    // Our encoder writes whole words; a record from elsewhere may not, and must apply all the same.
    // (2048 + 64 bytes is the one short run that is whole words: copied a word at a time at offset 0.)
    const runs: Array<[number, number]> = [
      [1, 3],
      [9, 8],
      [33, 255],
      [300, 256],
      [1001, 1],
      [2048, 64],
      [4096, 5000],
    ];
    const data = runs.map(([, length], r) => randomBytes(length, 10 + r));
    const record = new Uint8Array(8 + 4 * runs.length + data.reduce((n, d) => n + d.length, 0));
    const view = new DataView(record.buffer);
    view.setUint32(0, 2, true);
    view.setUint32(4, runs.length, true);
    let at = 8 + 4 * runs.length;
    runs.forEach(([start, length], r) => {
      view.setUint16(8 + 4 * r, start, true);
      view.setUint16(8 + 4 * r + 2, length - 1, true);
      record.set(data[r] ?? new Uint8Array(0), at);
      at += length;
    });
    for (const offset of [0, 1, 2]) {
      const backing = new Uint8Array(3 * PAGE + offset).fill(0x5a);
      const memory = backing.subarray(offset);
      const expected = memory.slice();
      runs.forEach(([start], r) => expected.set(data[r] ?? new Uint8Array(0), 2 * PAGE + start));
      applyDiffs(record, memory, { place: (index) => index * PAGE });
      assert.ok(Buffer.from(memory).equals(expected), `memory view at byte offset ${offset}`);
    }
  });
});

describe('pages stored as diffs against a base', () => {
  it('stores the base pages that changed little as diffs, and round-trips with the base', async () => {
    const { base, memory, contents } = basedContents();
    const image = await encodeImage(contents, { base: { id: BASE_ID, full: base } });
    const { info, contents: decoded } = await decodeImage(image, { base: { id: BASE_ID, full: base } });
    assertSameContents(decoded, contents);
    assert.ok(info.memory.diffPages >= 10, `only ${info.memory.diffPages} pages as diffs`);
    assert.equal(info.memory.nonZeroPages + info.memory.diffPages, contents.memory.pages.length);
    assert.ok(
      info.memory.nonZeroPages >= 4,
      'the rewritten page, the filled zero page and those past the base stay whole',
    );
    const diffs = info.sections[4];
    assert.equal(diffs?.name, 'diffs');
    assert.equal(diffs.encoding, 'none', 'LZ4 (the default) leaves diffs as they are');
    assert.ok(diffs.rawBytes < info.memory.diffPages * PAGE * 0.1, `diffs of ${diffs.rawBytes} bytes`);

    // Straight into a memory that holds the base: exactly the guest's memory comes out.
    const target = new Uint8Array(memory.length);
    target.set(base);
    await decodeImageInto(image, () => target);
    assert.ok(Buffer.from(target).equals(memory));

    // Without its base the memory cannot be made, but everything else can.
    await rejectsWith(decodeImage(image), 'ROAM_ERR_IMAGE_VERSION', /stored against base runtime-test-base/);
    await rejectsWith(
      decodeImage(image, { base: { id: 'runtime-other', full: base } }),
      'ROAM_ERR_IMAGE_VERSION',
      /this Roam's base is runtime-other/,
    );
    const parts = await decodeImageState(image);
    assert.deepEqual(parts.state, JSON.parse(JSON.stringify(STATE)));
    assert.deepEqual(Array.from(parts.files), [4, 5]);
  });

  it('packs diffs with deflate, stores whole pages without a base, and refuses a base of another id', async () => {
    const { base, contents } = basedContents();
    const full = { id: BASE_ID, full: base };
    const deflated = await encodeImage(contents, { level: 6, base: full });
    const { info, contents: decoded } = await decodeImage(deflated, { base: full });
    assertSameContents(decoded, contents);
    assert.equal(info.sections[4]?.encoding, 'deflate-raw');

    const plain = await encodeImage(contents);
    const plainInfo = inspectImage(plain);
    assert.equal(plainInfo.memory.diffPages, 0);
    assertSameContents((await decodeImage(plain)).contents, contents);

    await rejectsWith(encodeImage(contents, { base: { id: 'runtime-other', full: base } }), 'ROAM_ERR_USAGE', /base/);
  });

  it('still decodes version 1 images (no diffs section)', async () => {
    const contents = contentsOf(mixedMemory(20, 8));
    const parts = split(await encodeImage(contents));
    const header = structuredClone(parts.header);
    delete header.memory.diffPages;
    header.sections = header.sections.filter((s) => s.name !== 'diffs');
    let offset = 0;
    for (const s of header.sections) {
      s.offset = offset;
      offset += s.storedBytes;
    }
    const payload = Buffer.concat(header.sections.map((s) => parts.sections[s.name]));
    const v1 = frame(new TextEncoder().encode(JSON.stringify(header)), payload, 1);
    const { info, contents: decoded } = await decodeImage(v1);
    assert.equal(info.formatVersion, 1);
    assert.equal(info.memory.diffPages, 0);
    assertSameContents(decoded, contents);
    // A version 1 header with a diffs section, or a version 2 one without, is refused.
    const v1WithDiffs = frame(
      new TextEncoder().encode(JSON.stringify(parts.header)),
      Buffer.concat(Object.values(parts.sections)),
      1,
    );
    await rejectsWith(decodeImage(v1WithDiffs), 'ROAM_ERR_IMAGE_MALFORMED', /5 sections in a version 1 image/);
    for (const version of [2, 3]) {
      await rejectsWith(
        decodeImage(frame(new TextEncoder().encode(JSON.stringify(header)), payload, version)),
        'ROAM_ERR_IMAGE_MALFORMED',
        new RegExp(`4 sections in a version ${version} image`),
      );
    }
  });

  it('still decodes version 2 images (a CRC-32 at the end)', async () => {
    const contents = contentsOf(mixedMemory(20, 8));
    const image = await encodeImage(contents);
    assert.deepEqual(image.subarray(-8), checksumSync(image.subarray(0, -8), 'xxh3-64'), 'ends in its XXH3-64');
    const { header, sections } = split(image);
    const v2 = frame(new TextEncoder().encode(JSON.stringify(header)), Buffer.concat(Object.values(sections)), 2);
    assert.equal(v2.length, image.length - 4);
    const { info, contents: decoded } = await decodeImage(v2);
    assert.equal(info.formatVersion, 2);
    assertSameContents(decoded, contents);
    const damaged = v2.slice();
    damaged[v2.length - 100] = (damaged[v2.length - 100] ?? 0) ^ 0x10;
    await rejectsWith(decodeImage(damaged), 'ROAM_ERR_IMAGE_CHECKSUM', /checksum \(CRC-32\) mismatch/);
    const damaged3 = image.slice();
    damaged3[image.length - 100] = (damaged3[image.length - 100] ?? 0) ^ 0x10;
    await rejectsWith(decodeImage(damaged3), 'ROAM_ERR_IMAGE_CHECKSUM', /checksum \(XXH3-64\) mismatch/);
  });

  it('refuses diffs that are damaged, doubled or out of place', async () => {
    const { base, contents } = basedContents();
    const full = { id: BASE_ID, full: base };
    const image = await encodeImage(contents, { level: 0, base: full });
    const expect = async (mutate: (parts: Parts, records: Uint8Array) => void, pattern: RegExp): Promise<void> => {
      const parts = split(image);
      const records = parts.sections.diffs.slice();
      mutate(parts, records);
      parts.sections.diffs = records;
      const damaged = join(parts);
      await rejectsWith(decodeImage(damaged, { base: full }), 'ROAM_ERR_IMAGE_MALFORMED', pattern);
      const target = new Uint8Array(28 * PAGE);
      target.set(base);
      await rejectsWith(
        decodeImageInto(damaged, () => target),
        'ROAM_ERR_IMAGE_MALFORMED',
        pattern,
      );
    };
    const u32 = (bytes: Uint8Array, at: number, value: number): void =>
      new DataView(bytes.buffer, bytes.byteOffset).setUint32(at, value, true);
    const u16 = (bytes: Uint8Array, at: number, value: number): void =>
      new DataView(bytes.buffer, bytes.byteOffset).setUint16(at, value, true);
    const wholePage = contents.memory.pages.find((page) => page >= 24) ?? 0;
    await expect((_, r) => u32(r, 0, wholePage), /stored twice/);
    await expect((_, r) => u32(r, 0, 9999), /beyond the memory/);
    await expect((_, r) => u32(r, 4, 0), /0 runs/);
    await expect((_, r) => u16(r, 8 + 2, 0xffff), /leave the page|cut off/);
    await expect((_, r) => {
      u16(r, 8, 100); // the first run at 100, the second before it
      u16(r, 12, 0);
    }, /overlap/);
    await expect((p, r) => {
      p.header.memory.diffPages = (p.header.memory.diffPages ?? 0) + 1;
      void r;
    }, /holds \d+ pages, the header says/);
    await expect((p) => {
      const diffs = section(p, 'diffs');
      diffs.rawBytes -= 1;
      diffs.storedBytes -= 1;
      const last = diffs.chunks.at(-1);
      if (last) diffs.chunks[diffs.chunks.length - 1] = [last[0] - 1, last[1] - 1];
      p.sections.diffs = p.sections.diffs.subarray(0, -1);
    }, /cut off/);
    await expect((p) => {
      delete p.header.meta.base;
    }, /no base/);
  });
});

describe('the header check', () => {
  const header: unknown = JSON.parse(
    JSON.stringify({
      meta: {
        kind: 'js',
        guestId: 'g-1',
        name: 'web',
        roamVersion: '0.1.0',
        createdAt: '2026-11-28T04:06:27.914Z',
        base: 'runtime-1',
      },
      memory: { byteLength: 16 * PAGE_SIZE, pageSize: PAGE_SIZE, nonZeroPages: 0, diffPages: 2 },
      sections: ['pages', 'memory', 'state', 'files', 'diffs'].map((name, i) => ({
        name,
        offset: i * 10,
        storedBytes: 10,
        rawBytes: 10,
        encoding: 'none',
        chunks: [[10, 10]],
      })),
    }),
  );

  /** Every path to a value inside `value`, the root included. */
  function paths(value: unknown, prefix: Array<string | number> = []): Array<Array<string | number>> {
    const inner =
      typeof value === 'object' && value !== null
        ? Object.entries(value).flatMap(([key, child]) =>
            paths(child, [...prefix, Array.isArray(value) ? Number(key) : key]),
          )
        : [];
    return [prefix, ...inner];
  }
  const allPaths = paths(header).filter((path) => path.length > 0);

  /** `value` with the value at `path` replaced (or, with `remove`, deleted), as a new JSON value. */
  function mutated(path: Array<string | number>, replacement: unknown, remove: boolean): unknown {
    const copy = JSON.parse(JSON.stringify(header)) as Record<string | number, unknown>;
    let parent = copy;
    for (const key of path.slice(0, -1)) parent = parent[key] as Record<string | number, unknown>;
    const last = path.at(-1) ?? '';
    if (remove) delete parent[last];
    else parent[last] = replacement;
    return JSON.parse(JSON.stringify(copy));
  }

  it('takes a well-formed header as it is, and the field-by-field check takes it too', () => {
    assert.equal(isImageHeader(header), true);
    assert.equal(parseImageHeader(header), header);
    assert.deepEqual(checkImageHeader(header), header);
  });

  it('agrees with the field-by-field check on every change to any field', () => {
    const replacement = fc.oneof(
      fc.jsonValue({ maxDepth: 2 }),
      fc.integer({ min: -2, max: 2 ** 27 }),
      fc.constantFrom('js', 'wasm', 'lz4', 'none', 'diffs', '', '2026-11-28T04:06:27Z', PAGE_SIZE, 2 ** 53),
    );
    fc.assert(
      fc.property(fc.constantFrom(...allPaths), replacement, fc.boolean(), (path, value, remove) => {
        const candidate = mutated(path, value, remove);
        let checked: unknown;
        try {
          checked = checkImageHeader(candidate);
        } catch (err) {
          assert.ok(err instanceof Error && /: /.test(err.message), String(err));
        }
        assert.equal(isImageHeader(candidate), checked !== undefined, JSON.stringify({ path, value, remove }));
        if (checked !== undefined) assert.deepEqual(checked, candidate);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('damaged images', () => {
  it('calls every proper prefix truncated', async () => {
    const big = await encodeImage(contentsOf(mixedMemory(24, 8)));
    for (const image of [smallImage, big]) {
      const offsets = new Set<number>();
      for (let i = 0; i < 200; i++) offsets.add(i);
      for (let i = 0; i < 300; i++) offsets.add(Math.floor((image.length * i) / 300));
      for (let i = 1; i <= WRITTEN_DIGEST_BYTES + 1; i++) offsets.add(image.length - i);
      for (const at of offsets) {
        if (at >= image.length) continue;
        const cut = image.subarray(0, at);
        await rejectsWith(decodeImage(cut), 'ROAM_ERR_IMAGE_TRUNCATED', /truncated/);
        throwsWith(() => inspectImage(cut), 'ROAM_ERR_IMAGE_TRUNCATED', /truncated/);
      }
    }
  });

  it('catches a flipped byte anywhere', async () => {
    // A flip in the version field that makes another version this Roam reads is caught by the
    // prefix's CRC; any other is an unsupported version.
    const expected = (at: number, damaged: Uint8Array): [RoamErrorCode, RegExp] =>
      at < 8
        ? ['ROAM_ERR_IMAGE_MALFORMED', /not a Roam checkpoint image/]
        : at < 10 && !DECODABLE_FORMAT_VERSIONS.includes(new DataView(damaged.buffer).getUint16(8, true))
          ? ['ROAM_ERR_IMAGE_VERSION', /unsupported version/]
          : ['ROAM_ERR_IMAGE_CHECKSUM', /checksum/];
    // Every byte of the prefix, the header and the start of the payload, then a sample of the rest.
    const offsets = new Set<number>();
    for (let at = 0; at < Math.min(1024, smallImage.length); at++) offsets.add(at);
    for (let i = 0; i < 400; i++) offsets.add(Math.floor((smallImage.length * i) / 400));
    for (let at = smallImage.length - WRITTEN_DIGEST_BYTES - 8; at < smallImage.length; at++) offsets.add(at);
    for (const at of offsets) {
      for (const xor of [0x01, 0x80]) {
        const damaged = smallImage.slice();
        damaged[at] = (damaged[at] ?? 0) ^ xor;
        const [code, pattern] = expected(at, damaged);
        throwsWith(() => inspectImage(damaged), code, pattern);
        await rejectsWith(decodeImage(damaged), code, pattern);
      }
    }
  });

  it('refuses other format versions, naming both', async () => {
    for (const version of [0, IMAGE_FORMAT_VERSION + 1, 0xffff]) {
      const image = smallImage.slice();
      new DataView(image.buffer).setUint16(8, version, true);
      const err = await rejectsWith(decodeImage(image), 'ROAM_ERR_IMAGE_VERSION', /unsupported version/);
      assert.match(err.message, new RegExp(`version ${version}\\b`));
      assert.match(err.message, new RegExp(`supports versions 1, 2 and 3 and writes ${IMAGE_FORMAT_VERSION}\\b`));
    }
    // A well-formed image from a future version is refused before its checksum is looked at.
    const { header, sections } = split(smallImage);
    const future = frame(new TextEncoder().encode(JSON.stringify(header)), Buffer.concat(Object.values(sections)), 4);
    await rejectsWith(decodeImage(future), 'ROAM_ERR_IMAGE_VERSION', /unsupported version 4/);
  });

  it('refuses what is not an image', async () => {
    for (const bytes of [new TextEncoder().encode('{"hello": "world"}'), new Uint8Array(100), randomBytes(3, 1)]) {
      await rejectsWith(decodeImage(bytes), 'ROAM_ERR_IMAGE_MALFORMED', /not a Roam checkpoint image/);
    }
    await rejectsWith(decodeImage(new Uint8Array(0)), 'ROAM_ERR_IMAGE_TRUNCATED', /truncated/);
  });

  it('enforces the size limits', async () => {
    const err = await rejectsWith(
      decodeImage(smallImage, { maxImageBytes: smallImage.length - 1 }),
      'ROAM_ERR_IMAGE_TOO_LARGE',
      /too large/,
    );
    assert.match(err.message, new RegExp(String(smallImage.length - 1)));
    await decodeImage(smallImage, { maxImageBytes: smallImage.length, maxMemoryBytes: 4 * PAGE });
    const mem = await rejectsWith(
      decodeImage(smallImage, { maxMemoryBytes: 3 * PAGE }),
      'ROAM_ERR_IMAGE_TOO_LARGE',
      /too large/,
    );
    assert.match(mem.message, new RegExp(String(3 * PAGE)));
    throwsWith(() => inspectImage(smallImage, { maxMemoryBytes: 0 }), 'ROAM_ERR_IMAGE_TOO_LARGE');

    // A prefix (with a valid CRC) that declares an enormous image is refused before any allocation.
    const huge = smallImage.slice();
    writePrefix(huge, {
      formatVersion: IMAGE_FORMAT_VERSION,
      flags: 0,
      headerLength: new DataView(huge.buffer).getUint32(12, true),
      totalLength: 2 ** 52,
    });
    await rejectsWith(decodeImage(huge), 'ROAM_ERR_IMAGE_TOO_LARGE', /too large/);

    // A state section that would inflate past maxImageBytes.
    const parts = split(smallImage);
    section(parts, 'state').rawBytes = 2 ** 31;
    await rejectsWith(decodeImage(join(parts), { maxImageBytes: 2 ** 30 }), 'ROAM_ERR_IMAGE_TOO_LARGE', /too large/);
  });

  it('refuses bytes after the end and unknown flags', async () => {
    await rejectsWith(
      decodeImage(Buffer.concat([smallImage, new Uint8Array(1)])),
      'ROAM_ERR_IMAGE_MALFORMED',
      /after the end/,
    );
    const flagged = smallImage.slice();
    const view = new DataView(flagged.buffer);
    writePrefix(flagged, {
      formatVersion: 1,
      flags: 0,
      headerLength: view.getUint32(12, true),
      totalLength: flagged.length,
    });
    view.setUint16(10, 4, true);
    await rejectsWith(decodeImage(flagged), 'ROAM_ERR_IMAGE_CHECKSUM', /checksum/); // flags are under the prefix CRC
    writePrefix(flagged, {
      formatVersion: 1,
      flags: 4,
      headerLength: view.getUint32(12, true),
      totalLength: flagged.length,
    });
    await rejectsWith(decodeImage(flagged), 'ROAM_ERR_IMAGE_MALFORMED', /unknown flags 0x4/);
  });
});

describe('well-framed but malformed images', () => {
  const level0 = encodeImage(smallContents, { level: 0 });

  async function expectMalformed(
    mutate: (parts: Parts) => unknown,
    pattern: RegExp,
    image?: Uint8Array,
  ): Promise<void> {
    const parts = split(image ?? (await level0));
    const headerJson = mutate(parts);
    const damaged = join(parts, headerJson);
    await rejectsWith(decodeImage(damaged), 'ROAM_ERR_IMAGE_MALFORMED', pattern);
  }

  it('checks the header against its schema', async () => {
    const image = await level0;
    const headerLength = new DataView(image.buffer).getUint32(12, true);
    await rejectsWith(
      decodeImage(
        frame(new TextEncoder().encode('{"meta":'), image.subarray(PREFIX_BYTES + headerLength, -WRITTEN_DIGEST_BYTES)),
      ),
      'ROAM_ERR_IMAGE_MALFORMED',
      /header is not UTF-8 JSON/,
    );
    await rejectsWith(
      decodeImage(frame(new Uint8Array([0xff, 0xfe]), new Uint8Array(0))),
      'ROAM_ERR_IMAGE_MALFORMED',
      /UTF-8/,
    );
    await expectMalformed((p) => ({ ...p.header, memory: { ...p.header.memory, pageSize: 4096 } }), /memory\.pageSize/);
    await expectMalformed((p) => ({ ...p.header, extra: 1 }), /header field/);
    await expectMalformed((p) => ({ ...p.header, meta: { ...p.header.meta, kind: 'python' } }), /meta\.kind/);
    await expectMalformed(
      (p) => ({ ...p.header, meta: { ...p.header.meta, createdAt: '2025-01-02' } }),
      /meta\.createdAt/,
    );
    await expectMalformed((p) => ({ ...p.header, meta: { ...p.header.meta, base: '' } }), /meta\.base/);
    await expectMalformed(
      (p) => ({ ...p.header, memory: { ...p.header.memory, nonZeroPages: -1 } }),
      /memory\.nonZeroPages/,
    );
    await expectMalformed((p) => {
      const sections = structuredClone(p.header.sections);
      sections[1]?.chunks.push([1, 2, 3] as unknown as [number, number]);
      return { ...p.header, sections };
    }, /sections\[1\]\.chunks\[\d+\]: expected \[rawBytes, storedBytes\]/);
    await expectMalformed((p) => ({ ...p.header, meta: null }), /meta: expected an object/);
    await expectMalformed((p) => {
      const { guestId: _, ...meta } = p.header.meta;
      return { ...p.header, meta };
    }, /meta\.guestId: missing/);
    // A zone offset instead of Z is a date-time too.
    const offset = split(await level0);
    offset.header.meta.createdAt = '2025-01-02T03:04:05+01:00';
    assert.equal((await decodeImage(join(offset))).info.meta.createdAt, '2025-01-02T03:04:05+01:00');
    await expectMalformed((p) => ({ ...p.header, sections: p.header.sections.slice(1) }), /sections/);
    await expectMalformed(
      (p) => ({ ...p.header, sections: [...p.header.sections].reverse() }),
      /section 0 is 'diffs', expected 'pages'/,
    );
  });

  it('checks sizes, offsets and the chunk table', async () => {
    await expectMalformed((p) => {
      p.header.memory.byteLength += 1;
    }, /multiple of 65536/);
    await expectMalformed((p) => {
      p.header.memory.byteLength = PAGE;
    }, /2 whole and 0 diffed pages in a memory of 1 pages/);
    const parts = split(await level0);
    const payloadLength = Object.values(parts.sections).reduce((n, s) => n + s.length, 0);
    const headerBytes = (mutate: (h: ImageHeader) => void): Uint8Array => {
      const h = structuredClone(parts.header);
      let offset = 0;
      for (const s of h.sections) {
        s.offset = offset;
        offset += s.storedBytes;
      }
      mutate(h);
      return new TextEncoder().encode(JSON.stringify(h));
    };
    const payload = Buffer.concat(parts.header.sections.map((s) => parts.sections[s.name]));
    assert.equal(payload.length, payloadLength);
    const state = (h: ImageHeader): ImageHeader['sections'][number] => h.sections[2] ?? assert.fail();
    await rejectsWith(
      decodeImage(
        frame(
          headerBytes((h) => (state(h).offset -= 1)),
          payload,
        ),
      ),
      'ROAM_ERR_IMAGE_MALFORMED',
      /overlaps/,
    );
    await rejectsWith(
      decodeImage(
        frame(
          headerBytes((h) => (state(h).offset = payloadLength)),
          payload,
        ),
      ),
      'ROAM_ERR_IMAGE_MALFORMED',
      /past the end/,
    );
    await expectMalformed((p) => {
      section(p, 'memory').rawBytes -= PAGE;
    }, /section 'memory' holds/);
    await expectMalformed((p) => {
      const s = section(p, 'state');
      s.chunks = [...s.chunks, [1, 1]];
    }, /does not add up/);
    await expectMalformed((p) => {
      const s = section(p, 'state');
      s.chunks = [[s.rawBytes, s.storedBytes - 1]];
      s.storedBytes -= 1;
      p.sections.state = p.sections.state.subarray(1);
    }, /chunk 0 stores/);
  });

  it('checks page indices', async () => {
    await expectMalformed((p) => {
      const view = new DataView(p.sections.pages.buffer, p.sections.pages.byteOffset);
      view.setUint32(0, 3, true);
    }, /ascending/);
    await expectMalformed((p) => {
      const view = new DataView(p.sections.pages.buffer, p.sections.pages.byteOffset);
      view.setUint32(4, 4, true);
    }, /beyond/);
  });

  it('inflates no more than declared and requires exactly the declared size', async () => {
    // Zip bomb: 16 MiB of zeros declared as 64 KiB.
    const bomb = zlib.deflateRawSync(new Uint8Array(16 * 1024 * 1024), { level: 9 });
    await expectMalformed(
      (p) => replaceSection(p, 'files', bomb, PAGE),
      /inflates to more than its declared 65536 bytes/,
    );
    // A ratio deflate cannot reach is refused from the header alone.
    await expectMalformed((p) => replaceSection(p, 'files', bomb, bomb.length * 1033), /maximum ratio/);
    const short = zlib.deflateRawSync(new Uint8Array(1000).fill(1));
    await expectMalformed((p) => replaceSection(p, 'files', short, 1001), /unpacks to 1000 bytes, declared 1001/);
    const invalid = new Uint8Array(50).fill(0x07); // BTYPE 11: a reserved, invalid block type
    await expectMalformed((p) => replaceSection(p, 'files', invalid, 60), /not a valid deflate stream/);
    await expectMalformed((p) => replaceSection(p, 'files', short.subarray(0, 5), 1000), /not a valid deflate stream/);
    const badJson = zlib.deflateRawSync(new TextEncoder().encode('{"a": 1,'.repeat(20)));
    await expectMalformed((p) => replaceSection(p, 'state', badJson, 160), /state section is not UTF-8 JSON/);
  });

  it('refuses an LZ4 chunk that declares another size or does not decode', async () => {
    const raw = new Uint8Array(3000).fill(9);
    const block = new Uint8Array(await lz4Compress(Buffer.from(raw)));
    const asLz4 = (stored: Uint8Array, rawBytes: number) => (p: Parts) => {
      replaceSection(p, 'files', stored, rawBytes);
      section(p, 'files').encoding = 'lz4';
    };
    // The 4-byte prefix says 3000; the header says 4000: refused before the decoder allocates.
    await expectMalformed(asLz4(block, 4000), /not an LZ4 block \(declares 3000 bytes, the header 4000\)/);
    const garbage = block.slice();
    garbage.fill(0xff, 4);
    await expectMalformed(asLz4(garbage, 3000), /not an LZ4 block/);
    await expectMalformed(asLz4(block.subarray(0, 3), 3000), /not an LZ4 block/);
  });

  it('lets inspectImage pass what only inflating would reveal', async () => {
    const parts = split(await level0);
    replaceSection(parts, 'files', new Uint8Array(50).fill(0x07), 60);
    const image = join(parts);
    assert.equal(inspectImage(image).sections[3]?.rawBytes, 60);
    await rejectsWith(decodeImage(image), 'ROAM_ERR_IMAGE_MALFORMED');
  });
});

describe('hostile input (property-based)', () => {
  type Mutation =
    | { kind: 'flip'; at: number; xor: number }
    | { kind: 'truncate'; at: number }
    | { kind: 'splice'; at: number; remove: number; insert: Uint8Array }
    | { kind: 'u32'; at: number; value: number };

  const mutation: fc.Arbitrary<Mutation> = fc.oneof(
    fc.record({
      kind: fc.constant('flip' as const),
      at: fc.nat(),
      xor: fc.integer({ min: 1, max: 255 }),
    }),
    fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
    fc.record({
      kind: fc.constant('splice' as const),
      at: fc.nat(),
      remove: fc.nat({ max: 64 }),
      insert: fc.uint8Array({ maxLength: 64 }),
    }),
    fc.record({
      kind: fc.constant('u32' as const),
      at: fc.nat(),
      value: fc.integer({ min: 0, max: 0xffffffff }),
    }),
  );

  function apply(bytes: Uint8Array, m: Mutation): Uint8Array {
    const at = bytes.length === 0 ? 0 : m.at % bytes.length;
    switch (m.kind) {
      case 'flip': {
        const out = bytes.slice();
        if (out.length > 0) out[at] = (out[at] ?? 0) ^ m.xor;
        return out;
      }
      case 'truncate':
        return bytes.slice(0, at);
      case 'splice':
        return Buffer.concat([bytes.subarray(0, at), m.insert, bytes.subarray(at + m.remove)]);
      case 'u32': {
        const out = bytes.slice();
        if (at + 4 <= out.length) new DataView(out.buffer).setUint32(at, m.value, true);
        return out;
      }
    }
  }

  /** Mutates the body (header + payload) and re-frames it with a valid CRC and checksum. */
  function resealBody(image: Uint8Array, mutations: Mutation[]): Uint8Array {
    const headerLength = new DataView(image.buffer, image.byteOffset).getUint32(12, true);
    let body: Uint8Array = image.slice(PREFIX_BYTES, image.length - WRITTEN_DIGEST_BYTES);
    for (const m of mutations) body = apply(body, m);
    const headerEnd = Math.min(headerLength, body.length);
    return frame(body.subarray(0, headerEnd), body.subarray(headerEnd));
  }

  /** Sets one numeric field of the header to a hostile value, optionally keeping a section's sizes consistent. */
  function mutateHeader(image: Uint8Array, pick: number, value: number, consistent: boolean): Uint8Array {
    const parts = split(image);
    const targets: Array<(v: number) => void> = [
      (v) => (parts.header.memory.byteLength = v),
      (v) => (parts.header.memory.nonZeroPages = v),
      (v) => (parts.header.memory.diffPages = v),
    ];
    for (const s of parts.header.sections) {
      targets.push(
        (v) => (s.rawBytes = v),
        (v) => (s.storedBytes = v),
      );
      s.chunks.forEach((c, i) => {
        targets.push((v) => {
          if (consistent) s.rawBytes += v - c[0];
          s.chunks[i] = [v, c[1]];
        });
        targets.push((v) => {
          if (consistent) s.storedBytes += v - c[1];
          s.chunks[i] = [c[0], v];
        });
      });
    }
    targets[pick % targets.length]?.(value);
    return join(parts);
  }

  const hostileNumber = fc.oneof(
    fc.integer({ min: 0, max: 70_000 }),
    fc.constantFrom(0, 1, 3, 4, PAGE - 1, PAGE, PAGE + 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1),
  );

  const based = basedContents();
  const fullBase = { id: BASE_ID, full: based.base };

  async function mustOnlyThrowImageErrors(image: Uint8Array): Promise<void> {
    const limits = { maxImageBytes: 1 << 26, maxMemoryBytes: 1 << 26 };
    const into = (portable: boolean) => () =>
      decodeImageInto(
        image,
        (byteLength) => {
          const target = new Uint8Array(Math.max(byteLength, based.base.length));
          target.set(based.base);
          return target;
        },
        { ...limits, portable },
      );
    // decodeImageInto by the native codec (where it is built) and by the portable path.
    for (const run of [
      () => inspectImage(image),
      () => decodeImage(image, { ...limits, base: fullBase }),
      into(false),
      into(true),
    ]) {
      try {
        await run();
      } catch (err) {
        assert.ok(
          err instanceof RoamError && err.code.startsWith('ROAM_ERR_IMAGE_'),
          `unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
        );
      }
    }
  }

  // An image with every section, diffs included, stored verbatim so that mutations reach them.
  let base: Uint8Array | undefined;
  const baseImage = async (): Promise<Uint8Array> =>
    (base ??= await encodeImage({ ...based.contents, files: mixedMemory(2, 5) }, { level: 0, base: fullBase }));

  it('raw mutations only ever produce RoamErrors', async () => {
    const image = await baseImage();
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), async (mutations) => {
        let damaged = image;
        for (const m of mutations) damaged = apply(damaged, m);
        await mustOnlyThrowImageErrors(damaged);
      }),
      { numRuns: 100 },
    );
  });

  it('resealed mutations (valid checksum, bad contents) only ever produce RoamErrors', async () => {
    const image = await baseImage();
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 3 }), async (mutations) => {
        await mustOnlyThrowImageErrors(resealBody(image, mutations));
      }),
      { numRuns: 100 },
    );
  });

  it('hostile header numbers only ever produce RoamErrors', async () => {
    const image = await baseImage();
    await fc.assert(
      fc.asyncProperty(fc.nat(), hostileNumber, fc.boolean(), async (pick, value, consistent) => {
        await mustOnlyThrowImageErrors(mutateHeader(image, pick, value, consistent));
      }),
      { numRuns: 100 },
    );
  });
});

describe('the native codec (src/guest/image/native/codec.c)', () => {
  const problem = nativeCodecProblem();
  const needsNative = problem === undefined ? {} : { skip: `needs the native codec: ${problem}` };

  /** Restores `image` into a fresh memory (holding `base` first, if any) by one path or the other. */
  async function restored(image: Uint8Array, portable: boolean, base?: Uint8Array): Promise<Uint8Array> {
    let memory: Uint8Array | undefined;
    await decodeImageInto(
      image,
      (byteLength) => {
        memory = new Uint8Array(Math.max(byteLength, base?.length ?? 0));
        if (base) memory.set(base);
        return memory;
      },
      { portable, maxImageBytes: 1 << 26, maxMemoryBytes: 1 << 26 },
    );
    assert.ok(memory);
    return memory;
  }

  it('is built here (CI builds it with ROAM_NATIVE_REQUIRED=1)', needsNative, () => {
    assert.ok(nativeCodec(), problem);
  });

  it(
    "writes LZ4HC chunks that lz4_flex reads, and places lz4_flex's own as the portable path does",
    needsNative,
    async () => {
      // 64 pages, a third of them zero: several chunks, their pages not all consecutive in memory.
      const memory = mixedMemory(64, 21);
      const contents = contentsOf(memory);
      const native = await encodeImage(contents);
      const portable = await encodeImage(contents, { portable: true });
      assert.ok(!Buffer.from(native).equals(portable), 'the two encoders wrote the same bytes');
      for (const image of [native, portable]) {
        assertSameContents((await decodeImage(image)).contents, contents);
        for (const viaPortable of [false, true]) {
          const into = await restored(image, viaPortable);
          assert.ok(Buffer.from(into.subarray(0, memory.length)).equals(memory), `portable: ${viaPortable}`);
        }
      }
    },
  );

  it('applies diffs against a base as the portable path does', needsNative, async () => {
    const { base, memory, contents } = basedContents();
    const fullBase = { id: BASE_ID, full: base };
    for (const options of [{ base: fullBase }, { base: fullBase, level: 0 }]) {
      const image = await encodeImage(contents, options);
      assert.ok(inspectImage(image).memory.diffPages > 0);
      const native = await restored(image, false, base);
      assert.ok(Buffer.from(native.subarray(0, memory.length)).equals(memory));
      assert.ok(Buffer.from(native).equals(await restored(image, true, base)));
    }
  });

  it(
    'agrees with the portable path on every resealed mutation: the same memory, or both refuse',
    needsNative,
    async () => {
      const { base, contents } = basedContents();
      const fullBase = { id: BASE_ID, full: base };
      // Whole pages in an LZ4 chunk and pages as diffs, stored verbatim: mutations reach both.
      const image = await encodeImage(contents, { base: fullBase });
      const headerLength = new DataView(image.buffer, image.byteOffset).getUint32(12, true);
      const payloadBytes = image.length - PREFIX_BYTES - headerLength - WRITTEN_DIGEST_BYTES;
      const [memory, diffs] = [section(split(image), 'memory'), section(split(image), 'diffs')];
      assert.ok(memory.encoding === 'lz4' && memory.storedBytes < memory.rawBytes && diffs.storedBytes > 0);
      const outcome = async (portable: boolean, damaged: Uint8Array): Promise<Uint8Array | string> => {
        try {
          return await restored(damaged, portable, base);
        } catch (err) {
          assert.ok(err instanceof RoamError && err.code.startsWith('ROAM_ERR_IMAGE_'), String(err));
          return err.code;
        }
      };
      const flip = fc.tuple(fc.constantFrom(memory, diffs), fc.nat(), fc.integer({ min: 1, max: 255 }));
      await fc.assert(
        fc.asyncProperty(fc.array(flip, { minLength: 1, maxLength: 3 }), async (flips) => {
          const payload = image.slice(PREFIX_BYTES + headerLength, PREFIX_BYTES + headerLength + payloadBytes);
          for (const [where, at, xor] of flips) {
            const i = where.offset + (at % where.storedBytes);
            payload[i] = (payload[i] ?? 0) ^ xor;
          }
          const damaged = frame(image.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength), payload);
          const [native, portable] = [await outcome(false, damaged), await outcome(true, damaged)];
          if (typeof native === 'string' || typeof portable === 'string') assert.equal(native, portable);
          else assert.ok(Buffer.from(native).equals(portable), 'the two paths placed different memory');
        }),
        { numRuns: 150 },
      );
    },
  );
});

describe('the native codec under concurrent restores', () => {
  const problem = nativeCodecProblem();
  const needsNative = problem === undefined ? {} : { skip: `needs the native codec: ${problem}` };

  it(
    'places every page of two restores that overlap (the helpers take one, the other runs alone)',
    needsNative,
    async () => {
      // Enough LZ4 output (over 2 MiB) for each to want a helper.
      const memories = [mixedMemory(96, 31), mixedMemory(96, 32)];
      const images = await Promise.all(memories.map((memory) => encodeImage(contentsOf(memory))));
      for (const image of images) {
        const lz4 = split(image).header.sections.find((s) => s.name === 'memory');
        assert.ok(lz4 && lz4.encoding === 'lz4' && lz4.rawBytes > 2 * 1024 * 1024, 'the images need LZ4 work');
      }
      for (let round = 0; round < 5; round++) {
        const targets = memories.map((memory) => new Uint8Array(memory.length).fill(0xa5));
        await Promise.all(images.map((image, i) => decodeImageInto(image, () => targets[i] ?? new Uint8Array(0))));
        for (const [i, memory] of memories.entries())
          assert.ok(Buffer.from(targets[i] ?? []).equals(memory), `image ${i}`);
      }
    },
  );
});
