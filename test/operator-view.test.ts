/**
 * The operator's view without processes: log lines (pretty and JSON, secrets censored), the event
 * fields the proxy logs, the Prometheus metrics from a roaming table and its events, and the
 * dashboard's reading of migration events into timeline rows.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger, parseLogFormat, parseLogLevel, prettyLine } from '../src/common/log.js';
import { applyMigrationEvent, type MigrationRow } from '../src/dashboard/app/timeline.js';
import { isRoamError } from '../src/errors.js';
import { eventFields } from '../src/proxy/event-log.js';
import { createProxyMetrics, type MetricsSource } from '../src/proxy/metrics.js';
import type { EventView, GuestView, HostView, StreamView } from '../src/proxy/view.js';

function capture(): { stream: Writable; lines: string[] } {
  const lines: string[] = [];
  let partial = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      const parts = (partial + chunk.toString()).split('\n');
      partial = parts.pop() ?? '';
      lines.push(...parts.filter(Boolean));
      done();
    },
  });
  return { stream, lines };
}

const flush = () => new Promise((r) => setImmediate(r));

test('logs: JSON records carry the process and ids; secrets are censored; levels filter', async () => {
  const { stream, lines } = capture();
  const log = createLogger('proxy', { format: 'json', level: 'info', destination: stream });
  log.child({ host: 'h1' }).info({ guest: 'g1', token: 'sekrit', adminToken: 'sekrit2', stream: 7 }, 'hello');
  log.debug('not shown');
  log.info({ req: { headers: { authorization: 'Bearer sekrit3' } } }, 'a request');
  await flush();
  assert.equal(lines.length, 2);
  const first = JSON.parse(lines[0] ?? '{}') as Record<string, unknown>;
  assert.equal(first['proc'], 'proxy');
  assert.equal(first['host'], 'h1');
  assert.equal(first['guest'], 'g1');
  assert.equal(first['stream'], 7);
  assert.equal(first['msg'], 'hello');
  assert.ok(!lines.join('\n').includes('sekrit'), lines.join('\n'));
});

test('logs: pretty lines put the ids first, colour only when asked', async () => {
  const line = prettyLine(
    JSON.stringify({
      level: 40,
      time: 0,
      proc: 'host',
      pid: 1,
      host: 'host-a',
      guest: 'web',
      msg: 'moved',
      pauseMs: 3,
    }),
  );
  assert.match(line, /^\d\d:\d\d:\d\d\.\d{3} WARN {2}proc=host host=host-a guest=web moved pauseMs=3\n$/);
  assert.ok(!line.includes('\u001b'));
  assert.ok(prettyLine(JSON.stringify({ level: 30, msg: 'x' }), true).includes('\u001b['));
  assert.equal(prettyLine('not json'), 'not json\n');
  const { stream, lines } = capture();
  createLogger('demo', { format: 'pretty', destination: stream }).info({ guest: 'g' }, 'a b');
  await flush();
  assert.match(lines[0] ?? '', /INFO {2}proc=demo guest=g a b/);
});

test('logs: a bad --log-level or --log-format is a usage error', () => {
  assert.equal(parseLogLevel('DEBUG'), 'debug');
  assert.equal(parseLogFormat(undefined, true), 'pretty');
  assert.equal(parseLogFormat(undefined, false), 'json');
  for (const bad of [() => parseLogLevel('loud'), () => parseLogFormat('xml', false)]) {
    assert.throws(bad, (err: unknown) => isRoamError(err) && err.code === 'ROAM_ERR_USAGE');
  }
});

function event(
  id: number,
  kind: string,
  message: string,
  data: unknown = null,
  guestId: string | null = 'g1',
): EventView {
  return { id, t: 1_700_000_000_000 + id, kind, hostId: 'h1', guestId, message, data };
}

test('the proxy logs an event with the ids it is about', () => {
  assert.deepEqual(
    eventFields(event(3, 'migration.failed', 'x', { migrationId: 'm1', step: 'transfer', streamId: 9 })),
    { event: 'migration.failed', eventId: 3, host: 'h1', guest: 'g1', migration: 'm1', stream: 9, step: 'transfer' },
  );
});

class Table implements MetricsSource {
  hostList: HostView[] = [
    {
      id: 'h1',
      name: 'host-a',
      state: 'up',
      address: '10.0.0.2',
      peerPort: 1,
      joinedAt: 0,
      lastSeen: 0,
      rttMs: 2,
      benchmarkScore: 100,
      metrics: {
        intervalMs: 1000,
        cpu: { model: 'x', mhz: 1, cores: 2, usage: 0.5, capacity: 1 },
        memory: { totalBytes: 1000, freeBytes: 400, limitBytes: null },
        network: { interfaces: [], linkMbps: null, rxBytesPerSec: 10, txBytesPerSec: 20, utilisation: null },
        cgroup: { version: 1, cpuQuotaCores: 1, memoryLimitBytes: null },
      },
      guests: 1,
    },
    {
      ...({} as HostView),
      id: 'h2',
      name: 'host-b',
      state: 'evicted',
      rttMs: null,
      benchmarkScore: null,
      metrics: null,
      guests: 0,
    },
  ];
  guestList: GuestView[] = [
    {
      id: 'g1',
      name: 'web',
      kind: 'js',
      state: 'running',
      hostId: 'h1',
      hostName: 'host-a',
      publish: [],
      since: 0,
      exitCode: null,
      memoryBytes: 4096,
      cpuMs: 1,
      streams: 1,
      image: { takenAt: Date.now() - 30_000, bytes: 5000 },
    },
  ];
  streamList: StreamView[] = [
    {
      id: 1,
      guestId: 'g1',
      guestName: 'web',
      protocol: 'tcp',
      direction: 'inbound',
      remote: '1.2.3.4:5',
      guestPort: 80,
      bytesIn: 100,
      bytesOut: 200,
      since: 0,
      state: 'open',
    },
  ];
  listeners = new Set<(e: EventView) => void>();
  hosts = () => this.hostList;
  guests = () => this.guestList;
  streams = () => this.streamList;
  subscribe(listener: (e: EventView) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  emit(e: EventView): void {
    for (const l of this.listeners) l(e);
  }
}

test('metrics: the roaming table and its events in the Prometheus format', async () => {
  const table = new Table();
  const metrics = createProxyMetrics(table);
  table.emit(event(1, 'migration.completed', 'moved', { id: 'm1', pauseMs: 20, totalMs: 300 }));
  table.emit(event(2, 'migration.failed', 'failed', { migrationId: 'm2', step: 'transfer', outcome: 'rolled-back' }));
  table.emit(event(3, 'decision.move', 'moving web: host-a is loaded', { reasons: [] }));
  table.emit(event(4, 'decision.declined', 'no better host'));
  let text = await metrics.render();
  const has = (line: string) => assert.ok(text.split('\n').includes(line), `${line} missing from:\n${text}`);
  has('roam_hosts{state="up"} 1');
  has('roam_hosts{state="evicted"} 1');
  has('roam_guests{state="running"} 1');
  has('roam_streams{protocol="tcp",direction="inbound",state="open"} 1');
  has('roam_stream_bytes_total{direction="in"} 100');
  has('roam_stream_bytes_total{direction="out"} 200');
  has('roam_host_up{host="host-a"} 1');
  has('roam_host_up{host="host-b"} 0');
  has('roam_host_cpu_usage_ratio{host="host-a"} 0.5');
  has('roam_host_rtt_seconds{host="host-a"} 0.002');
  has('roam_guest_memory_bytes{guest="web",host="host-a"} 4096');
  assert.match(text, /\nroam_guest_image_age_seconds\{guest="web",host="host-a"\} 3\d\.\d+\n/);
  has('roam_migrations_total{outcome="moved"} 1');
  has('roam_migrations_total{outcome="rolled-back"} 1');
  has('roam_migrations_failed_total{step="transfer"} 1');
  has('roam_migration_pause_seconds_bucket{le="0.025"} 1');
  has('roam_migration_pause_seconds_count 1');
  has('roam_migration_duration_seconds_sum 0.3');
  has('roam_decisions_total{kind="move"} 1');
  has('roam_decisions_total{kind="declined"} 1');
  assert.ok(!text.includes('host-b"} NaN'));
  // A stream that closed still counts in the bytes carried.
  table.streamList = [];
  text = await metrics.render();
  has('roam_stream_bytes_total{direction="in"} 100');
  metrics.close();
  assert.equal(table.listeners.size, 0);
});

test('the dashboard timeline: a move from start to completion, and a failure with its step', () => {
  const rows = new Map<string, MigrationRow>();
  applyMigrationEvent(
    rows,
    event(1, 'migration.started', 'moving web from host-a to host-b (pre-copy)', {
      migrationId: 'm1',
      from: 'host-a',
      to: 'host-b',
    }),
  );
  applyMigrationEvent(rows, event(2, 'migration.progress', 'web: frozen', { migrationId: 'm1', step: 'freeze' }));
  assert.equal(rows.get('m1')?.state, 'running');
  assert.equal(rows.get('m1')?.step, 'freeze');
  applyMigrationEvent(
    rows,
    event(3, 'migration.completed', 'moved', {
      id: 'm1',
      guest: 'web',
      from: 'host-a',
      to: 'host-b',
      pauseMs: 12,
      totalMs: 340,
    }),
  );
  assert.deepEqual(
    (({ guest, from, to, state, pauseMs, totalMs }) => ({ guest, from, to, state, pauseMs, totalMs }))(
      rows.get('m1') as MigrationRow,
    ),
    { guest: 'web', from: 'host-a', to: 'host-b', state: 'moved', pauseMs: 12, totalMs: 340 },
  );
  applyMigrationEvent(
    rows,
    event(4, 'migration.started', 'moving web from host-b to host-c', {
      migrationId: 'm2',
      from: 'host-b',
      to: 'host-c',
    }),
  );
  applyMigrationEvent(
    rows,
    event(5, 'migration.failed', 'failed', {
      migrationId: 'm2',
      step: 'transfer',
      cause: 'the target failed',
      outcome: 'rolled-back',
    }),
  );
  assert.equal(rows.get('m2')?.state, 'failed');
  assert.equal(rows.get('m2')?.step, 'transfer');
  assert.equal(rows.get('m2')?.error, 'the target failed');
  assert.equal(applyMigrationEvent(rows, event(6, 'host.joined', 'x')), false);
});
