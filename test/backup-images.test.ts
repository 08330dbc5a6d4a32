/**
 * Backup images, piece by piece: an image crosses a real loopback link on a stream of its own and
 * arrives whole or not at all; the proxy picks whose image is due within its budget; the proxy's
 * store of images checks what arrives and keeps the newest whole.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { resumeFromImage } from '../src/controller/images.js';
import { TunnelNetwork, type TunnelLink } from '../src/controller/tunnel-network.js';
import { readImage, writeImage } from '../src/link/image-stream.js';
import { LinkSession } from '../src/link/session.js';
import type { LinkStream } from '../src/link/stream.js';
import { BackupImages, imagesDue, type BackupCandidate } from '../src/proxy/backups.js';
import { Guest } from '../src/guest/guest.js';
import { encodeImage } from '../src/guest/image/index.js';
import { WasmGuest } from '../src/wasm/guest.js';
import type { ImageOpenFrame } from '../src/wire/index.js';

const GUEST = '6f1d8e52-4c3b-4a7e-9d2f-0a1b2c3d4e5f';
const HOST = '0b0f6a3e-8a44-4f57-b7a4-4d8a7c51f001';

/** Two link sessions over loopback TCP; `onImage` is the receiving side's handler. */
async function linkPair(
  t: TestContext,
  onImage: (session: LinkSession, frame: ImageOpenFrame) => void,
): Promise<LinkSession> {
  const sessions: LinkSession[] = [];
  const server = net.createServer((socket) => {
    const session: LinkSession = new LinkSession(socket, {
      onFrame: () => {},
      onImage: (frame) => onImage(session, frame),
    });
    sessions.push(session);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const client = new LinkSession(socket, { onFrame: () => {} });
  t.after(() => {
    client.destroy();
    for (const s of sessions) s.destroy();
    server.close();
  });
  return client;
}

describe('an image stream', () => {
  it('carries an image larger than any window whole, and both ends finish', async (t) => {
    const image = randomBytes(9 * 1024 * 1024 + 17);
    let received: Promise<Uint8Array> | undefined;
    let accepted: LinkStream | undefined;
    const client = await linkPair(t, (session, frame) => {
      accepted = session.accept(frame);
      received = readImage(accepted, frame.bytes, 10_000);
    });
    const stream = await client.open(2, { guest: GUEST, direction: 'image', bytes: image.length });
    await writeImage(stream, image, 10_000);
    assert.ok(received);
    assert.ok(Buffer.from(await received).equals(image));
    // Both directions are over: the streams close (nothing lingers in either session).
    const closed = (s: LinkStream | undefined): Promise<void> =>
      new Promise((resolve) => (s?.closed ? resolve() : s?.once('close', () => resolve())));
    await Promise.all([closed(stream), closed(accepted)]);
  });

  it('is refused when it carries more than it announced, or ends short', async (t) => {
    const outcomes: Array<Promise<string>> = [];
    const client = await linkPair(t, (session, frame) => {
      const read = readImage(session.accept(frame), frame.bytes, 10_000);
      outcomes.push(
        read.then(
          (image) => `${image.length} bytes`,
          (err: Error) => err.message,
        ),
      );
    });
    // The reader resets each stream it refuses: the writers see that as an error of their own.
    const long = await client.open(2, { guest: GUEST, direction: 'image', bytes: 1000 });
    long.on('error', () => {});
    long.end(randomBytes(1001));
    const short = await client.open(4, { guest: GUEST, direction: 'image', bytes: 1000 });
    short.on('error', () => {});
    short.end(randomBytes(999));
    const early = await client.open(6, { guest: GUEST, direction: 'image', bytes: 1000 });
    early.write(randomBytes(10));
    await new Promise((resolve) => setTimeout(resolve, 50)); // the 10 bytes arrive
    early.destroy();
    const [a, b, c] = await Promise.all(outcomes);
    assert.match(a ?? '', /carried more than the 1000 bytes it announced/);
    assert.match(b ?? '', /ended after 999 of 1000 bytes/);
    assert.match(c ?? '', /failed: .*|closed after 10 of 1000 bytes/);
  });

  it('is given up when it stalls: the writer stops at its timeout and the stream ends', async (t) => {
    let accepted: LinkStream | undefined;
    const client = await linkPair(t, (session, frame) => {
      accepted = session.accept(frame); // and never read: the window fills, the writer waits
      accepted.on('error', () => {});
    });
    const image = randomBytes(9 * 1024 * 1024);
    const stream = await client.open(2, { guest: GUEST, direction: 'image', bytes: image.length });
    await assert.rejects(writeImage(stream, image, 300), /the image was not taken within 0.3 s/);
    assert.ok(stream.destroyed);
  });

  it('is refused by a side that takes no images', async (t) => {
    const server = net.createServer((socket) => new LinkSession(socket, { onFrame: () => {} }));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => server.close());
    const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    const client = new LinkSession(socket, { onFrame: () => {} });
    t.after(() => client.destroy());
    await assert.rejects(client.open(2, { guest: GUEST, direction: 'image', bytes: 10 }), /does not take images/);
  });
});

describe('a live capture (Guest.checkpointLive)', () => {
  // Every turn changes the heap (and grows the memory) while keeping one invariant: sum is the
  // sum of every number in the list. A capture that mixed pages from different turns would come
  // back torn: a wrong sum, or a heap QuickJS cannot even walk.
  const CHURN = `
    const list = []; let sum = 0; let turns = 0; const keep = [];
    function turn() {
      turns++;
      const n = 1 + (turns % 50);
      const item = []; for (let i = 0; i < n; i++) { const v = (turns * 31 + i * 7) % 1000; item.push(v); sum += v; }
      list.push(item);
      if (turns % 3 === 0) { const gone = list.splice(turns % list.length, 1)[0]; for (const v of gone) sum -= v; }
      keep.push('x'.repeat(2000) + turns); // grows the memory
      if (keep.length > 4000) keep.splice(0, 1000);
      setImmediate(turn);
    }
    turn();
    globalThis.check = () => list.reduce((a, item) => a + item.reduce((b, v) => b + v, 0), 0) === sum;
    setInterval(() => console.log((globalThis.check() ? 'ok ' : 'TORN ') + turns), 20);
  `;

  it('captures a guest that changes its heap every turn: each image comes back whole, and later than the one before', async (t) => {
    const lines: string[] = [];
    const guest = await Guest.start(CHURN, { name: 'churn', onLog: (r) => lines.push(r.text.trim()) });
    t.after(() => guest.stop());
    await until(() => lines.length >= 3);
    const captures = [];
    // Slices of 64 KiB: hundreds of the guest's turns land inside each capture.
    for (let i = 0; i < 3; i++) captures.push(await guest.checkpointLive(64 * 1024));
    assert.equal(guest.state, 'running', 'it runs on after each capture');
    await until(() => lines.length >= 6);
    assert.deepEqual(
      lines.filter((l) => !l.startsWith('ok ')),
      [],
    );

    for (const capture of captures) {
      const restored: string[] = [];
      const copy = await Guest.restore(capture.contents, { onLog: (r) => restored.push(r.text.trim()) });
      await until(() => restored.length >= 3);
      copy.stop();
      const turns = restored.map((l) => Number(l.split(' ')[1]));
      assert.deepEqual(
        restored.filter((l) => !l.startsWith('ok ')),
        [],
      );
      assert.ok(turns.every((n, i) => i === 0 || n >= (turns[i - 1] ?? 0)));
    }
    // The turns each capture froze at increase: each is a later state.
    const firstTurns = [];
    for (const capture of captures) {
      const restored: string[] = [];
      const copy = await Guest.restore(capture.contents, { onLog: (r) => restored.push(r.text.trim()) });
      await until(() => restored.length >= 1);
      copy.stop();
      firstTurns.push(Number(restored[0]?.split(' ')[1]));
    }
    assert.ok(firstTurns[0]! < firstTurns[1]! && firstTurns[1]! < firstTurns[2]!, String(firstTurns));
  });
});

describe('imagesDue', () => {
  const guests: BackupCandidate[] = [
    { id: 'a', name: 'a', hostId: 'h', since: 0 },
    { id: 'b', name: 'b', hostId: 'h', since: 50_000 },
    { id: 'c', name: 'c', hostId: 'h', since: 0 },
    { id: 'd', name: 'd', hostId: 'h', since: 0 },
  ];
  const taken = new Map([
    ['c', 200_000],
    ['d', 10_000],
  ]);

  it('picks the guests whose newest image (or start) is an interval old, oldest first, within the budget', () => {
    const due = (now: number, budget: number) =>
      imagesDue(guests, (id) => taken.get(id), now, 60_000, budget).map((g) => g.id);
    assert.deepEqual(due(100_000, 10), ['a', 'd']); // b started 50 s ago, c imaged in the future
    assert.deepEqual(due(300_000, 10), ['a', 'd', 'b', 'c']);
    assert.deepEqual(due(300_000, 2), ['a', 'd']);
    assert.deepEqual(due(300_000, 0), []);
    assert.deepEqual(
      imagesDue(guests, () => undefined, 300_000, 0, 10),
      [],
      'an interval of 0 turns images off',
    );
  });
});

describe('the proxy keeps backup images', () => {
  it('takes an image it asked for, refuses a damaged one, and keeps it across a restart', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'roam-images-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const guest = await Guest.start('let n = 41; n++; setInterval(() => n++, 1000);', { id: GUEST, name: 'g' });
    t.after(() => guest.stop());
    const capture = guest.checkpoint();
    guest.resume();
    const image = await encodeImage(capture.contents);

    const asked: string[] = [];
    const events: string[] = [];
    const images = new BackupImages(dir, {
      candidates: () => [{ id: GUEST, name: 'g', hostId: HOST }],
      request: (hostId, guestId) => {
        asked.push(`${hostId}/${guestId}`);
        return true;
      },
      event: (_kind, message) => events.push(message),
    });
    t.after(() => images.close());

    // Not asked for: refused.
    let receiving: Promise<void> | undefined;
    const client = await linkPair(t, (session, frame) => {
      receiving = images.receive(HOST, session, frame);
    });
    await assert.rejects(
      client.open(2, { guest: GUEST, direction: 'image', bytes: image.length }),
      /no image of guest .* was asked of this host/,
    );

    const t0 = Date.now();
    images.tick(t0, 300, 2);
    assert.deepEqual(asked, [], 'first seen now: its first image is due in 300 s');
    images.tick(t0 + 300_000, 300, 2);
    assert.deepEqual(asked, [`${HOST}/${GUEST}`]);
    images.tick(t0 + 301_000, 300, 2);
    assert.equal(asked.length, 1, 'one request at a time per guest');

    // Damaged on the way: refused, said once, asked again at the next tick.
    const damaged = Buffer.from(image);
    const middle = damaged.length >> 1;
    damaged.writeUInt8(damaged.readUInt8(middle) ^ 0xff, middle);
    const bad = await client.open(6, { guest: GUEST, direction: 'image', bytes: damaged.length });
    await writeImage(bad, damaged, 10_000);
    await receiving;
    assert.equal(images.record(GUEST), undefined);
    assert.equal(events.length, 1);
    assert.match(events[0] ?? '', /no backup image of this guest this time: ROAM_ERR_IMAGE_CHECKSUM/);
    images.tick(t0 + 302_000, 300, 2);
    assert.equal(asked.length, 2);

    const stream = await client.open(4, { guest: GUEST, direction: 'image', bytes: image.length });
    await writeImage(stream, image, 10_000);
    await receiving;
    const record = images.record(GUEST);
    assert.equal(record?.bytes, image.length);
    assert.equal(record?.hostId, HOST);
    assert.ok(Buffer.from(await images.read(GUEST)).equals(image));
    assert.equal(events.length, 1, 'nothing more said');
    assert.deepEqual(readdirSync(dir).sort(), [`${GUEST}.img`, `${GUEST}.json`]);

    // A restarted proxy finds it; a forgotten guest's image is gone.
    const again = new BackupImages(dir, {
      candidates: () => [],
      request: () => false,
      event: () => {},
    });
    assert.deepEqual(again.record(GUEST), record);
    again.forget(GUEST);
    await until(() => readdirSync(dir).length === 0);
  });
});

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(check());
}

