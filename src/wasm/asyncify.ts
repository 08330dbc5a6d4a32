/**
 * The host side of asyncify: unwinding a guest out of an import call, and rewinding it back in.
 *
 * The unwound stack needs a data area in linear memory while asyncify writes or reads it. Rather
 * than asking every program to be linked with a reserved area (DESIGN.md's proof used
 * `--global-base=65536`), the host borrows the first REGION_BYTES of memory for the moment of an
 * unwind or a rewind: it saves their bytes, lets asyncify use them, copies the unwound stack out,
 * and puts the saved bytes back. No guest code runs while they are borrowed (unwinding and
 * rewinding only save and restore locals), so the guest never sees them changed, any module works
 * as it was built, and while the guest is suspended its memory is exactly its own: a checkpoint
 * copies it as it is and keeps the unwound stack beside it.
 */
import { RoamError } from '../errors.js';

/** Bytes borrowed for one unwind or rewind (less if the memory is smaller): bounds the unwound stack. */
export const REGION_BYTES = 1024 * 1024;
const HEADER_BYTES = 8;
const STATE_UNWINDING = 1;
const STATE_REWINDING = 2;

export interface AsyncifyExports {
  asyncify_start_unwind(data: number): void;
  asyncify_stop_unwind(): void;
  asyncify_start_rewind(data: number): void;
  asyncify_stop_rewind(): void;
  asyncify_get_state(): number;
}

export function asyncifyExports(exports: Record<string, unknown>): AsyncifyExports {
  const names = [
    'asyncify_start_unwind',
    'asyncify_stop_unwind',
    'asyncify_start_rewind',
    'asyncify_stop_rewind',
    'asyncify_get_state',
  ] as const;
  for (const name of names) {
    if (typeof exports[name] !== 'function') {
      throw new RoamError('ROAM_ERR_WASM_MODULE', `the instrumented module has no ${name} export`);
    }
  }
  return exports as unknown as AsyncifyExports;
}

export class Asyncify {
  /** The borrowed bytes' own contents while asyncify uses them (reused: a yield allocates nothing). */
  private saved: Uint8Array | undefined;
  /** How many bytes from the start of memory are borrowed now (0: none). */
  private borrowed = 0;
  /** The unwound stack while the guest is suspended (undefined while it runs, or before it started). */
  stack: Uint8Array | undefined;

  constructor(
    private readonly ex: AsyncifyExports,
    private readonly memory: WebAssembly.Memory,
    private readonly capacity = REGION_BYTES,
  ) {}

  /** Saves the first `bytes` of memory (at most the capacity, or the memory); returns how many. */
  private borrow(bytes: number): number {
    const mem = new Uint8Array(this.memory.buffer);
    const n = Math.min(bytes, this.capacity, mem.length);
    if (!this.saved || this.saved.length < n) this.saved = new Uint8Array(Math.min(this.capacity, mem.length));
    this.saved.set(mem.subarray(0, n));
    this.borrowed = n;
    return n;
  }

  /** Puts back the first `used` borrowed bytes: asyncify wrote nothing beyond them. */
  private giveBack(used = this.borrowed): void {
    if (this.saved && this.borrowed > 0) {
      new Uint8Array(this.memory.buffer).set(this.saved.subarray(0, Math.min(used, this.borrowed)), 0);
    }
    this.borrowed = 0;
  }

  /** In an import: starts unwinding; the import then returns, and so does every frame up to the export. */
  startUnwind(): void {
    // How deep the stack is cannot be known before it unwinds: the whole area is borrowed.
    const room = this.borrow(this.capacity);
    const view = new DataView(this.memory.buffer);
    view.setUint32(0, HEADER_BYTES, true);
    view.setUint32(4, room, true);
    this.ex.asyncify_start_unwind(0);
  }

  /** After the entered export returned: true if it unwound (the stack is then in `stack`). */
  finishUnwind(): boolean {
    if (this.ex.asyncify_get_state() !== STATE_UNWINDING) return false;
    this.ex.asyncify_stop_unwind();
    const end = new DataView(this.memory.buffer).getUint32(0, true);
    this.stack = new Uint8Array(this.memory.buffer).slice(HEADER_BYTES, end);
    // Asyncify wrote the header and the stack, up to `end`, and nothing beyond (it traps first).
    this.giveBack(Math.max(end, HEADER_BYTES));
    return true;
  }

  /** Before calling the export again: rewinds into the import that unwound. */
  startRewind(): void {
    const stack = this.stack;
    if (!stack) throw new RoamError('ROAM_ERR_GUEST_STATE', 'there is no unwound stack to rewind');
    const need = HEADER_BYTES + stack.length;
    const room = Math.min(this.capacity, this.memory.buffer.byteLength);
    if (need > room) {
      throw new RoamError(
        'ROAM_ERR_IMAGE_MALFORMED',
        `the unwound stack of ${stack.length} bytes does not fit the ${room}-byte area it is rewound from`,
      );
    }
    // Rewinding only reads the stack back: the area it needs is all that is borrowed.
    this.borrow(need);
    new Uint8Array(this.memory.buffer).set(stack, HEADER_BYTES);
    const view = new DataView(this.memory.buffer);
    view.setUint32(0, need, true);
    view.setUint32(4, need, true);
    this.stack = undefined;
    this.ex.asyncify_start_rewind(0);
  }

  /** First thing in an import that may wait: true if this call is a rewind arriving (now finished). */
  finishRewind(): boolean {
    if (this.ex.asyncify_get_state() !== STATE_REWINDING) return false;
    this.ex.asyncify_stop_rewind();
    this.giveBack();
    return true;
  }

  /** After a trap during an unwind or rewind: the borrowed bytes go back all the same. */
  abandon(): void {
    this.giveBack();
  }
}
