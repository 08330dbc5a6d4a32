/**
 * Where a guest's heap ends (src/guest/sandbox/heap-end.ts): the allocator's break, found by a
 * probe, bounds every page a guest uses, and captures leave the pages past it out.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Guest } from '../src/guest/guest.js';
import { breakAddress, dataSegments, heapEnd } from '../src/guest/sandbox/heap-end.js';
import { quickjsBinary } from '../src/guest/sandbox/module.js';

const PAGE = 65536;

interface SandboxInsides {
  heapEnd(): number;
  memoryView(): Uint8Array;
}

function sandboxOf(guest: Guest): SandboxInsides {
  return (guest as unknown as { sandbox: SandboxInsides }).sandbox;
}

function lastNonZeroPage(memory: Uint8Array): number {
  const buf = Buffer.from(memory.buffer, memory.byteOffset, memory.byteLength);
  const zero = Buffer.alloc(PAGE);
  for (let page = memory.length / PAGE - 1; page >= 0; page--) {
    if (buf.compare(zero, 0, PAGE, page * PAGE, (page + 1) * PAGE) !== 0) return page;
  }
  return -1;
}

/** A guest that logs each turn's number, and the lines as they come. */
async function startLogging(source: string): Promise<{ guest: Guest; line: (n: number) => Promise<string> }> {
  const lines: string[] = [];
  const waiters: Array<{ n: number; resolve: (line: string) => void }> = [];
  const guest = await Guest.start(source, {
    onLog: (record) => {
      lines.push(record.text.trim());
      for (const w of waiters.splice(0)) {
        const line = lines[w.n];
        if (line === undefined) waiters.push(w);
        else w.resolve(line);
      }
    },
  });
  const line = (n: number): Promise<string> =>
    new Promise((resolve) => {
      const have = lines[n];
      if (have === undefined) waiters.push({ n, resolve });
      else resolve(have);
    });
  return { guest, line };
}

// Every turn allocates blocks of many sizes and frees some; turn 6 holds a 24 MiB string for a
// turn, which grows the memory past its first 16 MiB.
const CHURN = `
  const keep = []; let turns = 0; let big;
  const timer = setInterval(() => {
    turns++;
    for (let i = 0; i < 200; i++) keep.push('x'.repeat((turns * 97 + i * 31) % 5000) + i);
    keep.splice(0, keep.length > 3000 ? 1500 : 0);
    big = turns === 6 ? 'y'.repeat(24 * 1024 * 1024) : undefined;
    console.log(String(turns) + ' ' + keep.length + ' ' + (big ? big.length : 0));
    if (turns === 10) clearInterval(timer);
  }, 1);
`;

describe('where a guest heap ends', () => {
  it('finds the allocator break once per process', async () => {
    const address = await breakAddress();
    assert.ok(address !== undefined, 'the probe found the break');
    assert.ok(address > 0 && address % 4 === 0, String(address));
    assert.equal(await breakAddress(), address);
  });

  it('bounds every page in use while the guest allocates and frees, and grows with its memory', async (t) => {
    const { guest, line } = await startLogging(CHURN);
    t.after(() => guest.stop());
    const ends: number[] = [];
    for (let turn = 0; turn < 10; turn++) {
      await line(turn); // the guest is between turns while its log reaches us
      const sandbox = sandboxOf(guest);
      const memory = sandbox.memoryView();
      const end = sandbox.heapEnd();
      assert.ok(end < memory.length || turn >= 5, `turn ${turn + 1}: the heap ends at ${end} of ${memory.length}`);
      assert.ok(end % PAGE === 0 && end <= memory.length);
      assert.ok(lastNonZeroPage(memory) < end / PAGE, `turn ${turn + 1}: a page past the heap's end is in use`);
      ends.push(end);
    }
    assert.ok(Math.max(...ends) > 24 * 1024 * 1024, `the heap grew with the big string: ${ends.join(' ')}`);
  });

  it('leaves the pages past the end out of a capture, and the guest restored from it runs on', async (t) => {
    const { guest, line } = await startLogging(CHURN);
    t.after(() => guest.stop());
    await line(2);
    const capture = guest.checkpoint();
    const end = sandboxOf(guest).heapEnd();
    guest.stop();
    const { pages, byteLength } = capture.contents.memory;
    assert.ok(end < byteLength, `the heap ends at ${end} of ${byteLength}`);
    assert.ok((pages.at(-1) ?? 0) < end / PAGE, 'no page past the end is stored');

    const restoredLines: string[] = [];
    const restored = await Guest.restore(capture.contents, { onLog: (r) => restoredLines.push(r.text.trim()) });
    t.after(() => restored.stop());
    const done = await restored.exited;
    assert.equal(done.code, 0);
    const turns = restoredLines.map((l) => Number(l.split(' ')[0]));
    assert.deepEqual(turns, [4, 5, 6, 7, 8, 9, 10]);
    assert.equal(restoredLines[2]?.split(' ')[2], String(24 * 1024 * 1024));
  });

  it('finds the break inside one of the module data segments', async () => {
    const address = (await breakAddress()) ?? -1;
    const segments = dataSegments(await quickjsBinary());
    assert.ok(
      segments.some(([start, end]) => address + 4 > start && address < end),
      String(address),
    );
  });

  it('reads the data segments of a binary, and none from one it cannot read', () => {
    const body = [
      3, // segments
      ...[0, 0x41, 0x80, 0x08, 0x0b, 3, 1, 2, 3], // active at i32.const 1024, 3 bytes
      ...[1, 2, 9, 9], // passive, 2 bytes
      ...[2, 0, 0x41, 0xf0, 0xa2, 0x04, 0x0b, 1, 7], // active in memory 0 at i32.const 70000, 1 byte
    ];
    const binary = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 1, 0, 11, body.length, ...body]);
    assert.deepEqual(dataSegments(binary), [
      [1024, 1027],
      [70000, 70001],
    ]);
    assert.deepEqual(dataSegments(binary.subarray(0, binary.length - 3)), []);
    assert.deepEqual(dataSegments(new Uint8Array(binary.length)), []);
  });

  it('reads the whole memory when the break is unknown or implausible', () => {
    const memory = new Uint8Array(4 * PAGE);
    const view = new DataView(memory.buffer);
    assert.equal(heapEnd(memory, undefined, PAGE), 4 * PAGE);
    view.setUint32(8, 2 * PAGE + 5, true);
    assert.equal(heapEnd(memory, 8, PAGE), 3 * PAGE);
    view.setUint32(8, 5 * PAGE, true); // past the memory
    assert.equal(heapEnd(memory, 8, PAGE), 4 * PAGE);
    view.setUint32(8, 4, true); // below the variable itself
    assert.equal(heapEnd(memory, 8, PAGE), 4 * PAGE);
    assert.equal(heapEnd(memory, 4 * PAGE - 2, PAGE), 4 * PAGE); // the variable past the memory
  });
});