const SIEVE = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
  int n = atoi(argv[1]), rounds = atoi(argv[2]);
  char *s = malloc(n + 1);
  unsigned total = 0;
  for (int r = 0; r < rounds; r++) {
    memset(s, 0, n + 1);
    long count = 0;
    for (int i = 2; i <= n; i++) {
      if (s[i]) continue;
      count++;
      for (long long j = (long long)i * i; j <= n; j += i) s[j] = 1;
    }
    total = total * 31 + count;
  }
  printf("%u\\n", total);
  return 0;
}
`;

describe('a WebAssembly guest', () => {
  const hasClang = spawnSync('clang', ['--version']).status === 0;
  const skip = hasClang ? false : 'clang for wasm32-wasi is not installed (apt-get install clang lld wasi-libc)';

  it(
    'is imaged while it rewrites its memory, runs on, and a guest resumed from the image ends with the same result',
    { skip },
    async (t) => {
      const built = mkdtempSync(join(tmpdir(), 'roam-wasm-image-'));
      t.after(() => rmSync(built, { recursive: true, force: true }));
      process.env['ROAM_CACHE_DIR'] = join(built, 'cache');
      // A sieve whose every round rewrites a 20 MB array (pages change during the copy); each
      // round's count goes into the answer, so a page captured stale changes it.
      const source = join(built, 'sieve.c');
      writeFileSync(source, SIEVE);
      const wasm = join(built, 'sieve.wasm');
      const made = spawnSync('clang', ['--target=wasm32-wasi', '-O2', '-o', wasm, source], { encoding: 'utf8' });
      assert.equal(made.status, 0, made.stderr);
      const output = (lines: string[]) => lines.join('').trim();

      const first: string[] = [];
      const guest = await WasmGuest.start(readFileSync(wasm), {
        argv: ['20000000', '16'],
        onLog: (r) => first.push(r.text),
      });
      t.after(() => guest.stop());
      await new Promise((resolve) => setTimeout(resolve, 300));
      // Small slices: many of the guest's own slices run while its memory is copied.
      const capture = await guest.checkpointLive(1024 * 1024);
      assert.equal(guest.state, 'running', 'it runs on after the image');
      assert.equal(output(first), '', 'imaged before the sieve ended');
      const bytes = await encodeImage(capture.contents);

      const stub: TunnelLink = {
        openOutbound: () => Promise.reject(new Error('no link in this test')),
        openFlow: () => Promise.reject(new Error('no link in this test')),
        sendDatagram: () => false,
      };
      const network = new TunnelNetwork(guest.id, stub, { fromBackup: true });
      const resumed = await resumeFromImage(bytes, network, new AbortController().signal);
      t.after(() => resumed.stop());
      assert.equal(resumed.kind, 'wasm');
      assert.equal(resumed.id, guest.id);
      const [a, b] = await Promise.all([guest.exited, resumed.exited]);
      assert.deepEqual([a.code, b.code], [0, 0]);
      assert.match(output(first), /^\d+$/);
      assert.equal(output(resumed.log.tail(100).map((r) => r.text)), output(first));
    },
  );
});
