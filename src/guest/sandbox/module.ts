/**
 * The QuickJS WebAssembly module, compiled once per process.
 *
 * We use Bellard's QuickJS (`@jitl/quickjs-wasmfile-release-sync`), not QuickJS-ng: on this
 * project's fib-plus-allocation workload it ran 560-800 ms against QuickJS-ng's 970-990 ms
 * (2 cores, Node 20, 2026-11-26), and both snapshot and restore the same way.
 *
 * Compiling the ~500 KB module takes tens of milliseconds; instantiating a precompiled one for a
 * new guest takes about 10 ms. Every sandbox shares the compiled module and owns its memory.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import variantModule from '@jitl/quickjs-wasmfile-release-sync';
import {
  newQuickJSWASMModuleFromVariant,
  newVariant,
  type CustomizeVariantOptions,
  type QuickJSSyncVariant,
  type QuickJSWASMModule,
} from 'quickjs-emscripten-core';

// The package's ESM entry default-exports the variant; its CommonJS typings describe a namespace.
const variant = variantModule as unknown as QuickJSSyncVariant;

export const WASM_PAGE = 65536;

let wasmBytes: Promise<Uint8Array<ArrayBuffer>> | undefined;
let compiled: Promise<WebAssembly.Module> | undefined;

/** The QuickJS module's binary. */
export function quickjsBinary(): Promise<Uint8Array<ArrayBuffer>> {
  wasmBytes ??= (async () => {
    const require = createRequire(import.meta.url);
    const pkg = dirname(require.resolve('@jitl/quickjs-wasmfile-release-sync/package.json'));
    return readFile(join(pkg, 'dist', 'emscripten-module.wasm'));
  })();
  return wasmBytes;
}

/** The compiled QuickJS module, shared by every sandbox in this process. */
export function quickjsModule(): Promise<WebAssembly.Module> {
  compiled ??= (async () => WebAssembly.compile(await quickjsBinary()))();
  return compiled;
}

/** The part of the Emscripten module we reach past quickjs-emscripten for: raw malloc/free. */
interface EmscriptenHeap {
  _malloc(size: number): number;
  _free(ptr: number): void;
}

/**
 * Emscripten writes environment strings into the guest's memory: the program name (by default
 * process.argv[1], the path of whatever script started this process) and LANG (from
 * navigator.language, which only Node 21 and later have). Their lengths shift every later
 * allocation, and a memory captured with one layout cannot be restored into an instance that
 * allocated its runtime and context with another. So both are pinned: an image restores
 * whatever the path Roam is installed at, and whichever Node version runs it.
 */
function pinEmscriptenEnvironment(): void {
  const nav = (globalThis as { navigator?: { language?: string } }).navigator;
  if (nav && nav.language !== undefined) {
    Object.defineProperty(nav, 'language', { value: undefined, configurable: true });
  }
}

export interface Instance {
  readonly qjs: QuickJSWASMModule;
  readonly memory: WebAssembly.Memory;
  /** Grows the linear memory through the module's own allocator, so Emscripten's views follow. */
  growTo(byteLength: number): void;
  /** Allocates raw bytes in the instance's heap (0 if it cannot): for probing its layout (heap-end.ts). */
  malloc(size: number): number;
}

/**
 * A fresh instance with its own linear memory. `maxBytes` is a hard ceiling: growth past it fails
 * inside the allocator and QuickJS reports "out of memory" to the guest. `reuse`: a memory an
 * earlier instance made with the same `maxBytes` left behind, all zero now (its pages are backed
 * already); the new instance is made on it, as on a fresh one of its size.
 */
export async function instantiate(maxBytes: number, initialBytes = 0, reuse?: WebAssembly.Memory): Promise<Instance> {
  const wasmModule = await quickjsModule();
  const maximum = Math.max(256, Math.ceil(maxBytes / WASM_PAGE));
  // A memory made large from the start needs no growing later: growing goes through the
  // allocator, which writes to it (see growTo). Its pages are only backed once written.
  const initial = Math.min(maximum, Math.max(256, Math.ceil(initialBytes / WASM_PAGE)));
  const memory = reuse ?? new WebAssembly.Memory({ initial, maximum });
  pinEmscriptenEnvironment();
  const qjs = await newQuickJSWASMModuleFromVariant(
    newVariant(variant, {
      wasmModule,
      wasmMemory: memory,
      // A real Emscripten module option that quickjs-emscripten's typings leave out.
      emscriptenModule: { thisProgram: 'roam-guest' } as CustomizeVariantOptions['emscriptenModule'],
    }),
  );
  const heap = (qjs as unknown as { module: EmscriptenHeap }).module;
  return {
    qjs,
    memory,
    malloc: (size: number) => heap._malloc(size),
    growTo(byteLength: number) {
      // Growing the Memory directly would leave Emscripten's typed-array views on the old buffer;
      // allocating makes Emscripten grow it and refresh them. The allocator writes its bookkeeping
      // as it does: callers overwrite the memory next, or put back what was there (Sandbox.grow).
      // Asking for what is missing at once grows it to about that size; Emscripten adds 20% per
      // growth to small requests.
      const blocks: number[] = [];
      try {
        while (memory.buffer.byteLength < byteLength) {
          const ptr = heap._malloc(Math.max(1 << 20, byteLength - memory.buffer.byteLength));
          if (ptr === 0) throw new Error(`cannot grow guest memory to ${byteLength} bytes`);
          blocks.push(ptr);
        }
      } finally {
        for (const ptr of blocks) heap._free(ptr);
      }
    },
  };
}
