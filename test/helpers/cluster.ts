/**
 * Test helpers for a Roam deployment on loopback: a real `roam proxy` and real `roam host`
 * processes, the admin API, and free ports. Everything started is stopped in `t.after`.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { bundleGuest } from '../../src/guest/bundle.js';
import { startRoam, tempDir } from './roam.js';

export type Started = ReturnType<typeof startRoam>;

export interface TestProxy {
  process: Started;
  controlPort: number;
  apiPort: number;
  dataDir: string;
  joinToken: string;
  adminToken: string;
  api<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
}

interface AfterContext {
  after(fn: () => void | Promise<void>): void;
}

/** Stops a process and waits for it (SIGTERM, then SIGKILL after a grace period). */
export async function stop(p: Started, graceMs = 3000): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
  await p.exited;
  clearTimeout(timer);
}

/** Where a proxy keeps its state and listens: pass it again to restart on the same. */
export interface ProxyPlace {
  dataDir: string;
  controlPort: number;
  apiPort: number;
}

export async function startProxy(
  t: AfterContext,
  extra: string[] = [],
  place: Partial<ProxyPlace> = {},
): Promise<TestProxy & { place: ProxyPlace }> {
  const dataDir = place.dataDir ?? join(tempDir(t), 'proxy');
  const p = startRoam([
    'proxy',
    '--bind',
    '127.0.0.1',
    '--control-port',
    String(place.controlPort ?? 0),
    '--api-port',
    String(place.apiPort ?? 0),
    '--data-dir',
    dataDir,
    '--name',
    'test-proxy',
    ...extra,
  ]);
  t.after(() => stop(p));
  const controlPort = Number((await p.waitFor(/control port (\d+)/))[1]);
  const apiPort = Number((await p.waitFor(/api port +(\d+)/))[1]);
  const joinToken = readFileSync(join(dataDir, 'join-token'), 'utf8').trim();
  const adminToken = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
  return {
    process: p,
    controlPort,
    apiPort,
    dataDir,
    joinToken,
    adminToken,
    place: { dataDir, controlPort, apiPort },
    async api<T>(method: string, path: string, body?: unknown) {
      const res = await fetch(`http://127.0.0.1:${apiPort}${path}`, {
        method,
        headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
        signal: AbortSignal.timeout(10_000),
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await res.text();
      return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
    },
  };
}

export function startHost(
  t: AfterContext,
  proxy: TestProxy,
  name: string,
  options: { port?: number; token?: string; env?: Record<string, string> } = {},
): Started {
  const dir = tempDir(t);
  const p = startRoam(
    [
      'host',
      '--proxy',
      `127.0.0.1:${options.port ?? proxy.controlPort}`,
      '--name',
      name,
      '--data-dir',
      join(dir, name),
      '--no-benchmark',
    ],
    { ROAM_JOIN_TOKEN: options.token ?? proxy.joinToken, ...options.env },
  );
  t.after(() => stop(p));
  return p;
}

/**
 * A port nobody listens on right now, for a guest to publish. It is drawn below Linux's ephemeral
 * range (32768-60999): a port the kernel handed out could be handed out again, to another test's
 * outgoing connection, between this check and the proxy's listen (seen once in CI as EADDRINUSE).
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const server = net.createServer();
    const free = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (free) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      return port;
    }
  }
}

export async function deploy(
  proxy: TestProxy,
  file: string,
  request: {
    name: string;
    publish?: Array<{ public: number; guest: number; protocol: 'tcp' | 'udp' }>;
    env?: Record<string, string>;
    on?: string;
  },
): Promise<{ status: number; body: { state: string; hostName: string | null; error?: { code: string } } }> {
  const { code } = await bundleGuest(file);
  return proxy.api('POST', '/api/guests', {
    name: request.name,
    bundle: code,
    publish: request.publish ?? [],
    env: request.env ?? {},
    argv: [],
    ...(request.on ? { on: request.on } : {}),
  });
}

/** Polls `check` until it returns a value (bounded: this waits on another process's state). */
export async function eventually<T>(check: () => Promise<T | undefined>, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
