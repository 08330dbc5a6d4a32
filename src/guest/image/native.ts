/**
 * The native image codec (native/codec.c, built by scripts/build-native.mjs into
 * dist/roam-image.node): LZ4HC chunks, and a restore's pages decoded straight into the sandbox by
 * every core. Optional: without it (no C compiler or liblz4 when Roam was built, or ROAM_NATIVE=0)
 * images are written and read by the portable path in work.ts, in the same format.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { packageRoot } from '../../package-root.js';

export interface NativeCodec {
  /** One 'lz4' chunk (format.ts): the raw length as u32 LE, then an LZ4HC block; on the libuv pool. */
  compressChunk(raw: Uint8Array, level: number): Promise<Uint8Array>;
  /**
   * Starts placing memory and diffs chunks into `memory` (five numbers per job in `jobs`: a
   * PLACE_KIND, stored offset in the image, stored length, raw length, raw offset in the section)
   * on helper threads, and returns. Until `placeFinish`, `image`, `seen` and `memory` are the
   * codec's: the caller must not touch them, nor grow the memory.
   */
  placeStart(
    image: Uint8Array,
    jobs: Float64Array,
    pages: Uint32Array,
    seen: Uint8Array,
    memory: Uint8Array,
  ): Placement;
  /**
   * Does the jobs still left on this thread, waits for the helpers' and returns one number per
   * job: diff records applied, or a negative code of PLACE_ERRORS.
   */
  placeFinish(placement: Placement): Int32Array;
}

/** A placement under way (an opaque handle of the native codec). */
export type Placement = { readonly __placement: unique symbol };

export const PLACE_KIND = { memoryVerbatim: 0, memoryLz4: 1, diffsVerbatim: 2, diffsLz4: 3 } as const;
export const PLACE_JOB_NUMBERS = 5;

export const PLACE_NO_MEMORY = -7;

/** What each negative result of `placeFinish` means (codec.c, enum Failure). */
export const PLACE_ERRORS: Readonly<Record<number, string>> = {
  [-1]: 'its place in the image is out of range',
  [-2]: 'is not an LZ4 block',
  [-3]: 'does not come to the size its header declares',
  [-4]: 'puts a page outside the memory',
  [-5]: 'holds a diff record that is cut off or out of order',
  [-6]: 'stores a page twice',
  [-7]: 'could not get a buffer to decode into',
};

/**
 * LZ4HC level for images. On the 16 MiB bench heap's 20.6 MB of pages in 1 MiB chunks, one thread
 * (this codec, 2026-11-28): level 4 made 26.8% of the size in 143 ms and decoded in 2.54 ms;
 * level 2 28.8%, 128 ms, 3.34 ms; level 6 26.0%, 196 ms, 2.22 ms; lz4_flex's fast mode (the
 * portable encoder) 32.8%, 77 ms, 4.13 ms. A restore (a guest resumed from a backup image or by
 * `roam guest resume`) decodes every byte before the guest runs again; an image is written once,
 * on the thread pool, off the pause.
 */
export const LZ4HC_LEVEL = 4;

const ABI = 3;
let loaded: { codec?: NativeCodec; problem?: string } | undefined;

function load(): { codec?: NativeCodec; problem?: string } {
  if (process.env['ROAM_NATIVE'] === '0') return { problem: 'turned off by ROAM_NATIVE=0' };
  const file = join(packageRoot(), 'dist', 'roam-image.node');
  if (!existsSync(file)) return { problem: `${file} was not built (see scripts/build-native.mjs)` };
  try {
    const module: unknown = createRequire(import.meta.url)(file);
    if (isNativeCodec(module)) return { codec: module };
    return { problem: `${file} is not a native codec of ABI ${ABI}: rebuild with npm run build` };
  } catch (err) {
    return { problem: `${file} did not load: ${err instanceof Error ? err.message : String(err)}` };
  }
}

function isNativeCodec(value: unknown): value is NativeCodec {
  if (typeof value !== 'object' || value === null) return false;
  const module = value as Record<string, unknown>;
  return (
    module['abi'] === ABI &&
    typeof module['compressChunk'] === 'function' &&
    typeof module['placeStart'] === 'function' &&
    typeof module['placeFinish'] === 'function'
  );
}

/** The native codec, or undefined when this Roam runs without it (`nativeCodecProblem` says why). */
export function nativeCodec(): NativeCodec | undefined {
  loaded ??= load();
  return loaded.codec;
}

/** Why there is no native codec, or undefined when there is one. */
export function nativeCodecProblem(): string | undefined {
  loaded ??= load();
  return loaded.problem;
}
