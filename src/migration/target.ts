/**
 * The target side of a move (paper section IV-D, steps 3 and 6-7): take the source's offer on the
 * peer port if the proxy said to expect it, prepare the sandbox before the source freezes, write
 * the pages into it as they come, rebuild the guest from its state, frozen, and ask the proxy to
 * commit. Only once the proxy has recorded the switch does the guest run here.
 */
import { timingSafeEqual } from 'node:crypto';
import type { TurnGate } from '../guest/turn-gate.js';
import { RoamError, isRoamError } from '../errors.js';
import { reach } from '../common/failpoints.js';
import type { Guest } from '../guest/guest.js';
import type { WasmGuest } from '../wasm/guest.js';
import type { TunnelNetwork } from '../controller/tunnel-network.js';
import type { MigrationStep } from '../wire/index.js';
import { prepareLanding, type Landing, type MovedContents, type SandboxMaker } from './movable.js';
import { formatTimings, pageSink } from './pages.js';
import type { PeerChannel } from './peer-channel.js';
import { TARGET_IDLE_MS } from './peer-pool.js';
import type { OfferMessage, PeerMessage } from './peer-wire.js';
import type { Decision } from './source.js';

/** A move the proxy announced (`migrateIn`): only an offer that matches one is taken. */
export interface Expectation {
  migrationId: string;
  guestId: string;
  name: string;
  token: string;
  stepTimeoutMs: number;
}

export interface TargetContext {
  /** Takes the expectation for a migration id (each is good for one offer). */
  expectation(migrationId: string): Expectation | undefined;
  /** The network the moved guest gets on this host. */
  network(guestId: string): TunnelNetwork;
  /** Asks the proxy to commit; resolves with its decision. */
  commit(migrationId: string, streams: number[]): Promise<Decision>;
  /** The guest is ours (committed): run it here and carry its streams on. */
  adopt(guest: Guest | WasmGuest, network: TunnelNetwork): void;
  /** A sandbox for a JavaScript guest (a spare prepared ahead of time when there is one): see `SpareSandbox`. */
  sandbox: SandboxMaker;
  /** Tells the proxy this side gave up. */
  failed(migrationId: string, step: MigrationStep, err: Error): void;
  log(line: string): void;
  /**
   * This host's hold on guest turns: closed when the source says it freezes the guest next (or at
   * the latest at its state) until the guest resumes here, so that the pause does not wait behind
   * the guests here (TurnGate). The moved guest is built with it too.
   */
  turns?: TurnGate;
}

const OFFER_TIMEOUT_MS = 10_000;

