/**
 * The IR walks of the instrumenter: refusing what cannot be captured, and placing the fuel polls.
 * Issue 7 measured where instrumentation cost goes (BENCHMARKS.md); the layout follows from it:
 *
 * - A loop polls from outside itself. Its header only counts fuel and branches out when the fuel
 *   runs out; the call to `roam.poll` sits in a wrapper loop around it, which re-enters the loop at
 *   its header afterwards (re-entering a loop is the same as branching to it). A loop body with no
 *   call in it then stays free of asyncify's state checks, which asyncify puts around everything
 *   that lies on a path to a call that may unwind.
 * - Fuel lives in a local of each function that counts it, not in the global: a global is a load
 *   and a store through memory at every loop header, a local is a register. The local is loaded
 *   from the global at entry and written back before every call that may count fuel and at every
 *   exit, so the count stays exact across calls and a poll comes every `interval` loop iterations
 *   however the iterations are spread over functions.
 * - A function that is recursive (directly or through other functions; an indirect call may reach
 *   any function of its signature in the table) counts one unit of fuel at entry, so a recursion
 *   that never runs a loop still polls.
 *
 * - An innermost loop inside another loop polls through its parent's site (hoist.ts): otherwise its
 *   poll, inside the parent's body, would give every statement of that body one of asyncify's
 *   state checks per iteration (the sieve's middle loop: three). What is left is those checks in
 *   loops two levels out, which iterate far less often.
 */
import {
  accessors,
  addVar,
  expressionId,
  setFunctionBody,
  type Binaryen,
  type BinaryenModule,
  type ExpressionRef,
  type FunctionRef,
  type Type,
} from './binaryen.js';
import { featureOfExpression, malformedModule, refuse } from './features.js';
import { hoistableLoops, resumeBlock, type HoistIds, type ResumeSite } from './hoist.js';

/** One child of an expression, and how to put another expression in its place. */
interface Slot {
  expr: ExpressionRef;
  set(value: ExpressionRef): void;
}

type SlotsOf = (e: ExpressionRef) => Slot[];

export interface Walker {
  api: Binaryen;
  slots: Map<number, SlotsOf>;
  /** Every expression class id binaryen knows, by name (for error messages). */
  names: Map<number, string>;
  ids: HoistIds & {
    call: number;
    callIndirect: number;
    load: number;
    store: number;
    ret: number;
    refFunc: number;
  };
}

