/**
 * The proxy's configuration, in one place: flags, environment and the data directory, with the
 * defaults documented here. Tokens are generated on first start and stored (mode 0600).
 */
import { mkdirSync } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { resolveSecret } from '../common/secrets.js';
import { RoamError } from '../errors.js';
import { loadPolicy, type Policy } from '../policy/config.js';

export interface ProxyConfig {
  /** Address the public, control and API ports listen on (default 0.0.0.0). */
  bind: string;
  /** Where hosts connect (default 7400). */
  controlPort: number;
  /** The operators' HTTP API and dashboard (default 7480). */
  apiPort: number;
  /** State, tokens and the database (default ~/.roam/proxy). */
  dataDir: string;
  joinToken: string;
  adminToken: string;
  /** How the proxy names itself to hosts (default: the machine's host name). */
  name: string;
  /** How often hosts report (default 1000 ms). */
  reportIntervalMs: number;
  /** A host silent for this many report intervals is evicted (default 5). */
  evictAfterIntervals: number;
  /** How long streams of a disconnected host wait for it to come back (default 30 s). */
  reattachGraceMs: number;
  /** The control plane's policy (`--policy FILE`, YAML or JSON; defaults in policy/config.ts). */
  policy: Policy;
}

export interface ProxyFlags {
  bind?: string;
  controlPort?: number;
  apiPort?: number;
  dataDir?: string;
  joinToken?: string;
  joinTokenFile?: string;
  adminToken?: string;
  adminTokenFile?: string;
  name?: string;
  reportIntervalMs?: number;
  evictAfterIntervals?: number;
  reattachGraceMs?: number;
  policyFile?: string;
}

export function defaultProxyDataDir(): string {
  return process.env['ROAM_DATA_DIR'] ?? join(homedir(), '.roam', 'proxy');
}

function port(value: number | undefined, fallback: number, what: string): number {
  const p = value ?? fallback;
  if (!Number.isInteger(p) || p < 0 || p > 65535)
    throw new RoamError('ROAM_ERR_USAGE', `${what} must be a port number 0-65535`);
  return p;
}

export function resolveProxyConfig(flags: ProxyFlags): ProxyConfig & { generated: string[] } {
  const dataDir = flags.dataDir ?? defaultProxyDataDir();
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new RoamError('ROAM_ERR_IO', `cannot create the data directory ${dataDir}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const generated: string[] = [];
  const join_ = resolveSecret({
    value: flags.joinToken,
    env: 'ROAM_JOIN_TOKEN',
    file: flags.joinTokenFile,
    stored: join(dataDir, 'join-token'),
    generate: true,
  });
  const admin = resolveSecret({
    value: flags.adminToken,
    env: 'ROAM_ADMIN_TOKEN',
    file: flags.adminTokenFile,
    stored: join(dataDir, 'admin-token'),
    generate: true,
  });
  if (!join_ || !admin) throw new RoamError('ROAM_ERR_USAGE', 'cannot find or create the join and admin tokens');
  if (join_.source === 'generated') generated.push('join-token');
  if (admin.source === 'generated') generated.push('admin-token');
  return {
    bind: flags.bind ?? '0.0.0.0',
    controlPort: port(flags.controlPort, 7400, '--control-port'),
    apiPort: port(flags.apiPort, 7480, '--api-port'),
    dataDir,
    joinToken: join_.value,
    adminToken: admin.value,
    name: flags.name ?? hostname(),
    reportIntervalMs: flags.reportIntervalMs ?? 1000,
    evictAfterIntervals: flags.evictAfterIntervals ?? 5,
    reattachGraceMs: flags.reattachGraceMs ?? 30_000,
    policy: loadPolicy(flags.policyFile ?? process.env['ROAM_POLICY']),
    generated,
  };
}
