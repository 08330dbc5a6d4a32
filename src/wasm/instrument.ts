/**
 * Load-time instrumentation of a WebAssembly guest with binaryen.js, so that it can be captured at
 * any moment and continued elsewhere (DESIGN.md records the measured proof):
 *
 * - fuel: one unit is counted at every loop header and at the entry of every recursive function;
 *   every fuel interval of units the `roam.poll` import is called. So even a loop that calls
 *   nothing, or a recursion that never loops, yields within one fuel interval; polls are the points
 *   where the host may unwind the guest. Where the polls go, and why there (cost), is polls.ts.
 * - asyncify, limited to the imports that may wait (`roam.poll` and the WASI calls that block:
 *   poll_oneoff, fd_read, fd_write, sock_*, sched_yield): only functions that can reach them are
 *   instrumented. The unwound stack goes into a region the host borrows from linear memory and
 *   gives back (see asyncify.ts), so no compile flag has to reserve one.
 * - every mutable global of the program is exported (compilers export none), so the host can read
 *   and write all of them: the stack pointer, the heap's top, anything the program keeps there.
 * - a wasm start function, which would run again at every instantiation (restores included), is
 *   turned into an ordinary export that the guest calls once, before `_start`.
 *
 * The result carries its own description in a custom section (`roam.instrumented`), and is cached
 * by the hash of the original module and of everything that affects the output.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { loadBinaryen, type Binaryen, type BinaryenModule } from './binaryen.js';
import { malformedModule, refuse, scanSections } from './features.js';
import {
  callGraph,
  placePolls,
  reachingFuel,
  recursiveFunctions,
  scanFunction,
  walker,
  type FunctionScan,
} from './polls.js';
import { instrumentOffThread } from './instrument-thread.js';

/** Bump when the instrumentation changes its output: it is part of every cache key. */
export const INSTRUMENTER_VERSION = 4;
export const BINARYEN_VERSION = '132.0.0';
export const INFO_SECTION = 'roam.instrumented';
export const POLL_MODULE = 'roam';
export const POLL_NAME = 'poll';
export const WASI_MODULE = 'wasi_snapshot_preview1';
/** WASI calls that may have to wait, and so may unwind the guest. */
export const WAITING_WASI_CALLS = [
  'poll_oneoff',
  'fd_read',
  'fd_write',
  'sock_accept',
  'sock_recv',
  'sock_send',
  'sched_yield',
] as const;
/** AssemblyScript's own imports, answered by Roam (see wasi/assemblyscript.ts). */
export const ASSEMBLYSCRIPT_IMPORTS = ['abort', 'seed', 'trace'] as const;

export interface InstrumentOptions {
  /**
   * Loop iterations (and entries of recursive functions) between two polls. Default 10000: chosen by
   * `npm run bench:wasm` (BENCHMARKS.md) as about the smallest interval whose cost is lost in the
   * noise (the count itself costs the same at any interval; a poll costs one call into the host,
   * which reads the clock).
   */
  fuelInterval?: number;
  /** binaryen optimize level for asyncify's own clean-up (0-4). Default 2. */
  optimizeLevel?: number;
}

export const DEFAULT_FUEL_INTERVAL = 10_000;

const globalTypes = ['i32', 'i64', 'f32', 'f64'] as const;
export type GlobalType = (typeof globalTypes)[number];

export const instrumentedInfoSchema = z.strictObject({
  format: z.literal(1),
  instrumenter: z.number().int(),
  binaryen: z.string(),
  /** SHA-256 (hex) of the module as the user gave it. */
  source: z.string().regex(/^[0-9a-f]{64}$/),
  fuelInterval: z.number().int().min(1),
  /** The program's mutable globals, as exported for capture, in a fixed order. */
  globals: z.array(z.strictObject({ export: z.string(), type: z.enum(globalTypes) })).max(1_000_000),
  /** Exports the guest enters, in order: a former start function, then `_start`. */
  entries: z.array(z.string()).min(1).max(2),
  loops: z.number().int().nonnegative(),
  /** Functions without loops that poll at entry because they are recursive (absent before version 2). */
  recursive: z.number().int().nonnegative().optional(),
  /** Of the loops, the inner ones that poll through their parent loop (hoist.ts; absent before version 3). */
  hoisted: z.number().int().nonnegative().optional(),
  sourceBytes: z.number().int().nonnegative(),
});
export type InstrumentedInfo = z.infer<typeof instrumentedInfoSchema>;

export interface Instrumented {
  bytes: Uint8Array;
  info: InstrumentedInfo;
  /** True when it came from the cache. */
  cached: boolean;
}

