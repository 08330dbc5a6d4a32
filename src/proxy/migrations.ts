/**
 * The proxy's side of live migration: it starts moves (step 1), is the arbiter that records the
 * switch (the commit point, step 8), and turns every outcome into an event with its step, cause
 * and timings. A migration is `pending` until the target asks to commit (then `committed`) or the
 * source asks to abort, a deadline passes, or the target gives up (then `aborted`). Whatever comes
 * later is answered with that decision, never a new one: the guest runs exactly once.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { RoamError } from '../errors.js';
import type {
  ControlMessage,
  MigrateAbortMessage,
  MigrateCommitMessage,
  MigrateDoneMessage,
  MigrateFailedMessage,
  MigrateProgressMessage,
  MigrationStep,
} from '../wire/index.js';
import type { MigrationView } from './view.js';

export interface MigrationHostInfo {
  id: string;
  name: string;
  address: string | null;
  peerPort: number | null;
  connected: boolean;
}

/** What the coordinator needs of the proxy. */
export interface MigrationPorts {
  host(id: string): MigrationHostInfo | undefined;
  /** `now`: handed to the host's socket at once, not at the end of this callback (a frozen guest waits for it). */
  send(hostId: string, message: ControlMessage, now?: boolean): void;
  /** Records the switch: the guest lives on `targetId` now; streams not in `streams` are closed. */
  switchHost(guestId: string, targetId: string, streams: number[]): void;
  /** The move is over, whatever its outcome: connections held for it go to where the guest runs. */
  released(guestId: string): void;
  event(kind: string, message: string, ids: { hostId?: string; guestId?: string }, data?: unknown): void;
}

export interface MigrationRequest {
  guestId: string;
  guestName: string;
  sourceId: string;
  targetId: string;
  precopy: boolean;
  stepTimeoutMs: number;
  /** The whole move, pending, at most this long. */
  deadlineMs: number;
}

interface Migration extends MigrationRequest {
  id: string;
  token: string;
  state: 'pending' | 'committed' | 'aborted';
  t0: number;
  startedAt: number;
  acked: boolean;
  frozen: boolean;
  /** Aborted without the source's word: waiting for it to say it resumed the guest. */
  awaitingSource: boolean;
  step: MigrationStep;
  timers: NodeJS.Timeout[];
  waiters: Array<(view: MigrationView) => void>;
  view: MigrationView;
}

/** How long after the commit the source has to report the move's cost before the API answers without it. */
const DONE_GRACE_MS = 5000;

export class Migrations {
  private readonly byId = new Map<string, Migration>();
  private readonly byGuest = new Map<string, Migration>();

  constructor(private readonly ports: MigrationPorts) {}

  /** The pending move of a guest, if any. */
  pendingFor(guestId: string): { id: string; frozen: boolean } | undefined {
    const m = this.byGuest.get(guestId);
    return m && m.state === 'pending' ? { id: m.id, frozen: m.frozen } : undefined;
  }

  /**
   * A move of the guest that is not over yet, decided or not: new connections to the guest wait
   * for its end (`released`). `frozen`: the guest runs nowhere for now (frozen at the source, or
   * decided and not yet running again, at the target or back at the source).
   */
  inFlight(guestId: string): { frozen: boolean } | undefined {
    const m = this.byGuest.get(guestId);
    return m ? { frozen: m.frozen || m.state !== 'pending' } : undefined;
  }

