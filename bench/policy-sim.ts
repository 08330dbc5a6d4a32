/**
 * A trace-driven simulator of the control plane (no sockets, simulated time): hosts come and go as
 * the trace says (bench/policy-trace.ts), guests arrive with work and deadlines, and each step the
 * SAME policy code the proxy runs (src/policy: UtilityMonitor, decide, rankCandidates, placeGuest,
 * fitAvailability) decides what moves where. The loop mirrors src/proxy/control-plane.ts: a round
 * every report interval (here every step), moves started as decided with a backup named, a failed
 * move retried on the backup, and a drained host's guests sent to their backup or, without one, to
 * the best host by the policy's ranking, or, if it rejects them all, the fastest (what Proxy.evacuate
 * does since 6bb7be3).
 *
 * The model of the world:
 *  - time steps of `stepMs` (10 s); a guest needs one core and progresses at its host's score times
 *    the share of a free core it gets (owner load and the other guests take the rest);
 *  - a move takes 2 s + memory / 12.5 MB/s (a 100 Mbit/s link); with pre-copy the guest keeps
 *    running on the source meanwhile and switches at the end. If the target leaves before the end,
 *    the move fails and the guest, still on the source, goes to the backup (the hedge). If the
 *    source leaves first (hard), the guest dies with it (and is restored from its image, below);
 *  - a hard departure kills the guests on the host; a graceful one warns 60 s ahead (a drain) and
 *    the guests that are moved away within the warning survive;
 *  - backup images (`policy.backupEverySeconds`, 0 = none): each step, running guests whose last
 *    image (or placement, or restore) is at least that old are due, oldest first, and images are
 *    started while fewer than `policy.maxConcurrentBackups` are in flight fleet-wide. Guests being
 *    moved or restored are not imaged (a move already copies their memory; they are due again once
 *    it ends). An image pauses the guest 3 ms per MiB (the "few ms per MiB" of a freeze and copy),
 *    records the work done at that freeze, and reaches the proxy after memory / 12.5 MB/s, the
 *    moves' link without their 2 s setup: the host already has its connection to the proxy and no
 *    target sandbox is prepared. It counts only if its host is still up at that end; an image is
 *    not tied to a host (a guest that moves keeps it), and a move does not reset the schedule;
 *  - a guest that dies with its host (hard, or a drain that did not get it out) and has an image is
 *    restored from it: at the next placement, on the backup its last move named if that host is up
 *    and its memory fits, else where the policy's placement puts a new guest; it makes no progress
 *    for a restore delay of one move (2 s + memory / 12.5 MB/s), and its work since the image is
 *    lost. A restore resets the image schedule (an image taken then would hold the same work);
 *  - a killed guest without an image is submitted again from scratch (its work is lost), deadline
 *    unchanged;
 *  - a guest that cannot be placed (no host up with room) waits and is tried again each step.
 *
 * Policies compared on the same trace:
 *  - roam: placeGuest + decide with the availability model fitted from the history (refitted every
 *    `refitMs` of simulated time from the sessions seen so far, censored at "now");
 *  - threshold-only: the same code with no risk model (P(stay) = 1 for every host);
 *  - random: the same triggers (decide, with the model), but the target, and every placement, is a
 *    random host that is up, fits the guest's memory and is not degraded;
 *  - never: Roam's placement, and no move ever (not even on a drain): no images, no restores;
 *  - oracle: knows every departure: P(stay) is 1 if the host truly stays that long, else 0, for
 *    placement and decide; and it moves guests off a host before it leaves (in time for the move).
 * Images are the control plane's mechanism, not a choice of host, so every policy that moves
 * guests takes them with the same settings: roam, threshold-only, random (restored to a random
 * host, its placement) and the oracle. The oracle rarely needs one (it leaves in time), but it
 * pays their pauses like the others and stays a bound on what a policy could do with them.
 */