class TargetError extends Error {
  constructor(
    readonly step: MigrationStep,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The state message's parts, checked against its header. */
function movedContents(message: PeerMessage): MovedContents {
  const h = message.header;
  if (h.type !== 'state' || h.stateBytes + h.filesBytes !== message.body.length) {
    throw new TargetError('restore', 'ROAM_ERR_IMAGE_MALFORMED', 'the state message does not add up');
  }
  let state: unknown;
  try {
    state = JSON.parse(Buffer.from(message.body.subarray(0, h.stateBytes)).toString('utf8'));
  } catch {
    throw new TargetError('restore', 'ROAM_ERR_IMAGE_MALFORMED', 'the guest state is not JSON');
  }
  return { meta: h.meta, state, files: message.body.subarray(h.stateBytes) };
}

/**
 * Serves a peer connection (`PeerChannel.accept`): one move after another, for as long as the
 * source keeps it open between them (peer-pool.ts) and sends an offer within TARGET_IDLE_MS.
 * `moveOver` is called after each move (or wait for one) is over.
 */
export async function serveMoves(channel: PeerChannel, ctx: TargetContext, moveOver: () => void): Promise<void> {
  for (let first = true; ; first = false) {
    const again = await acceptMove(channel, ctx, first);
    moveOver();
    if (!again) return;
  }
}

/**
 * Serves one move on `channel`; resolves with whether the connection can carry another (the move
 * went through). `first`: the connection is new, and its offer is due at once.
 */
export async function acceptMove(channel: PeerChannel, ctx: TargetContext, first = true): Promise<boolean> {
  let offer: OfferMessage;
  let offerBody: Uint8Array;
  let expected: Expectation | undefined;
  try {
    let next: PeerMessage;
    try {
      next = await channel.next(first ? OFFER_TIMEOUT_MS : TARGET_IDLE_MS, 'offer');
    } catch (err) {
      // A kept connection that the source closed, or left idle: let it go without a word.
      if (!first) {
        channel.close();
        return false;
      }
      throw err;
    }
    if (next.header.type !== 'offer') throw new Error(`expected an offer, got ${next.header.type}`);
    offer = next.header;
    offerBody = next.body;
    expected = ctx.expectation(offer.migrationId);
    if (!expected || !sameToken(expected.token, offer.token) || expected.guestId !== offer.guestId) {
      throw new Error('no such move was announced by the proxy, or the token is wrong');
    }
  } catch (err) {
    // Not an authenticated source: say no and say nothing to the proxy.
    await channel
      .send({ type: 'fail', step: 'offer', code: 'ROAM_ERR_UNAUTHORIZED', message: (err as Error).message })
      .catch(() => {});
    channel.close();
    return false;
  }
  const { migrationId } = offer;
  const timeout = expected.stepTimeoutMs;
  let landing: Landing | undefined;
  let guest: Guest | WasmGuest | undefined;
  let step: MigrationStep = 'offer';
  // Milliseconds per step on this side: prepare (the sandbox, before the accept), precopy (until
  // the state message has arrived: pre-copy rounds, the freeze), state (its JSON parsed and the
  // guest's host side rebuilt, while the final pages keep coming), apply (until the end of the
  // final pages: received and copied, or decompressed), assemble (the sandbox attached: the guest
  // is whole, frozen), commit (the proxy's round trip), resume (adopt, resume, the word to the source).
  const timings: Record<string, number> = {};
  let releaseTurns: (() => void) | undefined;
  let t = performance.now();
  const lap = (key: string): void => {
    const now = performance.now();
    timings[key] = (timings[key] ?? 0) + (now - t);
    t = now;
  };
  try {
    // Prepared before the source freezes (movable.ts): a JavaScript guest's sandbox holding the
    // runtime template, or a WebAssembly guest's compiled module.
    t = performance.now();
    landing = await prepareLanding(offer, offerBody, ctx.sandbox);
    await reach('migrate.target.beforeAccept');
    // Page messages land in the landing's memory as they arrive, in the order they come: plain
    // ones straight from the socket (no buffer holds them), compressed ones once whole. If one
    // turns out damaged, the move fails and the landing is dropped with what it got.
    const ready = landing;
    channel.streamBodies((h, bodyBytes) =>
      h.type === 'pages' ? pageSink(h, bodyBytes, ready.memory(h.byteLength)) : undefined,
    );
    await channel.send({ type: 'accept', migrationId, prepareMs: performance.now() - t });
    lap('prepare');

    // Pre-copy rounds until the freeze; then the state, the final pages and their end.
    step = 'precopy';
    let finalBlocks = 0;
    const network = ctx.network(offer.guestId);
    for (;;) {
      const message = await channel.next(timeout * 4, 'memory pages');
      const h = message.header;
      if (h.type === 'pages' && h.final === (step === 'transfer')) {
        finalBlocks += h.final ? h.count : 0;
        await reach(`migrate.target.${h.final ? 'final' : 'precopy'}Pages`);
      } else if (h.type === 'freezing' && step === 'precopy' && releaseTurns === undefined) {
        // Taken after any turn already running here: the source freezes only once this is held.
        releaseTurns = ctx.turns?.hold() ?? ((): void => {});
        await reach('migrate.target.beforeHolding');
        await channel.send({ type: 'holding' });
      } else if (h.type === 'state' && step === 'precopy') {
        lap('precopy');
        // Renewed: the hold taken at `freezing` may have run out (the source's freeze waits up to
        // 2 s for a connection still opening).
        if (ctx.turns) releaseTurns = ctx.turns.renew(releaseTurns);
        step = 'restore'; // what goes wrong here is the guest's state
        await landing.state(movedContents(message), network, ctx.turns);
        step = 'transfer';
        lap('state');
      } else if (h.type === 'end' && step === 'transfer') {
        if (h.count !== finalBlocks) {
          throw new TargetError('transfer', 'ROAM_ERR_PEER_PROTOCOL', `${finalBlocks} final blocks came of ${h.count}`);
        }
        lap('apply');
        break;
      } else if (h.type === 'fail') throw new TargetError(step, h.code, `the source gave up: ${h.message}`);
      else throw new TargetError(step, 'ROAM_ERR_PEER_PROTOCOL', `unexpected ${h.type} during the ${step}`);
    }

    step = 'restore';
    guest = await landing.assemble();
    landing = undefined; // the guest owns what it prepared
    lap('assemble');
    const t0 = performance.now();

    // Step 7: the proxy records the switch (the commit point), then the guest runs here.
    step = 'commit';
    await reach('migrate.target.beforeCommit');
    const decision = await ctx.commit(migrationId, network.restoredStreamIds());
    lap('commit');
    if (decision !== 'committed') {
      guest.stop('killed', 0);
      channel.destroy();
      ctx.log(`move ${migrationId} of ${offer.name} was aborted by the proxy; dropped the copy here`);
      return false;
    }
    step = 'resume';
    ctx.adopt(guest, network);
    // The word goes first, then the guest runs: its first turn handles what was held during the
    // pause (the guest's work, not the move's), and the word takes longer to arrive than that.
    const word = channel.send({ type: 'resumed', restoreMs: performance.now() - t0 }).catch(() => {});
    releaseTurns?.();
    guest.resume();
    await reach('migrate.target.afterResume');
    await word;
    lap('resume');
    const kept = first ? '' : ', on a kept peer connection';
    ctx.log(`took ${offer.name} in (move ${migrationId}${kept}); ms: ${formatTimings(timings)}`);
    channel.streamBodies(undefined);
    return true;
  } catch (err) {
    const code = err instanceof TargetError ? err.code : isRoamError(err) ? err.code : 'ROAM_ERR_MIGRATION';
    const failedStep = err instanceof TargetError ? err.step : step;
    const message = (err as Error).message;
    guest?.stop('killed', 0);
    landing?.dispose();
    ctx.log(`move ${migrationId} of ${offer.name} failed here at ${failedStep}: ${message}`);
    ctx.failed(migrationId, failedStep, new RoamError('ROAM_ERR_MIGRATION', `${code}: ${message}`));
    await channel.send({ type: 'fail', step: failedStep, code, message: message.slice(0, 16_000) }).catch(() => {});
    channel.close();
    return false;
  } finally {
    releaseTurns?.();
  }
}