function slotTable(api: Binaryen): Map<number, SlotsOf> {
  // Resolved once, so that an accessor missing from the installed binaryen.js fails loudly here
  // instead of making a walk skip children silently.
  const fn = (cls: string, name: string) => {
    const f = accessors(api, cls)[name];
    if (typeof f !== 'function') throw malformedModule(`binaryen.js has no ${cls}.${name}: not the version Roam pins`);
    return f;
  };
  const field = (cls: string, name: string) => {
    const get = fn(cls, `get${name}`);
    const set = fn(cls, `set${name}`);
    return (e: ExpressionRef): Slot => ({ expr: get(e), set: (v) => void set(e, v) });
  };
  const fields = (cls: string, ...names: string[]): SlotsOf => {
    const each = names.map((n) => field(cls, n));
    return (e) => each.map((f) => f(e));
  };
  const list = (cls: string, count: string, what: string): SlotsOf => {
    const num = fn(cls, count);
    const get = fn(cls, `get${what}At`);
    const set = fn(cls, `set${what}At`);
    return (e) => {
      const out: Slot[] = [];
      for (let i = 0, n = num(e); i < n; i++) out.push({ expr: get(e, i), set: (v) => void set(e, i, v) });
      return out;
    };
  };
  const leaf: SlotsOf = () => [];
  const operands = list('CallIndirect', 'getNumOperands', 'Operand');
  const target = field('CallIndirect', 'Target');
  const callIndirect: SlotsOf = (e) => [...operands(e), target(e)];
  const entries: Array<[string, SlotsOf]> = [
    ['Nop', leaf],
    ['Unreachable', leaf],
    ['LocalGet', leaf],
    ['GlobalGet', leaf],
    ['Const', leaf],
    ['MemorySize', leaf],
    ['DataDrop', leaf],
    ['RefNull', leaf],
    ['RefFunc', leaf],
    ['TableSize', leaf],
    ['Pop', leaf],
    ['Block', list('Block', 'getNumChildren', 'Child')],
    ['If', fields('If', 'Condition', 'IfTrue', 'IfFalse')],
    ['Loop', fields('Loop', 'Body')],
    ['Break', fields('Break', 'Condition', 'Value')],
    ['Switch', fields('Switch', 'Condition', 'Value')],
    ['Call', list('Call', 'getNumOperands', 'Operand')],
    ['CallIndirect', callIndirect],
    ['LocalSet', fields('LocalSet', 'Value')],
    ['GlobalSet', fields('GlobalSet', 'Value')],
    ['Load', fields('Load', 'Ptr')],
    ['Store', fields('Store', 'Ptr', 'Value')],
    ['Unary', fields('Unary', 'Value')],
    ['Binary', fields('Binary', 'Left', 'Right')],
    ['Select', fields('Select', 'IfTrue', 'IfFalse', 'Condition')],
    ['Drop', fields('Drop', 'Value')],
    ['Return', fields('Return', 'Value')],
    ['MemoryGrow', fields('MemoryGrow', 'Delta')],
    ['MemoryInit', fields('MemoryInit', 'Dest', 'Offset', 'Size')],
    ['MemoryCopy', fields('MemoryCopy', 'Dest', 'Source', 'Size')],
    ['MemoryFill', fields('MemoryFill', 'Dest', 'Value', 'Size')],
    ['RefIsNull', fields('RefIsNull', 'Value')],
    ['RefAs', fields('RefAs', 'Value')],
    ['RefEq', fields('RefEq', 'Left', 'Right')],
    ['TableGet', fields('TableGet', 'Index')],
    ['TupleMake', list('TupleMake', 'getNumOperands', 'Operand')],
    ['TupleExtract', fields('TupleExtract', 'Tuple')],
  ];
  const map = new Map<number, SlotsOf>();
  for (const [name, slots] of entries) {
    const id = expressionId(api, name);
    if (id >= 0) map.set(id, slots);
  }
  return map;
}

/** Every expression class id binaryen knows, by name (including those without a public `XId`). */
function idNames(api: Binaryen): Map<number, string> {
  const names = new Map<number, string>();
  for (const key of Object.keys(api)) {
    const m = /^_Binaryen(\w+)Id$/.exec(key);
    const fn = api[key];
    if (m?.[1] && typeof fn === 'function' && m[1] !== 'Expression') {
      const id = (fn as () => unknown)();
      if (typeof id === 'number') names.set(id, m[1]);
    }
  }
  return names;
}

export function walker(api: Binaryen): Walker {
  const id = (name: string) => expressionId(api, name);
  return {
    api,
    slots: slotTable(api),
    names: idNames(api),
    ids: {
      loop: id('Loop'),
      block: id('Block'),
      if: id('If'),
      break: id('Break'),
      switch: id('Switch'),
      call: id('Call'),
      callIndirect: id('CallIndirect'),
      load: id('Load'),
      store: id('Store'),
      ret: id('Return'),
      refFunc: id('RefFunc'),
    },
  };
}

function slotsOf(w: Walker, e: ExpressionRef): Slot[] {
  const slots = w.slots.get(w.api.getExpressionId(e));
  if (!slots) throw malformedModule(`no walk for binaryen expression ${w.names.get(w.api.getExpressionId(e)) ?? '?'}`);
  return slots(e).filter((s) => s.expr !== 0);
}