function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Reads the description an instrumented module carries; throws ROAM_ERR_WASM_MODULE if absent. */
export function readInfo(module: WebAssembly.Module): InstrumentedInfo {
  // Node's WebAssembly typings leave customSections out.
  const reflect = WebAssembly.Module as unknown as {
    customSections(m: WebAssembly.Module, name: string): ArrayBuffer[];
  };
  const sections = reflect.customSections(module, INFO_SECTION);
  const section = sections[0];
  if (sections.length !== 1 || section === undefined) {
    throw malformedModule(`the module is not one Roam instrumented (no single '${INFO_SECTION}' section)`);
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(section));
  } catch (err) {
    throw malformedModule(`the '${INFO_SECTION}' section is not UTF-8 JSON`, err);
  }
  const parsed = instrumentedInfoSchema.safeParse(json);
  if (!parsed.success)
    throw malformedModule(`the '${INFO_SECTION}' section is not valid: ${parsed.error.issues[0]?.message ?? ''}`);
  return parsed.data;
}

/** Imports and exports a guest module may have: WASI, AssemblyScript's helpers, one memory, `_start`. */
function checkInterface(module: WebAssembly.Module): void {
  for (const imp of WebAssembly.Module.imports(module)) {
    const name = `${imp.module}.${imp.name}`;
    if (imp.kind !== 'function') {
      throw malformedModule(`unsupported import ${name} (a ${imp.kind}): a guest module may import only functions`);
    }
    if (imp.module === WASI_MODULE) continue;
    if (imp.module === 'env' && (ASSEMBLYSCRIPT_IMPORTS as readonly string[]).includes(imp.name)) continue;
    throw malformedModule(
      `unsupported import ${name}: a guest module may import only WASI preview1 (${WASI_MODULE}) and AssemblyScript's env.abort, env.seed and env.trace`,
    );
  }
  const exports = WebAssembly.Module.exports(module);
  if (!exports.some((e) => e.name === '_start' && e.kind === 'function')) {
    throw malformedModule('the module exports no _start function: build it as a WASI command (a program with main)');
  }
  if (!exports.some((e) => e.kind === 'memory')) {
    throw malformedModule('the module exports no memory');
  }
}

const POLL_FN = '__roam_poll';
const FUEL_GLOBAL = '__roam_fuel';
const START_EXPORT = '__roam_start';

function typeName(api: Binaryen, type: number): 'i32' | 'i64' | 'f32' | 'f64' | undefined {
  if (type === api.i32) return 'i32';
  if (type === api.i64) return 'i64';
  if (type === api.f32) return 'f32';
  if (type === api.f64) return 'f64';
  return undefined;
}

