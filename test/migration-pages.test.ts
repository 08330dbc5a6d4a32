/**
 * The pieces of a move's page transfer, without sockets: the codec chooser and page messages whose
 * body is written in parts (checked by the CRC like one buffer).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CodecChooser, PageWriter, applyPackedPages, packPages } from '../src/migration/pages.js';
import { PeerDecoder, encodePeer } from '../src/migration/peer-wire.js';

const MIB = 1 << 20;

describe('CodecChooser', () => {
  it('measures the link plain, then the compressor, then keeps the cheaper', () => {
    const fast = new CodecChooser();
    assert.equal(fast.choose(), 'none');
    fast.record('none', 8 * MIB, 8 * MIB, 0, 4); // 2 GB/s
    assert.equal(fast.choose(), 'lz4');
    fast.record('lz4', 8 * MIB, 3 * MIB, 20, 1.5); // 400 MB/s to compress
    assert.equal(fast.choose(), 'none');

    const slow = new CodecChooser();
    slow.record('none', 8 * MIB, 8 * MIB, 0, 80); // 100 MB/s
    slow.record('lz4', 8 * MIB, 3 * MIB, 20, 30);
    assert.equal(slow.choose(), 'lz4');
  });

  it('tries nothing out in the pause: until LZ4 is measured, it goes by its usual cost', () => {
    const fast = new CodecChooser();
    assert.equal(fast.choose(true), 'none', 'the link is not known yet');
    fast.record('none', 8 * MIB, 8 * MIB, 0, 4); // 2 GB/s
    assert.equal(fast.choose(true), 'none', 'a fast link: plain, without trying LZ4');
    assert.equal(fast.choose(), 'lz4', 'before the freeze, LZ4 is tried');

    const slow = new CodecChooser();
    slow.record('none', 8 * MIB, 8 * MIB, 0, 80); // 100 MB/s
    assert.equal(slow.choose(true), 'lz4', 'a slow link: LZ4, as it usually pays there');
    slow.record('lz4', 8 * MIB, 8 * MIB, 200, 80); // measured: slow, and no smaller
    assert.equal(slow.choose(true), 'none', 'once measured, the measure decides');
  });

  it('learns nothing of the link from small messages, and keeps a fixed codec', () => {
    const chooser = new CodecChooser();
    chooser.record('none', 64 * 1024, 64 * 1024, 0, 0);
    assert.equal(chooser.choose(), 'none');
    const fixed = new CodecChooser('lz4');
    fixed.record('none', 8 * MIB, 8 * MIB, 0, 1);
    assert.equal(fixed.choose(), 'lz4');
  });
});

describe('page messages in parts', () => {
  for (const codec of ['none', 'lz4'] as const) {
    it(`round-trip with ${codec}, and a damaged part fails the checksum`, () => {
      const indices = new Uint8Array(8);
      new DataView(indices.buffer).setUint32(0, 1, true);
      new DataView(indices.buffer).setUint32(4, 3, true);
      const data = Buffer.alloc(2 * 65536);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
      const header = {
        type: 'pages',
        round: 0,
        final: true,
        byteLength: 4 * 65536,
        block: 65536,
        count: 2,
        codec,
        rawBytes: data.length,
      } as const;
      const parts = encodePeer(
        header,
        packPages({ indices, parts: [data], count: 2, block: 65536, rawBytes: data.length }, codec),
      );
      const decoder = new PeerDecoder();
      const messages = parts.flatMap((part) => decoder.push(part));
      assert.equal(messages.length, 1);
      const memory = new Uint8Array(4 * 65536);
      applyPackedPages(messages[0]!.body, header, memory);
      assert.ok(Buffer.from(memory.subarray(65536, 2 * 65536)).equals(data.subarray(0, 65536)));
      assert.ok(Buffer.from(memory.subarray(3 * 65536)).equals(data.subarray(65536)));
      assert.equal(memory[0], 0);

      const damaged = encodePeer(
        header,
        packPages({ indices, parts: [data], count: 2, block: 65536, rawBytes: data.length }, codec),
      );
      const last = damaged[damaged.length - 1]!;
      last[last.length >> 1] = (last[last.length >> 1] ?? 0) ^ 0xff;
      const whole = Buffer.concat(damaged);
      assert.throws(() => new PeerDecoder().push(whole), /checksum mismatch/);
    });
  }
});

describe('page messages streamed into memory', () => {
  const indices = new Uint8Array(8);
  new DataView(indices.buffer).setUint32(0, 0, true);
  new DataView(indices.buffer).setUint32(4, 2, true);
  const data = Buffer.alloc(2 * 65536);
  for (let i = 0; i < data.length; i++) data[i] = (i * 13) & 0xff;
  const header = {
    type: 'pages',
    round: 0,
    final: false,
    byteLength: 3 * 65536,
    block: 65536,
    count: 2,
    codec: 'none',
    rawBytes: data.length,
  } as const;
  const streamInto = (memory: Uint8Array): PeerDecoder =>
    new PeerDecoder((h) => (h.type === 'pages' ? new PageWriter(h.count, h.rawBytes, memory, h.block) : undefined));

  it('writes the pages where they belong as chunks arrive, then hands on the header alone', () => {
    const memory = new Uint8Array(3 * 65536);
    const decoder = streamInto(memory);
    const whole = Buffer.concat([
      ...encodePeer(
        header,
        packPages({ indices, parts: [data], count: 2, block: 65536, rawBytes: data.length }, 'none'),
      ),
      ...encodePeer({ type: 'resumed', restoreMs: 1 }),
    ]);
    const messages = [];
    for (let at = 0; at < whole.length; at += 4093) messages.push(...decoder.push(whole.subarray(at, at + 4093)));
    assert.deepEqual(
      messages.map((m) => [m.header.type, m.streamed === true, m.body.length]),
      [
        ['pages', true, 0],
        ['resumed', false, 0],
      ],
    );
    assert.ok(Buffer.from(memory.subarray(0, 65536)).equals(data.subarray(0, 65536)));
    assert.equal(memory[65536 + 7], 0);
    assert.ok(Buffer.from(memory.subarray(2 * 65536)).equals(data.subarray(65536)));
  });

  it('still refuses a damaged body (its checksum is checked at its last byte)', () => {
    const parts = encodePeer(
      header,
      packPages({ indices, parts: [Buffer.from(data)], count: 2, block: 65536, rawBytes: data.length }, 'none'),
    );
    const last = parts[parts.length - 1]!;
    last[100] = (last[100] ?? 0) ^ 1;
    assert.throws(() => streamInto(new Uint8Array(3 * 65536)).push(Buffer.concat(parts)), /checksum mismatch/);
  });
});
