/**
 * A hand-written check of the one hot control message, the report every host sends every
 * interval: a proxy with thousands of hosts spent more time in the schema library than in the rest
 * of a report's handling. It accepts exactly what `reportSchema` accepts (the same bounds, from the
 * same constants) and returns what the schema would return: a fresh object with the schema's keys in
 * the schema's order, unknown keys dropped. It answers `undefined` for anything else, and the caller
 * then runs the schema, whose error is the one the peer is told: errors stay the schema's own.
 * test/wire-report.test.ts holds the two to the same answers on random input.
 */
import { MESSAGE_LIMITS, guestStates, type GuestRunState, type ReportMessage } from './messages.js';

type Obj = Record<string, unknown>;

const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;
const STATES: ReadonlySet<string> = new Set(guestStates);

const isObject = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
/** `z.number().min(0)`: finite, at least 0. */
const isQuantity = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const isFraction = (v: unknown): v is number => isQuantity(v) && v <= 1;
/** `z.int().min(0).max(Number.MAX_SAFE_INTEGER)`. */
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isText = (v: unknown, min: number, max: number): v is string =>
  typeof v === 'string' && v.length >= min && v.length <= max;

/** Fails the fast check: the schema will say why. */
class NotFast extends Error {}
const NOT_FAST = new NotFast();

function need<T>(ok: boolean, value: T): T {
  if (!ok) throw NOT_FAST;
  return value;
}

function nullable<T>(v: unknown, check: (v: unknown) => v is T): T | null {
  return v === null ? null : need(check(v), v as T);
}

/** An object's own key whose value may be left out: absent stays absent, anything else is checked. */
function optional(o: Obj, key: string): unknown {
  const v = o[key];
  // A key present with `undefined` (never from JSON) is the schema's business.
  if (v === undefined && Object.hasOwn(o, key)) throw NOT_FAST;
  return v;
}

function object(v: unknown): Obj {
  return need(isObject(v), v as Obj);
}

/** The report in `value`, as `reportSchema` would return it; undefined if it is not a valid report. */
export function checkReport(value: unknown): ReportMessage | undefined {
  try {
    return report(value);
  } catch (err) {
    if (err === NOT_FAST) return undefined;
    throw err;
  }
}

function report(value: unknown): ReportMessage {
  const o = object(value);
  need(o['type'] === 'report', null);
  const cpu = object(o['cpu']);
  const memory = object(o['memory']);
  const network = object(o['network']);
  const cgroup = object(o['cgroup']);
  const waiting = optional(cpu, 'waiting');
  const interfaces = network['interfaces'];
  need(Array.isArray(interfaces) && interfaces.length <= 64, null);
  const guests = o['guests'];
  need(Array.isArray(guests) && guests.length <= MESSAGE_LIMITS.reportGuests, null);
  const version = cgroup['version'];
  const score = optional(o, 'benchmarkScore');
  const message: ReportMessage = {
    type: 'report',
    intervalMs: need(isQuantity(o['intervalMs']), o['intervalMs'] as number),
    cpu: {
      model: need(isText(cpu['model'], 0, MESSAGE_LIMITS.cpuModel), cpu['model'] as string),
      mhz: nullable(cpu['mhz'], isQuantity),
      cores: need(
        Number.isSafeInteger(cpu['cores']) && (cpu['cores'] as number) >= 1 && (cpu['cores'] as number) <= 65_536,
        cpu['cores'] as number,
      ),
      usage: need(isFraction(cpu['usage']), cpu['usage'] as number),
      capacity: need(isQuantity(cpu['capacity']), cpu['capacity'] as number),
      ...(waiting === undefined ? {} : { waiting: need(isFraction(waiting), waiting as number) }),
    },
    memory: {
      totalBytes: need(isCount(memory['totalBytes']), memory['totalBytes'] as number),
      freeBytes: need(isCount(memory['freeBytes']), memory['freeBytes'] as number),
      limitBytes: nullable(memory['limitBytes'], isCount),
    },
    network: {
      interfaces: (interfaces as unknown[]).map((i) => need(isText(i, 0, 64), i as string)),
      linkMbps: nullable(network['linkMbps'], isQuantity),
      rxBytesPerSec: need(isQuantity(network['rxBytesPerSec']), network['rxBytesPerSec'] as number),
      txBytesPerSec: need(isQuantity(network['txBytesPerSec']), network['txBytesPerSec'] as number),
      utilisation: nullable(network['utilisation'], isFraction),
    },
    cgroup: {
      version: need(version === null || version === 1 || version === 2, version as 1 | 2 | null),
      cpuQuotaCores: nullable(cgroup['cpuQuotaCores'], isQuantity),
      memoryLimitBytes: nullable(cgroup['memoryLimitBytes'], isCount),
    },
    guests: (guests as unknown[]).map((g) => {
      const x = object(g);
      const id = x['id'];
      return {
        id: need(isText(id, 1, MESSAGE_LIMITS.id) && ID.test(id), id as string),
        name: need(isText(x['name'], 1, MESSAGE_LIMITS.name), x['name'] as string),
        memoryBytes: need(isCount(x['memoryBytes']), x['memoryBytes'] as number),
        cpuMs: need(isQuantity(x['cpuMs']), x['cpuMs'] as number),
        state: need(typeof x['state'] === 'string' && STATES.has(x['state']), x['state'] as GuestRunState),
      };
    }),
  };
  if (score !== undefined) message.benchmarkScore = need(isQuantity(score), score as number);
  return message;
}