import * as availability from '../src/policy/availability.js';
import type { AvailabilityModel, Session } from '../src/policy/availability.js';
import type { Policy } from '../src/policy/config.js';
import * as decisions from '../src/policy/decide.js';
import type { Round } from '../src/policy/decide.js';
import type { GuestSnapshot, HostSnapshot } from '../src/policy/model.js';
import { DRAIN_WARNING_MS, MINUTE, rng, type Trace, type TraceHost, type TraceSession } from './policy-trace.js';

export type PolicyName = 'roam' | 'threshold-only' | 'random' | 'never' | 'oracle';
export const POLICY_NAMES: PolicyName[] = ['roam', 'threshold-only', 'random', 'never', 'oracle'];

/** Rows beyond the policies: a policy run with part of its configuration changed. */
export const VARIANTS: Record<string, { name: PolicyName; label: string; policy: Partial<Policy> }> = {
  'roam-no-images': { name: 'roam', label: 'roam without backup images', policy: { backupEverySeconds: 0 } },
};
/** The rows of `npm run bench:policy`, in order: what the images buy is the second row. */
export const BENCH_ROWS: string[] = ['roam', 'roam-no-images', 'threshold-only', 'random', 'never', 'oracle'];

/** A row's policy, configuration and label: a policy name, or a name in VARIANTS. */
export function row(
  rowName: string,
  policy: Policy,
): { name: PolicyName; policy: Policy; label: string | undefined } | undefined {
  const v = VARIANTS[rowName];
  if (v) return { name: v.name, policy: { ...policy, ...v.policy }, label: v.label };
  return (POLICY_NAMES as string[]).includes(rowName)
    ? { name: rowName as PolicyName, policy, label: undefined }
    : undefined;
}

/** The policy code under test: this tree's src/policy, or an older commit's (for before/after). */
export interface PolicyCode {
  fitAvailability: typeof availability.fitAvailability;
  UtilityMonitor: typeof decisions.UtilityMonitor;
  decide: typeof decisions.decide;
  placeGuest: typeof decisions.placeGuest;
  rankCandidates: typeof decisions.rankCandidates;
}
export const CURRENT_CODE: PolicyCode = {
  fitAvailability: availability.fitAvailability,
  UtilityMonitor: decisions.UtilityMonitor,
  decide: decisions.decide,
  placeGuest: decisions.placeGuest,
  rankCandidates: decisions.rankCandidates,
};

export interface SimOptions {
  code: PolicyCode;
  stepMs: number;
  refitMs: number;
  policy: Policy;
  /** A label for a variant of the policy code (before/after a change). */
  label?: string;
  /** Debugging (bench/policy-misses.ts): told of every placement, move, image and kill; changes nothing. */
  observe?: (e: SimEvent) => void;
}

/**
 * What happened to a guest, for the observer. `pStay` is the round's model, to be asked during the
 * call only (absent for kills and for ends of moves, which come before the round).
 */
type MoveEvent = Extract<SimEvent, { kind: 'move' }>;

export type SimEvent =
  | {
      kind: 'place';
      now: number;
      guest: string;
      to: string;
      via: 'policy' | 'fallback' | 'random';
      pStay?: Round['pStay'];
    }
  | {
      kind: 'move';
      now: number;
      guest: string;
      from: string | null;
      to: string;
      backup: string | null;
      cause: 'decide' | 'drain' | 'oracle' | 'backup';
      doneMs: number;
      message?: string;
      pStay?: Round['pStay'];
    }
  | { kind: 'moved'; now: number; guest: string; to: string }
  | { kind: 'move-failed'; now: number; guest: string; to: string }
  /** `image`: the work in the image it will be restored from (null: none, it starts again from scratch). */
  | {
      kind: 'killed';
      now: number;
      guest: string;
      host: string;
      graceful: boolean;
      lostMs: number;
      image: { doneMs: number; at: number } | null;
    }
  /** An image reached the proxy: taken (frozen) `at`, with `doneMs` of work done. */
  | { kind: 'imaged'; now: number; guest: string; host: string; at: number; doneMs: number }
  | { kind: 'image-lost'; now: number; guest: string; host: string }
  | {
      kind: 'restore';
      now: number;
      guest: string;
      to: string;
      via: 'backup' | 'policy' | 'fallback' | 'random';
      doneMs: number;
      pStay?: Round['pStay'];
    }
  | { kind: 'finished'; now: number; guest: string; host: string; at: number };

