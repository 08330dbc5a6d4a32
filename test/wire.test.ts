/**
 * The wire codec: every frame type round-trips, the streaming decoder is indifferent to how the
 * bytes are split, and hostile input (bad headers, oversized lengths, bad JSON) is refused with a
 * typed WireError and bounded memory (invariants 5 and 6).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  DEFAULT_MAX_CONTROL_PAYLOAD,
  DEFAULT_MAX_PAYLOAD,
  DEFAULT_STREAM_WINDOW,
  FrameDecoder,
  FrameType,
  HEADER_BYTES,
  MAX_SMALL_PAYLOAD,
  MAX_U32,
  WireError,
  decodeFrame,
  encodeAck,
  encodeDataHeader,
  encodeDatagramHeader,
  encodeFrame,
  type Frame,
  type FrameTypeName,
  type WireErrorCode,
} from '../src/wire/index.js';

const HOST_ID = '3f0e6a52-8a4e-4c43-9b7e-2f5d2a7c9e10';

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values);
const text = (value: string): Uint8Array => new TextEncoder().encode(value);

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Frames with their payloads as plain hex, so views, copies and Buffers compare equal. */
function plain(frames: readonly Frame[]): unknown[] {
  return frames.map((frame) =>
    'payload' in frame ? { ...frame, payload: Buffer.from(frame.payload).toString('hex') } : { ...frame },
  );
}

