/**
 * The guest state's events held at the capture (events that reached a frozen guest, such as a
 * connect a move waited for): they travel in the state's JSON and come back as they were.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { decodeHeld, encodeHeld, guestStateSchema } from '../src/guest/state-schema.js';
import type { HostValue } from '../src/guest/sandbox/sandbox.js';

const hostValue: fc.Arbitrary<HostValue> = fc.oneof(
  fc.string(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.uint8Array({ maxLength: 64 }),
);

test('held events survive JSON: bytes, undefined and null stay apart, order kept', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.string({ maxLength: 20 }), fc.array(hostValue, { maxLength: 4 }))), (held) => {
      const wire = JSON.parse(JSON.stringify(encodeHeld(held))) as unknown;
      const parsed = guestStateSchema.shape.held.parse(wire);
      const back = decodeHeld(parsed);
      assert.equal(back.length, held.length);
      back.forEach(([kind, args], i) => {
        const [wantKind, wantArgs] = held[i] ?? ['', []];
        assert.equal(kind, wantKind);
        assert.deepEqual(
          args.map((a) => (a instanceof Uint8Array ? [...a] : a)),
          wantArgs.map((a) => (a instanceof Uint8Array ? [...a] : Object.is(a, -0) ? 0 : a)),
        );
      });
    }),
  );
});

test('held events that are not host values are refused', () => {
  const held = guestStateSchema.shape.held;
  assert.equal(held.safeParse([['net.connect', [{ b64: 'not base64!' }]]]).success, false);
  assert.equal(held.safeParse([['net.connect', [{ other: 1 }]]]).success, false);
  assert.equal(held.safeParse([['net.connect', [[1, 2]]]]).success, false);
  assert.equal(held.safeParse(undefined).success, true, 'absent: an image from before held events');
});
