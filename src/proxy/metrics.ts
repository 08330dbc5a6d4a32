/**
 * `GET /metrics`: the proxy's state in the Prometheus text format (prom-client). Gauges are read
 * from the roaming table at each scrape; counters and histograms count events from the proxy's
 * start (migrations, their pause and total time, failures by step, control-plane decisions by kind).
 *
 * Names (all prefixed `roam_`):
 *   hosts{state}  guests{state}  streams{protocol,direction,state}
 *   stream_bytes_total{direction="in"|"out"}   bytes carried by the proxy's streams (in: towards guests)
 *   migrations_total{outcome}   migrations_failed_total{step}   migration_pause_seconds   migration_duration_seconds
 *   decisions_total{kind}       events_total{kind}
 *   host_up{host}  host_cpu_usage_ratio{host}  host_cpu_capacity_cores{host}  host_memory_total_bytes{host}
 *   host_memory_free_bytes{host}  host_network_{rx,tx}_bytes_per_second{host}  host_rtt_seconds{host}
 *   host_benchmark_score{host}  host_guests{host}  guest_memory_bytes{guest,host}
 *   guest_image_age_seconds{guest,host}   age of each running guest's newest backup image
 *   host_utility{host}  host_stay_probability{host}   the control plane's view (GET /api/policy)
 *   proxy_*   the proxy process itself (CPU, memory, event loop), prom-client's default metrics
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EventView, ProxyOperations } from './view.js';

export type MetricsSource = Pick<ProxyOperations, 'hosts' | 'guests' | 'streams' | 'subscribe'> &
  Partial<Pick<ProxyOperations, 'policy'>>;

export interface ProxyMetrics {
  registry: Registry;
  /** The text a scrape gets. */
  render(): Promise<string>;
  contentType: string;
  close(): void;
}

const HOST_STATES = ['up', 'disconnected', 'left', 'evicted'] as const;
const GUEST_STATES = ['pending', 'starting', 'running', 'stopped', 'exited', 'failed', 'lost'] as const;

