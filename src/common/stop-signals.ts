/**
 * SIGINT and SIGTERM for a process that stops in order. The first signal starts the stop; a later
 * one forces it, for an operator who will not wait. One interruption can reach a process twice, a
 * moment apart: `timeout` signals its command and then the command's process group, and a terminal's
 * Ctrl-C reaches a whole process group while its leader may pass a stop on to its children. So a
 * signal within SAME_SIGNAL_MS of the first is the same interruption, not a second one.
 */
export const SAME_SIGNAL_MS = 500;

/** Calls `stop` on the first SIGINT or SIGTERM and `force` on a later one; returns the unsubscribe. */
export function onStopSignals(stop: () => void, force: () => void, now = (): number => performance.now()): () => void {
  let firstAt: number | undefined;
  const handler = (): void => {
    if (firstAt === undefined) {
      firstAt = now();
      stop();
    } else if (now() - firstAt > SAME_SIGNAL_MS) force();
  };
  process.on('SIGINT', handler).on('SIGTERM', handler);
  return () => void process.off('SIGINT', handler).off('SIGTERM', handler);
}
