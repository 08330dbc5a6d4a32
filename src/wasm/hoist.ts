/**
 * Polls hoisted out of a loop nest: an innermost loop does not poll from inside its parent loop,
 * it leaves through the parent's poll site and comes back through a resume path.
 *
 * Why: asyncify guards every statement that lies on a path to a call that may unwind. A parent
 * loop whose body holds the poll of an inner loop gets such a guard around each of its statements,
 * run at every one of its iterations (the sieve's middle loop: three per iteration, 60 million
 * iterations). Here the only poll call of the nest is the parent's, outside the parent loop: the
 * parent's body holds no call that may unwind, so asyncify wraps the whole loop in one guard.
 *
 * How: when the inner loop's fuel runs out, it notes which loop it is (a local, `at`) and branches
 * to the parent's poll site. After the poll, the parent's wrapper does not re-enter the parent at
 * its header but runs a copy of the rest of the parent's body from the inner loop's header (the
 * continuation: the inner loop, then whatever follows it in the blocks around it); where that
 * continues the parent, it enters the parent loop; where it falls off the end, the parent is done.
 * Locals carry the state across, as they do across any unwind. Fuel counts stay exactly as before.
 *
 * Only where that is simple: the inner loop contains no loop, and between it and its parent there
 * are only blocks and `if` arms of no value; the parent has no value, a body of bounded size (each
 * inner loop copies the rest of the body once) and no other such parent inside it.
 */
import { accessors, type Binaryen, type BinaryenModule, type ExpressionRef } from './binaryen.js';

/** Largest parent loop body (expressions) whose continuations are copied. */
export const HOIST_MAX_BODY = 4000;

/** The expression ids the hoisting walks need (polls.ts's `walker` has them). */
export interface HoistIds {
  block: number;
  if: number;
  loop: number;
  break: number;
  switch: number;
}

/**
 * The inner loops that can poll through their parent: each innermost loop (by expression) mapped to
 * its parent loop. `children` lists an expression's children; `named` tells a real loop (one that
 * something branches to) from a loop that runs its body once.
 */
export function hoistableLoops(
  api: Binaryen,
  ids: HoistIds,
  body: ExpressionRef,
  children: (e: ExpressionRef) => ExpressionRef[],
  named: (loop: ExpressionRef) => boolean,
): Map<ExpressionRef, ExpressionRef> {
  const found = new Map<ExpressionRef, ExpressionRef>();
  /**
   * Walks `e` inside the real loop `parent` (null: none); returns whether `e` contains a real loop.
   * `simple`: only blocks and if arms of no value lie between `parent`'s body and `e`.
   */
  const walk = (e: ExpressionRef, parent: ExpressionRef | null, simple: boolean): boolean => {
    const id = api.getExpressionId(e);
    const kids = children(e);
    if (id === ids.loop && named(e)) {
      let inner = false;
      const loopBody = kids[0];
      if (loopBody !== undefined) inner = walk(loopBody, e, true);
      if (!inner && parent !== null && simple && api.getExpressionType(e) === api.none) found.set(e, parent);
      return true;
    }
    // The chain stays simple through blocks and if arms of no value, not through anything else.
    const passes = (id === ids.block || id === ids.if) && api.getExpressionType(e) === api.none;
    let any = false;
    kids.forEach((k, i) => {
      const throughArm = id === ids.if ? i > 0 : true;
      if (walk(k, parent, simple && passes && throughArm)) any = true;
    });
    return any;
  };
  try {
    walk(body, null, false);
  } catch (err) {
    // Nesting too deep for this walk: every loop keeps its poll in place, which is always correct.
    if (err instanceof RangeError) return new Map();
    throw err;
  }
  // Parents with a value, with bodies too large to copy, or with another parent inside them keep
  // their inner loops' polls in place. The last rule keeps copies free of resume paths (no copy
  // inside a copy, and the inner parent, whose body runs more often, keeps its hoisting).
  const parents = new Set(found.values());
  const eligible = new Map<ExpressionRef, boolean>();
  for (const [inner, parent] of found) {
    if (!eligible.has(parent)) {
      const scan = api.getExpressionType(parent) === api.none ? scanBody(parent, children, parents) : null;
      eligible.set(parent, scan !== null && !scan.holdsParent);
    }
    if (!eligible.get(parent)) found.delete(inner);
  }
  return found;
}

/**
 * Whether the body of `loop` holds another of `parents` (null: more than HOIST_MAX_BODY
 * expressions, too large to copy).
 */
function scanBody(
  loop: ExpressionRef,
  children: (e: ExpressionRef) => ExpressionRef[],
  parents: Set<ExpressionRef>,
): { holdsParent: boolean } | null {
  const stack = [...children(loop)];
  let n = 0;
  let holdsParent = false;
  for (let e = stack.pop(); e !== undefined; e = stack.pop()) {
    if (++n > HOIST_MAX_BODY) return null;
    if (parents.has(e)) holdsParent = true;
    stack.push(...children(e));
  }
  return { holdsParent };
}

/** The chain of expressions from `root` down to `target` through blocks and if arms, or null. */
function pathTo(
  api: Binaryen,
  ids: HoistIds,
  root: ExpressionRef,
  target: ExpressionRef,
  children: (e: ExpressionRef) => ExpressionRef[],
): ExpressionRef[] | null {
  if (root === target) return [root];
  const id = api.getExpressionId(root);
  if (id !== ids.block && id !== ids.if) return null;
  const kids = children(root);
  const candidates = id === ids.if ? kids.slice(1) : kids;
  for (const k of candidates) {
    const rest = pathTo(api, ids, k, target, children);
    if (rest) return [root, ...rest];
  }
  return null;
}