  /** Starts a move; resolves when it is over, whatever the outcome (see `view.outcome`). */
  start(request: MigrationRequest): Promise<MigrationView> {
    if (this.byGuest.has(request.guestId)) {
      return Promise.reject(new RoamError('ROAM_ERR_CONFLICT', `${request.guestName} is already moving`));
    }
    const source = this.ports.host(request.sourceId);
    const target = this.ports.host(request.targetId);
    if (!source?.connected)
      throw new RoamError('ROAM_ERR_HOST_UNREACHABLE', `the host of ${request.guestName} is not connected`);
    if (!target?.connected || !target.address || !target.peerPort) {
      throw new RoamError(
        'ROAM_ERR_HOST_UNREACHABLE',
        `${target?.name ?? 'the target'} is not connected or has no peer port`,
      );
    }
    const m: Migration = {
      ...request,
      id: randomUUID(),
      token: randomBytes(32).toString('hex'),
      state: 'pending',
      t0: performance.now(),
      startedAt: Date.now(),
      acked: false,
      frozen: false,
      awaitingSource: false,
      step: 'ack',
      timers: [],
      waiters: [],
      view: {
        id: '',
        guest: request.guestName,
        from: source.name,
        to: target.name,
        precopy: request.precopy,
        state: 'pending',
        outcome: null,
        step: null,
        error: null,
        startedAt: Date.now(),
        pauseMs: null,
        totalMs: null,
        bytesSent: null,
        precopyRounds: null,
        precopyBytes: null,
        finalBytes: null,
      },
    };
    m.view.id = m.id;
    this.byId.set(m.id, m);
    this.byGuest.set(m.guestId, m);
    const done = new Promise<MigrationView>((resolve) => m.waiters.push(resolve));
    this.ports.event(
      'migration.started',
      `moving ${m.guestName} from ${source.name} to ${target.name}${m.precopy ? ' (pre-copy)' : ''}`,
      { hostId: m.sourceId, guestId: m.guestId },
      { migrationId: m.id, from: source.name, to: target.name, precopy: m.precopy },
    );
    this.ports.send(m.targetId, {
      type: 'migrateIn',
      migrationId: m.id,
      guestId: m.guestId,
      name: m.guestName,
      token: m.token,
      sourceHostId: m.sourceId,
      stepTimeoutMs: m.stepTimeoutMs,
    });
    this.ports.send(m.sourceId, {
      type: 'migrate',
      migrationId: m.id,
      guestId: m.guestId,
      token: m.token,
      target: { hostId: target.id, name: target.name, address: target.address, peerPort: target.peerPort },
      precopy: m.precopy,
      stepTimeoutMs: m.stepTimeoutMs,
    });
    m.timers.push(
      setTimeout(() => {
        if (!m.acked) this.abort(m, 'ack', `${source.name} did not acknowledge the move within ${m.stepTimeoutMs} ms`);
      }, m.stepTimeoutMs),
      setTimeout(() => this.abort(m, m.step, `the move did not finish within ${m.deadlineMs} ms`), m.deadlineMs),
    );
    return done;
  }

  /** A control message about a move, from host `fromId`. Returns false if it is not about moves. */
  onControl(fromId: string, message: ControlMessage): boolean {
    switch (message.type) {
      case 'migrateAck': {
        const m = this.from(message.migrationId, fromId, 'source');
        if (m) m.acked = true;
        return true;
      }
      case 'migrateProgress':
        this.onProgress(fromId, message);
        return true;
      case 'migrateCommit':
        this.onCommit(fromId, message);
        return true;
      case 'migrateAbort':
        this.onAbort(fromId, message);
        return true;
      case 'migrateFailed':
        this.onTargetFailed(fromId, message);
        return true;
      case 'migrateDone':
        this.onDone(fromId, message);
        return true;
      default:
        return false;
    }
  }

  close(): void {
    for (const m of this.byId.values()) for (const t of m.timers) clearTimeout(t);
    this.byId.clear();
    this.byGuest.clear();
  }

  private from(id: string, hostId: string, role: 'source' | 'target'): Migration | undefined {
    const m = this.byId.get(id);
    if (!m) return undefined;
    return (role === 'source' ? m.sourceId : m.targetId) === hostId ? m : undefined;
  }

