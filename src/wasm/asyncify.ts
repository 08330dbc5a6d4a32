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
  private saved: Uint8Array | undefined;
  /** The unwound stack while the guest is suspended (undefined while it runs, or before it started). */
  stack: Uint8Array | undefined;

  constructor(
    private readonly ex: AsyncifyExports,
    private readonly memory: WebAssembly.Memory,
    private readonly capacity = REGION_BYTES,
  ) {}

  private borrow(): DataView {
    const mem = new Uint8Array(this.memory.buffer);
    this.saved = mem.slice(0, Math.min(this.capacity, mem.length));
    return new DataView(this.memory.buffer);
  }

  private giveBack(): void {
    if (this.saved) new Uint8Array(this.memory.buffer).set(this.saved, 0);
    this.saved = undefined;
  }

  /** In an import: starts unwinding; the import then returns, and so does every frame up to the export. */
  startUnwind(): void {
    const view = this.borrow();
    view.setUint32(0, HEADER_BYTES, true);
    view.setUint32(4, this.saved?.length ?? 0, true);
    this.ex.asyncify_start_unwind(0);
  }

  /** After the entered export returned: true if it unwound (the stack is then in `stack`). */
  finishUnwind(): boolean {
    if (this.ex.asyncify_get_state() !== STATE_UNWINDING) return false;
    this.ex.asyncify_stop_unwind();
    const end = new DataView(this.memory.buffer).getUint32(0, true);
    this.stack = new Uint8Array(this.memory.buffer).slice(HEADER_BYTES, end);
    this.giveBack();
    return true;
  }

  /** Before calling the export again: rewinds into the import that unwound. */
  startRewind(): void {
    const stack = this.stack;
    if (!stack) throw new RoamError('ROAM_ERR_GUEST_STATE', 'there is no unwound stack to rewind');
    const view = this.borrow();
    const room = this.saved?.length ?? 0;
    if (HEADER_BYTES + stack.length > room) {
      this.giveBack();
      throw new RoamError(
        'ROAM_ERR_IMAGE_MALFORMED',
        `the unwound stack of ${stack.length} bytes does not fit the ${room}-byte area it is rewound from`,
      );
    }
    new Uint8Array(this.memory.buffer).set(stack, HEADER_BYTES);
    view.setUint32(0, HEADER_BYTES + stack.length, true);
    view.setUint32(4, room, true);
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
