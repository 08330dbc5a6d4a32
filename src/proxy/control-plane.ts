/**
 * The control plane (paper section IV-C) inside the proxy: every report interval it takes the
 * roaming table, runs one decision round of the policy (src/policy, pure functions), starts the
 * moves it decides, hedges each with a backup host, and writes every decision, and every trigger
 * it declined, to the event log with its reasons.
 */
import { fitAvailability, type AvailabilityModel, type Session } from '../policy/availability.js';
import type { Policy } from '../policy/config.js';
import { UtilityMonitor, decide, placeGuest, rankCandidates, type Round } from '../policy/decide.js';
import type { GuestSnapshot, HostSnapshot } from '../policy/model.js';
import { utility } from '../policy/utility.js';
import type { MigrationView } from './view.js';

export interface ControlPlanePorts {
  hosts(): HostSnapshot[];
  guests(): Array<Omit<GuestSnapshot, 'cpuRate'>>;
  sessions(): Session[];
  migrate(guestId: string, to: string, precopy: boolean): Promise<MigrationView>;
  event(kind: string, message: string, ids: { hostId?: string; guestId?: string }, data?: unknown): void;
}

export interface PolicyStatus {
  policy: Policy;
  model: { kind: AvailabilityModel['kind']; accuracy: number | null; heldOut: number; sessions: number };
  hosts: Array<{ name: string; utility: number | null; lowForSeconds: number | null; pStay: number }>;
  moving: string[];
}

/** How often the availability model is fitted again from the database. */
const REFIT_MS = 60_000;
/** A declined trigger is said again at most this often when nothing about it changed. */
const DECLINE_REPEAT_MS = 60_000;

export class ControlPlane {
  private lowSince = new Map<string, number>();
  private readonly monitor = new UtilityMonitor();
  private readonly lastMoved = new Map<string, number>();
  private readonly moving = new Set<string>();
  private readonly backups = new Map<string, string>();
  private readonly cpu = new Map<string, { t: number; cpuMs: number; rate: number }>();
  private readonly declinedSaid = new Map<string, { reason: string; t: number }>();
  private model: AvailabilityModel | undefined;
  private modelAt = 0;
  private sessionCount = 0;

  constructor(
    readonly policy: Policy,
    private readonly ports: ControlPlanePorts,
  ) {}

  /** One round: monitor, decide, act. Called every report interval. */
  tick(now = Date.now()): void {
    const round = this.round(now);
    for (const d of decide(round, this.policy)) {
      if (d.kind === 'declined') {
        const key = `${d.hostId}/${d.guestId ?? ''}`;
        const reason = String(d.data['reason']);
        const said = this.declinedSaid.get(key);
        if (said && said.reason === reason && now - said.t < DECLINE_REPEAT_MS) continue;
        this.declinedSaid.set(key, { reason, t: now });
        this.ports.event(
          'decision.declined',
          d.message,
          { hostId: d.hostId, ...(d.guestId ? { guestId: d.guestId } : {}) },
          d.data,
        );
        continue;
      }
      this.ports.event('decision.move', d.message, { guestId: d.guestId }, d.data);
      this.start(d.guestId, d.guestName, d.to, d.backup);
    }
  }

  /** Where to put a new guest (by the same model; deadline guests by their chance to finish). */
  place(guest: Omit<GuestSnapshot, 'cpuRate' | 'hostId'>): string | undefined {
    const round = this.round(Date.now());
    return placeGuest({ ...guest, hostId: '', cpuRate: 0 }, round, this.policy)?.host.name;
  }

  /**
   * Where a guest should go if it moved now (`roam migrate` without --to, a drain): the best other
   * host by the same ranking the policy's own moves use (speed, room, P(stay), deadline), or
   * undefined if the ranking rejects them all (the caller then falls back to the plain score).
   */
  moveTarget(guestId: string): string | undefined {
    const round = this.round(Date.now());
    const guest = round.guests.find((g) => g.id === guestId);
    if (!guest) return undefined;
    return rankCandidates(guest, round, this.policy, guest.hostId).find((c) => !c.rejected)?.host.name;
  }

