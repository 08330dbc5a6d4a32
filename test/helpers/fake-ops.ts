/**
 * An in-memory `ProxyOperations` for testing the API and the operator commands without a proxy:
 * two hosts, guests placed on the first (or on `on`), a log per guest, and an event log with live
 * subscribers. Special names make deploy fail: `nohost` (NO_HOST), `crash` (a plain Error).
 */
import { RoamError } from '../../src/errors.js';
import { DEFAULT_POLICY } from '../../src/policy/config.js';
import type { PolicyStatus } from '../../src/proxy/control-plane.js';
import type {
  DeployRequest,
  DrainView,
  EventView,
  GuestView,
  HostView,
  LogRecordView,
  MigrateRequest,
  MigrationView,
  ProxyOperations,
  StreamView,
} from '../../src/proxy/view.js';

const NOW = Date.now();

function host(id: string, name: string, state: HostView['state']): HostView {
  return {
    id,
    name,
    state,
    address: state === 'up' ? '10.0.0.2' : null,
    peerPort: state === 'up' ? 7401 : null,
    joinedAt: NOW - 600_000,
    lastSeen: NOW - 2_000,
    rttMs: 0.42,
    benchmarkScore: 412.3,
    metrics:
      state === 'up'
        ? {
            intervalMs: 1000,
            cpu: { model: 'Test CPU', mhz: 2400, cores: 2, usage: 0.12, capacity: 2 },
            memory: { totalBytes: 4 * 1024 ** 3, freeBytes: 1.5 * 1024 ** 3, limitBytes: null },
            network: {
              interfaces: ['eth0'],
              linkMbps: 1000,
              rxBytesPerSec: 2048,
              txBytesPerSec: 1024,
              utilisation: 0.03,
            },
            cgroup: { version: null, cpuQuotaCores: null, memoryLimitBytes: null },
          }
        : null,
    guests: 0,
  };
}

export class FakeOps implements ProxyOperations {
  readonly hostList: HostView[] = [
    host('3f2a1b9c-aaaa-4bbb-8ccc-000000000001', 'host-a', 'up'),
    host('77e0c2d1-aaaa-4bbb-8ccc-000000000002', 'host-b', 'evicted'),
  ];
  readonly guestMap = new Map<string, GuestView>();
  readonly logMap = new Map<string, LogRecordView[]>();
  readonly eventList: EventView[] = [];
  readonly listeners = new Set<(event: EventView) => void>();
  readonly deployed: DeployRequest[] = [];
  readonly streamList: StreamView[] = [];

  constructor() {
    this.emit('host.joined', 'host-a joined', this.hostList[0]?.id ?? null);
    this.emit('host.joined', 'host-b joined', this.hostList[1]?.id ?? null);
    this.emit('host.evicted', 'host-b fell silent and was evicted', this.hostList[1]?.id ?? null);
  }

  emit(kind: string, message: string, hostId: string | null = null, guestId: string | null = null): EventView {
    const event: EventView = {
      id: this.eventList.length + 1,
      t: Date.now(),
      kind,
      hostId,
      guestId,
      message,
      data: null,
    };
    this.eventList.push(event);
    for (const listener of this.listeners) listener(event);
    return event;
  }

  hosts(): HostView[] {
    return this.hostList;
  }

  guests(): GuestView[] {
    return [...this.guestMap.values()];
  }

  streams(): StreamView[] {
    return this.streamList;
  }

  events(options: { after?: number; limit?: number }): EventView[] {
    return this.eventList.filter((e) => e.id > (options.after ?? 0)).slice(-(options.limit ?? 200));
  }

