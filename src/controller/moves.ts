/**
 * The controller's part in live migration: it serves the peer port (where sources offer guests),
 * keeps the moves the proxy announced, runs the source side when the proxy asks, and routes the
 * proxy's decisions (commit or abort) to whichever side waits for them.
 */
import net from 'node:net';
import { failpoint, reach } from '../common/failpoints.js';
import type { Guest } from '../guest/guest.js';
import type { TurnGate } from '../guest/turn-gate.js';
import type { WasmGuest } from '../wasm/guest.js';
import type { MoveSource } from '../migration/movable.js';
import type { HostGuest } from './hosted.js';
import { migrateOut, type Decision, type MoveResult } from '../migration/source.js';
import { serveMoves, type Expectation } from '../migration/target.js';
import type { ControlMessage, MigrateInMessage, MigrateMessage, MigrationStep } from '../wire/index.js';
import type { TunnelNetwork } from './tunnel-network.js';
import { CodecChooser, ShadowBuffers, formatTimings } from '../migration/pages.js';
import { PeerChannel } from '../migration/peer-channel.js';
import { PeerPool } from '../migration/peer-pool.js';
import { SpareSandbox } from '../migration/spare.js';
import { rehearseMoveIn } from '../migration/rehearsal.js';
import { DEFAULT_LIMITS } from '../guest/sandbox/sandbox.js';

/** A move the proxy announced is good for this long without an offer. */
const EXPECTATION_TTL_MS = 60_000;
/** How long a side waits for the proxy's decision before it stops waiting (and says so). */
const DECISION_TIMEOUT_MS = 5 * 60_000;
/** Targets whose link measurements are kept (more, and they are all forgotten). */
const MAX_TARGETS_REMEMBERED = 256;

export interface MoveHost {
  control(message: ControlMessage): void;
  guest(guestId: string): { guest: HostGuest; movable: MoveSource; network: TunnelNetwork } | undefined;
  /** The guest left for another host: forget it here, and its streams without a reset. */
  release(guestId: string): void;
  /** A guest moved here: run it and carry its streams on. */
  adopt(guest: Guest | WasmGuest, network: TunnelNetwork): void;
  network(guestId: string): TunnelNetwork;
  log(line: string, fields?: { guest?: string; migration?: string; level?: 'info' | 'warn' | 'error' }): void;
  /** The host's hold on its guests' turns, closed during a move's pause (TurnGate). */
  turns: TurnGate;
}

interface Waiting {
  resolve: (decision: Decision) => void;
  /** What to say again to the proxy after a reconnect, until it decides. */
  ask: ControlMessage | undefined;
}

export class Moves {
  private readonly expected = new Map<string, { expectation: Expectation; timer: NodeJS.Timeout }>();
  private readonly decisions = new Map<string, Waiting>();
  private readonly early = new Map<string, Decision>();
  /** Guests being moved away from here, and when that move is over. */
  private readonly leaving = new Map<string, Promise<void>>();
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  /** Per target (address and peer port): what moves there measured of the link, for the page codec. */
  private readonly codecs = new Map<string, CodecChooser>();

  /** A sandbox ready for the next guest that moves here. */
  private readonly spare = new SpareSandbox();
  /** The last move's pre-copy shadow, kept warm for the next move out (a drain makes several). */
  private readonly shadows = new ShadowBuffers();
  /** Peer connections to targets, kept open between moves. */
  private readonly peers = new PeerPool();
  /** Ends the rehearsal of a move in (rehearsal.ts) if the host closes while it runs. */
  private readonly closing = new AbortController();

  constructor(private readonly host: MoveHost) {}

