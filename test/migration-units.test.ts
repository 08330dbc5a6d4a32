/**
 * The pieces of live migration without sockets: the peer protocol codec, pre-copy page tracking,
 * a stream's snapshot across a move, and the proxy's decisions (the commit point) as a state machine.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { describe, it } from 'node:test';
import { PAGE_SIZE } from '../src/guest/image/format.js';
import { LinkStream, type StreamCarrier } from '../src/link/stream.js';
import {
  PageShadow,
  PageWriter,
  ShadowBuffers,
  applyPackedPages,
  packPages,
  pageSink,
  viewBlocks,
  type PageBatch,
} from '../src/migration/pages.js';
import {
  BLOCK_SIZE,
  MAX_HEADER_BYTES,
  PREFIX_BYTES,
  PeerDecoder,
  encodePeer,
  type PeerHeader,
} from '../src/migration/peer-wire.js';
import { WASM_BASE, prepareLanding } from '../src/migration/movable.js';
import { PeerChannel } from '../src/migration/peer-channel.js';
import { PeerPool, onKeptOrNew } from '../src/migration/peer-pool.js';
import { EMPTY_MODULE, serveTarget, targetContext, wasmOffer } from './helpers/move-target.js';
import type { RoamError } from '../src/errors.js';
import { ROAM_VERSION } from '../src/version.js';
import { Migrations, type MigrationPorts } from '../src/proxy/migrations.js';
import type { ControlMessage } from '../src/wire/index.js';
import { SpareSandbox } from '../src/migration/spare.js';
import { rehearseMoveIn } from '../src/migration/rehearsal.js';
import { Guest } from '../src/guest/guest.js';
import { DEFAULT_LIMITS } from '../src/guest/sandbox/sandbox.js';
import { runtimeTemplate } from '../src/guest/template.js';

const concat = (parts: Uint8Array[]): Buffer => Buffer.concat(parts);

describe('peer protocol codec', () => {
  const header: PeerHeader = {
    type: 'pages',
    round: 2,
    final: false,
    byteLength: 4 * PAGE_SIZE,
    block: PAGE_SIZE,
    count: 1,
    codec: 'none',
    rawBytes: PAGE_SIZE,
  };
  const body = Buffer.alloc(4 + PAGE_SIZE, 7);

  it('decodes messages split at every byte and many per chunk', () => {
    const bytes = concat([...encodePeer(header, body), ...encodePeer({ type: 'resumed', restoreMs: 1.5 })]);
    const decoder = new PeerDecoder();
    const got = [];
    for (let i = 0; i < bytes.length; i++) got.push(...decoder.push(bytes.subarray(i, i + 1)));
    assert.deepEqual(
      got.map((m) => m.header.type),
      ['pages', 'resumed'],
    );
    assert.deepEqual(got[0]?.header, header);
    assert.ok(Buffer.from(got[0]?.body ?? []).equals(body));
    assert.equal(new PeerDecoder().push(bytes).length, 2);
  });

  it('refuses a body damaged in transit, naming the checksum', () => {
    const bytes = concat(encodePeer(header, body));
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 10) ^ 1, bytes.length - 10);
    assert.throws(() => new PeerDecoder().push(bytes), /checksum mismatch/);
    // Every byte counts, the last one too, and a damaged hash as much as a damaged body.
    const last = concat(encodePeer(header, body));
    last.writeUInt8(last.readUInt8(last.length - 1) ^ 0x80, last.length - 1);
    assert.throws(() => new PeerDecoder().push(last), /checksum mismatch/);
    const hash = concat(encodePeer(header, body));
    hash.writeUInt8(hash.readUInt8(19) ^ 1, 19);
    assert.throws(() => new PeerDecoder().push(hash), /checksum mismatch/);
  });

  it('tells a peer of an earlier protocol (RMP1: CRC-32, RMP2: Snappy pages, RMP3: XXH64, RMP4: state last, RMP5: no freezing word, RMP6: whole pages) to run the same Roam version', () => {
    const json = Buffer.from(JSON.stringify({ type: 'resumed', restoreMs: 1 }));
    for (const magic of [0x524d_5031, 0x524d_5032, 0x524d_5033, 0x524d_5034, 0x524d_5035, 0x524d_5036]) {
      const old = Buffer.alloc(20 + json.length);
      old.writeUInt32BE(magic, 0);
      old.writeUInt32BE(json.length, 4);
      json.copy(old, 20);
      assert.throws(() => new PeerDecoder().push(old), /older peer protocol: run the same Roam version/);
    }
  });

  it('refuses bad magic, oversized headers and bodies before buffering them, and malformed headers', () => {
    assert.throws(() => new PeerDecoder().push(Buffer.alloc(PREFIX_BYTES)), /bad magic/);
    const big = concat(encodePeer({ type: 'resumed', restoreMs: 1 }));
    big.writeUInt32BE(MAX_HEADER_BYTES + 1, 4);
    assert.throws(() => new PeerDecoder().push(big.subarray(0, PREFIX_BYTES)), /header of \d+ bytes is outside/);
    const huge = concat(encodePeer({ type: 'resumed', restoreMs: 1 }));
    huge.writeUInt32BE(0xffff_ffff, 8);
    assert.throws(() => new PeerDecoder().push(huge.subarray(0, PREFIX_BYTES)), /body of \d+ bytes is larger/);
    const wrong = concat(encodePeer({ type: 'resumed', restoreMs: -1 } as unknown as PeerHeader));
    assert.throws(() => new PeerDecoder().push(wrong), /malformed at restoreMs/);
  });

  it("an offer names its guest's kind: limits for JavaScript, the module for WebAssembly, never both", () => {
    const common = {
      type: 'offer' as const,
      migrationId: 'm1',
      token: 't'.repeat(32),
      guestId: 'g1',
      name: 'job',
      roamVersion: '0.1.0',
      memoryBytes: 2 * PAGE_SIZE,
    };
    const limits = { memoryBytes: 1 << 28, cpuBudgetMs: 5000, stackBytes: 1 << 20 };
    const wasm = { moduleBytes: 8, sha256: 'a'.repeat(64), memoryLimit: 1 << 30, sliceMs: 20 };
    const module = Buffer.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
    const decode = (header: unknown, body: Uint8Array = new Uint8Array(0)) =>
      new PeerDecoder().push(concat(encodePeer(header as PeerHeader, body)));
    assert.deepEqual(decode({ ...common, base: 'runtime', limits })[0]?.header, { ...common, base: 'runtime', limits });
    const offer = decode({ ...common, kind: 'wasm', base: 'zero', wasm }, module)[0];
    assert.deepEqual(offer?.header, { ...common, kind: 'wasm', base: 'zero', wasm });
    assert.ok(Buffer.from(offer?.body ?? []).equals(module), 'the module travels as the body');
    assert.throws(() => decode({ ...common, base: 'runtime' }), /malformed at kind/);
    assert.throws(() => decode({ ...common, kind: 'wasm', base: 'zero' }), /malformed at kind/);
    assert.throws(() => decode({ ...common, kind: 'wasm', base: 'zero', wasm, limits }), /malformed at kind/);
    assert.throws(() => decode({ ...common, base: 'runtime', limits, wasm }), /malformed at kind/);
    assert.throws(
      () => decode({ ...common, kind: 'wasm', base: 'zero', wasm: { ...wasm, sha256: 'x' } }),
      /wasm\.sha256/,
    );
    assert.throws(
      () => decode({ ...common, kind: 'wasm', base: 'zero', wasm: { ...wasm, moduleBytes: 2 ** 40 } }),
      /wasm\.moduleBytes/,
    );
  });
});

describe('a WebAssembly guest landing on a target', () => {
  const module = EMPTY_MODULE;
  const offer = wasmOffer;

  it('refuses a module that is not the one the offer names, and memory beyond its limit', async () => {
    await assert.rejects(
      prepareLanding(offer({ moduleBytes: module.length, sha256: 'b'.repeat(64) }), module),
      (err: RoamError) => err.code === 'ROAM_ERR_IMAGE_MALFORMED' && /does not match/.test(err.message),
    );
    const landing = await prepareLanding(offer(), module);
    const memory = landing.memory(2 * PAGE_SIZE);
    assert.equal(memory.length, 2 * PAGE_SIZE);
    assert.ok(
      memory.every((b) => b === 0),
      'pages land on zeros',
    );
    assert.throws(() => landing.memory(8 * PAGE_SIZE), /limit/);
    assert.throws(() => landing.memory(PAGE_SIZE + 1), /whole pages/);
    landing.dispose();
  });

  it('refuses an offer from another Roam version', async () => {
    const m = { ...offer(), roamVersion: '0.0.0-other' };
    await assert.rejects(prepareLanding(m, module), (err: RoamError) => err.code === 'ROAM_ERR_IMAGE_VERSION');
  });

  it('takes the transfer only in its order: state, final pages, then an end that counts them', async () => {
    const failed: string[] = [];
    const target = await serveTarget(targetContext(failed));
    const pages = (final: boolean): [PeerHeader, Uint8Array[]] => [
      {
        type: 'pages',
        round: 0,
        final,
        byteLength: PAGE_SIZE,
        block: 4096,
        count: 16,
        codec: 'none',
        rawBytes: PAGE_SIZE,
      },
      packPages(
        viewBlocks(
          Buffer.alloc(PAGE_SIZE, 9),
          Uint32Array.from({ length: 16 }, (_, i) => i),
        ),
        'none',
      ),
    ];
    const state: [PeerHeader, Uint8Array] = [
      {
        type: 'state',
        meta: { guestId: 'g1', name: 'job', roamVersion: ROAM_VERSION, base: WASM_BASE, createdAt: 'now' },
        stateBytes: 2,
        filesBytes: 0,
      },
      Buffer.from('{}'),
    ];
    /** Offers the guest, sends `messages` after the accept, and returns the target's answer. */
    const run = async (messages: [PeerHeader, (Uint8Array | Uint8Array[])?][]): Promise<PeerHeader> => {
      const channel = await target.offered();
      try {
        for (const [header, body] of messages) await channel.send(header, body);
        return (await channel.next(5000, 'answer')).header;
      } finally {
        channel.destroy();
      }
    };
    try {
      const early = await run([pages(true)]);
      assert.equal(early.type === 'fail' && early.code, 'ROAM_ERR_PEER_PROTOCOL');
      assert.match(failed.pop() ?? '', /^precopy: .*unexpected pages during the precopy/);
      const short = await run([state, pages(true), [{ type: 'end', count: 17 }]]);
      assert.equal(short.type === 'fail' && short.code, 'ROAM_ERR_PEER_PROTOCOL');
      assert.match(failed.pop() ?? '', /^transfer: .*16 final blocks came of 17/);
      const twice = await run([state, state]);
      assert.equal(twice.type === 'fail' && twice.code, 'ROAM_ERR_PEER_PROTOCOL');
      assert.match(failed.pop() ?? '', /unexpected state during the transfer/);
      const channel = await target.offered();
      try {
        await channel.send({ type: 'freezing' });
        assert.equal((await channel.next(5000, 'holding')).header.type, 'holding');
        await channel.send({ type: 'freezing' });
        const again = (await channel.next(5000, 'answer')).header;
        assert.equal(again.type === 'fail' && again.code, 'ROAM_ERR_PEER_PROTOCOL');
        assert.match(failed.pop() ?? '', /^precopy: .*unexpected freezing during the precopy/);
      } finally {
        channel.destroy();
      }
    } finally {
      target.close();
    }
  });
});