  subscribe(listener: (event: EventView) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  deploy(request: DeployRequest): Promise<GuestView> {
    this.deployed.push(request);
    if (request.name === 'crash') return Promise.reject(new Error('database exploded at /secret/path'));
    if (request.name === 'nohost')
      return Promise.reject(new RoamError('ROAM_ERR_NO_HOST', 'no host is up to take nohost'));
    if (this.guestMap.get(request.name)?.state === 'running') {
      return Promise.reject(new RoamError('ROAM_ERR_CONFLICT', `a guest named ${request.name} is already running`));
    }
    const target = request.on
      ? this.hostList.find((h) => h.name === request.on || h.id === request.on)
      : this.hostList[0];
    if (!target) return Promise.reject(new RoamError('ROAM_ERR_NOT_FOUND', `no host named ${request.on ?? '?'}`));
    const guest: GuestView = {
      id: `9d1e${String(this.guestMap.size).padStart(4, '0')}-0000-4000-8000-000000000000`,
      name: request.name,
      kind: request.wasm !== undefined ? 'wasm' : 'js',
      state: 'running',
      hostId: target.id,
      hostName: target.name,
      publish: request.publish,
      since: Date.now() - 180_000,
      exitCode: null,
      memoryBytes: 21 * 1024 * 1024,
      cpuMs: 1234,
      streams: 0,
      image: null,
    };
    this.guestMap.set(guest.name, guest);
    this.logMap.set(guest.name, [
      { t: 1000, stream: 'out', text: `${guest.name} says hello\n` },
      { t: 1000, stream: 'err', text: `${guest.name} warns\n` },
      { t: 1001, stream: 'out', text: `${guest.name} is ready\n` },
    ]);
    this.emit('guest.started', `${guest.name} started on ${target.name}`, target.id, guest.id);
    return Promise.resolve(guest);
  }

  stop(name: string): Promise<GuestView> {
    const guest = this.guestMap.get(name);
    if (!guest) return Promise.reject(new RoamError('ROAM_ERR_NOT_FOUND', `no guest named ${name}`));
    guest.state = 'stopped';
    this.emit('guest.stopped', `${name} stopped`, guest.hostId, guest.id);
    return Promise.resolve(guest);
  }

  logs(name: string, options: { tail?: number }): Promise<LogRecordView[]> {
    const records = this.logMap.get(name);
    if (!records) return Promise.reject(new RoamError('ROAM_ERR_NOT_FOUND', `no guest named ${name}`));
    return Promise.resolve(options.tail === undefined ? records : records.slice(-options.tail || records.length));
  }

  /** Moves a guest to `to` (any name but `nowhere`); emits the events a real move does. */
  migrate(name: string, request: MigrateRequest): Promise<MigrationView> {
    const guest = this.guestMap.get(name);
    if (!guest) return Promise.reject(new RoamError('ROAM_ERR_NOT_FOUND', `no guest named ${name}`));
    if (request.to === 'nowhere')
      return Promise.reject(new RoamError('ROAM_ERR_NO_HOST', 'no connected host named nowhere'));
    const to = request.to ?? 'host-c';
    const view: MigrationView = {
      id: 'a1b2c3d4-0000-4000-8000-000000000000',
      guest: name,
      from: guest.hostName ?? '?',
      to,
      precopy: request.precopy ?? true,
      state: 'committed',
      outcome: 'moved',
      step: null,
      error: null,
      startedAt: Date.now(),
      pauseMs: 12.5,
      totalMs: 240,
      bytesSent: 9_100_000,
      precopyRounds: 2,
      precopyBytes: 8_000_000,
      finalBytes: 1_100_000,
    };
    this.emit('migration.started', `moving ${name} from ${view.from} to ${to}`, guest.hostId, guest.id);
    this.emit(
      'migration.progress',
      `${name}: pre-copy round 1: 120 pages changed, 7.5 MiB sent in 12.0 ms`,
      null,
      guest.id,
    );
    guest.hostName = to;
    this.emit('migration.completed', `moved ${name} from ${view.from} to ${to}: pause 12.5 ms`, null, guest.id);
    return Promise.resolve(view);
  }

  drain(host: string): Promise<DrainView> {
    if (!this.hostList.some((h) => h.name === host)) {
      return Promise.reject(new RoamError('ROAM_ERR_NOT_FOUND', `no host named ${host}`));
    }
    return Promise.resolve({ host, moved: 0, failed: 0, migrations: [] });
  }

  policy(): PolicyStatus {
    return {
      policy: DEFAULT_POLICY,
      model: { kind: 'kaplan-meier', accuracy: 0.93, heldOut: 40, sessions: 130 },
      hosts: [{ name: 'host-a', utility: 0.81, lowForSeconds: null, pStay: 0.97 }],
      moving: [],
    };
  }

  /** Appends a console line to a guest's log (for `logs --follow`). */
  log(name: string, text: string, t = Date.now()): void {
    this.logMap.get(name)?.push({ t, stream: 'out', text });
  }
}
