/**
 * The proxy's structured log of what happens: every event of the roaming table (joins, placements,
 * moves, decisions) becomes one log record with the ids it is about (`host`, `guest`, `migration`,
 * `stream`), at `warn` for failures and losses. A thin subscriber: the proxy itself only emits events.
 */
import type { Logger } from '../common/log.js';
import type { EventView, ProxyOperations } from './view.js';

const WARN = /\.(failed|evicted|lost|refused|dropped|disconnected)$/;

function field(data: unknown, key: string): unknown {
  return data && typeof data === 'object' ? (data as Record<string, unknown>)[key] : undefined;
}

/** The log record's fields for an event (never its whole data: it may be large). */
export function eventFields(event: EventView): Record<string, unknown> {
  const fields: Record<string, unknown> = { event: event.kind, eventId: event.id };
  if (event.hostId) fields['host'] = event.hostId;
  if (event.guestId) fields['guest'] = event.guestId;
  const migration =
    field(event.data, 'migrationId') ?? (event.kind.startsWith('migration.') ? field(event.data, 'id') : undefined);
  if (typeof migration === 'string') fields['migration'] = migration;
  const stream = field(event.data, 'streamId');
  if (typeof stream === 'number') fields['stream'] = stream;
  const step = field(event.data, 'step');
  if (typeof step === 'string' && event.kind !== 'migration.progress') fields['step'] = step;
  return fields;
}

/** Logs every event from now on; returns the function that stops. */
export function logEvents(ops: Pick<ProxyOperations, 'subscribe'>, logger: Logger): () => void {
  return ops.subscribe((event) => {
    const level = WARN.test(event.kind) ? 'warn' : event.kind === 'migration.progress' ? 'debug' : 'info';
    logger[level](eventFields(event), event.message);
  });
}
