/**
 * What `roam demo` borrows from the machine when it runs as root, and gives back on exit:
 *
 * - Network namespaces: one per host, each with its own address on a private /24, wired by veth
 *   pairs to a bridge that lives in a namespace of its own; one more veth leg gives the machine's
 *   own namespace the first address, where the proxy, the dashboard and the demo's client are.
 * - CPU cgroups: one per host with a CPU quota, so each host measures its own load (the demo loads
 *   one host; without cgroups every host sees the whole machine's CPU).
 *
 * Everything is named `roam-demo-<pid>-...` and removed by `close()` (also synchronously on exit).
 */
import { spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.error?.message ?? r.stderr.trim()}`);
}

export function canUseNamespaces(): { ok: true } | { ok: false; reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: 'network namespaces need Linux' };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'network namespaces need root' };
  const r = spawnSync('ip', ['-V'], { encoding: 'utf8', timeout: 5000 });
  if (r.error || r.status !== 0) return { ok: false, reason: 'iproute2 (`ip`) is not installed' };
  const n = spawnSync('nsenter', ['--version'], { encoding: 'utf8', timeout: 5000 });
  if (n.error || n.status !== 0) return { ok: false, reason: 'nsenter (util-linux) is not installed' };
  return { ok: true };
}

export interface DemoNetwork {
  /** The machine's address on the demo network (the proxy binds it). */
  rootAddress: string;
  address(node: string): string;
  namespace(node: string): string;
  /**
   * `nsenter --net=/run/netns/NS` + the command, to spawn inside a node's network namespace.
   * (Not `ip netns exec`, which also remounts /sys and so hides the cgroup file system the host
   * measures its CPU quota from.)
   */
  wrap(node: string, command: string, args: string[]): { command: string; args: string[] };
  close(): void;
}

export function createDemoNetwork(nodes: string[]): DemoNetwork {
  const id = `roam-demo-${process.pid}`;
  const subnet = `10.214.${randomInt(1, 255)}`;
  const bridgeNs = `${id}-br`;
  const rootIf = `rdemo${process.pid % 100000}`;
  const ns = (node: string) => `${id}-${node}`;
  const created: string[] = [];
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    spawnSync('ip', ['link', 'del', rootIf], { stdio: 'ignore', timeout: 5000 });
    for (const name of created.reverse()) {
      // Whatever still runs in it goes first (hosts are stopped before; this is the backstop).
      const pids = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8', timeout: 5000 }).stdout ?? '';
      for (const pid of pids.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone already
        }
      }
      spawnSync('ip', ['netns', 'delete', name], { stdio: 'ignore', timeout: 5000 });
    }
  };
  process.once('exit', close);
  try {
    ip('netns', 'add', bridgeNs);
    created.push(bridgeNs);
    ip('-n', bridgeNs, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', bridgeNs, 'link', 'set', 'br0', 'up');
    ip('link', 'add', rootIf, 'type', 'veth', 'peer', 'name', 'up0', 'netns', bridgeNs);
    ip('-n', bridgeNs, 'link', 'set', 'up0', 'master', 'br0', 'up');
    ip('addr', 'add', `${subnet}.1/24`, 'dev', rootIf);
    ip('link', 'set', rootIf, 'up');
    nodes.forEach((node, i) => {
      ip('netns', 'add', ns(node));
      created.push(ns(node));
      ip('-n', bridgeNs, 'link', 'add', `p${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns(node));
      ip('-n', bridgeNs, 'link', 'set', `p${i}`, 'master', 'br0', 'up');
      ip('-n', ns(node), 'link', 'set', 'lo', 'up');
      ip('-n', ns(node), 'addr', 'add', `${subnet}.${i + 2}/24`, 'dev', 'eth0');
      ip('-n', ns(node), 'link', 'set', 'eth0', 'up');
    });
  } catch (err) {
    close();
    throw err;
  }
  return {
    rootAddress: `${subnet}.1`,
    address: (node) => `${subnet}.${nodes.indexOf(node) + 2}`,
    namespace: ns,
    wrap: (node, command, args) => ({
      command: 'nsenter',
      args: [`--net=/run/netns/${ns(node)}`, '--', command, ...args],
    }),
    close,
  };
}

/** Per-host CPU cgroups with a quota (cgroup v1 cpu+cpuacct, or v2 with the cpu controller). */
export interface DemoCgroups {
  /** A shell prefix that moves the process into the host's cgroup, then runs the command. */
  wrap(node: string, command: string, args: string[]): { command: string; args: string[] };
  close(): void;
}

export function createDemoCgroups(nodes: string[], cores: number): DemoCgroups | { reason: string } {
  if (process.getuid?.() !== 0) return { reason: 'CPU cgroups need root' };
  const name = `roam-demo-${process.pid}`;
  const v1 = ['/sys/fs/cgroup/cpu', '/sys/fs/cgroup/cpuacct'].filter((d) => existsSync(join(d, 'cgroup.procs')));
  const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers') ? '/sys/fs/cgroup' : undefined;
  const dirs: string[] = [];
  const procsFiles = new Map<string, string[]>();
  const quota = Math.round(cores * 100_000);
  try {
    if (v2 && readFileSync(join(v2, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('cpu')) {
      const parent = join(v2, name);
      mkdirSync(parent);
      dirs.push(parent);
      writeFileSync(join(parent, 'cgroup.subtree_control'), '+cpu');
      for (const node of nodes) {
        const dir = join(parent, node);
        mkdirSync(dir);
        dirs.push(dir);
        writeFileSync(join(dir, 'cpu.max'), `${quota} 100000`);
        procsFiles.set(node, [join(dir, 'cgroup.procs')]);
      }
    } else if (v1.length === 2) {
      for (const root of v1) {
        mkdirSync(join(root, name));
        dirs.push(join(root, name));
        for (const node of nodes) {
          const dir = join(root, name, node);
          mkdirSync(dir);
          dirs.push(dir);
          if (root.endsWith('/cpu')) {
            writeFileSync(join(dir, 'cpu.cfs_period_us'), '100000');
            writeFileSync(join(dir, 'cpu.cfs_quota_us'), String(quota));
          }
          procsFiles.set(node, [...(procsFiles.get(node) ?? []), join(dir, 'cgroup.procs')]);
        }
      }
    } else {
      return { reason: 'no writable cgroup CPU controller' };
    }
  } catch (err) {
    for (const dir of dirs.reverse()) rmdirIfEmpty(dir);
    return { reason: `cannot make CPU cgroups: ${(err as Error).message}` };
  }
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    for (const dir of [...dirs].reverse()) rmdirIfEmpty(dir);
  };
  process.once('exit', close);
  return {
    wrap: (node, command, args) => {
      const files = procsFiles.get(node) ?? [];
      const moves = files.map((f) => `echo $$ > '${f}'`).join(' && ');
      return { command: 'sh', args: ['-c', `${moves} && exec "$0" "$@"`, command, ...args] };
    },
    close,
  };
}

function rmdirIfEmpty(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // processes still in it (they are being stopped) or gone already
  }
}