export interface SimResult {
  name: string;
  guests: number;
  onTime: number;
  /** Finished after the deadline, or never finished by the end of the run. */
  missed: number;
  /** Work of finished guests, and of those finished in time (CPU-hours at score 1). */
  completedHours: number;
  onTimeHours: number;
  /** Work thrown away when a guest died with its host: all of it, or what it did since its image. */
  lostHours: number;
  /** Guests that died with their host (restored from an image or not). */
  kills: number;
  /** Restores from an image (a guest can be restored more than once), and the work they kept. */
  restores: number;
  savedHours: number;
  /** Backup images that reached the proxy, and those lost with their host on the way. */
  images: number;
  imagesLost: number;
  migrations: number;
  failedMigrations: number;
  backupMoves: number;
  drainSaved: number;
  wallMs: number;
}

const LINK_BYTES_PER_MS = 12_500; // 100 Mbit/s
/** Asking the source and the target, opening the connection, preparing the target's sandbox. */
const MOVE_SETUP_MS = 2000;
const moveMs = (memoryBytes: number): number => MOVE_SETUP_MS + memoryBytes / LINK_BYTES_PER_MS;
/** An image travels to the proxy on the link moves use, over the connection the host already has. */
const imageMs = (memoryBytes: number): number => memoryBytes / LINK_BYTES_PER_MS;
/** The guest's pause while its image is taken (copying 16 MB took 33 ms, see DESIGN.md). */
const IMAGE_PAUSE_MS_PER_MIB = 3;

interface HostState {
  trace: TraceHost;
  session: TraceSession | undefined;
  nextSession: number;
  loadIndex: number;
  usage: number;
  warned: boolean;
}

interface GuestState {
  id: string;
  memoryBytes: number;
  workMs: number;
  deadline: number;
  arrival: number;
  host: string | null;
  doneMs: number;
  finishedAt: number | null;
  move: { to: string; backup: string | null; end: number; drain: boolean } | null;
  /** Its last image at the proxy: the work done when it was taken (frozen), and when. */
  image: { doneMs: number; at: number } | null;
  /** An image on its way: taken on `host` at `at` with `doneMs` done, at the proxy at `end`. */
  imaging: { host: string; at: number; doneMs: number; end: number } | null;
  /** What the image schedule counts from: the last image's freeze, or the placement or restore. */
  imageDueFrom: number;
  /** Makes progress from this time on (before it: being restored). */
  resumeAt: number;
  /** Paused for images since the last step, charged to the next step's progress. */
  pausedMs: number;
}

function sessionAt(host: TraceHost, from: number, t: number): { session: TraceSession | undefined; next: number } {
  let i = from;
  while (i < host.sessions.length && (host.sessions[i]?.endedAt ?? 0) <= t) i++;
  const s = host.sessions[i];
  return { session: s && s.joinedAt <= t ? s : undefined, next: i };
}

/** Sessions known by time t: ended ones as they ended, the current one censored at t. */
export function historyAt(trace: Trace, t: number): Session[] {
  const out: Session[] = [];
  for (const h of trace.hosts) {
    for (const s of h.sessions) {
      if (s.joinedAt > t) break;
      const ended = s.endedAt <= t;
      out.push({
        hostId: h.id,
        joinedAt: s.joinedAt,
        endedAt: ended ? s.endedAt : null,
        endReason: ended ? (s.graceful ? 'left' : 'evicted') : null,
      });
    }
  }
  return out;
}