/** What one function does that matters for polls, found by `scanFunction`. */
export interface FunctionScan {
  name: string;
  ref: FunctionRef;
  /** Loops that something branches to (a loop nothing branches to runs its body once). */
  loops: number;
  /** Functions called directly. */
  calls: Set<string>;
  /** Signatures (params, results) called through a table. */
  indirect: Array<[Type, Type]>;
  /** Functions whose reference is taken (`ref.func`): they may end up called indirectly. */
  refs: Set<string>;
}

/** Refuses what cannot be captured in one function body, and notes its loops and calls. */
export function scanFunction(w: Walker, ref: FunctionRef): FunctionScan {
  const { api, ids } = w;
  const fn = api.getFunctionInfo(ref);
  const scan: FunctionScan = { name: fn.name, ref, loops: 0, calls: new Set(), indirect: [], refs: new Set() };
  const call = accessors(api, 'Call');
  const callIndirect = accessors(api, 'CallIndirect');
  const memory = { load: accessors(api, 'Load'), store: accessors(api, 'Store') };
  const where = `function ${fn.name}`;
  const stack: ExpressionRef[] = [fn.body];
  for (let e = stack.pop(); e !== undefined; e = stack.pop()) {
    if (e === 0) continue;
    const id = api.getExpressionId(e);
    const slots = w.slots.get(id);
    if (!slots) {
      const name = w.names.get(id) ?? `#${id}`;
      const feature = featureOfExpression(name);
      if (feature) throw refuse(feature, where);
      throw malformedModule(`unsupported WebAssembly instruction (binaryen ${name}) in ${where}`);
    }
    if (api.getExpressionType(e) === api.v128) throw refuse('SIMD', where);
    if ((id === ids.call && call['isReturn']?.(e)) || (id === ids.callIndirect && callIndirect['isReturn']?.(e))) {
      throw refuse('tail calls', where);
    }
    if ((id === ids.load && memory.load['isAtomic']?.(e)) || (id === ids.store && memory.store['isAtomic']?.(e))) {
      throw refuse('threads', where);
    }
    if (id === ids.loop && loopName(api, e)) scan.loops++;
    if (id === ids.call) scan.calls.add(String(call['getTarget']?.(e)));
    if (id === ids.callIndirect) {
      scan.indirect.push([callIndirect['getParams']?.(e) ?? 0, callIndirect['getResults']?.(e) ?? 0]);
    }
    if (id === ids.refFunc) scan.refs.add(String(accessors(api, 'RefFunc')['getFunc']?.(e)));
    for (const slot of slots(e)) if (slot.expr !== 0) stack.push(slot.expr);
  }
  return scan;
}

function loopName(api: Binaryen, loop: ExpressionRef): string | null {
  return (api['Loop'] as { getName(e: ExpressionRef): string | null }).getName(loop);
}

/**
 * The call graph's edges: direct calls, and indirect calls to every table entry of their signature
 * (a call through the table to another signature traps). Also returns the table's functions.
 */
export function callGraph(
  api: Binaryen,
  mod: BinaryenModule,
  scans: FunctionScan[],
): { graph: Map<string, Set<string>>; table: Set<string> } {
  const inTable = new Set<string>();
  try {
    for (let i = 0; i < mod.getNumElementSegments(); i++) {
      for (const name of api.getElementSegmentInfo(mod.getElementSegmentByIndex(i)).data) inTable.add(name);
    }
  } catch {
    // A segment binaryen.js cannot list (entries that are not plain function references): assume
    // any function may be in the table, which can only add polls, never miss one.
    for (const s of scans) inTable.add(s.name);
  }
  for (const s of scans) for (const r of s.refs) inTable.add(r);
  const signature = (name: string) => {
    const info = api.getFunctionInfo(mod.getFunction(name));
    return `${info.params}:${info.results}`;
  };
  const bySignature = new Map<string, string[]>();
  for (const name of inTable) {
    const key = signature(name);
    bySignature.set(key, [...(bySignature.get(key) ?? []), name]);
  }
  const graph = new Map<string, Set<string>>();
  for (const s of scans) {
    const out = new Set(s.calls);
    for (const [params, results] of s.indirect)
      for (const t of bySignature.get(`${params}:${results}`) ?? []) out.add(t);
    graph.set(s.name, out);
  }
  return { graph, table: inTable };
}

