/**
 * Peer connections a source keeps open between moves, one per target: the next move to a target
 * that a move went to in the last POOL_IDLE_MS reuses its connection instead of opening one. On a
 * busy host the connect cost 1-2 ms of a 1 MiB guest's 13 ms move (BENCHMARKS.md, migration).
 *
 * Nothing about a move's trust rests on the connection: every offer carries its own token, which
 * the target checks against the move the proxy announced (target.ts). The target serves one move
 * after another on a kept connection and closes it after TARGET_IDLE_MS without an offer, longer
 * than a source keeps it, so that a source rarely offers on a connection the target is closing
 * (and when it does, `onKeptOrNew` offers again on a new one).
 */
import type { PeerChannel } from './peer-channel.js';

/** How long a source keeps an idle connection to a target. */
export const POOL_IDLE_MS = 20_000;
/** How long a target waits on a kept connection for its next offer. */
export const TARGET_IDLE_MS = 60_000;

export class PeerPool {
  private readonly idle = new Map<string, { channel: PeerChannel; timer: NodeJS.Timeout }>();

  constructor(private readonly idleMs = POOL_IDLE_MS) {}

  /** The idle connection to `target` (address:port), now the caller's, if there is one still open. */
  take(target: string): PeerChannel | undefined {
    const kept = this.idle.get(target);
    if (!kept) return undefined;
    this.idle.delete(target);
    clearTimeout(kept.timer);
    if (kept.channel.idle) return kept.channel;
    kept.channel.destroy(); // closed by the target, or it said something out of turn
    return undefined;
  }

  /** A connection whose move went through, at rest: kept for the next move to `target`. */
  give(target: string, channel: PeerChannel): void {
    if (!channel.idle) {
      channel.destroy();
      return;
    }
    // One per target: the newest (a drain may have opened several at once).
    const before = this.idle.get(target);
    if (before) {
      clearTimeout(before.timer);
      before.channel.close();
    }
    const timer = setTimeout(() => {
      if (this.idle.get(target)?.channel !== channel) return;
      this.idle.delete(target);
      channel.close();
    }, this.idleMs);
    timer.unref();
    this.idle.set(target, { channel, timer });
  }

  /** Idle connections kept now. */
  get size(): number {
    return this.idle.size;
  }

  close(): void {
    for (const { channel, timer } of this.idle.values()) {
      clearTimeout(timer);
      channel.close();
    }
    this.idle.clear();
  }
}

/**
 * Runs `use` (an offer and its answer) on `channel`. If `channel` was `kept` from an earlier move
 * and the target had closed it meanwhile, runs it once more on a new connection (nothing was
 * frozen yet, and the target took nothing from a connection it closed). Resolves with the
 * connection it went through on.
 */
export async function onKeptOrNew(
  channel: PeerChannel,
  kept: boolean,
  connect: () => Promise<PeerChannel>,
  use: (channel: PeerChannel) => Promise<void>,
): Promise<PeerChannel> {
  try {
    await use(channel);
    return channel;
  } catch (err) {
    if (!kept || !channel.closed) throw err;
    channel.destroy();
    const fresh = await connect();
    try {
      await use(fresh);
    } catch (again) {
      fresh.destroy();
      throw again;
    }
    return fresh;
  }
}
