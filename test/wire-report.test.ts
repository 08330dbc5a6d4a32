/**
 * The hand-written report check (src/wire/report.ts) against the schema it stands in for: on
 * random reports, valid and broken in every field, it accepts exactly what `reportSchema` accepts
 * and returns the same value, key for key and in the same order; and a CONTROL frame carrying a
 * broken report is refused with the schema's own error.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { FrameDecoder, MESSAGE_LIMITS, WireError, encodeFrame, reportSchema } from '../src/wire/index.js';
import { checkReport } from '../src/wire/report.js';

/** Any JSON-ish value: what a broken field may hold instead. */
const junk = fc.oneof(
  fc.constantFrom(null, true, false, '', 'x', -1, -0, 0, 0.5, 1, 1.5, 2, 65_536, 65_537, 2 ** 53, 2 ** 53 - 1, 1e308),
  fc.constantFrom(Infinity, -Infinity, NaN),
  fc.double(),
  fc.string(),
  fc.constant([]),
  fc.constant({}),
  fc.constant(['eth0']),
);

const quantity = fc.oneof(fc.constantFrom(0, -0, 1, 2.5, 1e12), fc.double({ min: 0, max: 1e15, noNaN: true }));
const fraction = fc.oneof(fc.constantFrom(0, -0, 1, 0.5), fc.double({ min: 0, max: 1, noNaN: true }));
const count = fc.oneof(fc.constantFrom(0, -0, 1, 2 ** 53 - 1), fc.nat());
const text = (max: number): fc.Arbitrary<string> =>
  fc.oneof(fc.string({ maxLength: max }), fc.constantFrom('a'.repeat(max), 'a'.repeat(max + 1), ''));
const id = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,20}$/),
  fc.constantFrom('g', 'a'.repeat(128), 'a'.repeat(129), '-x', 'a b', '', 'é'),
);

/** A valid report, as an object whose fields the test may then break. */
const validReport = fc.record(
  {
    type: fc.constant('report'),
    intervalMs: quantity,
    cpu: fc.record(
      {
        model: text(MESSAGE_LIMITS.cpuModel),
        mhz: fc.option(quantity),
        cores: fc.integer({ min: 1, max: 65_536 }),
        usage: fraction,
        capacity: quantity,
        waiting: fraction,
      },
      { requiredKeys: ['model', 'mhz', 'cores', 'usage', 'capacity'] },
    ),
    memory: fc.record({ totalBytes: count, freeBytes: count, limitBytes: fc.option(count) }),
    network: fc.record({
      interfaces: fc.array(text(64), { maxLength: 3 }),
      linkMbps: fc.option(quantity),
      rxBytesPerSec: quantity,
      txBytesPerSec: quantity,
      utilisation: fc.option(fraction),
    }),
    cgroup: fc.record({
      version: fc.constantFrom(null, 1, 2),
      cpuQuotaCores: fc.option(quantity),
      memoryLimitBytes: fc.option(count),
    }),
    guests: fc.array(
      fc.record({
        id,
        name: text(MESSAGE_LIMITS.name),
        memoryBytes: count,
        cpuMs: quantity,
        state: fc.constantFrom('starting', 'running', 'frozen', 'migrating', 'exited', 'gone'),
      }),
      { maxLength: 3 },
    ),
    benchmarkScore: quantity,
  },
  { requiredKeys: ['type', 'intervalMs', 'cpu', 'memory', 'network', 'cgroup', 'guests'] },
);

type Json = Record<string, unknown>;

