/**
 * The image header's validator, written out by hand (with src/common/validate.ts). Every restore
 * checks a header, and the schema library cost more than the rest of reading it: zod took 4-7 ms
 * over the first header a process checked and 0.25-0.6 ms per header after (of a 1 MiB guest's
 * 3 ms restore), this 0.01. The rules are the format's (format.ts); an error names the field, as
 * in `meta.kind: ...`.
 *
 * It runs in two passes: `isImageHeader` accepts a well-formed header with plain tests and no
 * copy, and only a header it refuses goes through `checkImageHeader`, which says what is wrong.
 * A restore runs cold (its host has been idle), and there the one pass that built a path string
 * and a new object per field took 0.04 ms of a 1 MiB guest's 1.1 ms restore.
 */
import {
  MAX_CHUNK_BYTES,
  PAGE_SIZE,
  SECTION_ENCODINGS,
  SECTION_NAMES,
  type ImageHeader,
  type ImageMeta,
  type SectionHeader,
} from './format.js';
import { ValidationError as HeaderError, at, integer, object, oneOf, text } from '../../common/validate.js';

/** A header that breaks the format's rules; the message names the field. */
export { HeaderError };

const size = (value: unknown, path: string): number => integer(value, path, 0, Number.MAX_SAFE_INTEGER);

/** Each object's keys (and the optional `base` of meta, `diffPages` of memory), for both passes below. */
const ROOT_KEYS = ['meta', 'memory', 'sections'] as const;
const META_KEYS = ['kind', 'guestId', 'name', 'roamVersion', 'createdAt'] as const;
const MEMORY_KEYS = ['byteLength', 'pageSize', 'nonZeroPages'] as const;
const SECTION_KEYS = ['name', 'offset', 'storedBytes', 'rawBytes', 'encoding', 'chunks'] as const;

/** An ISO 8601 date-time with seconds and a zone (Z or an offset), as `toISOString` writes. */
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

export function parseImageMeta(value: unknown, path = 'meta'): ImageMeta {
  const fields = object(value, path, META_KEYS, ['base']);
  const createdAt = text(fields['createdAt'], at(path, 'createdAt'), 1, 64);
  if (!DATE_TIME.test(createdAt) || Number.isNaN(Date.parse(createdAt))) {
    throw new HeaderError(`${at(path, 'createdAt')}: expected an ISO 8601 date-time`);
  }
  const meta: ImageMeta = {
    kind: oneOf(fields['kind'], at(path, 'kind'), ['js', 'wasm'] as const),
    guestId: text(fields['guestId'], at(path, 'guestId'), 1, 1024),
    name: text(fields['name'], at(path, 'name'), 0, 1024),
    roamVersion: text(fields['roamVersion'], at(path, 'roamVersion'), 1, 256),
    createdAt,
  };
  if (fields['base'] !== undefined) meta.base = text(fields['base'], at(path, 'base'), 1, 128);
  return meta;
}

function parseSection(value: unknown, path: string): SectionHeader {
  const fields = object(value, path, SECTION_KEYS);
  const chunks = fields['chunks'];
  if (!Array.isArray(chunks)) throw new HeaderError(`${at(path, 'chunks')}: expected an array`);
  return {
    name: oneOf(fields['name'], at(path, 'name'), SECTION_NAMES),
    offset: size(fields['offset'], at(path, 'offset')),
    storedBytes: size(fields['storedBytes'], at(path, 'storedBytes')),
    rawBytes: size(fields['rawBytes'], at(path, 'rawBytes')),
    encoding: oneOf(fields['encoding'], at(path, 'encoding'), SECTION_ENCODINGS),
    chunks: chunks.map((chunk: unknown, i): [number, number] => {
      const where = at(at(path, 'chunks'), i);
      if (!Array.isArray(chunk) || chunk.length !== 2)
        throw new HeaderError(`${where}: expected [rawBytes, storedBytes]`);
      return [integer(chunk[0], at(where, 0), 1, MAX_CHUNK_BYTES), integer(chunk[1], at(where, 1), 1, MAX_CHUNK_BYTES)];
    }),
  };
}

/** Checks a parsed header JSON value and returns it typed; throws a HeaderError naming the field. */
export function parseImageHeader(value: unknown): ImageHeader {
  return isImageHeader(value) ? value : checkImageHeader(value);
}

