/**
 * What a WebAssembly module must not use. Roam captures a guest as linear memory plus mutable
 * globals plus the stack that asyncify unwinds; a feature whose state lives elsewhere, or that
 * asyncify cannot unwind through, would be captured wrong, so a module that uses one is refused
 * with an error naming the feature (code ROAM_ERR_WASM_FEATURE), never run.
 *
 * Two checks share the work: `scanSections` reads the binary's section headers (shared memory,
 * 64-bit or several memories, exception tags, GC types), cheaply and before binaryen parses
 * anything; `featureOfExpression` names the feature of an instruction the instrumenter's IR walk
 * meets (SIMD, atomics, exceptions, GC, tail calls, table mutation).
 */
import { RoamError } from '../errors.js';

export type RefusedFeature =
  | 'threads'
  | 'SIMD'
  | 'exceptions'
  | 'GC'
  | 'tail calls'
  | 'memory64'
  | 'multiple memories'
  | 'stack switching'
  | 'table mutation';

const WHY: Record<RefusedFeature, string> = {
  threads: 'shared memory and atomics (build without -pthread / --enable-threads)',
  SIMD: 'v128 values (build without -msimd128 / --enable-simd)',
  exceptions: 'WebAssembly exception handling (build with -fno-exceptions, or without --enable-exception-handling)',
  GC: 'garbage-collected struct, array or i31 references, whose state lives outside linear memory',
  'tail calls': 'return_call instructions, which asyncify cannot unwind through',
  memory64: 'a 64-bit memory (Roam captures wasm32 memories only)',
  'multiple memories': 'more than one linear memory',
  'stack switching': 'continuations (stack switching)',
  'table mutation': 'table.set, table.grow or other writes to a table, whose contents are not captured',
};

export function refuse(feature: RefusedFeature, where?: string): RoamError {
  return new RoamError(
    'ROAM_ERR_WASM_FEATURE',
    `unsupported WebAssembly feature: ${feature}${where ? ` (in ${where})` : ''}: the module uses ${WHY[feature]}, which Roam cannot checkpoint; rebuild the program without it`,
  );
}

export function malformedModule(message: string, cause?: unknown): RoamError {
  return new RoamError('ROAM_ERR_WASM_MODULE', message, cause === undefined ? undefined : { cause });
}

/** A cursor over the module's bytes with LEB128 reads; throws on reading past the end. */
class Reader {
  constructor(
    readonly bytes: Uint8Array,
    public at = 0,
  ) {}
  byte(): number {
    const b = this.bytes[this.at++];
    if (b === undefined) throw malformedModule('not a valid WebAssembly module: unexpected end of a section');
    return b;
  }
  u32(): number {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
    }
    throw malformedModule('not a valid WebAssembly module: overlong LEB128 number');
  }
}

const TYPE_SECTION = 1;
const IMPORT_SECTION = 2;
const MEMORY_SECTION = 5;
const TAG_SECTION = 13;
const FUNC_FORM = 0x60;
/** struct, array, rec, sub, sub final, and the descriptor forms: all GC proposal type forms. */
const GC_FORMS = new Set([0x5f, 0x5e, 0x4e, 0x50, 0x4f, 0x4d, 0x4c]);

/** Limits flags: bit 1 shared, bit 2 memory64. Returns the first refused feature, if any. */
function memoryLimits(flags: number): RefusedFeature | undefined {
  if (flags & 0x02) return 'threads';
  if (flags & 0x04) return 'memory64';
  return undefined;
}

/**
 * Reads the section headers of a module and refuses the features visible there. Does not
 * validate the module (WebAssembly.validate does); stops quietly where the layout is not what it
 * expects, leaving the verdict to the validator.
 */
export function scanSections(bytes: Uint8Array): void {
  if (bytes.length < 8 || bytes[0] !== 0x00 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) {
    throw malformedModule('not a WebAssembly module (wrong magic bytes)');
  }
  if (bytes[4] !== 1 || bytes[5] !== 0 || bytes[6] !== 0 || bytes[7] !== 0) {
    throw malformedModule('not a WebAssembly core module of version 1 (components are not supported)');
  }
  const r = new Reader(bytes, 8);
  let memories = 0;
  while (r.at < bytes.length) {
    const id = r.byte();
    const size = r.u32();
    const end = r.at + size;
    if (end > bytes.length) throw malformedModule('not a valid WebAssembly module: a section extends past its end');
    const s = new Reader(bytes.subarray(0, end), r.at);
    if (id === TAG_SECTION) throw refuse('exceptions', 'the tag section');
    if (id === TYPE_SECTION) {
      const count = s.u32();
      if (count > 0) {
        const form = s.byte();
        // Only the first entry's form is checked cheaply here; the IR walk catches the rest.
        if (GC_FORMS.has(form)) throw refuse('GC', 'the type section');
        if (form !== FUNC_FORM)
          throw malformedModule(`not a valid WebAssembly module: type form 0x${form.toString(16)}`);
      }
    } else if (id === MEMORY_SECTION) {
      const count = s.u32();
      memories += count;
      for (let i = 0; i < count; i++) {
        const refused = memoryLimits(s.byte());
        if (refused) throw refuse(refused, 'the memory section');
        break;
      }
    } else if (id === IMPORT_SECTION) {
      const count = s.u32();
      for (let i = 0; i < count; i++) {
        for (let name = 0; name < 2; name++) {
          // Not `s.at += s.u32()`: that adds the length to where the cursor was before the read.
          const length = s.u32();
          s.at += length;
        }
        const kind = s.byte();
        if (kind === 0x00) s.u32();
        else if (kind === 0x01) {
          s.byte();
          const flags = s.byte();
          s.u32();
          if (flags & 0x01) s.u32();
        } else if (kind === 0x02) {
          memories++;
          const flags = s.byte();
          const refused = memoryLimits(flags);
          if (refused) throw refuse(refused, 'an imported memory');
          s.u32();
          if (flags & 0x01) s.u32();
        } else if (kind === 0x03) {
          s.byte();
          s.byte();
        } else if (kind === 0x04) {
          throw refuse('exceptions', 'an imported tag');
        } else {
          break;
        }
      }
    }
    r.at = end;
  }
  if (memories > 1) throw refuse('multiple memories');
}

/**
 * The refused feature an expression class belongs to, by its binaryen name (`AtomicRMW`,
 * `SIMDShuffle`, `Try`, `StructNew`, ...), or undefined for a class the walk does not know at all.
 */
export function featureOfExpression(name: string): RefusedFeature | undefined {
  if (/^Atomic|^Pause$|Wait$|^Waitqueue/.test(name)) return 'threads';
  if (/^SIMD/.test(name)) return 'SIMD';
  if (/^(Try|Throw|Rethrow)/.test(name)) return 'exceptions';
  if (/^(Struct|Array|RefI31|I31Get|RefTest|RefCast|RefGetDesc|BrOn|CallRef|String)/.test(name)) return 'GC';
  if (/^(Cont|Suspend|Resume|StackSwitch)/.test(name)) return 'stack switching';
  if (/^(TableSet|TableGrow|TableFill|TableCopy|TableInit|ElemDrop)$/.test(name)) return 'table mutation';
  return undefined;
}
