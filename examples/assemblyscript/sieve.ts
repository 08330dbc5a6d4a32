// A prime sieve in AssemblyScript for Roam's WebAssembly guests: counts the primes below N (a
// segmented sieve of Eratosthenes) and says how far it got after each tenth of the range. Its
// loops call nothing; Roam's fuel polls make them interruptible anyway, so `roam migrate` or a
// checkpoint can land mid-sieve, and the result is the same as an uninterrupted run's.
//
//   examples/assemblyscript/build.sh /tmp/as        # npm's assemblyscript, pinned in package.json
//   roam guest run /tmp/as/sieve.wasm -- 2000000000
//   roam run /tmp/as/sieve.wasm --name sieve -- 2000000000
//
// It speaks WASI preview1 directly (no shim package): fd_write for its output, args_get for N.

@external('wasi_snapshot_preview1', 'fd_write')
declare function fd_write(fd: u32, iovs: usize, iovsLen: u32, written: usize): u16;
@external('wasi_snapshot_preview1', 'args_sizes_get')
declare function args_sizes_get(argc: usize, bufSize: usize): u16;
@external('wasi_snapshot_preview1', 'args_get')
declare function args_get(argv: usize, buf: usize): u16;

const scratch = memory.data(16);

function print(text: string): void {
  const bytes = String.UTF8.encode(text + '\n');
  store<u32>(scratch, changetype<usize>(bytes));
  store<u32>(scratch, <u32>bytes.byteLength, 4);
  fd_write(1, scratch, 1, scratch + 8);
}

/** The first argument as a number, or `fallback`. */
function firstArg(fallback: u64): u64 {
  args_sizes_get(scratch, scratch + 4);
  const argc = load<u32>(scratch);
  if (argc < 2) return fallback;
  const argv = new StaticArray<u32>(argc);
  const buf = new Uint8Array(load<u32>(scratch + 4));
  args_get(changetype<usize>(argv), buf.dataStart);
  let at = argv[1] - <u32>buf.dataStart;
  let n: u64 = 0;
  while (at < <u32>buf.length && buf[at] >= 48 && buf[at] <= 57) {
    n = n * 10 + <u64>(buf[at] - 48);
    at++;
  }
  return n > 1 ? n : fallback;
}

const SEGMENT: u64 = 1 << 18;

function main(): void {
  const limit = firstArg(1_000_000_000);
  print('sieving below ' + limit.toString());
  // The primes up to the square root of the limit, by a plain sieve.
  let root: u64 = <u64>Math.sqrt(<f64>limit);
  while (root * root > limit) root--;
  while ((root + 1) * (root + 1) <= limit) root++;
  const small = new Uint8Array(<i32>root + 1);
  const base = new Array<u64>();
  for (let i: u64 = 2; i <= root; i++) {
    if (small[<i32>i] != 0) continue;
    base.push(i);
    for (let j = i * i; j <= root; j += i) small[<i32>j] = 1;
  }
  // Then the range, a segment at a time: each prime crosses out its multiples in the segment.
  const segment = new Uint8Array(<i32>SEGMENT);
  let count: u64 = 0;
  let sum: u64 = 0;
  let tenth: u64 = 1;
  for (let low: u64 = 0; low < limit; low += SEGMENT) {
    const high = low + SEGMENT < limit ? low + SEGMENT : limit;
    segment.fill(0);
    for (let k = 0; k < base.length; k++) {
      const p = unchecked(base[k]);
      if (p * p >= high) break;
      let start = ((low + p - 1) / p) * p;
      if (start < p * p) start = p * p;
      for (let j = start; j < high; j += p) unchecked((segment[<i32>(j - low)] = 1));
    }
    for (let i = low < 2 ? 2 : low; i < high; i++) {
      if (unchecked(segment[<i32>(i - low)]) == 0) {
        count++;
        sum += i;
      }
    }
    while (tenth <= 10 && high * 10 >= limit * tenth) {
      print('progress ' + tenth.toString() + '/10: ' + count.toString() + ' primes below ' + high.toString());
      tenth++;
    }
  }
  print('primes below ' + limit.toString() + ': ' + count.toString() + ', sum ' + sum.toString());
}

// The top level is the module's start function; the build exports it as WASI's `_start`.
main();