// --- the first pass: accepts exactly what the second does, or less (which the second then takes) ---

type Fields = Record<string, unknown>;

/** An object whose own keys are every one of `required` and none but those and `optional`. */
function hasKeys(value: unknown, required: readonly string[], optional?: string): value is Fields {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  for (const key of required) if (!Object.hasOwn(value, key)) return false;
  const count = optional !== undefined && Object.hasOwn(value, optional) ? required.length + 1 : required.length;
  return Object.keys(value).length === count;
}

const isSize = (value: unknown): boolean =>
  typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= Number.MAX_SAFE_INTEGER;

const isText = (value: unknown, min: number, max: number): value is string =>
  typeof value === 'string' && value.length >= min && value.length <= max;

const isChunkSize = (value: unknown): boolean =>
  typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= MAX_CHUNK_BYTES;

function isMeta(value: unknown): boolean {
  if (!hasKeys(value, META_KEYS, 'base')) return false;
  const { kind, guestId, name, roamVersion, createdAt, base } = value;
  return (
    (kind === 'js' || kind === 'wasm') &&
    isText(guestId, 1, 1024) &&
    isText(name, 0, 1024) &&
    isText(roamVersion, 1, 256) &&
    isText(createdAt, 1, 64) &&
    DATE_TIME.test(createdAt) &&
    !Number.isNaN(Date.parse(createdAt)) &&
    (base === undefined || isText(base, 1, 128))
  );
}

function isSection(value: unknown): boolean {
  if (!hasKeys(value, SECTION_KEYS)) return false;
  const { name, offset, storedBytes, rawBytes, encoding, chunks } = value;
  if (!(SECTION_NAMES as readonly unknown[]).includes(name)) return false;
  if (!(SECTION_ENCODINGS as readonly unknown[]).includes(encoding)) return false;
  if (!isSize(offset) || !isSize(storedBytes) || !isSize(rawBytes) || !Array.isArray(chunks)) return false;
  for (const chunk of chunks as unknown[]) {
    if (!Array.isArray(chunk) || chunk.length !== 2 || !isChunkSize(chunk[0]) || !isChunkSize(chunk[1])) return false;
  }
  return true;
}

/** A header `checkImageHeader` would accept as it is, so it needs no copy. */
export function isImageHeader(value: unknown): value is ImageHeader {
  if (!hasKeys(value, ROOT_KEYS)) return false;
  const { meta, memory, sections } = value;
  if (!hasKeys(memory, MEMORY_KEYS, 'diffPages') || memory['pageSize'] !== PAGE_SIZE) return false;
  if (!isSize(memory['byteLength']) || !isSize(memory['nonZeroPages'])) return false;
  if (memory['diffPages'] !== undefined && !isSize(memory['diffPages'])) return false;
  if (
    !Array.isArray(sections) ||
    (sections.length !== SECTION_NAMES.length - 1 && sections.length !== SECTION_NAMES.length)
  ) {
    return false;
  }
  return isMeta(meta) && (sections as unknown[]).every(isSection);
}

// --- the second pass: says what is wrong ---

/** The header checked field by field into a new object; throws a HeaderError naming the first wrong field. */
export function checkImageHeader(value: unknown): ImageHeader {
  const fields = object(value, '(root)', ROOT_KEYS);
  const memory = object(fields['memory'], 'memory', MEMORY_KEYS, ['diffPages']);
  if (memory['pageSize'] !== PAGE_SIZE) throw new HeaderError(`memory.pageSize: expected ${PAGE_SIZE}`);
  const sections = fields['sections'];
  const counts = [SECTION_NAMES.length - 1, SECTION_NAMES.length];
  if (!Array.isArray(sections) || !counts.includes(sections.length)) {
    throw new HeaderError(`sections: expected an array of ${counts.join(' or ')}`);
  }
  const header: ImageHeader = {
    meta: parseImageMeta(fields['meta']),
    memory: {
      byteLength: size(memory['byteLength'], 'memory.byteLength'),
      pageSize: PAGE_SIZE,
      nonZeroPages: size(memory['nonZeroPages'], 'memory.nonZeroPages'),
    },
    sections: sections.map((section: unknown, i) => parseSection(section, `sections[${i}]`)),
  };
  if (memory['diffPages'] !== undefined) header.memory.diffPages = size(memory['diffPages'], 'memory.diffPages');
  return header;
}
