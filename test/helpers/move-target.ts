/**
 * A move's target side in this process (src/migration/target.ts `acceptMove` on a real loopback
 * socket), offered the smallest guest there is: a WebAssembly guest whose module is empty, which
 * needs no sandbox. Tests speak the peer protocol to it as a source would.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import type { TunnelNetwork } from '../../src/controller/tunnel-network.js';
import { PAGE_SIZE } from '../../src/guest/image/format.js';
import { WASM_BASE } from '../../src/migration/movable.js';
import { PeerChannel } from '../../src/migration/peer-channel.js';
import type { OfferMessage } from '../../src/migration/peer-wire.js';
import { acceptMove, type TargetContext } from '../../src/migration/target.js';
import { ROAM_VERSION } from '../../src/version.js';

/** The empty WebAssembly module. */
export const EMPTY_MODULE = Buffer.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);

export const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** An offer of guest `g1` ("job", move `m1`) whose module is `EMPTY_MODULE`, unless `wasm` says otherwise. */
export function wasmOffer(wasm: { moduleBytes: number; sha256: string } = emptyModule()): OfferMessage {
  return {
    type: 'offer',
    migrationId: 'm1',
    token: 't'.repeat(32),
    guestId: 'g1',
    name: 'job',
    roamVersion: ROAM_VERSION,
    kind: 'wasm',
    base: WASM_BASE,
    wasm: { ...wasm, memoryLimit: 4 * PAGE_SIZE, sliceMs: 20 },
    memoryBytes: PAGE_SIZE,
  };
}

function emptyModule(): { moduleBytes: number; sha256: string } {
  return { moduleBytes: EMPTY_MODULE.length, sha256: sha256(EMPTY_MODULE) };
}

/**
 * A target expecting `wasmOffer()`'s move, whose commit and adoption fail the test (its moves are
 * not to get that far); `failed` collects each failure as "step: message". `extra` adds or replaces.
 */
export function targetContext(failed: string[], extra: Partial<TargetContext> = {}): TargetContext {
  return {
    expectation: (migrationId) => ({
      migrationId,
      guestId: 'g1',
      name: 'job',
      token: 't'.repeat(32),
      stepTimeoutMs: 5000,
    }),
    network: () => ({}) as TunnelNetwork, // a WebAssembly guest's is used only once it is assembled
    commit: () => assert.fail('no commit before the transfer is whole'),
    adopt: () => assert.fail('nothing to adopt'),
    sandbox: () => assert.fail('a WebAssembly guest needs no sandbox'),
    failed: (_id, step, err) => failed.push(`${step}: ${err.message}`),
    log: () => {},
    ...extra,
  };
}

/** Serves `ctx` on a loopback port: `moves` are the outcomes of the moves taken so far. */
export async function serveTarget(ctx: TargetContext): Promise<{
  moves: Array<Promise<boolean>>;
  /** A source's channel to it, offered `wasmOffer()` and accepted. */
  offered(): Promise<PeerChannel>;
  close(): void;
}> {
  const moves: Array<Promise<boolean>> = [];
  const server = net.createServer((socket) => moves.push(acceptMove(PeerChannel.accept(socket), ctx)));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    moves,
    offered: async () => {
      const socket = net.connect(port, '127.0.0.1');
      await once(socket, 'connect');
      const channel = PeerChannel.connected(socket);
      await channel.send(wasmOffer(), EMPTY_MODULE);
      assert.equal((await channel.next(5000, 'accept')).header.type, 'accept');
      return channel;
    },
    close: () => server.close(),
  };
}