  /** A host joined or ended a session: the availability model is fitted again on next use. */
  historyChanged(): void {
    this.modelAt = 0;
    this.model = undefined;
  }

  /** The backup named when the guest last moved, if any (a drain of its new host sends it there). */
  backupFor(guestId: string): string | undefined {
    return this.backups.get(guestId);
  }

  status(now = Date.now()): PolicyStatus {
    const round = this.round(now, false);
    const model = this.availability(now);
    return {
      policy: this.policy,
      model: { kind: model.kind, accuracy: model.accuracy, heldOut: model.heldOut, sessions: this.sessionCount },
      hosts: round.hosts.map((h) => ({
        name: h.name,
        utility: h.metrics ? utility(h.metrics, this.policy.weights) : null,
        lowForSeconds: this.lowSince.has(h.id) ? (now - (this.lowSince.get(h.id) ?? now)) / 1000 : null,
        pStay: round.pStay(h.id, h.joinedAt === null ? 0 : now - h.joinedAt, this.policy.horizonMinutes * 60_000),
      })),
      moving: [...this.moving],
    };
  }

  private round(now: number, monitor = true): Round {
    const hosts = this.ports.hosts();
    if (monitor) this.lowSince = this.monitor.observe(hosts, this.policy, now);
    const guests = this.ports
      .guests()
      .map((g) => ({ ...g, cpuRate: monitor ? this.cpuRate(g.id, g.cpuMs, now) : (this.cpu.get(g.id)?.rate ?? 0) }));
    const model = this.availability(now);
    return {
      now,
      hosts,
      guests,
      lowSince: this.lowSince,
      meanUtility: new Map(hosts.map((h) => [h.id, this.monitor.mean(h.id) ?? 1])),
      lastMoved: this.lastMoved,
      moving: this.moving,
      pStay: (id, age, horizon) => model.pStay(id, age, horizon, now),
    };
  }

  private cpuRate(id: string, cpuMs: number, now: number): number {
    const last = this.cpu.get(id);
    const rate = last && now > last.t ? Math.max(0, (cpuMs - last.cpuMs) / ((now - last.t) / 1000)) : (last?.rate ?? 0);
    this.cpu.set(id, { t: now, cpuMs, rate });
    return rate;
  }

  private availability(now: number): AvailabilityModel {
    if (!this.model || now - this.modelAt > REFIT_MS) {
      const sessions = this.ports.sessions();
      this.sessionCount = sessions.length;
      this.model = fitAvailability(
        sessions,
        now,
        this.policy.horizonMinutes * 60_000,
        this.policy.survivalPriorSessions,
      );
      this.modelAt = now;
    }
    return this.model;
  }

  /** Starts a move; if it fails, the backup takes the guest (the hedge). */
  private start(guestId: string, guestName: string, to: string, backup: string | null): void {
    this.moving.add(guestId);
    void this.ports
      .migrate(guestId, to, this.policy.precopy)
      .then(async (view) => {
        if (view.outcome === 'moved') {
          this.moved(guestId, backup);
          return;
        }
        if (!backup || view.outcome !== 'rolled-back') return;
        this.ports.event(
          'decision.backup',
          `the move of ${guestName} to ${to} failed at ${view.step ?? '?'} (${view.error ?? '?'}); moving it to the backup ${backup}`,
          { guestId },
          { failedTo: to, backup, step: view.step },
        );
        const second = await this.ports.migrate(guestId, backup, this.policy.precopy);
        if (second.outcome === 'moved') this.moved(guestId, null);
      })
      .catch((err: unknown) => {
        this.ports.event('decision.failed', `could not move ${guestName} to ${to}: ${(err as Error).message}`, {
          guestId,
        });
      })
      .finally(() => this.moving.delete(guestId));
  }

  private moved(guestId: string, backup: string | null): void {
    this.lastMoved.set(guestId, Date.now());
    if (backup) this.backups.set(guestId, backup);
    else this.backups.delete(guestId);
  }
}
