/**
 * What a move needs of a guest, for both kinds, so that one protocol (source.ts, target.ts) moves
 * JavaScript and WebAssembly guests alike: pages pre-copied against a base the target holds
 * before the first page comes, then the frozen guest's host state.
 *
 * - JavaScript: the base is the runtime template (the target's prepared sandbox holds it), and
 *   the offer carries the sandbox limits.
 * - WebAssembly: the base is all-zero memory (the target's pages land in a zeroed buffer copied
 *   whole into the instance at the end, so the module's data segments cannot leak in), and the
 *   offer's body is the instrumented module. It goes in the offer, not the state message, so the
 *   target compiles it while the guest still runs on the source (compiling is the slow part of a
 *   restore), and so the state message sent during the pause stays small.
 */
import { createHash } from 'node:crypto';
import type { HostGuest } from '../controller/hosted.js';
import type { TunnelNetwork } from '../controller/tunnel-network.js';
import { RoamError } from '../errors.js';
import { Guest, type MovedGuest } from '../guest/guest.js';
import type { ImageContents } from '../guest/image/index.js';
import { PAGE_SIZE } from '../guest/image/format.js';
import type { Sandbox, SandboxLimits } from '../guest/sandbox/sandbox.js';
import type { TurnGate } from '../guest/turn-gate.js';
import { runtimeTemplate } from '../guest/template.js';
import { ROAM_VERSION } from '../version.js';
import { WasmGuest, compileModule } from '../wasm/guest.js';
import type { OfferMessage } from './peer-wire.js';

/** The base a WebAssembly guest's pages are relative to: memory of zeros. */
export const WASM_BASE = 'zero';

/** The offer's fields that depend on the guest's kind. */
export type OfferKindFields = Pick<OfferMessage, 'kind' | 'base' | 'limits' | 'wasm'>;

/** A guest as the source side of a move sees it. */
export interface MoveSource {
  readonly guest: HostGuest;
  /** The offer's kind-specific fields, and its body (the WebAssembly module; empty for JavaScript). */
  offer(): { fields: OfferKindFields; body: Uint8Array };
  /** What the target's memory holds before the first page arrives (pages beyond it are zero). */
  readonly base: Uint8Array;
  /** The live memory (a new view each call: a WebAssembly memory's buffer changes when it grows). */
  memoryView(): Uint8Array;
  /** Pages this far into memory and beyond are not in use (a JavaScript guest's heap ends there). */
  heapEnd(): number;
  /** Freezes the guest and captures its host state (everything but memory); it stays frozen. */
  freezeForMove(): Promise<Omit<ImageContents, 'memory'>>;
  /** Outbound connections still opening (the freeze waits for them). */
  connectsInFlight(): number;
  /** Once the guest moved away and stopped: its memory, for a new sandbox (JavaScript guests only). */
  releaseMemory(): { memory: WebAssembly.Memory; limits: SandboxLimits } | undefined;
}

export function moveSource(guest: Guest | WasmGuest): MoveSource {
  if (guest.kind === 'wasm') {
    const info = guest.moveInfo;
    return {
      guest,
      base: new Uint8Array(0),
      offer: () => ({
        fields: {
          kind: 'wasm',
          base: WASM_BASE,
          wasm: {
            moduleBytes: info.moduleBytes.length,
            sha256: info.sha256,
            memoryLimit: info.memoryLimit,
            sliceMs: info.sliceMs,
          },
        },
        body: info.moduleBytes,
      }),
      memoryView: () => guest.memoryView(),
      heapEnd: () => guest.memoryView().byteLength,
      freezeForMove: () => Promise.resolve(guest.freezeForMove()),
      connectsInFlight: () => 0, // WASI has no outbound connect
      releaseMemory: () => undefined,
    };
  }
  return {
    guest,
    base: guest.runtimeBase.full,
    offer: () => ({ fields: { base: guest.runtimeBase.id, limits: guest.limits }, body: new Uint8Array(0) }),
    memoryView: () => guest.memoryView(),
    heapEnd: () => guest.heapEnd(),
    freezeForMove: () => guest.freezeForMove(),
    connectsInFlight: () => guest.connectsInFlight,
    releaseMemory: () => {
      const memory = guest.releaseMemory();
      return memory && { memory, limits: guest.limits };
    },
  };
}

/** A moved guest's host state, as the state message carries it (the kind came with the offer). */
export type MovedContents = Omit<ImageContents, 'memory' | 'meta'> & { meta: Omit<ImageContents['meta'], 'kind'> };

/** The target side: where a moving guest's pages land, and how it is rebuilt from them. */
export interface Landing {
  /** The memory the pages go into, grown (with zeros, or the base) to `byteLength`. */
  memory(byteLength: number): Uint8Array;
  /**
   * The guest's host state has come (before its final pages): checked, and what needs no memory
   * rebuilt now, while the pages are still arriving.
   */
  state(contents: MovedContents, network: TunnelNetwork, gate?: TurnGate): Promise<void>;
  /** Every page is in: the guest, whole and frozen; the landing is used up. */
  assemble(): Promise<Guest | WasmGuest>;
  /** Lets go of what was prepared (the move failed before the guest was assembled). Idempotent. */
  dispose(): void;
}

