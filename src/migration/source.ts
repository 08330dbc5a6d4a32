/**
 * The source side of a move (paper section IV-D, steps 2-5 and the end of 8): ask the target,
 * open the direct connection, pre-copy memory while the guest runs, freeze it, send the rest and
 * the in-flight data it holds, then wait for the proxy's decision. Until the proxy commits, the
 * frozen guest stays here and can always resume; once it commits, the copy here is dropped.
 */
import net from 'node:net';
import type { TurnGate } from '../guest/turn-gate.js';
import { RoamError } from '../errors.js';
import { failpoint, reach } from '../common/failpoints.js';
import { PAGE_SIZE } from '../guest/image/format.js';
import type { MigrateMessage, MigrateProgressMessage, MigrationStep } from '../wire/index.js';
import { ROAM_VERSION } from '../version.js';
import { CodecChooser, PAGES_PER_MESSAGE, PageShadow, type ShadowBuffers, packPages } from './pages.js';
import type { MoveSource } from './movable.js';
import { PeerChannel } from './peer-channel.js';
import { onKeptOrNew, type PeerPool } from './peer-pool.js';
import type { PeerHeader } from './peer-wire.js';

/**
 * Pre-copy freezes the guest once what is left would take at most this long to send, as the link to
 * this target was measured (by this move or those before). A guest whose whole memory fits goes
 * without pre-copy. Short, because the pause is what clients see: at 6 ms the 1 MiB bench guest
 * (4 MB against the template, 2.5-3 ms on the bench's link) went without, and paused 9.6-10.6 ms;
 * at 2 ms it pre-copies, and paused 7.4-8.7 ms, for 3.5 ms more in all (bench:migrate, 3 runs each).
 */
const PRECOPY_TAIL_MS = 2;
/** Until the link is measured, what is left is small at this size. */
const PRECOPY_SMALL_BYTES = 512 * 1024;
/** Between rounds, every this-many-th page is compared to estimate what is left (an eighth of a scan). */
const PRECOPY_SAMPLE_STRIDE = 8;
/** Pre-copy stops after this many rounds, changed or not. */
const PRECOPY_MAX_ROUNDS = 6;
/**
 * The first round scans this many pages at a time and sends what it found before scanning on,
 * so the scan (which finds most of the memory changed) and the send overlap.
 */
const FIRST_ROUND_SLICE_PAGES = 2 * PAGES_PER_MESSAGE;

export type Decision = 'committed' | 'aborted';

export interface SourceContext {
  /** The guest, of either kind (movable.ts). */
  guest: MoveSource;
  /** Tells the proxy where the move is. */
  progress(update: Omit<MigrateProgressMessage, 'type' | 'migrationId'>): void;
  /** Asks the proxy to abort (if it has not committed) and resolves with what it decided. */
  abort(step: MigrationStep, err: Error): Promise<Decision>;
  /** The proxy's decision, whenever it comes (it may come first, if the peer connection broke). */
  decided: Promise<Decision>;
  /** The guest's streams let go of without a reset (the target carries them on). */
  release(): void;
  log(line: string): void;
  /**
   * Chooses each page message's codec from what the link and the compressor do: one kept per target
   * starts a move with what earlier moves there measured; `new CodecChooser('lz4')` fixes it.
   */
  codecs?: CodecChooser;
  /** Where the pre-copy shadow's buffer comes from and goes back to (a fresh one per move without). */
  shadows?: ShadowBuffers;
  /** Connections to targets kept open between moves (a new one per move without). */
  peers?: PeerPool;
  /** This host's hold on guest turns: closed from the freeze until the move is over (TurnGate). */
  turns?: TurnGate;
}

export interface MoveResult {
  outcome: 'moved' | 'rolled-back';
  step?: MigrationStep;
  error?: Error;
  pauseMs: number | null;
  totalMs: number;
  bytesSent: number;
  precopyRounds: number;
  precopyBytes: number;
  finalBytes: number;
  /** Where the time went, in ms (for the host's log and the benchmark): see `migrateOut`. */
  timings: Record<string, number>;
}

class StepError extends Error {
  constructor(
    readonly step: MigrationStep,
    readonly reason: Error,
  ) {
    super(reason.message);
  }
}

async function step<T>(name: MigrationStep, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    throw err instanceof StepError ? err : new StepError(name, err as Error);
  }
}