export function simulate(trace: Trace, name: PolicyName, options: SimOptions): SimResult {
  const wall = performance.now();
  const { policy, stepMs } = options;
  const { fitAvailability, UtilityMonitor, decide, placeGuest, rankCandidates } = options.code;
  const horizonMs = policy.horizonMinutes * MINUTE;
  const pick = rng(trace.seed * 7 + 11);
  const hosts = new Map<string, HostState>(
    trace.hosts.map((h) => [
      h.id,
      { trace: h, session: undefined, nextSession: 0, loadIndex: 0, usage: 0, warned: false },
    ]),
  );
  const byName = new Map(trace.hosts.map((h) => [h.name, h.id]));
  const guests: GuestState[] = [];
  const pending = [...trace.guests].sort((a, b) => a.arrival - b.arrival);
  let arrived = 0;
  const monitor = new UtilityMonitor();
  const lastMoved = new Map<string, number>();
  const backups = new Map<string, string>();
  const result: SimResult = {
    name: options.label ?? name,
    guests: trace.guests.length,
    onTime: 0,
    missed: 0,
    completedHours: 0,
    onTimeHours: 0,
    lostHours: 0,
    kills: 0,
    restores: 0,
    savedHours: 0,
    images: 0,
    imagesLost: 0,
    migrations: 0,
    failedMigrations: 0,
    backupMoves: 0,
    drainSaved: 0,
    wallMs: 0,
  };

  let model: AvailabilityModel | undefined;
  let modelAt = -Infinity;
  const learned = (now: number): AvailabilityModel => {
    if (!model || now - modelAt >= options.refitMs) {
      model = fitAvailability(historyAt(trace, now), now, horizonMs, policy.survivalPriorSessions);
      modelAt = now;
    }
    return model;
  };
  const truthStay = (id: string, now: number, span: number): number => {
    const s = hosts.get(id)?.session;
    return s && s.endedAt - now >= span ? 1 : 0;
  };

  let active: GuestState[] = [];
  let onHost = new Map<string, GuestState[]>();
  let incoming = new Map<string, GuestState[]>();
  const reindex = (): void => {
    active = active.filter((g) => g.finishedAt === null);
    onHost = new Map();
    incoming = new Map();
    for (const g of active) {
      if (g.host !== null) onHost.set(g.host, [...(onHost.get(g.host) ?? []), g]);
      if (g.move) incoming.set(g.move.to, [...(incoming.get(g.move.to) ?? []), g]);
    }
  };
  const guestsOn = (id: string): GuestState[] => onHost.get(id) ?? [];
  /** Cores a guest gets on `h`: the free cores shared among its guests, at most one each. */
  const share = (h: HostState, n: number): number =>
    n === 0 ? 0 : Math.min(1, Math.max(0, h.trace.cores * (1 - h.usage)) / n);

  const snapshot = (h: HostState): HostSnapshot => {
    const mine = guestsOn(h.trace.id);
    const guestCores = mine.length * share(h, mine.length);
    const memUsed =
      h.trace.memoryBytes * h.trace.ownerMemory +
      [...mine, ...(incoming.get(h.trace.id) ?? [])].reduce((s, g) => s + g.memoryBytes, 0);
    return {
      id: h.trace.id,
      name: h.trace.name,
      up: h.session !== undefined,
      canReceive: true,
      score: h.trace.score,
      rttMs: h.trace.rttMs,
      metrics: h.session
        ? {
            cpu: { usage: Math.min(1, h.usage + guestCores / h.trace.cores), capacity: h.trace.cores },
            memory: {
              totalBytes: h.trace.memoryBytes,
              freeBytes: Math.max(0, h.trace.memoryBytes - memUsed),
              limitBytes: null,
            },
            network: { utilisation: null },
          }
        : null,
      joinedAt: h.session?.joinedAt ?? null,
    };
  };

  const imagesOn = name !== 'never' && policy.backupEverySeconds > 0;
  const imageEveryMs = policy.backupEverySeconds * 1000;

  const imaged = (g: GuestState, now: number): void => {
    if (!g.imaging) return;
    const { host, at, doneMs } = g.imaging;
    options.observe?.({ kind: 'imaged', now, guest: g.id, host, at, doneMs });
    result.images++;
    g.image = { doneMs, at };
    g.imaging = null;
  };
  const imageLost = (g: GuestState, now: number): void => {
    if (!g.imaging) return;
    options.observe?.({ kind: 'image-lost', now, guest: g.id, host: g.imaging.host });
    result.imagesLost++;
    g.imaging = null;
  };

  /** A guest dies with its host: the next placement restores it from its image, or starts it from scratch. */
  const kill = (g: GuestState, now: number, graceful: boolean): void => {
    const image = g.image;
    const lostMs = g.doneMs - (image?.doneMs ?? 0);
    options.observe?.({ kind: 'killed', now, guest: g.id, host: g.host ?? '', graceful, lostMs, image });
    result.kills++;
    result.lostHours += lostMs / 3_600_000;
    if (image) {
      result.restores++;
      result.savedHours += image.doneMs / 3_600_000;
    }
    imageLost(g, now);
    g.host = null;
    g.doneMs = image?.doneMs ?? 0;
    g.move = null;
    g.pausedMs = 0;
  };

  const startMove = (
    g: GuestState,
    to: string,
    backup: string | null,
    now: number,
    cause: MoveEvent['cause'],
    told: Pick<MoveEvent, 'message' | 'pStay'> = {},
  ): void => {
    options.observe?.({ kind: 'move', now, guest: g.id, from: g.host, to, backup, cause, doneMs: g.doneMs, ...told });
    g.move = { to, backup, end: now + moveMs(g.memoryBytes), drain: cause === 'drain' };
    result.migrations++;
  };

  const randomHost = (
    g: GuestState,
    hostsNow: HostSnapshot[],
    lowSince: ReadonlyMap<string, number>,
  ): string | undefined => {
    const ok = hostsNow.filter(
      (h) =>
        h.up && h.id !== g.host && !lowSince.has(h.id) && (h.metrics?.memory.freeBytes ?? 0) >= g.memoryBytes * 1.2,
    );
    return ok[Math.floor(pick() * ok.length)]?.id;
  };

  /** Proxy.place: the fastest host up (score times CPU headroom), for guests the policy could not place. */
  const fastest = (hostsNow: HostSnapshot[], exclude: string | null): string | undefined => {
    const up = hostsNow.filter((h) => h.up && h.id !== exclude);
    const s = (h: HostSnapshot): number => (h.score ?? 1) * (1 - (h.metrics?.cpu.usage ?? 0));
    return up.sort((a, b) => s(b) - s(a))[0]?.id;
  };

  for (let now = trace.evalStart; now <= trace.end; now += stepMs) {
    // 1. Hosts: sessions, owner load, warnings and departures.
    for (const h of hosts.values()) {
      const before = h.session;
      const at = sessionAt(h.trace, h.nextSession, now);
      h.nextSession = at.next;
      h.session = at.session;
      while (h.loadIndex + 1 < h.trace.load.length && (h.trace.load[h.loadIndex + 1]?.t ?? Infinity) <= now)
        h.loadIndex++;
      h.usage = h.trace.load[h.loadIndex]?.usage ?? 0;
      if (before && before !== h.session) {
        // Left: guests still here die; moves from or to here fail.
        h.warned = false;
        for (const g of active) {
          // An image on its way from here counts if it reached the proxy before the host went.
          if (g.imaging?.host === h.trace.id) {
            if (g.imaging.end <= before.endedAt) imaged(g, now);
            else imageLost(g, now);
          }
          if (g.host === h.trace.id) {
            if (g.move) result.failedMigrations++;
            kill(g, now, before.graceful);
          } else if (g.move?.to === h.trace.id) {
            options.observe?.({ kind: 'move-failed', now, guest: g.id, to: h.trace.id });
            result.failedMigrations++;
            const backup = g.move.backup;
            g.move = null;
            if (backup && name !== 'never' && hosts.get(backup)?.session) {
              result.backupMoves++;
              startMove(g, backup, null, now, 'backup');
            }
          }
        }
      }
    }

    // 2. Moves that end now.
    for (const g of active) {
      if (!g.move || g.move.end > now) continue;
      if (g.move.drain) result.drainSaved++;
      options.observe?.({ kind: 'moved', now, guest: g.id, to: g.move.to });
      g.host = g.move.to;
      lastMoved.set(g.id, now);
      if (g.move.backup) backups.set(g.id, g.move.backup);
      else backups.delete(g.id);
      g.move = null;
    }
    // Images that reach the proxy now (those from hosts that left went with them, above).
    for (const g of active) if (g.imaging && g.imaging.end <= now) imaged(g, now);

    // 3. Progress (from the end of a restore, less the pauses for images).
    reindex();
    for (const h of hosts.values()) {
      if (!h.session) continue;
      const mine = guestsOn(h.trace.id);
      const rate = h.trace.score * share(h, mine.length);
      for (const g of mine) {
        const from = Math.max(now - stepMs, g.resumeAt) + g.pausedMs;
        g.pausedMs = 0;
        if (from >= now) continue;
        const need = g.workMs - g.doneMs;
        const gain = rate * (now - from);
        if (gain >= need) {
          g.finishedAt = from + need / rate;
          options.observe?.({ kind: 'finished', now, guest: g.id, host: h.trace.id, at: g.finishedAt });
          g.doneMs = g.workMs;
          g.move = null;
          g.imaging = null;
          result.completedHours += g.workMs / 3_600_000;
          if (g.finishedAt <= g.deadline) {
            result.onTime++;
            result.onTimeHours += g.workMs / 3_600_000;
          }
        } else g.doneMs += gain;
      }
    }

    // 4. Arrivals.
    while (arrived < pending.length && (pending[arrived]?.arrival ?? Infinity) <= now) {
      const a = pending[arrived++];
      if (!a) break;
      const g: GuestState = {
        ...a,
        host: null,
        doneMs: 0,
        finishedAt: null,
        move: null,
        image: null,
        imaging: null,
        imageDueFrom: now,
        resumeAt: now,
        pausedMs: 0,
      };
      guests.push(g);
      active.push(g);
    }
    reindex();

    // 5. The control round.
    const hostsNow = [...hosts.values()].map((h) => snapshot(h));
    const lowSince = monitor.observe(hostsNow, policy, now);
    const pStay: Round['pStay'] =
      name === 'threshold-only'
        ? () => 1
        : name === 'oracle'
          ? (id, _age, span) => truthStay(id, now, span)
          : (id, age, span) => learned(now).pStay(id, age, span, now);
    const running = active.filter((g) => g.host !== null);
    // A guest being restored is not running yet: the round does not see it (nor move it).
    const snapshots: GuestSnapshot[] = running
      .filter((g) => g.resumeAt <= now)
      .map((g) => ({
        id: g.id,
        name: g.id,
        hostId: g.host ?? '',
        memoryBytes: g.memoryBytes,
        cpuRate: 1000 * share(hosts.get(g.host ?? '') as HostState, guestsOn(g.host ?? '').length),
        deadline: g.deadline,
        expectMs: g.workMs,
        cpuMs: g.doneMs,
      }));
    const round: Round = {
      now,
      hosts: hostsNow,
      guests: snapshots,
      lowSince,
      meanUtility: new Map(hostsNow.map((h) => [h.id, monitor.mean(h.id) ?? 1])),
      lastMoved,
      moving: new Set(active.filter((g) => g.move).map((g) => g.id)),
      pStay,
    };

    if (name !== 'never') {
      // Drains, as Proxy.evacuate does them: the warned host's guests go to their backup, else to the
      // best host by the policy's ranking (ControlPlane.moveTarget), else to the fastest host.
      const moveTarget = (g: GuestState): string | undefined => {
        const snap = snapshots.find((x) => x.id === g.id);
        return snap && rankCandidates(snap, round, policy, g.host ?? undefined).find((c) => !c.rejected)?.host.id;
      };
      for (const h of hosts.values()) {
        const s = h.session;
        if (!s || !s.graceful || h.warned || s.endedAt - now > DRAIN_WARNING_MS) continue;
        h.warned = true;
        for (const g of guestsOn(h.trace.id)) {
          if (g.move) continue;
          const backup = backups.get(g.id);
          const to =
            name === 'random'
              ? randomHost(g, hostsNow, lowSince)
              : backup && hosts.get(backup)?.session
                ? backup
                : (moveTarget(g) ?? fastest(hostsNow, h.trace.id));
          if (to) startMove(g, to, null, now, 'drain', { pStay });
        }
      }
      // The oracle leaves a host in time, before it goes.
      if (name === 'oracle') {
        for (const g of running) {
          const s = hosts.get(g.host ?? '')?.session;
          if (g.move || !s || s.endedAt - now > moveMs(g.memoryBytes) + 3 * stepMs) continue;
          const snap = snapshots.find((x) => x.id === g.id);
          const best = snap && placeGuest(snap, round, policy);
          const to =
            best?.host.id ??
            fastest(
              hostsNow.filter((h) => truthStay(h.id, now, moveMs(g.memoryBytes) + 3 * stepMs) === 1),
              g.host,
            );
          if (to) startMove(g, to, null, now, 'oracle', { pStay });
        }
      }
      for (const d of decide(round, policy)) {
        if (d.kind !== 'move') continue;
        const g = active.find((x) => x.id === d.guestId);
        if (!g || g.move) continue;
        const to = name === 'random' ? randomHost(g, hostsNow, lowSince) : byName.get(d.to);
        const backup = d.backup === null ? null : (byName.get(d.backup) ?? null);
        if (!to) continue;
        startMove(g, to, name === 'random' ? null : backup, now, 'decide', { message: d.message, pStay });
      }
    }

    // 6. Placement of new and restarted guests, and restores from images: on the backup the last move
    // named if it is up and the guest fits there, else where a new guest would go.
    const placedBytes = new Map<string, number>();
    const fits = (id: string, g: GuestState): boolean => {
      const h = hostsNow.find((x) => x.id === id);
      const free = (h?.up ? (h.metrics?.memory.freeBytes ?? 0) : 0) - (placedBytes.get(id) ?? 0);
      return free >= g.memoryBytes;
    };
    for (const g of active) {
      if (g.host !== null) continue;
      const snap: GuestSnapshot = {
        id: g.id,
        name: g.id,
        hostId: '',
        memoryBytes: g.memoryBytes,
        cpuRate: 0,
        deadline: g.deadline,
        expectMs: g.workMs,
        cpuMs: g.doneMs,
      };
      const backup = g.image && name !== 'random' ? backups.get(g.id) : undefined;
      const toBackup = backup !== undefined && fits(backup, g);
      const placed = name === 'random' || toBackup ? undefined : placeGuest(snap, round, policy)?.host.id;
      const to =
        name === 'random' ? randomHost(g, hostsNow, lowSince) : toBackup ? backup : (placed ?? fastest(hostsNow, null));
      if (!to) continue;
      g.host = to;
      g.imageDueFrom = now;
      placedBytes.set(to, (placedBytes.get(to) ?? 0) + g.memoryBytes);
      const via = name === 'random' ? 'random' : placed ? 'policy' : 'fallback';
      if (g.image) {
        // The backup is used up: the guest is on it now (a drain of this host must not send it here).
        if (toBackup) backups.delete(g.id);
        g.resumeAt = now + moveMs(g.memoryBytes);
        const by = toBackup ? 'backup' : via;
        options.observe?.({ kind: 'restore', now, guest: g.id, to, via: by, doneMs: g.doneMs, pStay });
      } else options.observe?.({ kind: 'place', now, guest: g.id, to, via, pStay });
    }

    // 7. Backup images: the guests longest without one first, while fewer than the limit are on their way.
    if (imagesOn) {
      let slots = policy.maxConcurrentBackups - active.filter((g) => g.imaging).length;
      const due =
        slots > 0
          ? active.filter(
              (g) =>
                g.host !== null && !g.move && !g.imaging && g.resumeAt <= now && now - g.imageDueFrom >= imageEveryMs,
            )
          : [];
      due.sort((a, b) => a.imageDueFrom - b.imageDueFrom);
      for (const g of due) {
        if (slots-- <= 0) break;
        g.imaging = { host: g.host ?? '', at: now, doneMs: g.doneMs, end: now + imageMs(g.memoryBytes) };
        g.imageDueFrom = now;
        g.pausedMs += (IMAGE_PAUSE_MS_PER_MIB * g.memoryBytes) / 2 ** 20;
      }
    }
  }

  for (const g of guests) if (g.finishedAt === null || g.finishedAt > g.deadline) result.missed++;
  result.wallMs = performance.now() - wall;
  return result;
}

