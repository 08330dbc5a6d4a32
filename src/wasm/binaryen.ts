/**
 * The part of binaryen.js (npm `binaryen`, pinned in package.json) that the instrumenter uses,
 * typed. binaryen.js is 14 MB of JavaScript that takes hundreds of milliseconds to load, so it is
 * loaded on first use only: a module found in the instrumentation cache never loads it.
 *
 * Its own type declarations leave out the per-expression accessors (`binaryen.Loop.getBody`,
 * `binaryen.Block.getChildAt`, ...), so this file declares them; they are checked against the
 * loaded library once, when it loads.
 */
import { RoamError } from '../errors.js';

export type ExpressionRef = number;
export type FunctionRef = number;
export type GlobalRef = number;
export type ElementSegmentRef = number;
export type Type = number;

interface Accessors {
  [name: string]: (expr: ExpressionRef, indexOrValue?: number, value?: ExpressionRef) => number;
}

export interface BinaryenModule {
  setFeatures(features: number): void;
  getFeatures(): number;
  validate(): number;
  runPasses(passes: readonly string[]): void;
  emitBinary(): Uint8Array;
  dispose(): void;
  getNumFunctions(): number;
  getFunctionByIndex(index: number): FunctionRef;
  getNumGlobals(): number;
  getGlobalByIndex(index: number): GlobalRef;
  addGlobal(name: string, type: Type, mutable: boolean, init: ExpressionRef): GlobalRef;
  addGlobalExport(internalName: string, externalName: string): number;
  addFunctionExport(internalName: string, externalName: string): number;
  addFunctionImport(internalName: string, module: string, base: string, params: Type, results: Type): void;
  addCustomSection(name: string, contents: Uint8Array): void;
  getStart(): FunctionRef;
  setStart(start: FunctionRef): void;
  hasMemory(): boolean;
  getMemoryInfo(name?: string): { module: string | null; base: string | null; shared: boolean; is64: boolean };
  block(label: string | null, children: ExpressionRef[], type?: Type): ExpressionRef;
  if(condition: ExpressionRef, ifTrue: ExpressionRef, ifFalse?: ExpressionRef): ExpressionRef;
  call(name: string, operands: ExpressionRef[], type: Type): ExpressionRef;
  loop(label: string | null, body: ExpressionRef): ExpressionRef;
  /** `br` (with `condition`: `br_if`); 0 stands for no condition or no value. */
  br(label: string, condition?: ExpressionRef, value?: ExpressionRef): ExpressionRef;
  getFunction(name: string): FunctionRef;
  /** A deep copy (label names included: rename them before the copy goes in the same function). */
  copyExpression(expr: ExpressionRef): ExpressionRef;
  unreachable(): ExpressionRef;
  getNumElementSegments(): number;
  getElementSegmentByIndex(index: number): ElementSegmentRef;
  i32: {
    const(value: number): ExpressionRef;
    sub(left: ExpressionRef, right: ExpressionRef): ExpressionRef;
    eqz(value: ExpressionRef): ExpressionRef;
    eq(left: ExpressionRef, right: ExpressionRef): ExpressionRef;
    le_s(left: ExpressionRef, right: ExpressionRef): ExpressionRef;
  };
  local: {
    get(index: number, type: Type): ExpressionRef;
    set(index: number, value: ExpressionRef): ExpressionRef;
    tee(index: number, value: ExpressionRef, type: Type): ExpressionRef;
  };
  global: {
    get(name: string, type: Type): ExpressionRef;
    set(name: string, value: ExpressionRef): ExpressionRef;
  };
}

export interface Binaryen {
  readBinary(bytes: Uint8Array, features?: number): BinaryenModule;
  setOptimizeLevel(level: number): number;
  setShrinkLevel(level: number): number;
  setPassArgument(key: string, value: string | null): void;
  clearPassArguments(): void;
  getExpressionId(expr: ExpressionRef): number;
  getExpressionType(expr: ExpressionRef): Type;
  expandType(type: Type): Type[];
  getFunctionInfo(fn: FunctionRef): {
    name: string;
    module: string | null;
    base: string | null;
    params: Type;
    results: Type;
    vars: Type[];
    body: ExpressionRef;
  };
  getElementSegmentInfo(segment: ElementSegmentRef): { name: string; table: string; data: string[] };
  getGlobalInfo(global: GlobalRef): {
    name: string;
    module: string | null;
    base: string | null;
    type: Type;
    mutable: boolean;
  };
  none: Type;
  unreachable: Type;
  i32: Type;
  i64: Type;
  f32: Type;
  f64: Type;
  v128: Type;
  Features: Record<string, number>;
  /** Expression ids (`BlockId`, `LoopId`, ...) and expression accessor namespaces (`Block`, `Loop`, ...). */
  [key: string]: unknown;
}

let loading: Promise<Binaryen> | undefined;

/** Loads binaryen.js once per process. */
export function loadBinaryen(): Promise<Binaryen> {
  // The specifier is a variable so that lint's import graph (import-x/no-cycle) does not parse
  // binaryen's 14 MB of minified JavaScript, which overflows its parser's stack.
  const specifier = 'binaryen';
  loading ??= (import(specifier) as Promise<{ default: unknown }>).then((mod) => {
    const api = mod.default as Binaryen;
    for (const name of ['Block', 'Loop', 'If', 'Call', 'CallIndirect', 'Function']) {
      const acc = api[name] as
        { getNumChildren?: unknown; getBody?: unknown; getCondition?: unknown; getTarget?: unknown } | undefined;
      if ((typeof acc !== 'object' && typeof acc !== 'function') || acc === null) {
        throw new RoamError(
          'ROAM_ERR_SANDBOX',
          `binaryen.js has no ${name} accessors: the installed version is not the one Roam pins`,
        );
      }
    }
    return api;
  });
  return loading;
}

/** Adds a local of `type` to a function; returns its index. */
export function addVar(api: Binaryen, fn: FunctionRef, type: Type): number {
  return (api['_BinaryenFunctionAddVar'] as (fn: FunctionRef, type: Type) => number)(fn, type);
}

/** Replaces a function's body. */
export function setFunctionBody(api: Binaryen, fn: FunctionRef, body: ExpressionRef): void {
  (api['Function'] as { setBody(fn: FunctionRef, body: ExpressionRef): void }).setBody(fn, body);
}

/** The accessor namespace for one expression class, e.g. `accessors(b, 'Loop').getBody(expr)`. */
export function accessors(api: Binaryen, name: string): Accessors {
  return api[name] as Accessors;
}

/** An expression id by its binaryen name, e.g. `expressionId(b, 'Loop')` for `binaryen.LoopId`. */
export function expressionId(api: Binaryen, name: string): number {
  const id = api[`${name}Id`];
  return typeof id === 'number' ? id : -1;
}