export async function migrateOut(message: MigrateMessage, ctx: SourceContext): Promise<MoveResult> {
  const lease: { shadow?: PageShadow; precopy?: boolean } = {};
  try {
    return await moveOut(message, ctx, lease);
  } finally {
    // Over, whichever way: the target holds every pre-copied byte, or the connection is gone.
    if (lease.shadow && lease.precopy) ctx.shadows?.give(lease.shadow.storage);
  }
}

async function moveOut(
  message: MigrateMessage,
  ctx: SourceContext,
  lease: { shadow?: PageShadow; precopy?: boolean },
): Promise<MoveResult> {
  const t0 = performance.now();
  const source = ctx.guest;
  const { guest } = source;
  const codecs = ctx.codecs ?? new CodecChooser();
  const timeout = message.stepTimeoutMs;
  const stats = { precopyRounds: 0, precopyBytes: 0, finalBytes: 0 };
  /** Whether `bytes` left to send are few enough to freeze now (see PRECOPY_TAIL_MS). */
  const small = (bytes: number): boolean => {
    const ms = codecs.sendMs(bytes);
    return ms === undefined ? bytes <= PRECOPY_SMALL_BYTES : ms <= PRECOPY_TAIL_MS;
  };
  // Milliseconds per step. Before the freeze: connect, offer (until the target's accept, its sandbox
  // prepared), precopy, hold (until the target's word that its turns are held). After it: freeze
  // (capture of the host state), state (JSON and its message, sent first), scan (the final
  // dirty-page compare), copy (pages into the message), compress, send (socket writes, waits for
  // the socket included), then wait (until the target's word that the guest runs: the rest of its
  // transfer, its assembly, the proxy's commit and the message itself).
  const timings: Record<string, number> = {};
  const add = (key: string, since: number): number => {
    const now = performance.now();
    timings[key] = (timings[key] ?? 0) + (now - since);
    return now;
  };
  let channel: PeerChannel | undefined;
  let frozenAt: number | undefined;
  const result = (
    outcome: MoveResult['outcome'],
    pauseMs: number | null,
    extra: Partial<MoveResult> = {},
  ): MoveResult => ({
    outcome,
    pauseMs,
    totalMs: performance.now() - t0,
    bytesSent: channel?.bytesSent ?? 0,
    ...stats,
    timings,
    ...extra,
  });
  const damage = failpoint('migrate.source.corrupt')?.kind === 'corrupt';

  /**
   * Sends what changed of `pages` (the blocks of each that differ from the target's copy) and
   * returns the bytes and blocks sent. `newRound`: the first message of a pre-copy round (the round
   * before may still be in the socket).
   */
  const sendPages = async (
    pages: Uint32Array,
    round: number,
    final: boolean,
    newRound = !final,
  ): Promise<{ bytes: number; blocks: number }> => {
    const sent = { bytes: 0, blocks: 0 };
    // The shadow's pages may change only once the socket holds none of them: the last round's
    // views are still being sent when the next round starts.
    if (newRound) await (channel as PeerChannel).flushed();
    for (let i = 0; i < pages.length; i += PAGES_PER_MESSAGE) {
      // A view per message: the guest runs between them (pre-copy), and its memory may grow.
      const memory = source.memoryView();
      const part = pages.subarray(i, i + PAGES_PER_MESSAGE);
      let t = performance.now();
      // Before the freeze a block is copied once, into the shadow, and sent from there; after it the
      // guest's memory no longer changes and is sent as it is (nothing needs the shadow any more).
      const batch = final ? shadow.view(memory, part) : shadow.take(memory, part);
      t = add(final ? 'copy' : 'precopyCopy', t);
      const codec = codecs.choose(final);
      const body = packPages(batch, codec);
      const compressMs = performance.now() - t;
      t = add(final ? 'compress' : 'precopyCompress', t);
      const header: PeerHeader = {
        type: 'pages',
        round,
        final,
        byteLength: memory.byteLength,
        block: batch.block,
        count: batch.count,
        codec,
        rawBytes: batch.rawBytes,
      };
      const before = channel?.bytesSent ?? 0;
      await (channel as PeerChannel).send(header, body, { damage, hash: codec === 'none' ? batch.hash : undefined });
      const sendMs = performance.now() - t;
      add(final ? 'send' : 'precopySend', t);
      sent.bytes += (channel?.bytesSent ?? 0) - before;
      sent.blocks += batch.count;
      const wireBytes = body.reduce((sum, b) => sum + b.length, 0);
      codecs.record(codec, batch.rawBytes, wireBytes, codec === 'none' ? 0 : compressMs, sendMs);
      if (failpoint('migrate.source.cutPeer') && final) (channel as PeerChannel).destroy();
    }
    return sent;
  };
  /**
   * Round 0 of pre-copy, which finds most of memory changed: scanned a slice at a time, each
   * slice's changes sent before the next is scanned. Returns the pages it sent.
   */
  const firstRound = async (): Promise<number> => {
    let pages = 0;
    for (let from = 0; from < source.heapEnd() / PAGE_SIZE; from += FIRST_ROUND_SLICE_PAGES) {
      stillWanted();
      const scanned = performance.now();
      const dirty = shadow.dirty(source.memoryView(), from, from + FIRST_ROUND_SLICE_PAGES);
      add('precopyScan', scanned);
      if (dirty.length === 0) continue;
      stats.precopyBytes += (await sendPages(dirty, 0, false, pages === 0)).bytes;
      pages += dirty.length;
    }
    return pages;
  };
  // A connection kept from a move before, or one on its way while the shadow is made.
  const target = `${message.target.address}:${message.target.peerPort}`;
  const kept = ctx.peers?.take(target);
  const connect = (): Promise<PeerChannel> => connectPeer(message.target.address, message.target.peerPort, timeout);
  const connecting = kept ? Promise.resolve(kept) : connect();
  connecting.catch(() => {}); // awaited below; a failure there is the connect step's
  let shadow: PageShadow;
  /** Asked for, and worth it: all of memory would take longer to send than the tail pre-copy leaves. */
  let precopy: boolean;
  let offer: ReturnType<MoveSource['offer']>;
  try {
    // With pre-copy the shadow will hold all of memory: one buffer at the size memory is now.
    const memory = source.memoryView();
    const bytes = memory.byteLength;
    // Round 0 would send what differs from the template: when the link to this target is known to
    // send that in little time, the pause does. (Unmeasured, round 0 runs, and measures it.)
    const round0IsSmall = (): boolean => {
      const sample = new PageShadow(source.base).sampleDirty(
        memory,
        PRECOPY_SAMPLE_STRIDE,
        source.heapEnd() / PAGE_SIZE,
      );
      return small(sample * PAGE_SIZE);
    };
    precopy = message.precopy && !(codecs.measured && round0IsSmall());
    shadow = new PageShadow(source.base, precopy ? (ctx.shadows?.take(bytes) ?? Buffer.alloc(bytes)) : undefined);
    lease.shadow = shadow;
    lease.precopy = precopy;
    offer = source.offer();
  } catch (err) {
    void connecting.then(
      (c) => c.destroy(),
      () => {},
    );
    throw err;
  }
  // The proxy may abort before the freeze (an ack came too late, the target gave up): stop then.
  let abortedEarly = false;
  void ctx.decided.then((d) => (abortedEarly = d === 'aborted'));
  const stillWanted = (): void => {
    if (abortedEarly) throw new RoamError('ROAM_ERR_MIGRATION', 'the proxy aborted the move');
  };

  try {
    // Steps 2-3: the direct connection, and the target's ack (its sandbox is ready when it says so).
    channel = await step('connect', () => connecting);
    channel.bytesSent = 0; // (a kept connection counts its earlier moves' too)
    let t = add('connect', t0);
    ctx.progress({ step: 'connect' });
    const offerOn = async (peer: PeerChannel): Promise<void> => {
      const memory = source.memoryView();
      await peer.send(
        {
          type: 'offer',
          migrationId: message.migrationId,
          token: message.token,
          guestId: guest.id,
          name: guest.name,
          roamVersion: ROAM_VERSION,
          ...offer.fields,
          memoryBytes: memory.byteLength,
          precopy,
        },
        offer.body,
      );
      // Without pre-copy the freeze comes next: the target holds its turns right after it
      // accepts, and both words come back together (one round trip less).
      if (!precopy) await peer.send({ type: 'freezing' });
      const answer = await peer.next(timeout, 'answer to the offer');
      if (answer.header.type === 'fail')
        throw new RoamError('ROAM_ERR_MIGRATION', `the target refused: ${answer.header.message}`);
      if (answer.header.type !== 'accept')
        throw new RoamError('ROAM_ERR_PEER_PROTOCOL', `expected accept, got ${answer.header.type}`);
    };
    const connected = channel;
    channel = await step('offer', () => onKeptOrNew(connected, kept !== undefined, connect, offerOn));
    t = add('offer', t);

    // Pre-copy: while the guest runs, send what changed since the last round.
    if (precopy) {
      await step('precopy', async () => {
        const first = performance.now();
        let previous = await firstRound();
        stats.precopyRounds = 1;
        ctx.progress({
          step: 'precopy',
          round: 0,
          pages: previous,
          bytes: stats.precopyBytes,
          ms: performance.now() - first,
        });
        for (let round = 1; round < PRECOPY_MAX_ROUNDS; round++) {
          // Let the guest run a turn between rounds (what it changes is the next round's work).
          await new Promise((resolve) => setImmediate(resolve));
          stillWanted();
          const scanned = performance.now();
          // A sample first: when it finds little left, the scan after the freeze finds the rest.
          const used = source.heapEnd() / PAGE_SIZE;
          if (small(shadow.sampleDirty(source.memoryView(), PRECOPY_SAMPLE_STRIDE, used) * PAGE_SIZE)) {
            add('precopyScan', scanned);
            break;
          }
          const dirty = shadow.dirty(source.memoryView(), 0, used);
          add('precopyScan', scanned);
          // Not converging (the guest changes pages as fast as they go): the pause sends them.
          if (dirty.length >= previous) break;
          previous = dirty.length;
          const t = performance.now();
          const { bytes } = await sendPages(dirty, round, false);
          stats.precopyBytes += bytes;
          stats.precopyRounds = round + 1;
          ctx.progress({ step: 'precopy', round, pages: dirty.length, bytes, ms: performance.now() - t });
        }
      });
      add('precopy', t);
    }
    // The target holds its guests' turns first (peer-wire.ts, `freezing`): the pause then waits
    // for no turn of theirs that was running. The guest runs here meanwhile.
    const asked = performance.now();
    const peer = channel;
    await step('freeze', async () => {
      if (precopy) await peer.send({ type: 'freezing' }); // (else sent with the offer)
      const answer = await peer.next(timeout, 'word that the target holds its turns');
      if (answer.header.type === 'fail')
        throw new RoamError('ROAM_ERR_MIGRATION', `the target gave up: ${answer.header.message}`);
      if (answer.header.type !== 'holding')
        throw new RoamError('ROAM_ERR_PEER_PROTOCOL', `expected holding, got ${answer.header.type}`);
    });
    add('hold', asked);
  } catch (err) {
    // Nothing was frozen: the guest never stopped. The proxy still has to know the move is off.
    const failed = err as StepError;
    channel?.destroy();
    await ctx.abort(failed.step, failed.reason);
    return result('rolled-back', null, { step: failed.step, error: failed.reason });
  }

  // Steps 4-5: freeze, send the host-side state and the pages still different. From the freeze
  // on, the host's other guests take no turns until the move is over: the pause does not wait
  // behind them.
  let committedEarly = false;
  let releaseTurns: (() => void) | undefined;
  try {
    await new Promise((resolve) => setImmediate(resolve)); // a decision already on its way lands first
    if (abortedEarly) {
      channel.destroy();
      const error = new RoamError('ROAM_ERR_MIGRATION', 'the proxy aborted the move');
      await ctx.abort('freeze', error); // says so: the guest never stopped here
      return result('rolled-back', null, { step: 'freeze', error });
    }
    frozenAt = performance.now();
    releaseTurns = ctx.turns?.hold();
    const opening = source.connectsInFlight();
    const host = await source.freezeForMove();
    // Renewed: the freeze may have waited up to 2 s for connections still opening.
    if (ctx.turns) releaseTurns = ctx.turns.renew(releaseTurns);
    let t = add('freeze', frozenAt);
    if (opening > 0) {
      ctx.log(
        `waited ${Math.round(t - frozenAt)} ms after the freeze for ${opening} outbound connection(s) of ${guest.name} still opening`,
      );
    }
    // (A lost word leaves the proxy opening new connections here, which this host refuses for now.)
    if (failpoint('migrate.source.freezeProgress')?.kind !== 'drop') ctx.progress({ step: 'freeze' });
    await reach('migrate.source.afterFreeze');
    await step('transfer', async () => {
      // The host state first: the target rebuilds it while the pages still different are on their way.
      t = performance.now();
      const stateJson = Buffer.from(JSON.stringify(host.state), 'utf8');
      const files = host.files;
      let before = channel?.bytesSent ?? 0;
      await channel.send(
        {
          type: 'state',
          meta: {
            guestId: host.meta.guestId,
            name: host.meta.name,
            roamVersion: host.meta.roamVersion,
            base: host.meta.base ?? offer.fields.base,
            createdAt: host.meta.createdAt,
          },
          stateBytes: stateJson.length,
          filesBytes: files.length,
        },
        Buffer.concat([stateJson, files]),
        { damage },
      );
      stats.finalBytes += (channel?.bytesSent ?? 0) - before;
      t = add('state', t);
      // Frozen, the heap's end is final: the pages past it are in use on neither side. The scan
      // stops at each message's worth of changed pages, which go out while it scans on.
      const end = source.heapEnd() / PAGE_SIZE;
      const last = { pages: 0, blocks: 0 };
      for (let from = 0; from < end;) {
        t = performance.now();
        const dirty = shadow.dirty(source.memoryView(), from, end, PAGES_PER_MESSAGE);
        add('scan', t);
        from = dirty.length === PAGES_PER_MESSAGE ? (dirty[dirty.length - 1] ?? end) + 1 : end;
        if (dirty.length === 0) continue;
        const sent = await sendPages(dirty, stats.precopyRounds, true);
        stats.finalBytes += sent.bytes;
        last.pages += dirty.length;
        last.blocks += sent.blocks;
      }
      before = channel?.bytesSent ?? 0;
      await channel.send({ type: 'end', count: last.blocks });
      stats.finalBytes += (channel?.bytesSent ?? 0) - before;
      t = performance.now();
      await reach('migrate.source.afterTransfer');
      ctx.progress({
        step: 'transfer',
        pages: last.pages,
        bytes: stats.finalBytes,
        ms: performance.now() - (frozenAt ?? 0),
      });
    });
    // Steps 6-8 happen on the target and the proxy; the target says when the guest runs there.
    const resumed = channel.next(timeout * 4, 'word that the guest resumed').then(
      (m) => {
        if (m.header.type === 'resumed') return performance.now();
        const why = m.header.type === 'fail' ? `the target failed: ${m.header.message}` : `got ${m.header.type}`;
        const at = m.header.type === 'fail' ? (m.header.step as MigrationStep) : 'resume';
        throw new StepError(at, new RoamError('ROAM_ERR_MIGRATION', why));
      },
      (err: Error) => {
        throw new StepError('resume', err);
      },
    );
    resumed.catch(() => {}); // awaited below, or not needed when the proxy decides first
    const first = await Promise.race([
      resumed.then((at) => ({ kind: 'resumed' as const, at })),
      ctx.decided.then((d) => ({ kind: 'decided' as const, d })),
    ]);
    if (first.kind === 'decided' && first.d === 'aborted') {
      throw new StepError('commit', new RoamError('ROAM_ERR_MIGRATION', 'the proxy aborted the move'));
    }
    // Committed (the proxy's word, or the target's, which resumes only after the commit).
    committedEarly = true;
    drop(ctx);
    // The pause ends when the target says the guest runs; its word may come just after the proxy's.
    const resumedAt = first.kind === 'resumed' ? first.at : await resumed.catch(() => undefined);
    if (resumedAt !== undefined) timings['wait'] = resumedAt - t;
    // At rest (the target waits for another offer on it): kept for the next move there.
    if (resumedAt !== undefined && ctx.peers) ctx.peers.give(target, channel);
    else channel.close();
    return result('moved', resumedAt === undefined ? null : resumedAt - frozenAt);
  } catch (err) {
    const failed = err instanceof StepError ? err : new StepError('transfer', err as Error);
    channel?.destroy();
    // The proxy is the arbiter: it either aborts (we resume) or has already committed (we drop).
    const decision = committedEarly ? 'committed' : await ctx.abort(failed.step, failed.reason);
    if (decision === 'committed') {
      drop(ctx);
      return result('moved', null, { step: failed.step, error: failed.reason });
    }
    releaseTurns?.();
    guest.resume();
    ctx.log(`move of ${guest.name} rolled back at ${failed.step}: ${failed.reason.message}`);
    return result('rolled-back', null, { step: failed.step, error: failed.reason });
  } finally {
    releaseTurns?.();
  }
}

function drop(ctx: SourceContext): void {
  ctx.release();
  ctx.guest.guest.stop('killed', 0);
}

function connectPeer(host: string, port: number, timeoutMs: number): Promise<PeerChannel> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new RoamError('ROAM_ERR_TIMEOUT', `could not reach the target at ${host}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(PeerChannel.connected(socket));
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(new RoamError('ROAM_ERR_MIGRATION', `could not reach the target at ${host}:${port}: ${err.message}`));
    });
  });
}
