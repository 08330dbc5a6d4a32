/**
 * A Roam deployment across network namespaces (test/helpers/netns.ts): a real `roam proxy` in
 * the `proxy` namespace, real `roam host` processes each in a namespace of its own, and any
 * number of extra namespaces (clients, remote servers). Every node has its own address, so the
 * proxy sees each host at that host's address, and a client reaches guests only through the proxy.
 *
 *     const cluster = await startNetnsCluster({ hosts: ['host-a', 'host-b'], others: ['client'] });
 *     after(() => cluster.close());
 *     const hosts = await cluster.roamJson('client', ['hosts']);
 *
 * The test process stays in the root namespace, which cannot reach the test subnet: the operator
 * CLI (`roam ps`, `roam run`, ...) runs inside a namespace with `--api http://PROXY:7480` and
 * `--admin-token-file`, as an operator on another machine would run it.
 *
 * Needs root and iproute2: call `netnsAvailable()` first and skip with its reason.
 */
import { DAEMON_NODE_FLAGS, daemonEnv } from '../../src/common/node-flags.js';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNetwork, type NetProcess, type RunResult, type TestNetwork } from './netns.js';
import { ROAM, ROOT } from './roam.js';
import { createCpuCgroup, joinAndExec, type CpuCgroup } from './cgroups.js';

export const CONTROL_PORT = 7400;
export const API_PORT = 7480;

export interface NetnsClusterOptions {
  /** Namespaces that run `roam host --name <node>`. */
  hosts: string[];
  /** Further namespaces with nothing started in them (clients, remote servers). */
  others?: string[];
  /** Extra arguments for `roam proxy`. */
  proxyArgs?: string[];
  /** Hosts confined to a CPU cgroup of their own, with this quota in cores (0: no limit). */
  cpuQuota?: Record<string, number>;
  /** Environment for particular hosts (failpoints, for example). */
  hostEnv?: Record<string, Record<string, string>>;
}

export interface NetnsCluster {
  net: TestNetwork;
  /** The proxy's address: where hosts join, where the API is, where guests are published. */
  proxyAddress: string;
  /** `http://PROXY:7480`. */
  api: string;
  /** A temporary folder removed by close(). */
  dir: string;
  /** A copy of the proxy's admin token, as an operator would keep it. */
  adminTokenFile: string;
  /** A copy of the proxy's join token, as each host would be given it. */
  joinTokenFile: string;
  proxy: NetProcess;
  hosts: Map<string, NetProcess>;
  /** Runs `roam ARGS --api ... --admin-token-file ...` inside `node`'s namespace. */
  roam(node: string, args: string[], timeoutMs?: number): Promise<RunResult>;
  /** Runs `roam ARGS --json ...` inside `node`'s namespace; fails with the output unless it exits 0. */
  roamJson<T>(node: string, args: string[], timeoutMs?: number): Promise<T>;
  /** Stops a host (SIGTERM: it drains and leaves) and starts it again; resolves once it joined. */
  restartHost(host: string): Promise<void>;
  /** The CPU cgroup of a host started with `cpuQuota` (to start more work inside it). */
  cgroup(host: string): CpuCgroup | undefined;
  /** Stops every process, deletes the namespaces and the temporary folder. Idempotent. */
  close(): Promise<void>;
}

export async function startNetnsCluster(options: NetnsClusterOptions): Promise<NetnsCluster> {
  const nodes = ['proxy', ...options.hosts, ...(options.others ?? [])];
  const net = await createNetwork({ nodes });
  const dir = mkdtempSync(join(tmpdir(), 'roam-netns-'));
  const groups = new Map<string, CpuCgroup>();
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= net.close().finally(() => {
      rmSync(dir, { recursive: true, force: true });
      for (const g of groups.values()) g.remove();
    }));

  try {
    const proxyAddress = net.address('proxy');
    const dataDir = join(dir, 'proxy');
    const proxy = net.spawn(
      'proxy',
      process.execPath,
      [
        ...DAEMON_NODE_FLAGS, // as bin/roam starts it
        ROAM,
        'proxy',
        '--bind',
        proxyAddress,
        '--control-port',
        String(CONTROL_PORT),
        '--api-port',
        String(API_PORT),
        '--data-dir',
        dataDir,
        '--name',
        'netns-proxy',
        ...(options.proxyArgs ?? []),
      ],
      { cwd: ROOT, env: daemonEnv() },
    );
    await proxy.waitFor(/api port +\d+/, 20_000);

    // Hand the tokens out as files, as an operator copies them to another machine.
    const joinTokenFile = join(dir, 'join-token');
    const adminTokenFile = join(dir, 'admin-token');
    copyFileSync(join(dataDir, 'join-token'), joinTokenFile);
    copyFileSync(join(dataDir, 'admin-token'), adminTokenFile);

    const hosts = new Map<string, NetProcess>();
    const starts = new Map<string, () => NetProcess>();
    for (const name of options.hosts) {
      const quota = options.cpuQuota?.[name];
      const group = quota === undefined ? undefined : createCpuCgroup(`${net.id}-${name}`, quota);
      if (group) groups.set(name, group);
      const hostArgs = [
        ...DAEMON_NODE_FLAGS,
        ROAM,
        'host',
        '--proxy',
        `${proxyAddress}:${CONTROL_PORT}`,
        '--join-token-file',
        joinTokenFile,
        '--name',
        name,
        '--data-dir',
        join(dir, name),
        '--no-benchmark',
      ];
      const [command, args] = group ? joinAndExec(group, process.execPath, hostArgs) : [process.execPath, hostArgs];
      const env = options.hostEnv?.[name];
      const start = (): NetProcess =>
        net.spawn(name, command, args, { cwd: ROOT, env: daemonEnv({ ...process.env, ...env }) });
      starts.set(name, start);
      hosts.set(name, start());
    }
    await Promise.all([...hosts.values()].map((h) => h.waitFor(/joined the proxy/, 20_000)));

    const api = `http://${proxyAddress}:${API_PORT}`;
    const roam = (node: string, args: string[], timeoutMs = 20_000): Promise<RunResult> =>
      net.exec(node, process.execPath, [ROAM, ...args, '--api', api, '--admin-token-file', adminTokenFile], {
        cwd: ROOT,
        timeoutMs,
      });
    return {
      net,
      proxyAddress,
      api,
      dir,
      adminTokenFile,
      joinTokenFile,
      proxy,
      hosts,
      roam,
      cgroup: (host) => groups.get(host),
      async restartHost(host: string): Promise<void> {
        const old = hosts.get(host);
        const start = starts.get(host);
        if (!old || !start) throw new Error(`no host ${host}`);
        old.child.kill('SIGTERM');
        await old.exited;
        const fresh = start();
        hosts.set(host, fresh);
        await fresh.waitFor(/joined the proxy/, 20_000);
      },
      async roamJson<T>(node: string, args: string[], timeoutMs?: number): Promise<T> {
        const r = await roam(node, [...args, '--json'], timeoutMs);
        if (r.code !== 0) {
          throw new Error(`roam ${args.join(' ')} on ${node} exited ${r.code ?? r.signal}:\n${r.stdout}\n${r.stderr}`);
        }
        try {
          return JSON.parse(r.stdout) as T;
        } catch {
          throw new Error(`roam ${args.join(' ')} on ${node} printed no JSON:\n${r.stdout}\n${r.stderr}`);
        }
      },
      close,
    };
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}

/** Polls `check` until it returns a value (bounded: it waits on other processes' state). */
export async function until<T>(check: () => Promise<T | undefined>, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: Error | undefined;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err instanceof Error ? err : new Error(String(err));
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last ? `; last error: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