  /** Listens on the peer port; resolves with the port (0 picks a free one). */
  listen(port: number, bind: string): Promise<number> {
    const server = net.createServer((accepted) => {
      const channel = PeerChannel.accept(accepted);
      const { socket } = channel;
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      void serveMoves(
        channel,
        {
          expectation: (id) => this.takeExpectation(id),
          network: (guestId) => this.host.network(guestId),
          commit: (migrationId, streams) => this.decide(migrationId, { type: 'migrateCommit', migrationId, streams }),
          adopt: (guest, network) => this.host.adopt(guest, network),
          sandbox: (limits, need) => this.spare.take(limits, need),
          failed: (migrationId, step, err) =>
            this.host.control({
              type: 'migrateFailed',
              migrationId,
              step,
              code: 'ROAM_ERR_MIGRATION',
              message: err.message,
            }),
          log: (line) => this.host.log(line),
          turns: this.host.turns,
        },
        () => this.spare.refillSoon(), // the move that may have taken it is over
      );
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, bind, () => {
        server.off('error', reject);
        resolve((server.address() as net.AddressInfo).port);
        // Ready for moves: the code that takes a guest in compiled, then the first spare.
        void rehearseMoveIn(DEFAULT_LIMITS, this.closing.signal)
          .catch((err: unknown) =>
            this.host.log(`rehearsing a move in failed (the first one will pause longer): ${String(err)}`, {
              level: 'warn',
            }),
          )
          .finally(() => this.spare.refillSoon());
      });
    });
  }

  /** Whether a guest is being moved away from here. */
  isLeaving(guestId: string): boolean {
    return this.leaving.has(guestId);
  }

  onControl(message: ControlMessage): boolean {
    switch (message.type) {
      case 'migrate':
        void this.moveOut(message);
        return true;
      case 'migrateIn':
        this.expect(message);
        return true;
      case 'migrateCommitted':
        this.settle(message.migrationId, 'committed');
        return true;
      case 'migrateAborted':
        this.settle(message.migrationId, 'aborted');
        return true;
      default:
        return false;
    }
  }

  /** After a reconnect: ask again what the proxy has not answered yet. */
  resend(): void {
    for (const waiting of this.decisions.values()) if (waiting.ask) this.host.control(waiting.ask);
  }

  close(): void {
    this.closing.abort();
    this.spare.close();
    this.shadows.close();
    this.peers.close();
    this.server?.close();
    for (const socket of this.sockets) socket.destroy();
    for (const { timer } of this.expected.values()) clearTimeout(timer);
    this.expected.clear();
  }

  private expect(message: MigrateInMessage): void {
    const timer = setTimeout(() => this.expected.delete(message.migrationId), EXPECTATION_TTL_MS).unref();
    this.expected.set(message.migrationId, {
      expectation: {
        migrationId: message.migrationId,
        guestId: message.guestId,
        name: message.name,
        token: message.token,
        stepTimeoutMs: message.stepTimeoutMs,
      },
      timer,
    });
  }

  private takeExpectation(id: string): Expectation | undefined {
    const entry = this.expected.get(id);
    if (!entry) return undefined;
    clearTimeout(entry.timer);
    this.expected.delete(id);
    return entry.expectation;
  }

  private async moveOut(message: MigrateMessage): Promise<void> {
    // A move just rolled back may still be finishing here (the proxy heard first): let it.
    const previous = this.leaving.get(message.guestId);
    if (previous) {
      await Promise.race([previous, new Promise((resolve) => setTimeout(resolve, message.stepTimeoutMs).unref())]);
    }
    const hosted = this.host.guest(message.guestId);
    this.host.log(
      `moving ${hosted?.guest.name ?? message.guestId} to ${message.target.name} (move ${message.migrationId})`,
      { guest: message.guestId, migration: message.migrationId },
    );
    if (!hosted || hosted.guest.state !== 'running' || this.leaving.has(message.guestId)) {
      const why = !hosted
        ? 'the guest is not on this host'
        : this.leaving.has(message.guestId)
          ? 'the guest is already moving'
          : `the guest is ${hosted.guest.state}`;
      this.host.control({
        type: 'migrateAbort',
        migrationId: message.migrationId,
        step: 'ack',
        code: 'ROAM_ERR_MIGRATION',
        message: why,
      });
      return;
    }
    await reach('migrate.source.beforeAck');
    if (failpoint('migrate.source.ack')?.kind !== 'drop') {
      this.host.control({ type: 'migrateAck', migrationId: message.migrationId });
    }
    let over!: () => void;
    this.leaving.set(message.guestId, new Promise<void>((resolve) => (over = resolve)));
    const decided = this.decide(message.migrationId, undefined);
    const codecs = this.codecsFor(`${message.target.address}:${message.target.peerPort}`);
    let result: MoveResult;
    try {
      result = await migrateOut(message, {
        guest: hosted.movable,
        codecs,
        shadows: this.shadows,
        peers: this.peers,
        turns: this.host.turns,
        progress: (update) =>
          this.host.control({ type: 'migrateProgress', migrationId: message.migrationId, ...update }),
        abort: (step: MigrationStep, err: Error) => {
          const ask: ControlMessage = {
            type: 'migrateAbort',
            migrationId: message.migrationId,
            step,
            code: 'ROAM_ERR_MIGRATION',
            message: err.message.slice(0, 16_000),
          };
          const waiting = this.decisions.get(message.migrationId);
          if (waiting) waiting.ask = ask;
          this.host.control(ask);
          return decided;
        },
        decided,
        release: () => this.host.release(message.guestId),
        log: (line) => this.host.log(line, { guest: message.guestId, migration: message.migrationId, level: 'warn' }),
      });
    } finally {
      this.leaving.delete(message.guestId);
      over();
      this.decisions.delete(message.migrationId);
    }
    if (result.outcome === 'moved') {
      // Its memory is free now: the spare is made on it, for the next guest of its size to arrive.
      const left = hosted.movable.releaseMemory();
      if (left) this.spare.guestLeft(left.memory, left.limits);
      this.host.log(
        `moved ${hosted.guest.name} to ${message.target.name}${result.pauseMs !== null ? ` (pause ${result.pauseMs.toFixed(1)} ms)` : ''}; ms: ${formatTimings(result.timings)}`,
        { guest: message.guestId, migration: message.migrationId },
      );
      this.host.control({
        type: 'migrateDone',
        migrationId: message.migrationId,
        pauseMs: result.pauseMs,
        totalMs: result.totalMs,
        bytesSent: result.bytesSent,
        precopyRounds: result.precopyRounds,
        precopyBytes: result.precopyBytes,
        finalBytes: result.finalBytes,
      });
    }
  }

  private codecsFor(target: string): CodecChooser {
    let codecs = this.codecs.get(target);
    if (!codecs) {
      if (this.codecs.size >= MAX_TARGETS_REMEMBERED) this.codecs.clear();
      codecs = new CodecChooser();
      this.codecs.set(target, codecs);
    }
    return codecs;
  }

  /** Waits for the proxy's decision on a move (sending `ask` first, and again after reconnects). */
  private decide(migrationId: string, ask: ControlMessage | undefined): Promise<Decision> {
    const early = this.early.get(migrationId);
    if (early) {
      this.early.delete(migrationId);
      return Promise.resolve(early);
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.decisions.delete(migrationId);
        this.host.log(
          `no decision from the proxy on move ${migrationId} in ${DECISION_TIMEOUT_MS / 1000} s; treating it as aborted`,
        );
        resolve('aborted');
      }, DECISION_TIMEOUT_MS).unref();
      this.decisions.set(migrationId, {
        resolve: (d) => {
          clearTimeout(timer);
          resolve(d);
        },
        ask,
      });
      if (ask) this.host.control(ask);
    });
  }

  private settle(migrationId: string, decision: Decision): void {
    const waiting = this.decisions.get(migrationId);
    if (!waiting) {
      // The decision came before anyone here asked (the proxy aborted while we prepared).
      this.early.set(migrationId, decision);
      setTimeout(() => this.early.delete(migrationId), EXPECTATION_TTL_MS).unref();
      if (decision === 'aborted') this.takeExpectation(migrationId);
      return;
    }
    this.decisions.delete(migrationId);
    waiting.resolve(decision);
  }
}
