/**
 * Case (c) of the relay benchmark, the Proxy side, in its own process: the real `Proxy`
 * (src/proxy/proxy.ts) with a configuration from `resolveProxyConfig`, on 127.0.0.1. The parent
 * (bench/relay.ts) asks it over IPC to deploy (the proxy's own operation, answered by the fake
 * controller of bench/relay-controller.ts), for its memory (after a full GC; start with
 * --expose-gc), its CPU use, its stream count and CPU profiles.
 *
 *   node --expose-gc --import tsx bench/relay-proxy.ts DATA_DIR
 */
import { resolveProxyConfig } from '../src/proxy/config.js';
import { Proxy } from '../src/proxy/proxy.js';
import type { DeployRequest } from '../src/proxy/view.js';
import { announce, cpuOver, memorySample, profileStart, profileStop, serveRequests } from './relay-lib.js';

interface SessionInsides {
  streams?: Map<number, unknown>;
  closeHandlers?: Map<unknown, unknown>;
}

const dataDir = process.argv[2];
if (!dataDir) throw new Error('usage: relay-proxy.ts DATA_DIR');
const config = resolveProxyConfig({ bind: '127.0.0.1', controlPort: 0, apiPort: 0, dataDir, name: 'bench-proxy' });
const proxy = await Proxy.start(config);

serveRequests({
  deploy: (args) => proxy.deploy(args as DeployRequest),
  memory: () => memorySample(),
  streams: () => proxy.streams().length,
  // For measurement only: what the hosts' link sessions still hold (Proxy and LinkSession internals).
  sessions: () => {
    const hosts = (proxy as unknown as { hostTable: Map<string, { session?: SessionInsides }> }).hostTable;
    return [...hosts.values()].map((h) => ({
      streams: h.session?.streams?.size ?? NaN,
      closeHandlers: h.session?.closeHandlers?.size ?? NaN,
    }));
  },
  cpu: (args) => cpuOver((args as { ms: number }).ms),
  profileStart: () => profileStart(),
  profileStop: (args) => profileStop((args as { save?: string } | undefined)?.save),
  close: () => proxy.close(),
});
process.on('SIGTERM', () => {
  void proxy.close().finally(() => process.exit(0));
});
announce({ controlPort: proxy.controlPort, joinToken: config.joinToken });
