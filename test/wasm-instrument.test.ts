/**
 * Where the instrumenter puts polls: the call-graph analysis (recursion, who reaches fuel), and
 * small C programs run in this process, instrumented, with a `roam.poll` that counts. Fuel is
 * counted exactly across calls (a loop spread over many short calls polls as often as one long
 * loop); recursion with no loop polls, also through a function pointer; answers never change.
 * Capture and restore of the same shapes run in real processes in wasm-guest.test.ts.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { instrumentModule, readInfo } from '../src/wasm/instrument.js';
import { reachingFuel, recursiveFunctions } from '../src/wasm/polls.js';
import { WasmGuest } from '../src/wasm/guest.js';
import { tempDir } from './helpers/roam.js';

const hasClang = spawnSync('clang', ['--version']).status === 0;
const skip = hasClang ? false : 'clang for wasm32-wasi is not installed (apt-get install clang lld wasi-libc)';

const graph = (edges: Record<string, string[]>) => new Map(Object.entries(edges).map(([k, v]) => [k, new Set(v)]));

test('recursive functions: self calls and cycles count, a call chain does not', () => {
  const g = graph({ main: ['a', 'self', 'leaf'], a: ['b'], b: ['c'], c: ['a', 'leaf'], self: ['self'], leaf: [] });
  assert.deepEqual([...recursiveFunctions(g)].sort(), ['a', 'b', 'c', 'self']);
  assert.deepEqual([...recursiveFunctions(graph({ main: ['x'], x: ['y'], y: [] }))], []);
  // Calls to functions outside the graph (imports) are not edges.
  assert.deepEqual([...recursiveFunctions(graph({ main: ['fd_write'] }))], []);
});

test('recursive functions: a call chain of 100000 functions does not overflow the stack', () => {
  const edges: Record<string, string[]> = {};
  for (let i = 0; i < 100_000; i++) edges[`f${i}`] = [`f${i + 1}`];
  edges['f100000'] = ['f0'];
  assert.equal(recursiveFunctions(graph(edges)).size, 100_001);
});

test('the functions that reach fuel are the counting ones and all their callers', () => {
  const g = graph({ main: ['helper', 'pure'], helper: ['looping'], looping: [], pure: [] });
  assert.deepEqual([...reachingFuel(g, new Set(['looping']))].sort(), ['helper', 'looping', 'main']);
});

function build(dir: string, name: string, source: string): Uint8Array {
  const c = join(dir, `${name}.c`);
  const out = join(dir, `${name}.wasm`);
  writeFileSync(c, source);
  const r = spawnSync('clang', ['--target=wasm32-wasi', '-O2', '-o', out, c], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return readFileSync(out);
}

/** Runs a WASI command to its end with just enough WASI for these programs; counts polls. */
async function run(bytes: Uint8Array, args: string[]): Promise<{ out: string; polls: number }> {
  const argv = ['prog', ...args].map((a) => Buffer.from(`${a}\0`));
  const ref: { memory?: WebAssembly.Memory } = {};
  const buffer = () => (ref.memory as WebAssembly.Memory).buffer;
  const view = () => new DataView(buffer());
  let out = '';
  let polls = 0;
  class Exit extends Error {}
  const wasi: Record<string, (...a: number[]) => number> = {
    args_sizes_get: (count, size) => {
      view().setUint32(count, argv.length, true);
      view().setUint32(size, Buffer.concat(argv).length, true);
      return 0;
    },
    args_get: (ptrs, buf) => {
      for (const a of argv) {
        view().setUint32(ptrs, buf, true);
        new Uint8Array(buffer()).set(a, buf);
        ptrs += 4;
        buf += a.length;
      }
      return 0;
    },
    fd_write: (_fd, iovs, n, written) => {
      let total = 0;
      for (let i = 0; i < n; i++) {
        const p = view().getUint32(iovs + i * 8, true);
        const l = view().getUint32(iovs + i * 8 + 4, true);
        out += Buffer.from(buffer(), p, l).toString();
        total += l;
      }
      view().setUint32(written, total, true);
      return 0;
    },
    proc_exit: () => {
      throw new Exit();
    },
  };
  const instance = await WebAssembly.instantiate(await WebAssembly.compile(bytes), {
    wasi_snapshot_preview1: new Proxy(wasi, { get: (t, k) => (typeof k === 'string' && t[k]) || (() => 0) }),
    roam: { poll: () => void polls++ },
  });
  const exports = instance.exports as { memory: WebAssembly.Memory; _start: () => void };
  ref.memory = exports.memory;
  try {
    exports._start();
  } catch (err) {
    if (!(err instanceof Exit)) throw err;
  }
  return { out, polls };
}