/** One example of every frame type, JSON fields with and without their optional parts. */
const SAMPLES: Frame[] = [
  {
    type: 'hello',
    message: {
      type: 'join',
      protocol: 1,
      token: 'secret-token',
      hostId: HOST_ID,
      name: 'host-a',
      advertise: '10.0.0.2',
      peerPort: 7401,
      version: '0.1.0',
    },
  },
  {
    type: 'welcome',
    message: { type: 'welcome', hostId: HOST_ID, proxyName: 'proxy', reportIntervalMs: 1000, evictAfterIntervals: 3 },
  },
  { type: 'control', message: { type: 'stop', guestId: 'web-1' } },
  { type: 'ping', nonce: 0 },
  { type: 'pong', nonce: Number.MAX_SAFE_INTEGER },
  { type: 'goaway', code: 'WIRE_BAD_MESSAGE', message: 'bye' },
  {
    type: 'open',
    streamId: 1,
    window: DEFAULT_STREAM_WINDOW,
    guest: 'web-1',
    protocol: 'tcp',
    direction: 'inbound',
    port: 80,
    remote: { address: '2001:db8::1', port: 54321, family: 'IPv6' },
  },
  { type: 'open', streamId: 3, window: DEFAULT_STREAM_WINDOW, guest: 'web-1', direction: 'image', bytes: 2 ** 32 + 1 },
  { type: 'openOk', streamId: 1, window: MAX_U32 },
  { type: 'openFail', streamId: 2, code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 10.0.0.9:5432' },
  { type: 'data', streamId: 1, payload: text('hello, world') },
  { type: 'data', streamId: MAX_U32, payload: new Uint8Array(0) },
  { type: 'ack', streamId: 1, offset: 12 },
  { type: 'ack', streamId: 1, offset: 2 ** 40 + 7 },
  { type: 'fin', streamId: 1, offset: 12 },
  { type: 'rst', streamId: 3, code: 'ECONNRESET', message: '' },
  { type: 'attach', streamId: 1, window: 1, receivedOffset: 12, sentOffset: 2 ** 53 - 1 },
  {
    type: 'attach',
    streamId: 4,
    window: 65536,
    receivedOffset: 0,
    sentOffset: 0,
    info: { guestId: 'web-1', epoch: 3, reason: 'migrated' },
  },
  { type: 'datagram', streamId: 9, payload: bytes(1, 2, 3, 0, 255) },
];

function expectWireError(fn: () => unknown, code: WireErrorCode, pattern?: RegExp): WireError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof WireError, `expected a WireError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (pattern !== undefined) assert.match(caught.message, pattern);
  return caught;
}

/** A raw header, for frames the encoder would refuse to make. */
function header(
  fields: Partial<{
    magic: number;
    version: number;
    type: number;
    flags: number;
    streamId: number;
    length: number;
    aux: number;
  }>,
): Uint8Array {
  const h = new Uint8Array(HEADER_BYTES);
  const view = new DataView(h.buffer);
  h[0] = fields.magic ?? 0x52;
  h[1] = fields.version ?? 1;
  h[2] = fields.type ?? FrameType.DATA;
  h[3] = fields.flags ?? 0;
  view.setUint32(4, fields.streamId ?? 1);
  view.setUint32(8, fields.length ?? 0);
  view.setUint32(12, fields.aux ?? 0);
  return h;
}

function rawFrame(fields: Parameters<typeof header>[0], payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  return concat([header({ length: payload.length, ...fields }), payload]);
}

describe('frame layout', () => {
  it('writes the documented 16-byte big-endian header', () => {
    const frame = encodeFrame({ type: 'data', streamId: 0x01020304, payload: bytes(0xaa, 0xbb) });
    assert.deepEqual(
      [...frame],
      [0x52, 1, 19, 0, 1, 2, 3, 4, 0, 0, 0, 2, 0, 0, 0, 0, 0xaa, 0xbb],
      'magic, version, type, flags, streamId, length, aux, payload',
    );
    const open = encodeFrame({ type: 'openOk', streamId: 7, window: 0x00040000 });
    assert.deepEqual([...open.subarray(12, 16)], [0, 4, 0, 0], 'the window travels in aux');
  });

  it('keeps the frame type codes stable', () => {
    assert.deepEqual(FrameType, {
      HELLO: 1,
      WELCOME: 2,
      CONTROL: 3,
      PING: 4,
      PONG: 5,
      GOAWAY: 6,
      OPEN: 16,
      OPEN_OK: 17,
      OPEN_FAIL: 18,
      DATA: 19,
      ACK: 20,
      FIN: 21,
      RST: 22,
      ATTACH: 23,
      DATAGRAM: 24,
    });
  });

  it('encodes u64 offsets big-endian', () => {
    const ack = encodeAck(5, 2 ** 40 + 0x0102);
    assert.equal(ack.length, 24);
    assert.deepEqual([...ack.subarray(16)], [0, 0, 1, 0, 0, 0, 1, 2]);
  });
});

describe('round trip', () => {
  it('decodes every frame type to what was encoded', () => {
    const seen = new Set<FrameTypeName>();
    for (const frame of SAMPLES) {
      seen.add(frame.type);
      assert.deepEqual(plain([decodeFrame(encodeFrame(frame))]), plain([frame]), frame.type);
    }
    assert.equal(seen.size, Object.keys(FrameType).length, 'every frame type has a sample');
  });

  it('fast paths produce the same bytes as encodeFrame', () => {
    const payload = text('abc');
    assert.deepEqual(
      concat([encodeDataHeader(7, payload.length), payload]),
      encodeFrame({ type: 'data', streamId: 7, payload }),
    );
    assert.deepEqual(
      concat([encodeDatagramHeader(7, payload.length), payload]),
      encodeFrame({ type: 'datagram', streamId: 7, payload }),
    );
    assert.deepEqual(encodeAck(9, 123_456_789_012), encodeFrame({ type: 'ack', streamId: 9, offset: 123_456_789_012 }));
  });

  it('decodes the whole sequence fed one byte at a time', () => {
    const stream = concat(SAMPLES.map((f) => encodeFrame(f)));
    const decoder = new FrameDecoder();
    const out: Frame[] = [];
    for (let i = 0; i < stream.length; i++) {
      out.push(...decoder.push(stream.subarray(i, i + 1)));
      assert.ok(decoder.bufferedBytes <= HEADER_BYTES + 64 * 1024);
    }
    decoder.end();
    assert.deepEqual(plain(out), plain(SAMPLES));
    assert.equal(decoder.framesDecoded, SAMPLES.length);
    assert.equal(decoder.bufferedBytes, 0);
  });

  it('decodes many frames from one chunk, payloads as views of it', () => {
    const frames: Frame[] = [];
    for (let i = 1; i <= 1000; i++) {
      frames.push({ type: 'data', streamId: i, payload: text(`frame ${i}`) }, { type: 'ack', streamId: i, offset: i });
    }
    const chunk = concat(frames.map((f) => encodeFrame(f)));
    const decoder = new FrameDecoder();
    const out = decoder.push(chunk);
    assert.deepEqual(plain(out), plain(frames));
    const first = out[0];
    assert.ok(first?.type === 'data');
    assert.equal(first.payload.buffer, chunk.buffer, 'a payload inside one chunk is not copied');
    assert.ok(decoder.idle);
  });

  it('copies a payload that spans chunks, and keeps no reference to the chunks', () => {
    const payload = Uint8Array.from({ length: 300_000 }, (_, i) => i % 251);
    const stream = encodeFrame({ type: 'data', streamId: 1, payload }, { maxPayload: 1 << 20 });
    const decoder = new FrameDecoder({ maxPayload: 1 << 20 });
    const chunks = [
      stream.slice(0, 10),
      stream.slice(10, 70_000),
      stream.slice(70_000, 200_000),
      stream.slice(200_000),
    ];
    const out = chunks.flatMap((c) => decoder.push(c));
    for (const chunk of chunks) chunk.fill(0); // the caller reuses its buffers
    const frame = out[0];
    assert.ok(frame?.type === 'data' && out.length === 1);
    assert.deepEqual(frame.payload, payload);
    assert.equal(frame.payload.byteLength, frame.payload.buffer.byteLength, 'exactly sized');
  });

  it('with dataPieces, hands on a DATA payload that spans chunks in pieces, as views, and holds none of it', () => {
    const payload = Uint8Array.from({ length: 300_000 }, (_, i) => i % 251);
    const stream = concat([
      encodeFrame({ type: 'data', streamId: 5, payload }, { maxPayload: 1 << 20 }),
      encodeFrame({ type: 'ack', streamId: 5, offset: 9 }),
      encodeFrame({ type: 'data', streamId: 6, payload: new Uint8Array(0) }),
    ]);
    const decoder = new FrameDecoder({ maxPayload: 1 << 20, dataPieces: true });
    const chunks = [10, 70_000, 200_000, 300_010, stream.length].map((to, i, all) =>
      stream.slice(i === 0 ? 0 : all[i - 1], to),
    );
    const out: Frame[] = [];
    for (const chunk of chunks) {
      const frames = decoder.push(chunk);
      for (const f of frames) if (f.type === 'data') assert.equal(f.payload.buffer, chunk.buffer, 'a view, no copy');
      out.push(...frames);
      assert.ok(decoder.bufferedBytes <= HEADER_BYTES, 'no payload gathered');
    }
    decoder.end();
    const pieces = out.filter((f) => f.type === 'data' && f.streamId === 5);
    assert.deepEqual(
      pieces.map((f) => (f.type === 'data' ? f.payload.length : -1)),
      [70_000 - 16, 130_000, 100_010, 6],
    );
    assert.deepEqual(concat(pieces.map((f) => (f.type === 'data' ? f.payload : new Uint8Array(0)))), payload);
    assert.deepEqual(
      plain(out.slice(4)),
      plain([
        { type: 'ack', streamId: 5, offset: 9 },
        { type: 'data', streamId: 6, payload: new Uint8Array(0) },
      ]),
    );
    assert.equal(decoder.framesDecoded, 3);
    assert.ok(decoder.idle);

    const truncated = new FrameDecoder({ dataPieces: true });
    truncated.push(encodeFrame({ type: 'data', streamId: 1, payload: text('hello') }).subarray(0, 18));
    assert.equal(truncated.idle, false);
    expectWireError(() => truncated.end(), 'WIRE_MALFORMED', /inside a DATA frame \(2 of 5 payload bytes\)/);
  });

  it('with dataPieces, the pieces add up to the same frames whatever the splits (fast-check)', () => {
    const streamId = fc.integer({ min: 1, max: 5 });
    const payload = fc.uint8Array({ maxLength: 600 });
    const frame: fc.Arbitrary<Frame> = fc.oneof(
      fc.constantFrom(...SAMPLES),
      fc.record({ type: fc.constant('data' as const), streamId, payload }),
      fc.record({ type: fc.constant('datagram' as const), streamId, payload }),
      fc.record({ type: fc.constant('ack' as const), streamId, offset: fc.nat() }),
    );
    fc.assert(
      fc.property(fc.array(frame, { maxLength: 30 }), fc.array(fc.nat(), { maxLength: 20 }), (frames, cutsRaw) => {
        const stream = concat(frames.map((f) => encodeFrame(f)));
        const cuts = [...new Set(cutsRaw.map((c) => (stream.length === 0 ? 0 : c % stream.length)))].sort(
          (a, b) => a - b,
        );
        const decoder = new FrameDecoder({ dataPieces: true });
        const out: Frame[] = [];
        let from = 0;
        for (const cut of [...cuts, stream.length]) {
          out.push(...decoder.push(stream.subarray(from, cut)));
          assert.ok(decoder.bufferedBytes <= HEADER_BYTES + DEFAULT_MAX_PAYLOAD);
          from = cut;
        }
        decoder.end();
        // Gather each expected DATA frame back from its pieces: consecutive, same stream, never empty.
        const gathered: Frame[] = [];
        let i = 0;
        for (const expected of frames) {
          if (expected.type !== 'data') {
            gathered.push(out[i++] as Frame);
            continue;
          }
          const parts: Uint8Array[] = [];
          let got = 0;
          do {
            const piece = out[i++];
            assert.ok(piece?.type === 'data' && piece.streamId === expected.streamId);
            assert.ok(piece.payload.length > 0 || expected.payload.length === 0);
            parts.push(piece.payload);
            got += piece.payload.length;
          } while (got < expected.payload.length);
          gathered.push({ type: 'data', streamId: expected.streamId, payload: concat(parts) });
        }
        assert.equal(i, out.length);
        assert.deepEqual(plain(gathered), plain(frames));
      }),
      { numRuns: 300 },
    );
  });

  it('survives random splits and random frame sequences (fast-check)', () => {
    const streamId = fc.integer({ min: 1, max: MAX_U32 });
    const offset = fc.oneof(fc.nat(), fc.maxSafeNat());
    const payload = fc.uint8Array({ maxLength: 600 });
    const frame: fc.Arbitrary<Frame> = fc.oneof(
      fc.constantFrom(...SAMPLES),
      fc.record({ type: fc.constant('data' as const), streamId, payload }),
      fc.record({ type: fc.constant('datagram' as const), streamId, payload }),
      fc.record({ type: fc.constant('ack' as const), streamId, offset }),
      fc.record({ type: fc.constant('fin' as const), streamId, offset }),
      fc.record({ type: fc.constant('ping' as const), nonce: offset }),
      fc.record({
        type: fc.constant('attach' as const),
        streamId,
        window: fc.integer({ min: 1, max: MAX_U32 }),
        receivedOffset: offset,
        sentOffset: offset,
      }),
      fc.record({
        type: fc.constant('rst' as const),
        streamId,
        code: fc.constantFrom('ECONNRESET', 'EPIPE', 'ROAM_ERR_X'),
        message: fc.string({ maxLength: 200, unit: 'grapheme' }),
      }),
    );
    fc.assert(
      fc.property(fc.array(frame, { maxLength: 30 }), fc.array(fc.nat(), { maxLength: 20 }), (frames, cutsRaw) => {
        const stream = concat(frames.map((f) => encodeFrame(f)));
        const cuts = [...new Set(cutsRaw.map((c) => (stream.length === 0 ? 0 : c % stream.length)))].sort(
          (a, b) => a - b,
        );
        const decoder = new FrameDecoder();
        const out: Frame[] = [];
        let from = 0;
        for (const cut of [...cuts, stream.length]) {
          out.push(...decoder.push(stream.subarray(from, cut)));
          assert.ok(decoder.bufferedBytes <= HEADER_BYTES + DEFAULT_MAX_PAYLOAD);
          from = cut;
        }
        decoder.end();
        assert.deepEqual(plain(out), plain(frames));
      }),
      { numRuns: 200 },
    );
  });
});

describe('header checks', () => {
  it('refuses a peer that does not speak Roam from its first byte', () => {
    const http = new FrameDecoder();
    expectWireError(() => http.push(text('G')), 'WIRE_BAD_MAGIC', /HTTP/);
    const tls = new FrameDecoder();
    expectWireError(() => tls.push(bytes(0x16, 0x03, 0x01)), 'WIRE_BAD_MAGIC', /TLS/);
  });

  it('names a lost frame sync after the first frame', () => {
    const decoder = new FrameDecoder();
    const good = encodeFrame({ type: 'ping', nonce: 1 });
    assert.equal(decoder.push(good).length, 1);
    expectWireError(() => decoder.push(bytes(0)), 'WIRE_BAD_MAGIC', /frame 2/);
  });

  it('refuses an unknown version, even before the header is complete', () => {
    expectWireError(() => new FrameDecoder().push(bytes(0x52, 2)), 'WIRE_UNSUPPORTED_VERSION', /unsupported version/);
    expectWireError(() => decodeFrame(header({ version: 0 })), 'WIRE_UNSUPPORTED_VERSION');
  });

  it('refuses unknown frame types', () => {
    for (const type of [0, 7, 15, 25, 255]) {
      expectWireError(() => decodeFrame(header({ type })), 'WIRE_UNKNOWN_TYPE', new RegExp(`type ${type}`));
    }
  });

  it('refuses non-zero flags, and aux where it must be zero', () => {
    expectWireError(() => decodeFrame(header({ flags: 1 })), 'WIRE_MALFORMED', /flags/);
    expectWireError(() => decodeFrame(header({ aux: 1 })), 'WIRE_MALFORMED', /aux 0/);
    expectWireError(() => decodeFrame(rawFrame({ type: FrameType.ACK, aux: 5 }, new Uint8Array(8))), 'WIRE_MALFORMED');
  });

  it('refuses a zero window where aux carries one', () => {
    for (const type of [FrameType.OPEN_OK]) {
      expectWireError(() => decodeFrame(header({ type, aux: 0 })), 'WIRE_MALFORMED', /window/);
    }
    expectWireError(
      () => decodeFrame(rawFrame({ type: FrameType.ATTACH, aux: 0 }, new Uint8Array(16))),
      'WIRE_MALFORMED',
    );
  });

  it('checks stream ids: zero for connection frames, non-zero for stream frames', () => {
    const ping = rawFrame({ type: FrameType.PING, streamId: 3 }, new Uint8Array(8));
    const err = expectWireError(() => decodeFrame(ping), 'WIRE_MALFORMED', /streamId 0/);
    assert.equal(err.frameType, 'ping');
    for (const type of [FrameType.DATA, FrameType.DATAGRAM]) {
      expectWireError(() => decodeFrame(rawFrame({ type, streamId: 0 })), 'WIRE_MALFORMED', /non-zero streamId/);
    }
  });

  it('checks the size of fixed-size payloads', () => {
    for (const type of [FrameType.PING, FrameType.PONG, FrameType.ACK, FrameType.FIN]) {
      for (const length of [0, 7, 9, 16]) {
        const streamId = type === FrameType.PING || type === FrameType.PONG ? 0 : 1;
        expectWireError(
          () => decodeFrame(rawFrame({ type, streamId }, new Uint8Array(length))),
          'WIRE_MALFORMED',
          /8-byte payload/,
        );
      }
    }
    expectWireError(() => decodeFrame(rawFrame({ type: FrameType.OPEN_OK, aux: 1 }, bytes(1))), 'WIRE_MALFORMED');
    expectWireError(
      () => decodeFrame(rawFrame({ type: FrameType.ATTACH, aux: 1 }, new Uint8Array(15))),
      'WIRE_MALFORMED',
      /at least 16/,
    );
  });

  it('refuses offsets above 2^53 - 1', () => {
    const payload = bytes(0, 0x20, 0, 0, 0, 0, 0, 0); // 2^53
    expectWireError(() => decodeFrame(rawFrame({ type: FrameType.ACK }, payload)), 'WIRE_MALFORMED', /2\^53/);
    const attach = concat([new Uint8Array(8), bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)]);
    expectWireError(
      () => decodeFrame(rawFrame({ type: FrameType.ATTACH, aux: 1 }, attach)),
      'WIRE_MALFORMED',
      /sentOffset/,
    );
  });
});

describe('limits and memory', () => {
  it('refuses an oversized DATA frame at its header, holding no more than the header', () => {
    const decoder = new FrameDecoder();
    const h = header({ length: DEFAULT_MAX_PAYLOAD + 1 });
    for (let i = 0; i < HEADER_BYTES - 1; i++) {
      assert.deepEqual(decoder.push(h.subarray(i, i + 1)), []);
      assert.ok(decoder.bufferedBytes <= HEADER_BYTES);
    }
    const err = expectWireError(() => decoder.push(h.subarray(HEADER_BYTES - 1)), 'WIRE_FRAME_TOO_LARGE', /maxPayload/);
    assert.equal(err.streamId, 1);
    assert.equal(decoder.bufferedBytes, 0);
  });

  it('refuses a declared length of 4 GiB - 1 for every type, without buffering', () => {
    for (const [name, type] of Object.entries(FrameType)) {
      const streamId = type < 16 ? 0 : 1;
      const decoder = new FrameDecoder();
      const err = expectWireError(
        () => decoder.push(concat([header({ type, streamId, length: MAX_U32, aux: 1 }), new Uint8Array(1000)])),
        type === FrameType.PING ||
          type === FrameType.PONG ||
          type === FrameType.ACK ||
          type === FrameType.FIN ||
          type === FrameType.OPEN_OK
          ? 'WIRE_MALFORMED'
          : 'WIRE_FRAME_TOO_LARGE',
      );
      assert.ok(err.message.length > 0, name);
      assert.equal(decoder.bufferedBytes, 0);
    }
  });

  it('applies the limit of each frame type', () => {
    const decoder = new FrameDecoder({ maxPayload: 1024, maxControlPayload: 4096 });
    assert.deepEqual(decoder.limits, { maxPayload: 1024, maxControlPayload: 4096 });
    assert.deepEqual(decoder.push(header({ length: 1024 })), [], 'DATA at the limit is accepted');
    expectWireError(
      () => new FrameDecoder({ maxPayload: 1024 }).push(header({ length: 1025 })),
      'WIRE_FRAME_TOO_LARGE',
    );
    expectWireError(
      () => new FrameDecoder({ maxPayload: 1024 }).push(header({ type: FrameType.DATAGRAM, length: 1025 })),
      'WIRE_FRAME_TOO_LARGE',
    );
    const control = (length: number) => header({ type: FrameType.CONTROL, streamId: 0, length });
    assert.deepEqual(new FrameDecoder({ maxControlPayload: 4096 }).push(control(4096)), []);
    expectWireError(
      () => new FrameDecoder({ maxControlPayload: 4096 }).push(control(4097)),
      'WIRE_FRAME_TOO_LARGE',
      /maxControlPayload/,
    );
    expectWireError(() => new FrameDecoder().push(control(DEFAULT_MAX_CONTROL_PAYLOAD + 1)), 'WIRE_FRAME_TOO_LARGE');
    const hello = header({ type: FrameType.HELLO, streamId: 0, length: MAX_SMALL_PAYLOAD + 1 });
    expectWireError(() => new FrameDecoder().push(hello), 'WIRE_FRAME_TOO_LARGE', /HELLO/);
    const open = header({ type: FrameType.OPEN, length: MAX_SMALL_PAYLOAD + 1, aux: 1 });
    expectWireError(() => new FrameDecoder().push(open), 'WIRE_FRAME_TOO_LARGE', /OPEN/);
  });

  it('can keep control frames small until the peer is authenticated', () => {
    const decoder = new FrameDecoder({ maxControlPayload: MAX_SMALL_PAYLOAD });
    const deployish = encodeFrame({ type: 'control', message: { type: 'leave', reason: 'x'.repeat(15_000) } });
    const hello = encodeFrame(SAMPLES[0] as Frame);
    assert.equal(decoder.push(hello).length, 1);
    decoder.setLimits({ maxControlPayload: DEFAULT_MAX_CONTROL_PAYLOAD });
    assert.equal(decoder.limits.maxPayload, DEFAULT_MAX_PAYLOAD, 'other limits unchanged');
    assert.equal(decoder.push(deployish).length, 1);
    expectWireError(() => decoder.setLimits({ maxControlPayload: 0 }), 'WIRE_INVALID_ARGUMENT');
  });

  it('grows a spanning payload with the bytes that arrive, not with the declared length', () => {
    const decoder = new FrameDecoder();
    decoder.push(header({ type: FrameType.CONTROL, streamId: 0, length: 32 * 1024 * 1024 }));
    decoder.push(text('{"type":"leave","reason":"'));
    assert.ok(decoder.bufferedBytes <= 64 * 1024, `holds ${decoder.bufferedBytes} bytes after 26`);
    for (let i = 0; i < 10; i++) decoder.push(new Uint8Array(100_000).fill(0x61));
    assert.ok(decoder.bufferedBytes <= 2 * 1_000_026 + 64 * 1024, `holds ${decoder.bufferedBytes} bytes after 1 MB`);
  });

  it('rejects bad options', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 32]) {
      expectWireError(() => new FrameDecoder({ maxPayload: bad }), 'WIRE_INVALID_ARGUMENT', /maxPayload/);
    }
  });
});

describe('JSON payloads', () => {
  const jsonFrame = (type: number, json: string | Uint8Array, streamId = 0, aux = 0): Uint8Array =>
    rawFrame({ type, streamId, aux }, typeof json === 'string' ? text(json) : json);

  it('refuses payloads that are not UTF-8', () => {
    const err = expectWireError(
      () => decodeFrame(jsonFrame(FrameType.CONTROL, bytes(0x7b, 0xff, 0x7d))),
      'WIRE_BAD_MESSAGE',
      /UTF-8/,
    );
    assert.equal(err.frameType, 'control');
  });

  it('refuses payloads that are not JSON', () => {
    for (const json of ['', '{', '{"type":"stop",}', 'undefined', '\ufeff{}']) {
      expectWireError(() => decodeFrame(jsonFrame(FrameType.CONTROL, json)), 'WIRE_BAD_MESSAGE', /JSON/);
    }
  });

  it('refuses deeply nested JSON without a stack overflow', () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    const decoder = new FrameDecoder({ maxControlPayload: 1 << 20 });
    expectWireError(() => decoder.push(jsonFrame(FrameType.CONTROL, deep)), 'WIRE_BAD_MESSAGE');
    const field = `{"type":"leave","reason":${deep}}`;
    expectWireError(
      () => new FrameDecoder({ maxControlPayload: 1 << 20 }).push(jsonFrame(FrameType.CONTROL, field)),
      'WIRE_BAD_MESSAGE',
    );
  });

  it('refuses messages that do not match their schema, naming the field', () => {
    expectWireError(() => decodeFrame(jsonFrame(FrameType.CONTROL, '{"type":"nope"}')), 'WIRE_BAD_MESSAGE', /type/);
    expectWireError(() => decodeFrame(jsonFrame(FrameType.CONTROL, '{"type":"stop"}')), 'WIRE_BAD_MESSAGE', /guestId/);
    expectWireError(() => decodeFrame(jsonFrame(FrameType.CONTROL, '[]')), 'WIRE_BAD_MESSAGE');
    expectWireError(() => decodeFrame(jsonFrame(FrameType.CONTROL, 'null')), 'WIRE_BAD_MESSAGE');
    expectWireError(
      () => decodeFrame(jsonFrame(FrameType.WELCOME, '{"type":"welcome"}')),
      'WIRE_BAD_MESSAGE',
      /welcome message/,
    );
    const open =
      '{"guest":"g","protocol":"sctp","direction":"inbound","port":1,"remote":{"address":"a","port":1,"family":"IPv4"}}';
    const err = expectWireError(
      () => decodeFrame(jsonFrame(FrameType.OPEN, open, 5, 1)),
      'WIRE_BAD_MESSAGE',
      /protocol/,
    );
    assert.equal(err.streamId, 5);
    // An image stream announces its length: none, or more than the limit, is refused.
    for (const image of ['{"guest":"g","direction":"image"}', `{"guest":"g","direction":"image","bytes":${2 ** 40}}`]) {
      expectWireError(() => decodeFrame(jsonFrame(FrameType.OPEN, image, 7, 1)), 'WIRE_BAD_MESSAGE', /bytes/);
    }
    expectWireError(
      () => decodeFrame(jsonFrame(FrameType.RST, '{"code":"","message":"x"}', 5)),
      'WIRE_BAD_MESSAGE',
      /code/,
    );
    const tail = concat([new Uint8Array(16), text('{"epoch":-1}')]);
    expectWireError(() => decodeFrame(jsonFrame(FrameType.ATTACH, tail, 5, 1)), 'WIRE_BAD_MESSAGE', /ATTACH tail/);
  });

  it('a join message from another control protocol is an unsupported version', () => {
    const join = { ...(SAMPLES[0] as { message: object }).message, protocol: 2 };
    expectWireError(
      () => decodeFrame(jsonFrame(FrameType.HELLO, JSON.stringify(join))),
      'WIRE_UNSUPPORTED_VERSION',
      /control protocol 2/,
    );
    expectWireError(
      () => decodeFrame(jsonFrame(FrameType.HELLO, JSON.stringify({ ...join, protocol: '1' }))),
      'WIRE_BAD_MESSAGE',
    );
  });

  it('drops unknown fields, so a newer peer may add some', () => {
    const frame = decodeFrame(jsonFrame(FrameType.CONTROL, '{"type":"stop","guestId":"g","later":true}'));
    assert.deepEqual(frame, { type: 'control', message: { type: 'stop', guestId: 'g' } });
  });
});

describe('errors', () => {
  it('poisons the decoder: every later push throws the same error', () => {
    const decoder = new FrameDecoder();
    const first = expectWireError(() => decoder.push(bytes(0x00)), 'WIRE_BAD_MAGIC');
    assert.equal(decoder.error, first);
    assert.throws(
      () => decoder.push(encodeFrame({ type: 'ping', nonce: 1 })),
      (err) => err === first,
    );
    assert.throws(
      () => decoder.end(),
      (err) => err === first,
    );
    assert.equal(decoder.bufferedBytes, 0);
  });

  it('frames before a bad one in earlier chunks were delivered; the bad chunk yields none', () => {
    const decoder = new FrameDecoder();
    const ping = encodeFrame({ type: 'ping', nonce: 1 });
    assert.equal(decoder.push(ping).length, 1);
    expectWireError(() => decoder.push(concat([ping, header({ type: 99 })])), 'WIRE_UNKNOWN_TYPE');
  });

  it('reports a connection that ends inside a frame as truncated', () => {
    const frame = encodeFrame({ type: 'data', streamId: 1, payload: text('abcdef') });
    for (let cut = 1; cut < frame.length; cut++) {
      const decoder = new FrameDecoder();
      assert.deepEqual(decoder.push(frame.subarray(0, cut)), []);
      assert.equal(decoder.idle, false);
      expectWireError(() => decoder.end(), 'WIRE_MALFORMED', /truncated/);
    }
    expectWireError(() => decodeFrame(frame.subarray(0, 20)), 'WIRE_MALFORMED', /truncated/);
    expectWireError(() => decodeFrame(concat([frame, frame])), 'WIRE_MALFORMED', /exactly one/);
    const clean = new FrameDecoder();
    clean.push(frame);
    clean.end();
  });

  it('random bytes only ever raise a WireError (fast-check)', () => {
    const prefix = fc.constantFrom(new Uint8Array(0), bytes(0x52), bytes(0x52, 1));
    fc.assert(
      fc.property(prefix, fc.uint8Array({ maxLength: 300 }), fc.nat({ max: 40 }), (head, tail, step) => {
        const input = concat([head, tail]);
        const decoder = new FrameDecoder({ maxPayload: 4096, maxControlPayload: 4096 });
        try {
          for (let i = 0; i < input.length; i += step + 1) decoder.push(input.subarray(i, i + step + 1));
          decoder.end();
        } catch (err) {
          assert.ok(err instanceof WireError, `not a WireError: ${String(err)}`);
        }
        assert.ok(decoder.bufferedBytes <= HEADER_BYTES + 4096);
      }),
      { numRuns: 200 },
    );
  });

  it('corrupting any byte of a valid stream only ever raises a WireError (fast-check)', () => {
    const stream = concat(SAMPLES.map((f) => encodeFrame(f)));
    fc.assert(
      fc.property(fc.nat({ max: stream.length - 1 }), fc.integer({ min: 1, max: 255 }), (at, xor) => {
        const damaged = stream.slice();
        damaged[at] = (damaged[at] ?? 0) ^ xor;
        const decoder = new FrameDecoder();
        try {
          decoder.push(damaged);
          decoder.end();
        } catch (err) {
          assert.ok(err instanceof WireError, `not a WireError: ${String(err)}`);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('refuses a non-Uint8Array chunk', () => {
    expectWireError(() => new FrameDecoder().push('abc' as unknown as Uint8Array), 'WIRE_INVALID_ARGUMENT');
  });
});

describe('encoder checks', () => {
  it('refuses fields the wire cannot carry', () => {
    const payload = new Uint8Array(1);
    expectWireError(() => encodeFrame({ type: 'data', streamId: 0, payload }), 'WIRE_INVALID_ARGUMENT', /streamId/);
    expectWireError(() => encodeFrame({ type: 'data', streamId: 2 ** 32, payload }), 'WIRE_INVALID_ARGUMENT');
    expectWireError(() => encodeFrame({ type: 'data', streamId: 1.5, payload }), 'WIRE_INVALID_ARGUMENT');
    expectWireError(() => encodeAck(1, -1), 'WIRE_INVALID_ARGUMENT', /offset/);
    expectWireError(() => encodeAck(1, 2 ** 53), 'WIRE_INVALID_ARGUMENT');
    expectWireError(() => encodeFrame({ type: 'ping', nonce: 0.5 }), 'WIRE_INVALID_ARGUMENT', /nonce/);
    expectWireError(() => encodeFrame({ type: 'openOk', streamId: 1, window: 0 }), 'WIRE_INVALID_ARGUMENT', /window/);
    expectWireError(() => encodeFrame({ type: 'bogus' } as unknown as Frame), 'WIRE_INVALID_ARGUMENT', /unknown type/);
    expectWireError(() => encodeDataHeader(1, -1), 'WIRE_INVALID_ARGUMENT');
  });

  it('refuses payloads above the peer limit', () => {
    const big = new Uint8Array(DEFAULT_MAX_PAYLOAD + 1);
    expectWireError(() => encodeFrame({ type: 'data', streamId: 1, payload: big }), 'WIRE_FRAME_TOO_LARGE');
    assert.equal(
      encodeFrame({ type: 'data', streamId: 1, payload: big }, { maxPayload: 1 << 20 }).length,
      big.length + 16,
    );
    expectWireError(() => encodeDataHeader(1, DEFAULT_MAX_PAYLOAD + 1), 'WIRE_FRAME_TOO_LARGE');
    const leave = { type: 'control', message: { type: 'leave', reason: 'x'.repeat(200) } } as const;
    expectWireError(() => encodeFrame(leave, { maxControlPayload: 100 }), 'WIRE_FRAME_TOO_LARGE', /maxControlPayload/);
  });

  it('refuses messages that fail their schema, so the peer never has to', () => {
    expectWireError(
      () => encodeFrame({ type: 'rst', streamId: 1, code: 'has space', message: '' }),
      'WIRE_BAD_MESSAGE',
      /cannot encode RST/,
    );
    expectWireError(
      () => encodeFrame({ type: 'control', message: { type: 'stop' } as unknown as { type: 'stop'; guestId: string } }),
      'WIRE_BAD_MESSAGE',
      /guestId/,
    );
  });

  it('every valid small message fits its fixed limit, escaped', () => {
    const worst = '\u0001'.repeat(1024); // 6 bytes each once JSON-escaped
    const frames: Frame[] = [
      { type: 'rst', streamId: 1, code: 'X'.repeat(64), message: worst },
      { type: 'goaway', code: 'X'.repeat(64), message: worst },
      {
        type: 'attach',
        streamId: 1,
        window: 1,
        receivedOffset: 0,
        sentOffset: 0,
        info: { guestId: 'g'.repeat(128), epoch: Number.MAX_SAFE_INTEGER, reason: worst },
      },
      {
        type: 'hello',
        message: {
          type: 'join',
          protocol: 1,
          token: worst,
          hostId: HOST_ID,
          name: '\u0001'.repeat(128),
          advertise: '\u0001'.repeat(255),
          peerPort: 65535,
          version: '\u0001'.repeat(64),
        },
      },
    ];
    for (const frame of frames) assert.deepEqual(plain([decodeFrame(encodeFrame(frame))]), plain([frame]));
  });
});