/** Breaks the report at a random path: a junk value, a key left out, or an unknown key added. */
const brokenReport = fc
  .tuple(
    validReport,
    fc.array(fc.tuple(fc.nat(), fc.nat(), junk, fc.constantFrom('set', 'delete', 'add')), { maxLength: 3 }),
  )
  .map(([report, edits]) => {
    const copy = JSON.parse(JSON.stringify(report)) as Json;
    for (const [a, b, value, how] of edits) {
      // Pick an object in the report (the report, a section, a guest), then a key of it.
      const objects: Json[] = [copy];
      for (const v of Object.values(copy))
        if (typeof v === 'object' && v !== null && !Array.isArray(v)) objects.push(v as Json);
      for (const g of Array.isArray(copy['guests']) ? (copy['guests'] as unknown[]) : [])
        if (typeof g === 'object' && g !== null) objects.push(g as Json);
      const target = objects[a % objects.length] as Json;
      const keys = Object.keys(target);
      const key = keys[b % Math.max(1, keys.length)] ?? 'type';
      if (how === 'set') target[key] = structuredClone(value);
      else if (how === 'delete') delete target[key];
      else target[`extra${b}`] = structuredClone(value);
    }
    return copy;
  });

function sameAsSchema(value: unknown): void {
  const fast = checkReport(value);
  const slow = reportSchema.safeParse(value);
  if (fast === undefined) {
    assert.equal(slow.success, false, `the schema accepts what the fast check refused: ${JSON.stringify(value)}`);
    return;
  }
  assert.ok(slow.success, `the fast check accepted what the schema refuses: ${JSON.stringify(value)}`);
  assert.deepStrictEqual(fast, slow.data);
  assert.deepStrictEqual(Object.keys(fast), Object.keys(slow.data));
  assert.equal(JSON.stringify(fast), JSON.stringify(slow.data));
}

describe('checkReport', () => {
  it('accepts valid reports as the schema returns them (unknown keys dropped, keys in schema order)', () => {
    fc.assert(
      fc.property(validReport, (report) => sameAsSchema(report)),
      { numRuns: 500 },
    );
  });

  it('accepts exactly what the schema accepts, on reports broken anywhere', () => {
    fc.assert(
      fc.property(brokenReport, (report) => sameAsSchema(report)),
      { numRuns: 3000 },
    );
  });

  it('refuses what is not a report at all, and a present-but-undefined optional field goes to the schema', () => {
    for (const v of [null, 1, 'report', [], {}, { type: 'leave', reason: '' }]) sameAsSchema(v);
    const report = {
      type: 'report',
      intervalMs: 1000,
      cpu: { model: '', mhz: null, cores: 1, usage: 0, capacity: 1, waiting: undefined },
      memory: { totalBytes: 1, freeBytes: 1, limitBytes: null },
      network: { interfaces: [], linkMbps: null, rxBytesPerSec: 0, txBytesPerSec: 0, utilisation: null },
      cgroup: { version: null, cpuQuotaCores: null, memoryLimitBytes: null },
      guests: [],
    };
    assert.equal(checkReport(report), undefined);
    assert.equal(reportSchema.safeParse(report).success, true);
  });

  it('a CONTROL frame with a broken report is refused with the schema’s error', () => {
    const frame = encodeFrame({
      type: 'control',
      message: {
        type: 'report',
        intervalMs: 1000,
        cpu: { model: '', mhz: null, cores: 1, usage: 0.5, capacity: 1 },
        memory: { totalBytes: 1, freeBytes: 1, limitBytes: null },
        network: { interfaces: [], linkMbps: null, rxBytesPerSec: 0, txBytesPerSec: 0, utilisation: null },
        cgroup: { version: null, cpuQuotaCores: null, memoryLimitBytes: null },
        guests: [],
      },
    });
    // Usage 0.5 -> 1.5, in place in the JSON payload (same length).
    const text = Buffer.from(frame).toString('latin1').replace('"usage":0.5', '"usage":1.5');
    assert.throws(
      () => new FrameDecoder().push(Buffer.from(text, 'latin1')),
      (err) =>
        err instanceof WireError &&
        err.code === 'WIRE_BAD_MESSAGE' &&
        err.message === 'CONTROL payload (control message) is invalid: cpu.usage: Too big: expected number to be <=1',
    );
  });
});