describe('pre-copy page tracking', () => {
  for (const buffer of ['fresh', 'left over from an earlier move'] as const) {
    it(`finds changed pages, pages grown beyond the target, and pages that went back to zero (${buffer} buffer)`, () => {
      const base = new Uint8Array(4 * PAGE_SIZE);
      base[PAGE_SIZE + 5] = 1; // page 1 non-zero in the template
      // A used buffer holds another guest's pages: none of them may count as sent.
      const shadow = new PageShadow(base, buffer === 'fresh' ? undefined : Buffer.alloc(8 * PAGE_SIZE, 0xab));
      const memory = new Uint8Array(6 * PAGE_SIZE);
      memory.set(base);
      assert.deepEqual([...shadow.dirty(memory)], []);
      memory[3 * PAGE_SIZE] = 9; // changed
      memory[PAGE_SIZE + 5] = 0; // back to zero
      memory[5 * PAGE_SIZE + 100] = 4; // beyond what the target has
      const dirty = shadow.dirty(memory);
      assert.deepEqual([...dirty], [1, 3, 5]);
      // The sample reads every second page here (0, 2, 4): of those, none changed.
      assert.equal(shadow.sampleDirty(memory, 2), 0);
      assert.equal(shadow.sampleDirty(memory, 1), 3, 'a stride of 1 is the whole scan');
      // Bounded where the guest's heap ends: pages past it are not looked at.
      assert.deepEqual([...shadow.dirty(memory, 0, 4)], [1, 3]);
      assert.equal(shadow.sampleDirty(memory, 1, 4), 2);
      // A message's worth at a time (the final scan): the first `limit` found, then on from after them.
      assert.deepEqual([...shadow.dirty(memory, 0, 6, 2)], [1, 3]);
      assert.deepEqual([...shadow.dirty(memory, 4, 6, 2)], [5]);
      assert.deepEqual([...shadow.dirty(memory, 2, 6, 1)], [3]);

      // What the target rebuilds from the packed pages equals the source's memory.
      const target = new Uint8Array(6 * PAGE_SIZE);
      target.set(base);
      const batch = shadow.take(memory, dirty);
      // Of pages the target holds (here the template's), only the blocks that differ; beyond the
      // template, a page never sent goes whole.
      const blocksOf = (b: PageBatch): number[] => [...new Uint32Array(Uint8Array.from(b.indices).buffer)];
      assert.deepEqual(blocksOf(batch), [16, 48, ...Array.from({ length: 16 }, (_, i) => 80 + i)]);
      assert.equal(batch.rawBytes, 18 * BLOCK_SIZE);
      // The hash `take` computed on the way is the plain body's: a decoder accepts the message.
      assert.ok(batch.hash !== undefined);
      const header: PeerHeader = {
        type: 'pages',
        round: 0,
        final: false,
        byteLength: memory.length,
        block: batch.block,
        count: batch.count,
        codec: 'none',
        rawBytes: batch.rawBytes,
      };
      const wire = concat(encodePeer(header, packPages(batch, 'none'), batch.hash));
      assert.deepEqual(concat(encodePeer(header, packPages(batch, 'none'))), wire);
      assert.equal(new PeerDecoder().push(wire).length, 1);
      for (const codec of ['lz4', 'none'] as const) {
        const copy = target.slice();
        applyPackedPages(Buffer.concat(packPages(batch, codec)), { ...header, codec }, copy);
        assert.ok(Buffer.from(copy).equals(Buffer.from(memory)), codec);
      }
      // The batch is a view of the shadow, not of the guest's memory: later changes do not leak in.
      memory[3 * PAGE_SIZE] = 10;
      const streamed = target.slice();
      const writer = new PageWriter(batch.count, batch.rawBytes, streamed, batch.block);
      for (const part of packPages(batch, 'none')) {
        for (let at = 0; at < part.length; at += 1000) writer.write(part.subarray(at, at + 1000));
      }
      writer.end();
      assert.equal(streamed[3 * PAGE_SIZE], 9);
      memory[3 * PAGE_SIZE] = 9;
      assert.ok(Buffer.from(streamed).equals(Buffer.from(memory)), 'written chunk by chunk');
      assert.deepEqual([...shadow.dirty(memory)], [], 'nothing left once sent');

      // A page sent before: the next round sends only its blocks changed since, as does the last.
      memory[3 * PAGE_SIZE + 5000] = 7;
      memory[3 * PAGE_SIZE + 5001] = 7;
      memory[5 * PAGE_SIZE + 4 * BLOCK_SIZE] = 1;
      const again = shadow.dirty(memory);
      assert.deepEqual([...again], [3, 5]);
      assert.deepEqual(blocksOf(shadow.view(memory, again)), [49, 84], 'the last round, from memory itself');
      const next = shadow.take(memory, again);
      assert.deepEqual(blocksOf(next), [49, 84]);
      applyPackedPages(
        Buffer.concat(packPages(next, 'none')),
        { ...header, count: next.count, rawBytes: next.rawBytes },
        streamed,
      );
      assert.ok(Buffer.from(streamed).equals(Buffer.from(memory)), 'the blocks complete the pages sent before');
      assert.deepEqual([...shadow.dirty(memory)], []);

      // Memory that grows past the shadow: held pages move to the larger buffer, the new ones are compared with zero.
      const grown = new Uint8Array(12 * PAGE_SIZE);
      grown.set(memory);
      grown[11 * PAGE_SIZE + 7] = 2;
      const more = shadow.dirty(grown);
      assert.deepEqual([...more], [11]);
      shadow.take(grown, more);
      assert.ok(shadow.storage.length >= grown.length);
      assert.deepEqual([...shadow.dirty(grown)], []);
      grown[3 * PAGE_SIZE] = 1;
      assert.deepEqual([...shadow.dirty(grown)], [3], 'a held page is still compared with what was sent');
    });
  }

  it('keeps the last shadow buffer for the next move, and lets go of it on close', () => {
    const shadows = new ShadowBuffers();
    const first = shadows.take(4 * PAGE_SIZE);
    shadows.give(first);
    assert.equal(shadows.take(2 * PAGE_SIZE), first, 'a kept buffer large enough is reused');
    assert.notEqual(shadows.take(2 * PAGE_SIZE), first, 'and handed out once');
    shadows.give(first);
    assert.notEqual(shadows.take(8 * PAGE_SIZE), first, 'one too small is not');
    shadows.give(first);
    shadows.close();
    assert.notEqual(shadows.take(PAGE_SIZE), first);
  });

  it('applies page messages in the order they came, compressed or plain, however they are read', () => {
    // The same page sent three times: compressed, then plain, then compressed again. Whatever the
    // read boundaries, the last copy must be what the target's memory holds.
    const message = (fill: number, codec: 'lz4' | 'none'): Buffer => {
      const batch = viewBlocks(
        Buffer.alloc(PAGE_SIZE, fill),
        Uint32Array.from({ length: 16 }, (_, i) => i),
      );
      const header: PeerHeader = {
        type: 'pages',
        round: 0,
        final: false,
        byteLength: PAGE_SIZE,
        block: batch.block,
        count: batch.count,
        codec,
        rawBytes: batch.rawBytes,
      };
      return Buffer.concat(encodePeer(header, packPages(batch, codec)));
    };
    const wire = Buffer.concat([message(1, 'lz4'), message(2, 'none'), message(3, 'lz4'), message(4, 'none')]);
    for (const cut of [1, 7, 1000, wire.length]) {
      const memory = new Uint8Array(PAGE_SIZE);
      const decoder = new PeerDecoder((h, bodyBytes) =>
        h.type === 'pages' ? pageSink(h, bodyBytes, memory) : undefined,
      );
      const seen: number[] = [];
      for (let at = 0; at < wire.length; at += cut) {
        decoder.push(wire.subarray(at, at + cut));
        seen.push(memory[0] ?? 0);
      }
      assert.equal(memory[0], 4, `read ${cut} bytes at a time`);
      assert.ok(memory.every((b) => b === 4));
      // Never an older copy over a newer one on the way.
      assert.deepEqual(
        seen,
        [...seen].sort((a, b) => a - b),
        `read ${cut} bytes at a time`,
      );
    }
  });

  it('refuses hostile page messages: out of range, out of order, lengths that do not add up', () => {
    const memory = new Uint8Array(2 * PAGE_SIZE);
    const pack = (blocks: number[]): Buffer => {
      const indices = Buffer.alloc(blocks.length * 4);
      blocks.forEach((p, i) => indices.writeUInt32LE(p, i * 4));
      const rawBytes = blocks.length * BLOCK_SIZE;
      return Buffer.concat(
        packPages({ indices, parts: [Buffer.alloc(rawBytes)], count: blocks.length, block: 4096, rawBytes }, 'none'),
      );
    };
    const plain = (count: number, rawBytes = count * BLOCK_SIZE) =>
      ({ count, block: 4096, codec: 'none', rawBytes }) as const;
    assert.throws(() => applyPackedPages(pack([32]), plain(1), memory), /block 32 is beyond the memory's 32 blocks/);
    assert.throws(() => applyPackedPages(pack([1, 0]), plain(2), memory), /not ascending/);
    assert.throws(() => applyPackedPages(pack([1, 1]), plain(2), memory), /not ascending/);
    assert.throws(() => applyPackedPages(pack([0]), plain(1, 2 * BLOCK_SIZE), memory), /raw bytes/);
    // 64-KiB blocks: the same memory holds 2 of them.
    const big = { count: 1, block: 65536, codec: 'none', rawBytes: PAGE_SIZE } as const;
    const page = (index: number): Buffer =>
      Buffer.concat(
        packPages(
          {
            indices: Buffer.from([index, 0, 0, 0]),
            parts: [Buffer.alloc(PAGE_SIZE, 3)],
            count: 1,
            block: 65536,
            rawBytes: PAGE_SIZE,
          },
          'none',
        ),
      );
    assert.throws(() => applyPackedPages(page(2), big, memory), /block 2 is beyond the memory's 2 blocks of 65536/);
    applyPackedPages(page(1), big, memory);
    assert.equal(memory[PAGE_SIZE], 3);
    assert.throws(
      () => applyPackedPages(pack([0]), { ...plain(1), codec: 'lz4' }, memory),
      /LZ4 block declares \d+ bytes, expected 4096/,
    );
    // An LZ4 block that declares more than the header: refused before the decoder allocates it.
    const indices = Buffer.alloc(4);
    const lying = Buffer.concat(
      packPages(
        { indices, parts: [Buffer.alloc(2 * BLOCK_SIZE)], count: 1, block: 4096, rawBytes: 2 * BLOCK_SIZE },
        'lz4',
      ),
    );
    assert.throws(
      () => applyPackedPages(lying, { ...plain(1), codec: 'lz4' }, memory),
      /declares 8192 bytes, expected 4096/,
    );
    const garbage = Buffer.concat([indices, Buffer.from([0, 16, 0, 0]), Buffer.alloc(40, 0xff)]); // declares 4096
    assert.throws(() => applyPackedPages(garbage, { ...plain(1), codec: 'lz4' }, memory), /do not decompress/);
  });
});

describe('a stream across a move', () => {
  class Recorder implements StreamCarrier {
    data: Buffer[] = [];
    fins: number[] = [];
    sendData(_id: number, chunk: Uint8Array): void {
      this.data.push(Buffer.from(chunk));
    }
    sendAck(): void {}
    sendFin(_id: number, offset: number): void {
      this.fins.push(offset);
    }
    sendRst(): void {}
    writable(): boolean {
      return true;
    }
  }

  it('carries what was written, including writes held back by the window, and the end', async () => {
    const source = new LinkStream(4, { window: 1024 });
    const first = new Recorder();
    source.attach(first, 0);
    const payload = Buffer.alloc(5000, 3);
    for (let i = 0; i < 5; i++) source.write(payload.subarray(i * 1000, (i + 1) * 1000));
    source.end();
    source.onAck(512); // the peer took 512 bytes
    const snap = source.snapshot();
    assert.equal(snap.sent, 5000, 'held writes were taken in');
    assert.equal(snap.acked, 512);
    assert.equal(snap.unacked.length, 5000 - 512);
    assert.equal(snap.ended, true);

    const moved = LinkStream.restore(snap, 1024);
    const second = new Recorder();
    moved.attach(second, 700); // the peer holds 700 bytes
    for (let acked = 1024; second.fins.length === 0 && acked <= 6000; acked += 1024) moved.onAck(Math.min(acked, 5000));
    assert.equal(Buffer.concat(second.data).length, 5000 - 700, 'resent from what the peer holds');
    assert.deepEqual(second.fins, [5000]);
    await new Promise((r) => setImmediate(r));
  });

  it('restores the reader at what it consumed; a FIN said again is taken once', async () => {
    const stream = LinkStream.restore({
      id: 6,
      received: 10,
      sent: 0,
      acked: 0,
      unacked: new Uint8Array(0),
      ended: false,
    });
    const carrier = new Recorder();
    stream.attach(carrier, 0);
    const got: Buffer[] = [];
    let ends = 0;
    stream.on('data', (d: Buffer) => got.push(d));
    stream.on('end', () => ends++);
    stream.onData(Buffer.from('hello'));
    stream.onFin(15);
    stream.onFin(15);
    await new Promise((r) => setImmediate(r));
    assert.equal(Buffer.concat(got).toString(), 'hello');
    assert.equal(stream.offsets.received, 15);
    assert.equal(ends, 1);
  });
});

describe('the proxy decides each move once', () => {
  function setup(hostsUp = { a: true, b: true }) {
    const sent: Array<[string, ControlMessage]> = [];
    const events: Array<{ kind: string; message: string }> = [];
    const switched: string[] = [];
    const ports: MigrationPorts = {
      host: (id) => ({ id, name: id, address: '10.0.0.1', peerPort: 7401, connected: hostsUp[id as 'a' | 'b'] }),
      send: (hostId, message) => sent.push([hostId, message]),
      switchHost: (_g, target) => switched.push(target),
      released: () => {},
      event: (kind, message) => events.push({ kind, message }),
    };
    const migrations = new Migrations(ports);
    const start = () =>
      migrations.start({
        guestId: 'g1',
        guestName: 'web',
        sourceId: 'a',
        targetId: 'b',
        precopy: true,
        stepTimeoutMs: 60_000,
        deadlineMs: 60_000,
      });
    const idOf = () => (sent.find(([, m]) => m.type === 'migrate')?.[1] as { migrationId: string }).migrationId;
    return { sent, events, switched, migrations, start, idOf, hostsUp };
  }

  it('commits when the target asks first; a later abort from the source is answered with the commit', async () => {
    const s = setup();
    const done = s.start();
    const id = s.idOf();
    s.migrations.onControl('b', { type: 'migrateCommit', migrationId: id, streams: [3] });
    assert.deepEqual(s.switched, ['b']);
    s.migrations.onControl('a', {
      type: 'migrateAbort',
      migrationId: id,
      step: 'resume',
      code: 'X',
      message: 'lost the peer',
    });
    assert.equal(s.sent.at(-1)?.[1].type, 'migrateCommitted');
    s.migrations.onControl('a', {
      type: 'migrateDone',
      migrationId: id,
      pauseMs: 5,
      totalMs: 50,
      bytesSent: 9,
      precopyRounds: 1,
      precopyBytes: 5,
      finalBytes: 4,
    });
    const view = await done;
    assert.equal(view.outcome, 'moved');
    assert.equal(view.pauseMs, 5);
    s.migrations.close();
  });

  it('aborts when the source asks first; a later commit is refused, so the guest never runs twice', async () => {
    const s = setup();
    const done = s.start();
    const id = s.idOf();
    s.migrations.onControl('a', {
      type: 'migrateAbort',
      migrationId: id,
      step: 'transfer',
      code: 'X',
      message: 'peer closed',
    });
    s.migrations.onControl('b', { type: 'migrateCommit', migrationId: id, streams: [] });
    assert.deepEqual(s.switched, []);
    assert.equal(s.sent.at(-1)?.[0], 'b');
    assert.equal(s.sent.at(-1)?.[1].type, 'migrateAborted');
    const view = await done;
    assert.equal(view.outcome, 'rolled-back');
    assert.equal(view.step, 'transfer');
    assert.match(
      s.events.find((e) => e.kind === 'migration.failed')?.message ?? '',
      /failed at transfer: peer closed; web runs on a/,
    );
    s.migrations.close();
  });

  it('only the named hosts speak for a move; a second move of the same guest waits its turn', async () => {
    const s = setup();
    const done = s.start();
    const id = s.idOf();
    s.migrations.onControl('b', {
      type: 'migrateAbort',
      migrationId: id,
      step: 'ack',
      code: 'X',
      message: 'not the source',
    });
    s.migrations.onControl('a', { type: 'migrateCommit', migrationId: id, streams: [] });
    assert.deepEqual(s.switched, []);
    await assert.rejects(s.start(), /already moving/);
    s.migrations.onControl('b', { type: 'migrateCommit', migrationId: id, streams: [] });
    assert.deepEqual(s.switched, ['b']);
    s.migrations.close();
    void done;
  });

  it('says the guest is stranded when the source that froze it is gone', async () => {
    const s = setup();
    const done = s.start();
    const id = s.idOf();
    s.migrations.onControl('a', { type: 'migrateProgress', migrationId: id, step: 'freeze' });
    s.hostsUp.a = false;
    s.migrations.onControl('b', {
      type: 'migrateFailed',
      migrationId: id,
      step: 'transfer',
      code: 'X',
      message: 'the peer connection closed',
    });
    const view = await done;
    assert.equal(view.outcome, 'stranded');
    assert.match(
      s.events.at(-1)?.message ?? '',
      /a is unreachable and had frozen the guest: web runs again only if a comes back/,
    );
    s.migrations.close();
  });
});

describe('the spare sandbox a target keeps for the next move', () => {
  const MiB = 1 << 20;
  const zeroFrom = (view: Uint8Array, at: number): boolean => {
    const zero = Buffer.alloc(PAGE_SIZE);
    for (let i = at; i < view.length; i += PAGE_SIZE) {
      if (Buffer.compare(view.subarray(i, i + PAGE_SIZE), zero.subarray(0, Math.min(PAGE_SIZE, view.length - i))))
        return false;
    }
    return true;
  };

  it('grows a sandbox with its contents kept exactly and the new part zero', async () => {
    const sandbox = await Guest.prepareSandbox();
    try {
      const before = sandbox.memoryView().slice();
      // The allocator grows the memory and leaves its bookkeeping behind; grow() puts it back.
      const view = sandbox.grow(before.length + 20 * MiB);
      assert.ok(view.length >= before.length + 20 * MiB, 'at least as large as asked (the allocator may grow more)');
      assert.ok(Buffer.from(view.subarray(0, before.length)).equals(before), 'what was there is unchanged');
      assert.ok(zeroFrom(view, before.length), 'the new part is zero');
    } finally {
      sandbox.dispose();
    }
  });

  it('is made on the memory of a guest that moved away, and is handed only to a guest of that size', async () => {
    const spare = new SpareSandbox();
    try {
      // A guest's sandbox that ran, grew and wrote all over its memory, then left.
      const used = await Guest.prepareSandbox(DEFAULT_LIMITS, 48 * MiB);
      used.evalScript('globalThis.junk = []; for (let i = 0; i < 2e5; i++) junk.push({ i, s: "x" + i });', 'junk.js');
      used.memoryView().fill(0xa5, 40 * MiB);
      const memory = used.memory;
      assert.equal(used.releaseMemory(), undefined, 'not before the sandbox is disposed');
      used.dispose();
      assert.equal(used.releaseMemory(), memory);
      assert.equal(used.releaseMemory(), undefined, 'and only once');
      assert.throws(() => used.evalScript('1', 'after.js'), /disposed/, 'nothing runs in the old one');
      spare.guestLeft(memory, DEFAULT_LIMITS);
      await spare.settled();

      // Another size gets a sandbox made at its own: a guest's memory is the size it was on the source.
      const small = await spare.take(DEFAULT_LIMITS, { bytes: 40 * MiB, faultIn: true });
      assert.equal(small.memoryBytes, 40 * MiB);
      assert.notEqual(small.memory, memory);
      small.dispose();
      // The same size gets the spare, on that memory, holding exactly what a new sandbox holds.
      const same = await spare.take(DEFAULT_LIMITS, { bytes: 48 * MiB, faultIn: false });
      assert.equal(same.memory, memory);
      const fresh = await Guest.prepareSandbox(DEFAULT_LIMITS, 48 * MiB, 'no');
      assert.ok(Buffer.from(same.memoryView()).equals(Buffer.from(fresh.memoryView())), 'as a new sandbox of its size');
      const template = (await runtimeTemplate()).snapshot.byteLength;
      assert.ok(zeroFrom(same.memoryView(), template));
      same.evalScript('globalThis.ok = 1 + 1;', 'works.js');
      fresh.dispose();
      same.dispose();
      // Taken: the next spare is a new one, the template's size.
      spare.refillSoon();
      await spare.settled();
      const next = await spare.take(DEFAULT_LIMITS, { bytes: 48 * MiB, faultIn: true });
      assert.equal(next.memoryBytes, 48 * MiB);
      assert.notEqual(next.memory, memory);
      next.dispose();
      // A guest whose memory is the template spare's size: its memory (backed) still replaces that spare's.
      spare.refillSoon();
      await spare.settled();
      const small2 = await Guest.prepareSandbox(DEFAULT_LIMITS);
      small2.dispose();
      const small2Memory = small2.releaseMemory() as WebAssembly.Memory;
      spare.guestLeft(small2Memory, DEFAULT_LIMITS);
      await spare.settled();
      const again = await spare.take(DEFAULT_LIMITS, { bytes: small2Memory.buffer.byteLength, faultIn: true });
      assert.equal(again.memory, small2Memory);
      again.dispose();
      // A guest with other limits leaves nothing to reuse here.
      const other = await Guest.prepareSandbox({ ...DEFAULT_LIMITS, memoryBytes: 128 * MiB }, 8 * MiB);
      other.dispose();
      spare.guestLeft(other.releaseMemory() as WebAssembly.Memory, { ...DEFAULT_LIMITS, memoryBytes: 128 * MiB });
      await spare.settled();
      const plain = await spare.take(DEFAULT_LIMITS, { bytes: 8 * MiB, faultIn: false });
      assert.notEqual(plain.memory, other.memory);
      plain.dispose();
    } finally {
      spare.close();
    }
  });
});

describe('the rehearsal of a move in, when a host gets ready for moves', () => {
  it("runs a guest through a target's rebuild and leaves nothing running", async () => {
    const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    await rehearseMoveIn(DEFAULT_LIMITS);
    // Its guests' intervals and timeouts would each hold a host timer had they not been stopped.
    assert.equal(timers(), before);
    const aborted = new AbortController();
    aborted.abort();
    await rehearseMoveIn(DEFAULT_LIMITS, aborted.signal);
    assert.equal(timers(), before);
  });
});

describe('peer connections kept between moves', () => {
  /** A loopback connection: the source's channel, and the target's end of it. */
  const pair = async (server: net.Server): Promise<{ channel: PeerChannel; far: net.Socket }> => {
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await once(socket, 'connect');
    const [far] = await accepted;
    return { channel: PeerChannel.connected(socket), far };
  };

  it('hands a kept connection to the next move there once, and never one the target closed', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const pool = new PeerPool();
    try {
      const one = await pair(server);
      pool.give('b:1', one.channel);
      assert.equal(pool.take('a:1'), undefined, 'kept per target');
      assert.equal(pool.take('b:1'), one.channel);
      assert.equal(pool.take('b:1'), undefined, 'handed out once');

      // The target closes a kept connection: the pool does not hand it out.
      pool.give('b:1', one.channel);
      one.far.end();
      await once(one.channel.socket, 'close');
      assert.equal(pool.take('b:1'), undefined);

      // One per target: a second one given closes the first.
      const two = await pair(server);
      const three = await pair(server);
      pool.give('b:1', two.channel);
      pool.give('b:1', three.channel);
      await once(two.far, 'end');
      assert.equal(pool.size, 1);
      assert.equal(pool.take('b:1'), three.channel);
      three.channel.destroy();
    } finally {
      pool.close();
      server.close();
    }
  });

  it('offers once more on a new connection when the target had closed the kept one, and only then', async () => {
    // The target's side: each connection, in turn, is closed at once or answers its first message.
    const plan: Array<PeerHeader | 'close'> = [];
    const server = net.createServer((socket) => {
      const step = plan.shift();
      if (step === 'close' || step === undefined) return void socket.destroy();
      const target = PeerChannel.accept(socket);
      void target.next(5000, 'offer').then(
        () => target.send(step),
        () => {},
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const accept: PeerHeader = { type: 'accept', migrationId: 'm1', prepareMs: 0 };
    const offer = async (channel: PeerChannel): Promise<void> => {
      await channel.send({ type: 'resumed', restoreMs: 0 }); // any message: the target answers it
      const answer = await channel.next(5000, 'answer');
      if (answer.header.type === 'fail') throw new Error(`refused: ${answer.header.message}`);
    };
    const made: PeerChannel[] = [];
    const connect = async (): Promise<PeerChannel> => {
      const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      await once(socket, 'connect');
      made.push(PeerChannel.connected(socket));
      return made[made.length - 1] as PeerChannel;
    };
    try {
      // Kept, and closed by the target as the offer goes out: once more, on a new connection.
      plan.push('close', accept);
      const kept = await connect();
      const used = await onKeptOrNew(kept, true, connect, offer);
      assert.equal(made.length, 2, 'one new connection');
      assert.equal(used, made[1]);
      used.destroy();

      // The same on a connection that was not kept: its failure is the offer's.
      plan.push('close', accept);
      await assert.rejects(onKeptOrNew(await connect(), false, connect, offer), /closed/);
      assert.equal(made.length, 3, 'no new connection for a first offer');

      // Kept and open, and the target says no: that answer stands.
      plan.length = 0;
      plan.push({ type: 'fail', step: 'offer', code: 'ROAM_ERR_UNAUTHORIZED', message: 'no such move' }, accept);
      const open = await connect();
      await assert.rejects(onKeptOrNew(open, true, connect, offer), /refused: no such move/);
      assert.equal(made.length, 4, 'no new connection after an answer');
      open.destroy();
    } finally {
      for (const c of made) c.destroy();
      server.close();
    }
  });

  it('closes a connection left idle, and all of them on close', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const pool = new PeerPool(20);
    try {
      const idle = await pair(server);
      pool.give('b:1', idle.channel);
      await once(idle.far, 'end'); // the pool let it go
      assert.equal(pool.take('b:1'), undefined);
      const kept = await pair(server);
      const longPool = new PeerPool(60_000);
      longPool.give('c:1', kept.channel);
      longPool.close();
      await once(kept.far, 'end');
      assert.equal(longPool.size, 0);
    } finally {
      pool.close();
      server.close();
    }
  });
});