export interface ResumeSite {
  /** The parent loop's own label, and the label that enters it at its header. */
  parentLabel: string;
  enterLabel: string;
  /** The label that ends the parent's wrapper (the parent loop is done). */
  doneLabel: string;
  /** The local that says which inner loop ran out of fuel (0: the parent itself). */
  at: number;
  /** The parent's body as it is now (instrumented), and each hoisted inner loop with its number. */
  body: ExpressionRef;
  inner: Array<{ loop: ExpressionRef; k: number }>;
}

/**
 * The block that goes right before the parent loop in its wrapper: straight on when `at` is 0,
 * else the continuation of the inner loop that ran out of fuel.
 */
export function resumeBlock(
  api: Binaryen,
  mod: BinaryenModule,
  ids: HoistIds,
  site: ResumeSite,
  children: (e: ExpressionRef) => ExpressionRef[],
  fresh: (base: string) => string,
): ExpressionRef {
  const i32 = api.i32;
  const at = () => mod.local.get(site.at, i32);
  const arms: ExpressionRef[] = [mod.br(site.enterLabel, mod.i32.eqz(at()))];
  for (const { loop, k } of site.inner) {
    const path = pathTo(api, ids, site.body, loop, children);
    if (!path) throw new Error('hoist: the inner loop is not where it was found (a bug in Roam)');
    const cont = continuation(api, mod, ids, path, 0);
    renameLabels(api, ids, cont, children, fresh, new Map([[site.parentLabel, site.enterLabel]]));
    arms.push(
      mod.if(
        mod.i32.eq(at(), mod.i32.const(k)),
        mod.block(null, [mod.local.set(site.at, mod.i32.const(0)), cont, mod.br(site.doneLabel)], api.none),
      ),
    );
  }
  arms.push(mod.unreachable());
  return mod.block(site.enterLabel, arms, api.none);
}

/** A copy of what runs from the last element of `path` to the end of its first element. */
function continuation(
  api: Binaryen,
  mod: BinaryenModule,
  ids: HoistIds,
  path: ExpressionRef[],
  depth: number,
): ExpressionRef {
  const node = path[depth] as ExpressionRef;
  const next = path[depth + 1];
  if (next === undefined) return mod.copyExpression(node);
  if (api.getExpressionId(node) === ids.if) return continuation(api, mod, ids, path, depth + 1);
  const block = accessors(api, 'Block');
  const n = block['getNumChildren']?.(node) ?? 0;
  const kids: ExpressionRef[] = [];
  for (let i = 0; i < n; i++) kids.push(block['getChildAt']?.(node, i) ?? 0);
  const at = kids.indexOf(next);
  const name = (api['Block'] as { getName(e: ExpressionRef): string | null }).getName(node);
  return mod.block(
    name,
    [continuation(api, mod, ids, path, depth + 1), ...kids.slice(at + 1).map((k) => mod.copyExpression(k))],
    api.none,
  );
}

/**
 * Gives every label defined in `root` a fresh name (binaryen wants them unique in a function) and
 * points every branch at the new names; `outer` maps labels defined outside `root` too.
 */
function renameLabels(
  api: Binaryen,
  ids: HoistIds,
  root: ExpressionRef,
  children: (e: ExpressionRef) => ExpressionRef[],
  fresh: (base: string) => string,
  outer: Map<string, string>,
): void {
  const map = new Map(outer);
  const named = { block: api['Block'], loop: api['Loop'], br: api['Break'], sw: api['Switch'] } as unknown as {
    block: { getName(e: ExpressionRef): string | null; setName(e: ExpressionRef, n: string): void };
    loop: { getName(e: ExpressionRef): string | null; setName(e: ExpressionRef, n: string): void };
    br: { getName(e: ExpressionRef): string; setName(e: ExpressionRef, n: string): void };
    sw: {
      getNumNames(e: ExpressionRef): number;
      getNameAt(e: ExpressionRef, i: number): string;
      setNameAt(e: ExpressionRef, i: number, n: string): void;
      getDefaultName(e: ExpressionRef): string;
      setDefaultName(e: ExpressionRef, n: string): void;
    };
  };
  const to = (label: string) => map.get(label) ?? label;
  // Pre-order: a label is always defined before the branches to it are met.
  const stack = [root];
  for (let e = stack.pop(); e !== undefined; e = stack.pop()) {
    const id = api.getExpressionId(e);
    if (id === ids.block || id === ids.loop) {
      const acc = id === ids.block ? named.block : named.loop;
      const name = acc.getName(e);
      if (name) {
        const renamed = fresh(name);
        map.set(name, renamed);
        acc.setName(e, renamed);
      }
    } else if (id === ids.break) {
      named.br.setName(e, to(named.br.getName(e)));
    } else if (id === ids.switch) {
      for (let i = 0; i < named.sw.getNumNames(e); i++) named.sw.setNameAt(e, i, to(named.sw.getNameAt(e, i)));
      named.sw.setDefaultName(e, to(named.sw.getDefaultName(e)));
    }
    stack.push(...children(e));
  }
}