/** Instruments `source` (no cache). Throws ROAM_ERR_WASM_MODULE or ROAM_ERR_WASM_FEATURE. */
export async function instrumentModule(source: Uint8Array, options: InstrumentOptions = {}): Promise<Uint8Array> {
  const interval = options.fuelInterval ?? DEFAULT_FUEL_INTERVAL;
  if (!Number.isInteger(interval) || interval < 1 || interval > 0x7fffffff) {
    throw malformedModule(`fuel interval must be an integer from 1 to 2^31-1, got ${interval}`);
  }
  scanSections(source);
  if (!WebAssembly.validate(source)) throw malformedModule('not a valid WebAssembly module (it does not validate)');
  checkInterface(new WebAssembly.Module(source));

  const api = await loadBinaryen();
  const F = api.Features;
  const all = F['All'] ?? 0;
  const allowed =
    (F['MVP'] ?? 0) |
    (F['MutableGlobals'] ?? 0) |
    (F['NontrappingFPToInt'] ?? 0) |
    (F['SignExt'] ?? 0) |
    (F['BulkMemory'] ?? 0) |
    (F['BulkMemoryOpt'] ?? 0) |
    (F['Multivalue'] ?? 0) |
    (F['ReferenceTypes'] ?? 0) |
    (F['ExtendedConst'] ?? 0) |
    (F['CallIndirectOverlong'] ?? 0);
  let mod: BinaryenModule;
  try {
    mod = api.readBinary(source, all);
  } catch (err) {
    throw malformedModule(`binaryen could not read the module: ${String(err)}`, err);
  }
  try {
    mod.setFeatures(allowed);

    // The program's mutable globals, exported for capture (before asyncify adds its own).
    const globals: InstrumentedInfo['globals'] = [];
    const count = mod.getNumGlobals();
    for (let i = 0; i < count; i++) {
      const g = api.getGlobalInfo(mod.getGlobalByIndex(i));
      if (!g.mutable) continue;
      if (g.module) throw malformedModule(`unsupported import of a mutable global (${g.module}.${g.base ?? ''})`);
      const type = typeName(api, g.type);
      if (type === undefined) {
        if (g.type === api.v128) throw refuse('SIMD', `global ${g.name}`);
        throw refuse('GC', `mutable reference-typed global ${g.name}`);
      }
      const name = `__roam_global_${globals.length}`;
      mod.addGlobalExport(g.name, name);
      globals.push({ export: name, type });
    }

    mod.addGlobal(FUEL_GLOBAL, api.i32, true, mod.i32.const(interval));
    mod.addFunctionImport(POLL_FN, POLL_MODULE, POLL_NAME, api.none, api.none);
    const w = walker(api);
    const scans: FunctionScan[] = [];
    const functions = mod.getNumFunctions();
    for (let i = 0; i < functions; i++) {
      const ref = mod.getFunctionByIndex(i);
      const fn = api.getFunctionInfo(ref);
      if (fn.module) continue;
      for (const t of [...api.expandType(fn.params), ...api.expandType(fn.results), ...fn.vars]) {
        if (t === api.v128) throw refuse('SIMD', `function ${fn.name}`);
      }
      scans.push(scanFunction(w, ref));
    }
    const { graph, table } = callGraph(api, mod, scans);
    const recursive = recursiveFunctions(graph);
    const counting = new Set(scans.filter((s) => s.loops > 0 || recursive.has(s.name)).map((s) => s.name));
    const reaching = reachingFuel(graph, counting);
    const indirectReaches = [...table].some((f) => reaching.has(f));
    let loops = 0;
    let hoisted = 0;
    for (const s of scans) {
      if (!counting.has(s.name)) continue;
      const placed = placePolls(w, mod, s.ref, {
        global: FUEL_GLOBAL,
        poll: POLL_FN,
        interval,
        recursive: recursive.has(s.name),
        loops: s.loops,
        syncs: (target) => (target === undefined ? indirectReaches : reaching.has(target)),
      });
      loops += placed.loops;
      hoisted += placed.hoisted;
    }

    const entries = ['_start'];
    const start = mod.getStart();
    if (start !== 0) {
      const name = api.getFunctionInfo(start).name;
      mod.setStart(0);
      mod.addFunctionExport(name, START_EXPORT);
      entries.unshift(START_EXPORT);
    }

    const waiting = [`${POLL_MODULE}.${POLL_NAME}`, ...WAITING_WASI_CALLS.map((c) => `${WASI_MODULE}.${c}`)];
    api.setOptimizeLevel(options.optimizeLevel ?? 2);
    api.setShrinkLevel(0);
    api.setPassArgument('asyncify-imports', waiting.join(','));
    try {
      mod.runPasses(['asyncify']);
    } finally {
      api.clearPassArguments();
    }
    const info: InstrumentedInfo = {
      format: 1,
      instrumenter: INSTRUMENTER_VERSION,
      binaryen: BINARYEN_VERSION,
      source: sha256Hex(source),
      fuelInterval: interval,
      globals,
      entries,
      loops,
      hoisted,
      recursive: counting.size - scans.filter((s) => s.loops > 0).length,
      sourceBytes: source.length,
    };
    mod.addCustomSection(INFO_SECTION, new TextEncoder().encode(JSON.stringify(info)));
    if (!mod.validate()) throw malformedModule('the instrumented module does not validate (a bug in Roam)');
    return mod.emitBinary();
  } finally {
    mod.dispose();
  }
}

/** Where instrumented modules are kept: $ROAM_CACHE_DIR, else $XDG_CACHE_HOME/roam/wasm, else ~/.cache/roam/wasm. */
export function defaultCacheDir(): string {
  const explicit = process.env['ROAM_CACHE_DIR'];
  if (explicit) return join(explicit, 'wasm');
  const xdg = process.env['XDG_CACHE_HOME'];
  return join(xdg || join(homedir(), '.cache'), 'roam', 'wasm');
}

export interface LoadOptions extends InstrumentOptions {
  /** Cache folder; `false` turns the cache off. Default `defaultCacheDir()`. */
  cacheDir?: string | false;
  /** Calls the instrumentation off (its worker thread ends at once). */
  signal?: AbortSignal;
}

/**
 * The instrumented form of `source`, from the cache when it is there (binaryen is then not even
 * loaded), else made now and stored. A cache entry that fails to parse is made again.
 */
export async function instrument(source: Uint8Array, options: LoadOptions = {}): Promise<Instrumented> {
  const interval = options.fuelInterval ?? DEFAULT_FUEL_INTERVAL;
  const key = sha256Hex(
    `${sha256Hex(source)}:${INSTRUMENTER_VERSION}:${BINARYEN_VERSION}:${interval}:${options.optimizeLevel ?? 2}`,
  );
  const dir = options.cacheDir === undefined ? defaultCacheDir() : options.cacheDir;
  const file = dir === false ? undefined : join(dir, `${key}.wasm`);
  if (file) {
    try {
      const bytes = readFileSync(file);
      const info = readInfo(new WebAssembly.Module(bytes));
      return { bytes, info, cached: true };
    } catch {
      // Absent or damaged: make it again.
    }
  }
  // On a worker thread when one can be started (the caller keeps running meanwhile), else here.
  const bytes = await (instrumentOffThread(source, options, options.signal) ?? instrumentModule(source, options));
  const info = readInfo(new WebAssembly.Module(bytes));
  if (file && dir !== false) {
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, bytes, { mode: 0o600 });
      renameSync(tmp, file);
    } catch {
      // A cache that cannot be written only costs time.
    }
  }
  return { bytes, info, cached: false };
}