  private onProgress(fromId: string, p: MigrateProgressMessage): void {
    const m = this.from(p.migrationId, fromId, 'source');
    if (!m || m.state !== 'pending') return;
    m.acked = true;
    m.step = p.step;
    if (p.step === 'freeze') m.frozen = true;
    const mib = (bytes: number | undefined): string => `${((bytes ?? 0) / 1048576).toFixed(1)} MiB`;
    const what =
      p.step === 'precopy'
        ? `pre-copy round ${(p.round ?? 0) + 1}: ${p.pages ?? 0} pages changed, ${mib(p.bytes)} sent in ${(p.ms ?? 0).toFixed(1)} ms`
        : p.step === 'freeze'
          ? 'frozen'
          : p.step === 'transfer'
            ? `sent the rest: what changed of ${p.pages ?? 0} pages and the state (${mib(p.bytes)}), ${(p.ms ?? 0).toFixed(1)} ms after the freeze`
            : p.step === 'connect'
              ? 'connected to the target'
              : p.step;
    this.ports.event('migration.progress', `${m.guestName}: ${what}`, { guestId: m.guestId }, { ...p });
  }

  private onCommit(fromId: string, c: MigrateCommitMessage): void {
    const m = this.from(c.migrationId, fromId, 'target');
    if (!m) {
      // Unknown or already forgotten: it can never commit now.
      this.ports.send(fromId, {
        type: 'migrateAborted',
        migrationId: c.migrationId,
        reason: 'no such move is pending',
      });
      return;
    }
    if (m.state === 'aborted') {
      this.ports.send(fromId, { type: 'migrateAborted', migrationId: m.id, reason: 'the move was aborted' });
      return;
    }
    const decided = m.state === 'pending';
    if (decided) {
      m.state = 'committed';
      m.view.state = 'committed';
      this.ports.switchHost(m.guestId, m.targetId, c.streams);
    }
    // The guest waits, frozen, for this word: it goes first, the bookkeeping after it.
    this.ports.send(m.targetId, { type: 'migrateCommitted', migrationId: m.id }, true);
    this.ports.send(m.sourceId, { type: 'migrateCommitted', migrationId: m.id }, true);
    if (decided) {
      this.ports.event(
        'migration.committed',
        `${m.guestName} now lives on ${m.view.to} (${c.streams.length} connection(s) carried on)`,
        { hostId: m.targetId, guestId: m.guestId },
        { migrationId: m.id, streams: c.streams.length },
      );
      // If the source never reports the cost (it died, say), answer without it.
      m.timers.push(setTimeout(() => this.finish(m, 'moved'), DONE_GRACE_MS));
    }
  }

  private onAbort(fromId: string, a: MigrateAbortMessage): void {
    const m = this.from(a.migrationId, fromId, 'source');
    if (!m) {
      this.ports.send(fromId, { type: 'migrateAborted', migrationId: a.migrationId, reason: 'no such move' });
      return;
    }
    if (m.state === 'committed') {
      this.ports.send(fromId, { type: 'migrateCommitted', migrationId: m.id });
      return;
    }
    if (m.state === 'aborted') {
      // The source heard the abort (or failed on its own meanwhile): it runs the guest again.
      this.ports.send(fromId, { type: 'migrateAborted', migrationId: m.id, reason: m.view.error ?? 'aborted' });
      if (m.awaitingSource) this.concludeAbort(m, 'rolled-back');
      return;
    }
    this.abort(m, a.step, a.message, true);
  }

  /** A host's link went away: a move waiting for that source's word will not get it. */
  hostGone(hostId: string): void {
    for (const m of this.byId.values()) {
      if (m.awaitingSource && m.sourceId === hostId) this.concludeAbort(m, 'stranded');
    }
  }

  private onTargetFailed(fromId: string, f: MigrateFailedMessage): void {
    const m = this.from(f.migrationId, fromId, 'target');
    if (!m) return;
    if (m.state !== 'pending') {
      // Already decided (the source noticed first): keep the target's account of it too.
      this.ports.event(
        'migration.detail',
        `${m.guestName}: the target reports: ${f.message}`,
        { guestId: m.guestId },
        {
          migrationId: m.id,
          step: f.step,
          code: f.code,
        },
      );
      return;
    }
    this.abort(m, f.step, `the target failed: ${f.message}`);
  }

