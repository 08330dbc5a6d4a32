/**
 * Flags of Node (V8) that Roam's own long-running processes, `roam proxy` and `roam host`, run
 * with. bin/roam starts Node with them; whatever starts those processes by `node bin/roam ...`
 * instead (`roam demo`, the benchmarks) passes them itself.
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