export interface Accuracy {
  /** fitAvailability's own held-out figure (newest 30% of sessions, P(stay horizon from join)). */
  fitted: { kind: string; accuracy: number | null; heldOut: number };
  /** Queries on the held-out window: every host up, every `everyMs`, P(stays horizon | age) >= 0.5 vs truth. */
  queries: number;
  accuracy: number;
  /** Saying "stays" every time, for comparison. */
  alwaysStays: number;
  /** Accuracy on the queries where the truth was "leaves". */
  leavesCaught: number;
  byClass: Record<string, { queries: number; accuracy: number }>;
}

/** Trains on the history before `evalStart` and scores the model on the (held-out) evaluation window. */
export function predictionAccuracy(trace: Trace, horizonMs: number, everyMs: number): Accuracy {
  const model = availability.fitAvailability(historyAt(trace, trace.evalStart), trace.evalStart, horizonMs);
  let queries = 0;
  let right = 0;
  let stays = 0;
  let leaves = 0;
  let caught = 0;
  const byClass: Record<string, { queries: number; right: number }> = {};
  for (const h of trace.hosts) {
    const c = (byClass[h.kind] ??= { queries: 0, right: 0 });
    for (const s of h.sessions) {
      if (s.endedAt <= trace.evalStart || s.joinedAt >= trace.end - horizonMs) continue;
      const first = Math.max(s.joinedAt, trace.evalStart);
      const from = trace.evalStart + Math.ceil((first - trace.evalStart) / everyMs) * everyMs;
      for (let t = from; t < s.endedAt && t <= trace.end - horizonMs; t += everyMs) {
        const truth = s.endedAt - t >= horizonMs;
        const said = model.pStay(h.id, t - s.joinedAt, horizonMs, t) >= 0.5;
        queries++;
        c.queries++;
        if (truth) stays++;
        else leaves++;
        if (said === truth) {
          right++;
          c.right++;
          if (!truth) caught++;
        }
      }
    }
  }
  return {
    fitted: { kind: model.kind, accuracy: model.accuracy, heldOut: model.heldOut },
    queries,
    accuracy: right / Math.max(1, queries),
    alwaysStays: stays / Math.max(1, queries),
    leavesCaught: caught / Math.max(1, leaves),
    byClass: Object.fromEntries(
      Object.entries(byClass).map(([k, v]) => [k, { queries: v.queries, accuracy: v.right / Math.max(1, v.queries) }]),
    ),
  };
}
