/**
 * Peer connections a source keeps open between moves, one per target: the next move to a target
 * that a move went to in the last POOL_IDLE_MS reuses its connection instead of opening one. On a
 * busy host the connect cost 1-2 ms of a 1 MiB guest's 13 ms move (BENCHMARKS.md, migration).
 *
 * Nothing about a move's trust rests on the connection: every offer carries its own token, which
 * the target checks against the move the proxy announced (target.ts). The target serves one move
 * after another on a kept connection and closes it after TARGET_IDLE_MS without an offer, longer
 * than a source keeps it, so that a source rarely offers on a connection the target is closing
 * (and when it does, source.ts opens a new one and offers again).
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
