/**
 * The image header's validator, written out by hand (with src/common/validate.ts). Every restore
 * checks a header, and the schema library cost more than the rest of reading it: zod took 4-7 ms
 * over the first header a process checked and 0.25-0.6 ms per header after (of a 1 MiB guest's
 * 3 ms restore), this 0.01. The rules are the format's (format.ts); an error names the field, as
 * in `meta.kind: ...`.
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

/** An ISO 8601 date-time with seconds and a zone (Z or an offset), as `toISOString` writes. */
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

export function parseImageMeta(value: unknown, path = 'meta'): ImageMeta {
  const fields = object(value, path, ['kind', 'guestId', 'name', 'roamVersion', 'createdAt'], ['base']);
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
  const fields = object(value, path, ['name', 'offset', 'storedBytes', 'rawBytes', 'encoding', 'chunks']);
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
  const fields = object(value, '(root)', ['meta', 'memory', 'sections']);
  const memory = object(fields['memory'], 'memory', ['byteLength', 'pageSize', 'nonZeroPages'], ['diffPages']);
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
