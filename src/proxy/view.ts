/**
 * What the Proxy shows operators: the roaming table as plain data (the API's JSON, `roam ps`,
 * `roam hosts`), and the operations the API offers. The proxy implements `ProxyOperations`; the
 * API (api.ts) and the CLI only ever see these shapes.
 */
import type { HostReport } from '../controller/metrics/index.js';
import type { GuestKind, PublishedPort } from './store.js';
import type { PolicyStatus } from './control-plane.js';

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
  /** 'js': a bundled JavaScript program; 'wasm': a WebAssembly (WASI) module. */
  kind: GuestKind;
  state: GuestStateView;
  hostId: string | null;
  hostName: string | null;
  publish: PublishedPort[];
  since: number;
  exitCode: number | null;
  memoryBytes: number | null;
  cpuMs: number | null;
  streams: number;
  /** When its newest backup image was taken (ms since the epoch), and its size; null if none yet. */
  image: { takenAt: number; bytes: number } | null;
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
  /** 'opening': the guest's host has not yet accepted it (it may be waiting for a move to end). */
  state: 'opening' | 'open' | 'detached';
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
  /** The bundled guest program (JavaScript source, as `roam run` bundles it); or `wasm`. */
  bundle?: string;
  /** A WASI preview1 module in base64 (`roam run prog.wasm`); exactly one of `bundle` and `wasm`. */
  wasm?: string;
  publish: PublishedPort[];
  env: Record<string, string>;
  argv: string[];
  /** Place on this host (name or id) instead of the best one by score. */
  on?: string;
  /** A deadline (ms since the epoch): placed and moved to maximise the chance to finish by then. */
  deadline?: number;
  /** Expected run time on a host of benchmark score 1, in ms (with `deadline`). */
  expectMs?: number;
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
  /** Moves a running guest to another host; resolves when the move is over, whatever its outcome. */
  migrate(name: string, request: MigrateRequest): Promise<MigrationView>;
  /** Moves every guest off a host (it stays joined). */
  drain(host: string): Promise<DrainView>;
  /** The control plane's policy in force, its availability model and what it sees now. */
  policy(): PolicyStatus;
}

export interface DrainView {
  host: string;
  moved: number;
  failed: number;
  migrations: MigrationView[];
}

/** A move of a guest (`roam migrate`, POST /api/guests/:name/migrate), as it stands or ended. */
export interface MigrationView {
  id: string;
  guest: string;
  from: string;
  to: string;
  precopy: boolean;
  state: 'pending' | 'committed' | 'aborted';
  /**
   * null while it runs. `rolled-back`: the source confirmed it runs the guest again; `stranded`:
   * aborted with the source gone; `unconfirmed`: aborted, and the source has not said it resumed.
   */
  outcome: 'moved' | 'rolled-back' | 'stranded' | 'unconfirmed' | null;
  /** The step it failed at. */
  step: string | null;
  error: string | null;
  startedAt: number;
  /** Freeze to resume, measured by the source (an upper bound by one trip); null if unknown. */
  pauseMs: number | null;
  totalMs: number | null;
  bytesSent: number | null;
  precopyRounds: number | null;
  precopyBytes: number | null;
  finalBytes: number | null;
}

export interface MigrateRequest {
  /** Host name or id; the best host by score when left out. */
  to?: string;
  /** Pre-copy memory while the guest runs (default true). */
  precopy?: boolean;
}