/** The functions that can call themselves again before they return (Tarjan's strongly connected components). */
export function recursiveFunctions(graph: Map<string, Set<string>>): Set<string> {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const recursive = new Set<string>();
  let next = 0;
  for (const root of graph.keys()) {
    if (index.has(root)) continue;
    // Iterative, so that a long call chain cannot overflow the JavaScript stack.
    const work: Array<{ node: string; edges: string[]; at: number }> = [];
    const enter = (node: string) => {
      index.set(node, next);
      low.set(node, next++);
      stack.push(node);
      onStack.add(node);
      work.push({ node, edges: [...(graph.get(node) ?? [])].filter((t) => graph.has(t)), at: 0 });
    };
    enter(root);
    while (work.length > 0) {
      const top = work[work.length - 1] as { node: string; edges: string[]; at: number };
      const edge = top.edges[top.at++];
      if (edge !== undefined) {
        if (!index.has(edge)) enter(edge);
        else if (onStack.has(edge)) low.set(top.node, Math.min(low.get(top.node) ?? 0, index.get(edge) ?? 0));
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent) low.set(parent.node, Math.min(low.get(parent.node) ?? 0, low.get(top.node) ?? 0));
      if (low.get(top.node) !== index.get(top.node)) continue;
      const component: string[] = [];
      for (let n = stack.pop(); n !== undefined; n = stack.pop()) {
        onStack.delete(n);
        component.push(n);
        if (n === top.node) break;
      }
      const only = component[0] ?? '';
      if (component.length > 1 || graph.get(only)?.has(only)) for (const n of component) recursive.add(n);
    }
  }
  return recursive;
}

/** The functions from which a function that counts fuel can be reached (itself included). */
export function reachingFuel(graph: Map<string, Set<string>>, counting: Set<string>): Set<string> {
  const callers = new Map<string, string[]>();
  for (const [from, tos] of graph) for (const to of tos) callers.set(to, [...(callers.get(to) ?? []), from]);
  const found = new Set(counting);
  const work = [...counting];
  for (let n = work.pop(); n !== undefined; n = work.pop()) {
    for (const c of callers.get(n) ?? []) {
      if (!found.has(c)) {
        found.add(c);
        work.push(c);
      }
    }
  }
  return found;
}

export interface FuelPlan {
  /** The fuel global, and the import that polls. */
  global: string;
  poll: string;
  interval: number;
  recursive: boolean;
  /** The function's loops (as `scanFunction` counts them). */
  loops: number;
  /** Whether a direct call to this function (or any indirect call) needs the fuel written back around it. */
  syncs(target: string | undefined): boolean;
}

/**
 * Rewrites one function that counts fuel (it has loops, or it is recursive): fuel in a local,
 * a poll outside every loop, a poll at entry if recursive. Returns the number of loops polled, and
 * of those the inner loops that poll through their parent's site.
 */