function num(data: unknown, key: string): number | undefined {
  const v = data && typeof data === 'object' ? (data as Record<string, unknown>)[key] : undefined;
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function str(data: unknown, key: string): string | undefined {
  const v = data && typeof data === 'object' ? (data as Record<string, unknown>)[key] : undefined;
  return typeof v === 'string' ? v : undefined;
}

export function createProxyMetrics(source: MetricsSource): ProxyMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'roam_proxy_' });
  const gauge = (name: string, help: string, labelNames: string[], collect?: (g: Gauge) => void) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      ...(collect
        ? {
            collect(this: Gauge) {
              this.reset();
              collect(this);
            },
          }
        : {}),
    });

  gauge('roam_hosts', 'Hosts in the roaming table, by state', ['state'], (g) => {
    const hosts = source.hosts();
    for (const state of HOST_STATES) g.set({ state }, hosts.filter((h) => h.state === state).length);
  });
  gauge('roam_guests', 'Guests, by state', ['state'], (g) => {
    const guests = source.guests();
    for (const state of GUEST_STATES) g.set({ state }, guests.filter((x) => x.state === state).length);
  });
  gauge('roam_streams', 'Open streams (remote connections and UDP flows)', ['protocol', 'direction', 'state'], (g) => {
    for (const s of source.streams()) g.inc({ protocol: s.protocol, direction: s.direction, state: s.state });
  });

  // Bytes: what the open streams carried so far, plus what the closed ones carried at their last scrape.
  const seen = new Map<number, { bytesIn: number; bytesOut: number }>();
  const closed = { bytesIn: 0, bytesOut: 0 };
  new Counter({
    name: 'roam_stream_bytes_total',
    help: 'Bytes carried by the proxy on guest connections (in: from remote peers towards guests)',
    labelNames: ['direction'],
    registers: [registry],
    collect(this: Counter) {
      const now = new Map(source.streams().map((s) => [s.id, s]));
      for (const [id, last] of seen) {
        if (now.has(id)) continue;
        closed.bytesIn += last.bytesIn;
        closed.bytesOut += last.bytesOut;
        seen.delete(id);
      }
      const total = { ...closed };
      for (const [id, s] of now) {
        seen.set(id, { bytesIn: s.bytesIn, bytesOut: s.bytesOut });
        total.bytesIn += s.bytesIn;
        total.bytesOut += s.bytesOut;
      }
      this.reset();
      this.inc({ direction: 'in' }, total.bytesIn);
      this.inc({ direction: 'out' }, total.bytesOut);
    },
  });

  const perHost = (
    name: string,
    help: string,
    value: (h: ReturnType<MetricsSource['hosts']>[number]) => number | null,
  ) =>
    gauge(name, help, ['host'], (g) => {
      for (const h of source.hosts()) {
        const v = value(h);
        if (v !== null && Number.isFinite(v)) g.set({ host: h.name }, v);
      }
    });
  perHost('roam_host_up', 'Whether the host is joined and connected (1) or not (0)', (h) => (h.state === 'up' ? 1 : 0));
  perHost(
    'roam_host_cpu_usage_ratio',
    'Busy share of the host CPU capacity, 0..1',
    (h) => h.metrics?.cpu.usage ?? null,
  );
  perHost('roam_host_cpu_capacity_cores', 'Cores the host may use', (h) => h.metrics?.cpu.capacity ?? null);
  perHost('roam_host_memory_total_bytes', 'Memory of the host', (h) => h.metrics?.memory.totalBytes ?? null);
  perHost('roam_host_memory_free_bytes', 'Memory available to new work', (h) => h.metrics?.memory.freeBytes ?? null);
  perHost('roam_host_network_rx_bytes_per_second', 'Received', (h) => h.metrics?.network.rxBytesPerSec ?? null);
  perHost('roam_host_network_tx_bytes_per_second', 'Sent', (h) => h.metrics?.network.txBytesPerSec ?? null);
  perHost('roam_host_rtt_seconds', 'Round trip from the proxy', (h) => (h.rttMs === null ? null : h.rttMs / 1000));
  perHost('roam_host_benchmark_score', 'Benchmark score measured at join', (h) => h.benchmarkScore);
  perHost('roam_host_guests', 'Guests placed on the host', (h) => h.guests);
  const policy = source.policy?.bind(source);
  if (policy) {
    gauge('roam_host_utility', "The control plane's utility of the host, 0..1", ['host'], (g) => {
      for (const h of policy().hosts) if (h.utility !== null) g.set({ host: h.name }, h.utility);
    });
    gauge('roam_host_stay_probability', 'The chance the host stays for the policy horizon', ['host'], (g) => {
      for (const h of policy().hosts) if (Number.isFinite(h.pStay)) g.set({ host: h.name }, h.pStay);
    });
  }
  gauge('roam_guest_memory_bytes', 'Memory of each running guest', ['guest', 'host'], (g) => {
    for (const x of source.guests()) {
      if (x.memoryBytes !== null) g.set({ guest: x.name, host: x.hostName ?? '' }, x.memoryBytes);
    }
  });
  gauge(
    'roam_guest_image_age_seconds',
    'Age of the newest backup image of each running guest (the work its host would take with it)',
    ['guest', 'host'],
    (g) => {
      const now = Date.now();
      for (const x of source.guests()) {
        if (x.state === 'running' && x.image)
          g.set({ guest: x.name, host: x.hostName ?? '' }, (now - x.image.takenAt) / 1000);
      }
    },
  );

  const migrations = new Counter({
    name: 'roam_migrations_total',
    help: 'Migrations that ended, by outcome (moved, rolled-back, stranded, unconfirmed)',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const failed = new Counter({
    name: 'roam_migrations_failed_total',
    help: 'Migrations that failed, by the step they failed at',
    labelNames: ['step'],
    registers: [registry],
  });
  const pause = new Histogram({
    name: 'roam_migration_pause_seconds',
    help: 'Pause of a guest during a move (freeze to resume)',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'roam_migration_duration_seconds',
    help: 'Whole time of a successful move (request to completion)',
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  const decisions = new Counter({
    name: 'roam_decisions_total',
    help: 'Decisions of the control plane, by kind (the event kind after "decision.")',
    labelNames: ['kind'],
    registers: [registry],
  });
  const events = new Counter({
    name: 'roam_events_total',
    help: 'Events in the proxy event log, by kind',
    labelNames: ['kind'],
    registers: [registry],
  });

  const onEvent = (e: EventView): void => {
    events.inc({ kind: e.kind });
    if (e.kind === 'migration.completed') {
      migrations.inc({ outcome: 'moved' });
      const p = num(e.data, 'pauseMs');
      const t = num(e.data, 'totalMs');
      if (p !== undefined) pause.observe(p / 1000);
      if (t !== undefined) duration.observe(t / 1000);
    } else if (e.kind === 'migration.failed') {
      migrations.inc({ outcome: str(e.data, 'outcome') ?? 'failed' });
      failed.inc({ step: str(e.data, 'step') ?? 'unknown' });
    } else if (e.kind.startsWith('decision.')) {
      decisions.inc({ kind: e.kind.slice('decision.'.length) });
    }
  };
  const unsubscribe = source.subscribe(onEvent);

  return {
    registry,
    contentType: registry.contentType,
    render: () => registry.metrics(),
    close: () => {
      unsubscribe();
      registry.clear();
    },
  };
}
