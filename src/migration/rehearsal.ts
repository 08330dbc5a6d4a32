/**
 * A rehearsal of a move's restore, once per host process, before any move asks for one. The first
 * time a process runs the code that rebuilds a moved guest (its state parsed, its file system, log
 * and timers rebuilt, the sandbox attached, the guest resumed), V8 has yet to compile it, and the
 * guest that first moves here waits for that in its pause. Measured in fresh processes with the
 * hosts' flags, taking the 1 MiB bench guest in: the first `Guest.beginMoved` took 3.9-4.9 ms and
 * its `land()` and `resume()` 0.5-1.1 ms; after this rehearsal 0.4-0.7 and 0.06-0.13 ms, as later
 * moves take (BENCHMARKS.md, Migration findings, session 16). The guest's connections, rebuilt on
 * the host's tunnel, are not rehearsed: that needs a proxy.
 *
 * So a small guest is started here, captured, and rebuilt in a sandbox of its own as a move's
 * target rebuilds one; then all of it is thrown away. It costs the host 0.3 s (0.36-0.39 s of CPU)
 * once, when it gets ready for moves, before its first spare sandbox is made.
 */
import { Guest } from '../guest/guest.js';
import { applyPages, type ImageContents } from '../guest/image/index.js';
import type { SandboxLimits } from '../guest/sandbox/sandbox.js';

/** A guest with what a move rebuilds: timers of both kinds, a pending promise, a heap of its own. */
const PROGRAM = `
const kept = [];
for (let i = 0; i < 1000; i++) kept.push({ i, name: 'record ' + i });
let ticks = 0;
setInterval(() => { ticks++; kept[ticks % kept.length].ticks = ticks; }, 1000);
setTimeout(() => {}, 60000);
new Promise((resolve) => setTimeout(resolve, 30000)).then(() => kept.length);
`;

/**
 * Runs the rehearsal; resolves once everything it made is gone (at once after `signal` aborts,
 * between its steps). Failing costs nothing but the warm-up.
 */
export async function rehearseMoveIn(limits: SandboxLimits, signal?: AbortSignal): Promise<void> {
  const guest = await Guest.start(PROGRAM, { name: 'rehearsal', limits, onLog: () => {} });
  let contents: ImageContents;
  try {
    contents = guest.checkpoint().contents;
  } finally {
    guest.stop();
  }
  const bytes = contents.memory.byteLength;
  if (signal?.aborted) return;

  // A move's target: pages written into a prepared sandbox, the host side rebuilt from the state.
  // Not faulted in first: that warms no code, and its 16 MiB held the event loop for 80-90 ms.
  const sandbox = await Guest.prepareSandbox(limits, bytes, 'no');
  const moving = await Guest.beginMoved(sandbox, contents, { frozen: true }).catch((err: unknown) => {
    sandbox.dispose();
    throw err;
  });
  let moved: Guest | undefined;
  try {
    applyPages(contents.memory, sandbox.grow(bytes));
    moved = moving.land();
    moved.resume();
  } finally {
    // A guest that landed takes its sandbox with it when it stops.
    if (moved) moved.stop();
    else {
      moving.drop();
      sandbox.dispose();
    }
  }
}