export function placePolls(
  w: Walker,
  mod: BinaryenModule,
  ref: FunctionRef,
  plan: FuelPlan,
): { loops: number; hoisted: number } {
  const { api, ids } = w;
  const fn = api.getFunctionInfo(ref);
  const i32 = api.i32;
  if (plan.loops === 0) {
    // Recursive with no loop: one unit at entry, counted in the global itself. A local would cost
    // more here (a load at entry, a store and a load around each recursive call, a store at exit).
    const left = mod.i32.sub(mod.global.get(plan.global, i32), mod.i32.const(1));
    const refill = mod.block(null, [
      mod.global.set(plan.global, mod.i32.const(plan.interval)),
      mod.call(plan.poll, [], api.none),
    ]);
    const entry = mod.block(null, [
      mod.global.set(plan.global, left),
      mod.if(mod.i32.le_s(mod.global.get(plan.global, i32), mod.i32.const(0)), refill),
    ]);
    setFunctionBody(api, ref, mod.block(null, [entry, fn.body], api.getExpressionType(fn.body)));
    return { loops: 0, hoisted: 0 };
  }
  const fuel = addVar(api, ref, i32);
  const temps = new Map<Type, number>();
  const temp = (type: Type) => {
    let t = temps.get(type);
    if (t === undefined) temps.set(type, (t = addVar(api, ref, type)));
    return t;
  };
  const get = () => mod.local.get(fuel, i32);
  const store = () => mod.global.set(plan.global, get());
  const reload = () => mod.local.set(fuel, mod.global.get(plan.global, i32));
  const poll = () => [
    mod.local.set(fuel, mod.i32.const(plan.interval)),
    mod.global.set(plan.global, mod.i32.const(plan.interval)),
    mod.call(plan.poll, [], api.none),
  ];
  /** `before; value; after` with the value of `value`, which goes in `into`'s slot. */
  const around = (value: ExpressionRef, before: ExpressionRef[], after: ExpressionRef[]): [ExpressionRef, Slot] => {
    const type = api.getExpressionType(value);
    if (type === api.none || type === api.unreachable) {
      const block = mod.block(null, [...before, value, ...after], type);
      return [
        block,
        { expr: value, set: (v) => void accessors(api, 'Block')['setChildAt']?.(block, before.length, v) },
      ];
    }
    const t = temp(type);
    const set = mod.local.set(t, value);
    const block = mod.block(null, [...before, set, ...after, mod.local.get(t, type)], type);
    return [block, { expr: value, set: (v) => void accessors(api, 'LocalSet')['setValue']?.(set, v) }];
  };

  // Entry: load the fuel (and count one unit if recursive); exit: write it back.
  const entry = [mod.local.set(fuel, mod.global.get(plan.global, i32))];
  if (plan.recursive) {
    entry.push(
      mod.if(
        mod.i32.le_s(mod.local.tee(fuel, mod.i32.sub(get(), mod.i32.const(1)), i32), mod.i32.const(0)),
        mod.block(null, poll()),
      ),
    );
  }
  const [body, bodySlot] = around(fn.body, entry, [store()]);
  setFunctionBody(api, ref, body);

  let loops = 0;
  let labels = 0;
  const loopAcc = api['Loop'] as {
    getBody(e: ExpressionRef): ExpressionRef;
    setBody(e: ExpressionRef, body: ExpressionRef): void;
    setName(e: ExpressionRef, name: string): void;
  };
  const blockAcc = accessors(api, 'Block');
  const childExprs = (e: ExpressionRef) => slotsOf(w, e).map((s) => s.expr);
  const hoisted = hoistableLoops(api, ids, fn.body, childExprs, (l) => loopName(api, l) !== null);
  const parents = new Set(hoisted.values());
  const at = parents.size > 0 ? addVar(api, ref, i32) : -1;
  /** The poll sites of parent loops whose inner loops poll through them (hoist.ts). */
  const sites = new Map<ExpressionRef, ResumeSite & { pollBlock: ExpressionRef; pollLabel: string }>();
  const counting = () => mod.i32.le_s(mod.local.tee(fuel, mod.i32.sub(get(), mod.i32.const(1)), i32), mod.i32.const(0));
  const stack: Slot[] = [bodySlot];
  for (let slot = stack.pop(); slot !== undefined; slot = stack.pop()) {
    const e = slot.expr;
    const id = api.getExpressionId(e);
    const label = id === ids.loop ? loopName(api, e) : null;
    const parent = label ? sites.get(hoisted.get(e) ?? 0) : undefined;
    if (label && parent) {
      // An inner loop that polls through its parent's site:
      // loop $label B  =>  loop $label (if (fuel-- <= 0) (at = k; br $parentPoll)) B
      loops++;
      const k = parent.inner.length + 1;
      parent.inner.push({ loop: e, k });
      const original = loopAcc.getBody(e);
      const exit = mod.block(null, [mod.local.set(at, mod.i32.const(k)), mod.br(parent.pollLabel)], api.none);
      const body = mod.block(null, [mod.if(counting(), exit), original], api.getExpressionType(original));
      loopAcc.setBody(e, body);
      stack.push({ expr: original, set: (v) => void blockAcc['setChildAt']?.(body, 1, v) });
      continue;
    }
    if (label) {
      // loop $label B  =>  loop $retry (block $value (block $poll (br $value (loop $label
      //   (br_if $poll (fuel-- <= 0)) B))) poll (br $retry))
      loops++;
      const n = labels++;
      const [retry, value, pollLabel] = [`__roam_retry${n}`, `__roam_value${n}`, `__roam_poll${n}`];
      const original = loopAcc.getBody(e);
      const type = api.getExpressionType(e);
      const inner = mod.block(null, [mod.br(pollLabel, counting()), original], api.getExpressionType(original));
      const loop = mod.loop(label, inner);
      const site = [...poll(), mod.br(retry)];
      loopAcc.setName(e, retry);
      if (type === api.unreachable) {
        loopAcc.setBody(e, mod.block(null, [mod.block(pollLabel, [loop], api.none), ...site], api.unreachable));
      } else if (type === api.none) {
        const pollBlock = mod.block(pollLabel, [loop, mod.br(value)], api.none);
        loopAcc.setBody(e, mod.block(value, [pollBlock, ...site], api.none));
        if (parents.has(e)) {
          const enterLabel = `__roam_enter${n}`;
          sites.set(e, {
            parentLabel: label,
            enterLabel,
            doneLabel: value,
            at,
            body: 0,
            inner: [],
            pollBlock,
            pollLabel,
          });
        }
      } else {
        loopAcc.setBody(e, mod.block(value, [mod.block(pollLabel, [mod.br(value, 0, loop)], api.none), ...site], type));
      }
      stack.push({ expr: original, set: (v) => void blockAcc['setChildAt']?.(inner, 1, v) });
      continue;
    }
    const children = slotsOf(w, e);
    if (id === ids.ret) {
      const value = children[0];
      if (value) {
        // return V  =>  return (V, write back)
        const [wrapped, inner] = around(value.expr, [], [store()]);
        value.set(wrapped);
        stack.push(inner);
      } else {
        slot.set(mod.block(null, [store(), e], api.unreachable));
      }
      continue;
    }
    stack.push(...children);
    const isCall = id === ids.call || id === ids.callIndirect;
    if (isCall && api.getExpressionType(e) !== api.unreachable) {
      const target = id === ids.call ? String(accessors(api, 'Call')['getTarget']?.(e)) : undefined;
      if (plan.syncs(target)) slot.set(around(e, [store()], [reload()])[0]);
    }
  }
  // The parents' resume paths, copied from their bodies now that these are instrumented.
  let copies = 0;
  let hoistedLoops = 0;
  for (const site of sites.values()) {
    if (site.inner.length === 0) continue;
    hoistedLoops += site.inner.length;
    const loop = blockAcc['getChildAt']?.(site.pollBlock, 0) ?? 0;
    site.body = blockAcc['getChildAt']?.(loopAcc.getBody(loop), 1) ?? 0;
    const resume = resumeBlock(api, mod, ids, site, childExprs, (base) => `${base}__roam_copy${copies++}`);
    blockAcc['insertChildAt']?.(site.pollBlock, 0, resume);
  }
  return { loops, hoisted: hoistedLoops };
}