/** A WebAssembly image's meta names no runtime template (the state message's `base` is WASM_BASE). */
function withoutBase<T extends { base?: string }>(meta: T): Omit<T, 'base'> {
  const { base: _base, ...rest } = meta;
  return rest;
}

/** The error a landing refuses an offer with (a version or format the target cannot take). */
function refuse(message: string): RoamError {
  return new RoamError('ROAM_ERR_IMAGE_VERSION', message);
}

/**
 * Prepares this host for the offered guest before the source freezes it: for JavaScript a booted
 * sandbox holding the runtime template, for WebAssembly the compiled module.
 */
export async function prepareLanding(
  offer: OfferMessage,
  body: Uint8Array,
  sandboxFor: SandboxMaker = (limits, need) => Guest.prepareSandbox(limits, need.bytes, need.faultIn ? 'now' : 'no'),
): Promise<Landing> {
  if (offer.roamVersion !== ROAM_VERSION) {
    throw refuse(`unsupported version: the source runs Roam ${offer.roamVersion}, this host Roam ${ROAM_VERSION}`);
  }
  return offer.kind === 'wasm' ? prepareWasm(offer, body) : prepareJs(offer, sandboxFor);
}

/**
 * Makes (or hands over a spare) sandbox holding the runtime template for a guest whose memory is
 * `bytes` now: not made larger on purpose (the guest's memory would grow for nothing), grown and
 * faulted in to it with `faultIn`.
 */
export type SandboxMaker = (limits: SandboxLimits, need: { bytes: number; faultIn: boolean }) => Promise<Sandbox>;

async function prepareJs(offer: OfferMessage, sandboxFor: SandboxMaker): Promise<Landing> {
  const base = await runtimeTemplate();
  if (offer.base !== base.id || !offer.limits) {
    throw refuse(
      `unsupported version: the source's runtime is ${offer.base}, this host's ${base.id} (both Roam ${ROAM_VERSION})`,
    );
  }
  // With pre-copy, the first round faults the memory in as it writes it, while the guest still
  // runs on the source (and the source builds its next message meanwhile): faulting it all in here
  // first would only keep the source waiting for the accept.
  let sandbox: Sandbox | undefined = await sandboxFor(offer.limits, {
    bytes: offer.memoryBytes,
    faultIn: offer.precopy !== true,
  });
  let moved: MovedGuest | undefined;
  return {
    // Grown with its contents kept: pages the source does not send are the template's, or zero.
    memory: (byteLength) => (sandbox as Sandbox).grow(byteLength),
    state: async (contents, network, gate) => {
      moved = await Guest.beginMoved(
        sandbox as Sandbox,
        { ...contents, meta: { kind: 'js', ...contents.meta } },
        { network, frozen: true, ...(gate ? { gate } : {}) },
      );
    },
    assemble: () => {
      if (!moved) return Promise.reject(new RoamError('ROAM_ERR_PEER_PROTOCOL', 'no guest state came'));
      const guest = moved.land();
      moved = undefined;
      sandbox = undefined; // the guest owns it now
      return Promise.resolve(guest);
    },
    dispose: () => {
      moved?.drop();
      moved = undefined;
      sandbox?.dispose();
      sandbox = undefined;
    },
  };
}

async function prepareWasm(offer: OfferMessage, body: Uint8Array): Promise<Landing> {
  const wasm = offer.wasm;
  if (offer.base !== WASM_BASE || !wasm) throw refuse(`a WebAssembly guest's pages against base ${offer.base}`);
  if (body.length !== wasm.moduleBytes || createHash('sha256').update(body).digest('hex') !== wasm.sha256) {
    throw new RoamError('ROAM_ERR_IMAGE_MALFORMED', 'the module in the offer does not match its length and hash');
  }
  const module = await compileModule(body);
  const moduleBytes = Uint8Array.from(body); // the body's buffer is the peer decoder's: keep our own
  let memory = new Uint8Array(0);
  // Rebuilt only once every page is in: a WebAssembly guest's host side is cheap to make.
  let moved: { contents: MovedContents; network: TunnelNetwork; gate: TurnGate | undefined } | undefined;
  return {
    memory: (byteLength) => {
      if (byteLength % PAGE_SIZE !== 0 || byteLength > wasm.memoryLimit) {
        throw new RoamError(
          'ROAM_ERR_IMAGE_MALFORMED',
          `a WebAssembly memory of ${byteLength} bytes (its limit is ${wasm.memoryLimit}, in whole pages)`,
        );
      }
      if (byteLength > memory.length) {
        const grown = new Uint8Array(byteLength);
        grown.set(memory);
        memory = grown;
      }
      return memory;
    },
    state: (contents, network, gate) => {
      moved = { contents, network, gate };
      return Promise.resolve();
    },
    assemble: () => {
      if (!moved) return Promise.reject(new RoamError('ROAM_ERR_PEER_PROTOCOL', 'no guest state came'));
      const { contents, network, gate } = moved;
      return WasmGuest.assembleMoved(
        { module, moduleBytes },
        memory,
        { ...contents, meta: { kind: 'wasm', ...withoutBase(contents.meta) } },
        { network, frozen: true, memoryBytes: wasm.memoryLimit, sliceMs: wasm.sliceMs, ...(gate ? { gate } : {}) },
      );
    },
    dispose: () => {
      memory = new Uint8Array(0);
    },
  };
}
