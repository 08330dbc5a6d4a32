/**
 * Backup images on the host's side: an image of a running guest taken without stopping it (the
 * guest pauses for the capture only), and a guest resumed from such an image after its own host
 * was lost. Its connections ended with that host: the guest sees each of them reset.
 */
import { Guest, type Capture } from '../guest/guest.js';
import { readImageMeta } from '../guest/image/index.js';
import { encodeGuestImage } from '../guest/template.js';
import type { TurnGate } from '../guest/turn-gate.js';
import { WasmGuest } from '../wasm/guest.js';
import type { HostGuest } from './hosted.js';
import type { TunnelNetwork } from './tunnel-network.js';

export interface TakenImage {
  bytes: Uint8Array;
  /** How long the guest was frozen for the capture. */
  pauseMs: number;
}

/**
 * Captures a running guest and lets it go on; the image is encoded afterwards. A guest that can
 * be captured live (JavaScript) pauses only for what changed while its memory was copied.
 */
export async function takeImage(guest: HostGuest): Promise<TakenImage> {
  let capture: Capture;
  if (guest.checkpointLive) capture = await guest.checkpointLive();
  else {
    capture = guest.checkpoint();
    guest.resume();
  }
  return { bytes: await encodeGuestImage(capture.contents), pauseMs: capture.pauseMs };
}

/** Resumes a guest of either kind from image bytes (refused before anything runs if damaged). */
export function resumeFromImage(
  bytes: Uint8Array,
  network: TunnelNetwork,
  signal: AbortSignal,
  gate?: TurnGate,
): Promise<Guest | WasmGuest> {
  // Each restore checks the whole image's checksum itself: hashing it here too would be twice.
  return readImageMeta(bytes).kind === 'wasm'
    ? WasmGuest.restoreImage(bytes, { network, signal, ...(gate ? { gate } : {}) })
    : Guest.restoreImage(bytes, { network, ...(gate ? { gate } : {}) });
}
