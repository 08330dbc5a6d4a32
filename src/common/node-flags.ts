/**
 * How Roam's own long-running processes, `roam proxy` and `roam host`, are started: the flags of
 * Node (V8) and the C library's malloc settings they run with. bin/roam starts Node with both;
 * whatever starts those processes by `node bin/roam ...` instead (`roam demo`, the benchmarks,
 * the tests) passes them itself: `DAEMON_NODE_FLAGS` and `daemonEnv()`.
 *
 * `--single-threaded-gc`: V8 does all of its garbage collection on the main thread, with no
 * background marking, sweeping or parallel scavenging threads. A relay allocates a 64 KiB buffer
 * per socket read, which makes V8 collect often; its background threads then compete for the
 * same few cores as the relay itself, its peers and the kernel's TCP work. Measured by
 * bench:relay on 2 cores (proxy and controller both with the flag, against both without, in the
 * same runs): upload +40-55%, download +40%, proxy CPU per byte a third to a half lower, 64-byte
 * round-trip latency unchanged. It cannot be set once V8 runs (`v8.setFlagsFromString` aborts
 * the process at the next full collection), and NODE_OPTIONS does not accept it.
 *
 * `--always-sparkplug`: every function is compiled to baseline machine code (Sparkplug) the first
 * time it runs, instead of being interpreted until it has run often. A host restores a guest once
 * in a while, so the restore path (image header, diffs, file system, the guest's host side) runs
 * cold every time; interpreted, each of its small steps cost several times its warm time.
 * Measured by restoring the 1 MiB bench guest's image 7 times in each of 4 fresh processes
 * (bench/restore-child.ts): median restore 1.17-1.34 ms with the flag, 1.43-1.90 ms without.
 * The cost is start-up: `roam --help` 0.50-0.52 s against 0.46-0.52 s, about 5 MB more memory.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--single-threaded-gc', '--always-sparkplug'];

/**
 * glibc's malloc keeps freed memory instead of handing it back to the kernel at once
 * (GLIBC_TUNABLES, read when a process starts; other C libraries ignore the variable).
 *
 * Each socket read of a relay gets a new 64 KiB buffer from malloc, and a garbage collection frees
 * a batch of them at once. By default glibc then gives the top of its heap back to the kernel as
 * soon as 128 KiB of it is free, and the next reads write to fresh pages, each a page fault: in a
 * plain Node relay (`socket.pipe`, 64 KiB writes for 1.5 s, 3 rounds) 29-168 faults per MB relayed,
 * 2.4-3.8 ns of CPU per byte and 277-580 MB/s; with these values 0-0.4 faults per MB, 0.8-1.2 ns and
 * 800-1080 MB/s. glibc raises both thresholds by itself after it frees a large mapped block, up to
 * these very values (32 MiB, and twice that to trim); a relay never frees one, so they start there.
 * The cost: up to 64 MiB of freed memory stays in each process, reused by its next allocations.
 */
export const DAEMON_MALLOC_TUNABLES = 'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864';

/**
 * `env` with DAEMON_MALLOC_TUNABLES for a daemon's process. GLIBC_TUNABLES already set there is
 * kept, after them, so that an operator's own value for the same tunable wins (the last one does).
 */
export function daemonEnv<Env extends NodeJS.ProcessEnv>(
  env: Env = process.env as Env,
): Env & { GLIBC_TUNABLES: string } {
  const own = env['GLIBC_TUNABLES'];
  return { ...env, GLIBC_TUNABLES: own ? `${DAEMON_MALLOC_TUNABLES}:${own}` : DAEMON_MALLOC_TUNABLES };
}