  private onDone(fromId: string, d: MigrateDoneMessage): void {
    const m = this.from(d.migrationId, fromId, 'source');
    if (!m || m.state !== 'committed') return;
    Object.assign(m.view, {
      pauseMs: d.pauseMs,
      totalMs: d.totalMs,
      bytesSent: d.bytesSent,
      precopyRounds: d.precopyRounds,
      precopyBytes: d.precopyBytes,
      finalBytes: d.finalBytes,
    });
    this.finish(m, 'moved');
  }

  /**
   * Decides that the move will not happen. `confirmed`: the source asked, so it runs the guest
   * again. Otherwise (a deadline, the target gave up) the outcome waits for the source's word, or
   * for its link to go away: an event must not say the guest runs where it may not.
   */
  private abort(m: Migration, step: MigrationStep, cause: string, confirmed = false): void {
    if (m.state !== 'pending') return;
    m.state = 'aborted';
    m.view.state = 'aborted';
    m.view.step = step;
    m.view.error = cause;
    this.ports.send(m.sourceId, { type: 'migrateAborted', migrationId: m.id, reason: cause.slice(0, 16_000) });
    this.ports.send(m.targetId, { type: 'migrateAborted', migrationId: m.id, reason: cause.slice(0, 16_000) });
    if (confirmed) {
      this.concludeAbort(m, 'rolled-back');
      return;
    }
    if (!this.ports.host(m.sourceId)?.connected) {
      this.concludeAbort(m, 'stranded');
      return;
    }
    m.awaitingSource = true;
    m.timers.push(setTimeout(() => this.concludeAbort(m, 'unconfirmed'), 2 * m.stepTimeoutMs));
  }

  private concludeAbort(m: Migration, outcome: 'rolled-back' | 'stranded' | 'unconfirmed'): void {
    if (m.view.outcome !== null) return;
    m.awaitingSource = false;
    const { from, to } = m.view;
    const where =
      outcome === 'rolled-back'
        ? `${m.guestName} runs on ${from}`
        : outcome === 'stranded'
          ? `${from} is unreachable${m.frozen ? ' and had frozen the guest' : ''}: ${m.guestName} runs again only if ${from} comes back with it`
          : `${from} has not confirmed that it resumed ${m.guestName}`;
    this.ports.event(
      'migration.failed',
      `moving ${m.guestName} from ${from} to ${to} failed at ${m.view.step ?? '?'}: ${m.view.error ?? '?'}; ${where}`,
      { hostId: m.sourceId, guestId: m.guestId },
      {
        migrationId: m.id,
        step: m.view.step,
        cause: m.view.error,
        outcome,
        elapsedMs: performance.now() - m.t0,
        frozen: m.frozen,
      },
    );
    this.finish(m, outcome);
  }

  private finish(m: Migration, outcome: NonNullable<MigrationView['outcome']>): void {
    if (m.view.outcome !== null) return;
    m.view.outcome = outcome;
    m.view.totalMs ??= performance.now() - m.t0;
    for (const t of m.timers) clearTimeout(t);
    this.byGuest.delete(m.guestId);
    // The guest runs again (or never will): the connections held for the move go to it now, not at
    // the decision, which comes before the host that runs it has taken the guest back in.
    this.ports.released(m.guestId);
    // Late messages about it are still answered with its decision for a while.
    setTimeout(() => this.byId.delete(m.id), 10 * 60_000).unref();
    if (outcome === 'moved') {
      const v = m.view;
      const cost =
        v.pauseMs !== null
          ? `pause ${v.pauseMs.toFixed(1)} ms, total ${(v.totalMs ?? 0).toFixed(0)} ms, ${((v.bytesSent ?? 0) / 1e6).toFixed(2)} MB sent${v.precopyRounds ? ` (${v.precopyRounds} pre-copy round(s))` : ''}`
          : 'the source did not report the cost';
      this.ports.event(
        'migration.completed',
        `moved ${m.guestName} from ${v.from} to ${v.to}: ${cost}`,
        { hostId: m.targetId, guestId: m.guestId },
        { ...v },
      );
    }
    for (const w of m.waiters.splice(0)) w({ ...m.view });
  }
}
