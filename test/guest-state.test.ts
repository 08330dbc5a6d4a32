/**
 * The guest state's events held at the capture (events that reached a frozen guest, such as a
 * connect a move waited for): they travel in the state's JSON and come back as they were.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { decodeHeld, encodeHeld, parseGuestState, parseHeld } from '../src/guest/state-schema.js';
import { ValidationError } from '../src/common/validate.js';
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
      const parsed = parseHeld(wire);
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
  assert.throws(() => parseHeld([['net.connect', [{ b64: 'not base64!' }]]]), ValidationError);
  assert.throws(() => parseHeld([['net.connect', [{ other: 1 }]]]), /held\[0\]\[1\]\[0\]: unknown key "other"/);
  assert.throws(() => parseHeld([['net.connect', [{ b64: 'AA==', undefined: true }]]]), ValidationError);
  assert.throws(() => parseHeld([['net.connect', [{ undefined: false }]]]), ValidationError);
  assert.throws(() => parseHeld([['net.connect', [[1, 2]]]]), ValidationError);
  assert.throws(() => parseHeld([['net.connect']]), /expected \[kind, values\]/);
});

/** A guest state as a capture writes it (JSON), with one of everything. */
function sampleState(): Record<string, unknown> {
  const address = { address: '127.0.0.1', family: 'IPv4', port: 8080 };
  return {
    limits: { memoryBytes: 16 * 1024 * 1024, cpuBudgetMs: 5000, stackBytes: 1024 * 1024 },
    argv: ['node', 'app.js'],
    clock: { wall: 1_700_000_000_000, mono: 12.5 },
    timers: [{ id: 3, remaining: 10, ref: true }],
    immediatePending: false,
    net: {
      nextId: 9,
      sockets: [
        {
          id: 4,
          endpoints: {
            localAddress: '10.0.0.2',
            localPort: 80,
            remoteAddress: '10.0.0.9',
            remotePort: 5000,
            remoteFamily: 'IPv4',
          },
          bytesIn: 10,
          bytesOut: 20,
          ref: true,
          paused: false,
          link: { streamId: 7, received: 10, sent: 20, acked: 18, unacked: 'AAE=', ended: false },
        },
        { id: 5, endpoints: null, bytesIn: 0, bytesOut: 0, ref: false },
      ],
      servers: [{ id: 1, request: { port: 80, host: null }, address, ref: true }],
    },
    dgram: { sockets: [{ id: 2, request: { type: 'udp4', port: 0, host: '0.0.0.0' }, address: null, ref: true }] },
    log: { records: [{ t: 1, stream: 'out', text: 'hello' }], written: 1 },
    cpuMs: 3.5,
  };
}

test('a guest state is read as it was written; unknown keys are dropped, held events are optional', () => {
  const state = sampleState();
  assert.deepEqual(parseGuestState(structuredClone(state)), state, 'absent held: an image from before held events');
  const withHeld = { ...structuredClone(state), held: [['net.connect', [4, { undefined: true }, null, { b64: '' }]]] };
  assert.deepEqual(parseGuestState(structuredClone(withHeld)), withHeld);
  const extra = { ...structuredClone(state), future: 1, clock: { wall: 5, mono: 6, skew: 1 } };
  const parsed = parseGuestState(extra);
  assert.equal('future' in parsed, false);
  assert.deepEqual(parsed.clock, { wall: 5, mono: 6 });
});

test('a malformed guest state is refused with the field it breaks', () => {
  const cases: Array<[(s: Record<string, unknown>) => void, RegExp]> = [
    [(s) => delete s['log'], /at log: missing/],
    [(s) => (s['argv'] = 'app.js'), /at argv: expected an array/],
    [(s) => (s['cpuMs'] = -1), /at cpuMs: expected a finite number of at least 0/],
    [
      (s) => ((s['limits'] as { memoryBytes: number }).memoryBytes = 1024),
      /at limits\.memoryBytes: expected an integer/,
    ],
    [(s) => ((s['timers'] as Array<{ id: number }>)[0] = { id: 0 }), /at timers\[0\]\.remaining: missing/],
    [(s) => (s['timers'] = [{ id: 1.5, remaining: 1, ref: true }]), /at timers\[0\]\.id: expected an integer/],
    [
      (s) =>
        ((
          (s['net'] as { sockets: Array<{ link: { unacked: string } }> }).sockets[0] as { link: { unacked: string } }
        ).link.unacked = '%%%'),
      /at net\.sockets\[0\]\.link\.unacked: expected base64/,
    ],
    [
      (s) => ((s['net'] as { servers: Array<{ request: { port: number } }> }).servers[0]!.request.port = 70000),
      /at net\.servers\[0\]\.request\.port: expected an integer from 0 to 65535/,
    ],
    [
      (s) => ((s['dgram'] as { sockets: Array<{ request: { type: string } }> }).sockets[0]!.request.type = 'udp5'),
      /at dgram\.sockets\[0\]\.request\.type: expected one of udp4, udp6/,
    ],
    [
      (s) => ((s['log'] as { records: unknown[] }).records = [{ t: 1, stream: 'in', text: '' }]),
      /at log\.records\[0\]\.stream/,
    ],
    [(s) => (s['immediatePending'] = 0), /at immediatePending: expected true or false/],
  ];
  for (const [damage, message] of cases) {
    const state = sampleState();
    damage(state);
    assert.throws(
      () => parseGuestState(state),
      (err: unknown) =>
        err instanceof Error && 'code' in err && err.code === 'ROAM_ERR_IMAGE_MALFORMED' && message.test(err.message),
      String(message),
    );
  }
  assert.throws(() => parseGuestState(null), /malformed at \(root\): expected an object/);
});
