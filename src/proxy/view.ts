/**
 * What the Proxy shows operators: the roaming table as plain data (the API's JSON, `roam ps`,
 * `roam hosts`), and the operations the API offers. The proxy implements `ProxyOperations`; the
 * API (api.ts) and the CLI only ever see these shapes.
 */
import type { HostReport } from '../controller/metrics/index.js';
import type { PublishedPort } from './store.js';

export type HostStateView = 'up' | 'left' | 'evicted' | 'disconnected';

export interface HostView {
  id: string;
  name: string;
  state: HostStateView;
  address: string | null;
  peerPort: number | null;
  joinedAt: number | null;
  lastSeen: number | null;
  rttMs: number | null;
  benchmarkScore: number | null;
  /** The last report, as the controller sent it (null before the first). */
  metrics: HostReport | null;
  guests: number;
}

export type GuestStateView = 'pending' | 'starting' | 'running' | 'stopped' | 'exited' | 'failed' | 'lost';

export interface GuestView {
  id: string;
  name: string;
  state: GuestStateView;
  hostId: string | null;
  hostName: string | null;
  publish: PublishedPort[];
  since: number;
  exitCode: number | null;
  memoryBytes: number | null;
  cpuMs: number | null;
  streams: number;
}

export interface StreamView {
  id: number;
  guestId: string;
  guestName: string;
  protocol: 'tcp' | 'udp';
  direction: 'inbound' | 'outbound';
  remote: string;
  guestPort: number;
  bytesIn: number;
  bytesOut: number;
  since: number;
  state: 'open' | 'detached' | 'closing';
}

export interface EventView {
  id: number;
  t: number;
  kind: string;
  hostId: string | null;
  guestId: string | null;
  message: string;
  data: unknown;
}

export interface DeployRequest {
  name: string;
  /** The bundled guest program (JavaScript source, as `roam run` bundles it). */
  bundle: string;
  publish: PublishedPort[];
  env: Record<string, string>;
  argv: string[];
  /** Place on this host (name or id) instead of the best one by score. */
  on?: string;
}

export interface LogRecordView {
  t: number;
  stream: 'out' | 'err';
  text: string;
}

/** The operations behind the API. Errors are RoamErrors with stable codes (see errors.ts). */
export interface ProxyOperations {
  hosts(): HostView[];
  guests(): GuestView[];
  streams(): StreamView[];
  events(options: { after?: number; limit?: number }): EventView[];
  /** Live events, from now on; returns the unsubscribe function. */
  subscribe(listener: (event: EventView) => void): () => void;
  deploy(request: DeployRequest): Promise<GuestView>;
  stop(name: string): Promise<GuestView>;
  logs(name: string, options: { tail?: number }): Promise<LogRecordView[]>;
}
