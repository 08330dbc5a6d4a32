/**
 * CPU cgroups (v1, as on this machine: separate `cpu` and `cpuacct` hierarchies) for tests that
 * confine a host to part of a core. Needs root. A process joins by writing its pid into each
 * `cgroup.procs` before it execs: `joinAndExec` builds that shell prefix.
 */
import { existsSync, mkdirSync, realpathSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const CPU = '/sys/fs/cgroup/cpu';
const CPUACCT = '/sys/fs/cgroup/cpuacct';

export function cgroupsAvailable(): { ok: true } | { ok: false; reason: string } {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'not root' };
  if (!existsSync(join(CPU, 'cpu.cfs_quota_us')) || !existsSync(join(CPUACCT, 'cpuacct.usage'))) {
    return { ok: false, reason: 'no cgroup v1 cpu and cpuacct hierarchies' };
  }
  return { ok: true };
}

export interface CpuCgroup {
  /** The `cgroup.procs` files a process writes its pid into. */
  procs: string[];
  /** Removes the cgroups (their processes must have exited). */
  remove(): void;
}

/** A cgroup named `name` in each CPU hierarchy, limited to `quotaCores` (0: no limit). */
export function createCpuCgroup(name: string, quotaCores: number): CpuCgroup {
  const dirs = [...new Set([realpathSync(CPU), realpathSync(CPUACCT)])].map((root) => join(root, name));
  for (const dir of dirs) if (!existsSync(dir)) mkdirSync(dir);
  const cpuDir = join(realpathSync(CPU), name);
  writeFileSync(join(cpuDir, 'cpu.cfs_period_us'), '100000');
  writeFileSync(join(cpuDir, 'cpu.cfs_quota_us'), quotaCores > 0 ? String(Math.round(quotaCores * 100_000)) : '-1');
  return {
    procs: dirs.map((d) => join(d, 'cgroup.procs')),
    remove: () => {
      for (const dir of dirs.reverse()) {
        try {
          rmdirSync(dir);
        } catch {
          // still busy (a process outlived the test): the next run's name differs
        }
      }
    },
  };
}

/**
 * `sh -c` arguments, for a command started with `ip netns exec`, that put the shell in the cgroup
 * and exec `command args`. `ip netns exec` mounts a fresh /sys in a mount namespace of its own,
 * which hides the cgroup hierarchies; the script mounts them again there (only there: the mount
 * namespace is private to that command), so the host inside sees its cgroup as it would on a
 * machine of its own.
 */
export function joinAndExec(group: CpuCgroup, command: string, args: string[]): [string, string[]] {
  const remount = [
    'mount -t tmpfs cgroup_root /sys/fs/cgroup',
    'mkdir -p /sys/fs/cgroup/cpu /sys/fs/cgroup/cpuacct /sys/fs/cgroup/memory',
    'mount -t cgroup -o cpu cgroup /sys/fs/cgroup/cpu',
    'mount -t cgroup -o cpuacct cgroup /sys/fs/cgroup/cpuacct',
    'mount -t cgroup -o memory cgroup /sys/fs/cgroup/memory',
  ].join(' && ');
  const writes = group.procs.map((f) => `echo $$ > '${f}'`).join(' && ');
  return ['sh', ['-c', `${remount} && ${writes} && exec "$0" "$@"`, command, ...args]];
}