test('fuel is counted across calls: short loops in many calls poll as often as one long loop', { skip }, async (t) => {
  const dir = tempDir(t);
  // 2000 calls of a 999-iteration loop: no single activation ever reaches the interval.
  const bytes = build(
    dir,
    'spread',
    `#include <stdio.h>
     #include <stdlib.h>
     __attribute__((noinline)) static unsigned inner(unsigned x, int n) {
       for (volatile int i = 0; i < n; i++) x = x * 1103515245u + 12345u;
       return x;
     }
     int main(int argc, char **argv) {
       int calls = atoi(argv[1]), n = atoi(argv[2]);
       unsigned x = 1;
       for (volatile int c = 0; c < calls; c++) x = inner(x, n);
       printf("%u\\n", x);
       return 0;
     }`,
  );
  const interval = 10_000;
  const instrumented = await instrumentModule(bytes, { fuelInterval: interval });
  const plain = await run(bytes, ['2000', '999']);
  const polled = await run(instrumented, ['2000', '999']);
  assert.equal(polled.out, plain.out);
  const iterations = 2000 * 1000;
  // Each poll comes after at most `interval` loop iterations, wherever they ran.
  assert.ok(polled.polls >= Math.floor(iterations / interval) - 1, `${polled.polls} polls`);
  assert.ok(polled.polls <= Math.ceil(iterations / interval) + 5, `${polled.polls} polls`);
});

test('recursion with no loop polls, also through a function pointer, and answers the same', { skip }, async (t) => {
  const dir = tempDir(t);
  const bytes = build(
    dir,
    'recurse',
    `#include <stdio.h>
     #include <stdlib.h>
     typedef unsigned long long (*fn)(unsigned);
     unsigned long long viaPointer(unsigned n);
     static volatile fn next = viaPointer;
     unsigned long long viaPointer(unsigned n) {
       if (n < 2) return n;
       unsigned long long a = next(n - 1), b = next(n - 2);
       return (a ^ (b << 1)) + (a >> 5);
     }
     int main(int argc, char **argv) {
       printf("%llu\\n", next((unsigned)atoi(argv[1])));
       return 0;
     }`,
  );
  const instrumented = await instrumentModule(bytes, { fuelInterval: 1000 });
  const info = readInfo(new WebAssembly.Module(instrumented));
  assert.ok((info.recursive ?? 0) >= 1, 'the function called through the table counts as recursive');
  const plain = await run(bytes, ['25']);
  const polled = await run(instrumented, ['25']);
  assert.equal(polled.out, plain.out);
  // fib-shaped: about 240000 calls, one unit of fuel each.
  assert.ok(polled.polls >= 200, `${polled.polls} polls`);
});

test(
  'inner loops that poll through their parent resume where they were, whatever the shape around them',
  { skip },
  async (t) => {
    const dir = tempDir(t);
    const bytes = build(
      dir,
      'nests',
      `#include <stdio.h>
     #include <stdlib.h>
     __attribute__((noinline)) static unsigned mix(unsigned x) { return x * 2654435761u ^ (x >> 13); }
     int main(int argc, char **argv) {
       int n = atoi(argv[1]);
       unsigned h = 1;
       /* continue in the parent, break in the inner loop */
       for (int i = 0; i < n; i++) {
         if (i % 3 == 0) continue;
         for (int j = 0; j < i; j++) {
           h = h * 31 + j;
           if ((h & 1023) == 7) break;
         }
         h ^= i;
       }
       /* inner loops one after another, in if and else arms, a call inside one, a switch after */
       for (int i = 0; i < n; i++) {
         for (volatile int j = 0; j < i % 17; j++) h += j * i;
         if (i & 1) {
           for (int j = 0; j < i % 5; j++) h = mix(h);
         } else {
           for (int j = i; j > 0; j /= 2) h ^= j;
         }
         switch (h % 4) {
           case 0: h += 3; break;
           case 1: h *= 5; break;
           case 2: h -= i; break;
           default: h ^= 0x55;
         }
       }
       /* a parent whose inner loops poll through it, beside a loop whose own inner loop polls through that one */
       for (int i = 0; i < n; i++) {
         for (volatile int j = 0; j < i % 23; j++) h = h * 3 + j;
         for (int k = 0; k < i % 7; k++)
           for (volatile int l = 0; l < k * 5; l++) h ^= h << 3 ^ l;
         h += i;
       }
       /* three deep */
       for (int a = 0; a < n / 8; a++)
         for (int b = 0; b < 20; b++)
           for (volatile int c = 0; c < b; c++) h = h * 7 + a + b + c;
       printf("%u\\n", h);
       return 0;
     }`,
    );
    const plain = await run(bytes, ['600']);
    // Unwound and rewound at every poll, every 13 loop iterations: every resume path is taken.
    let out = '';
    const guest = await WasmGuest.start(bytes, {
      argv: ['600'],
      fuelInterval: 13,
      sliceMs: 0,
      cacheDir: false,
      onLog: (r) => void (out += r.text),
    });
    const exit = await guest.exited;
    assert.equal(exit.code, 0, out);
    assert.equal(out, plain.out);
    assert.ok((guest.info.hoisted ?? 0) >= 4, `${guest.info.hoisted} inner loops poll through their parent`);
    assert.ok(guest.info.loops > (guest.info.hoisted ?? 0), 'the parents keep their own polls');
  },
);
