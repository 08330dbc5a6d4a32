/**
 * Failpoints for fault-injection tests, in the manner of etcd's gofail: named places in the code
 * where a test can make the process die, stall or misbehave, so that each step of a protocol can
 * be failed on purpose by real processes. Off unless `ROAM_FAILPOINTS` is set, e.g.
 * `ROAM_FAILPOINTS=migrate.source.afterFreeze=exit;migrate.target.beforeCommit=delay(3000)`.
 *
 * Actions: `exit` (the process dies at once, as with SIGKILL: nothing is flushed or said),
 * `delay(MS)` (the step waits), `drop` (the message is not sent), `corrupt` (the message is sent
 * damaged).
 */
export type FailAction = { kind: 'exit' } | { kind: 'delay'; ms: number } | { kind: 'drop' } | { kind: 'corrupt' };

function parse(spec: string | undefined): Map<string, FailAction> {
  const points = new Map<string, FailAction>();
  for (const entry of (spec ?? '').split(';')) {
    const [name, action] = entry.split('=').map((s) => s.trim());
    if (!name || !action) continue;
    const delay = /^delay\((\d+)\)$/.exec(action);
    if (delay) points.set(name, { kind: 'delay', ms: Number(delay[1]) });
    else if (action === 'exit' || action === 'drop' || action === 'corrupt') points.set(name, { kind: action });
  }
  return points;
}

const points = parse(process.env.ROAM_FAILPOINTS);

/** The action set for `name`, if any. */
export function failpoint(name: string): FailAction | undefined {
  return points.get(name);
}

/** Runs the generic actions of `name` here: dies for `exit`, waits for `delay`. */
export async function reach(name: string): Promise<void> {
  const action = points.get(name);
  if (!action) return;
  if (action.kind === 'exit') process.kill(process.pid, 'SIGKILL');
  if (action.kind === 'delay') await new Promise((resolve) => setTimeout(resolve, action.ms));
}
