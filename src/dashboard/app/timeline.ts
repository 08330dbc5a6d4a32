/** Migrations as the event log tells them: one row per move, from `migration.*` events. Pure. */
import type { EventView } from '../../proxy/view.js';

export interface MigrationRow {
  id: string;
  guest: string;
  guestId: string | null;
  from: string;
  to: string;
  startedAt: number;
  state: 'running' | 'moved' | 'failed';
  /** The last progress step (precopy, freeze, transfer, ...). */
  step: string | null;
  pauseMs: number | null;
  totalMs: number | null;
  bytesSent: number | null;
  error: string | null;
  outcome: string | null;
}

function get(data: unknown, key: string): unknown {
  return data && typeof data === 'object' ? (data as Record<string, unknown>)[key] : undefined;
}
const str = (data: unknown, key: string): string | null => {
  const v = get(data, key);
  return typeof v === 'string' ? v : null;
};
const num = (data: unknown, key: string): number | null => {
  const v = get(data, key);
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
};

/** Applies one event to the rows (keyed by migration id); returns whether it was about a move. */
export function applyMigrationEvent(rows: Map<string, MigrationRow>, e: EventView): boolean {
  if (!e.kind.startsWith('migration.')) return false;
  const id = str(e.data, 'migrationId') ?? (e.kind === 'migration.completed' ? str(e.data, 'id') : null);
  if (!id) {
    // A move that could not even start (no id): its own failed row.
    if (e.kind !== 'migration.failed') return true;
    rows.set(`event-${e.id}`, {
      id: `event-${e.id}`,
      guest: e.message.match(/move (\S+)/)?.[1] ?? '?',
      guestId: e.guestId,
      from: '?',
      to: '?',
      startedAt: e.t,
      state: 'failed',
      step: null,
      pauseMs: null,
      totalMs: null,
      bytesSent: null,
      error: e.message,
      outcome: null,
    });
    return true;
  }
  let row = rows.get(id);
  if (!row) {
    row = {
      id,
      guest: str(e.data, 'guest') ?? e.message.match(/^(?:moving |moved )?(\S+?):?\s/)?.[1] ?? '?',
      guestId: e.guestId,
      from: str(e.data, 'from') ?? '?',
      to: str(e.data, 'to') ?? '?',
      startedAt: e.t,
      state: 'running',
      step: null,
      pauseMs: null,
      totalMs: null,
      bytesSent: null,
      error: null,
      outcome: null,
    };
    rows.set(id, row);
  }
  switch (e.kind) {
    case 'migration.started': {
      const m = /^moving (\S+) from/.exec(e.message);
      if (m?.[1]) row.guest = m[1];
      row.startedAt = e.t;
      break;
    }
    case 'migration.progress':
      row.step = str(e.data, 'step') ?? row.step;
      break;
    case 'migration.committed':
      row.step = 'commit';
      break;
    case 'migration.completed':
      row.state = 'moved';
      row.guest = str(e.data, 'guest') ?? row.guest;
      row.from = str(e.data, 'from') ?? row.from;
      row.to = str(e.data, 'to') ?? row.to;
      row.pauseMs = num(e.data, 'pauseMs');
      row.totalMs = num(e.data, 'totalMs');
      row.bytesSent = num(e.data, 'bytesSent');
      row.outcome = 'moved';
      break;
    case 'migration.failed':
      row.state = 'failed';
      row.step = str(e.data, 'step') ?? row.step;
      row.error = str(e.data, 'cause') ?? e.message;
      row.outcome = str(e.data, 'outcome');
      row.totalMs = num(e.data, 'elapsedMs');
      break;
    default:
      break;
  }
  return true;
}
