/**
 * What the controller needs of a guest it runs, whatever its kind: a JavaScript guest (QuickJS
 * sandbox, src/guest/guest.ts) or a WebAssembly one (src/wasm/guest.ts). Both classes have this
 * shape; the controller's reports, logs, stops and checkpoints go through it alone.
 */
import type { Capture, ExitReason, GuestExit, GuestStatus } from '../guest/guest.js';
import type { GuestLog } from '../guest/host/log.js';

export type GuestKind = 'js' | 'wasm';

export interface HostGuest {
  readonly kind: GuestKind;
  readonly id: string;
  readonly name: string;
  readonly state: GuestStatus;
  readonly log: GuestLog;
  /** Resolves once, when the guest ends (by itself or stopped). */
  readonly exited: Promise<GuestExit>;
  /** Memory and CPU used so far, for the host's reports. */
  usage(): { memoryBytes: number; cpuMs: number };
  /** Freezes and captures the guest; it stays frozen until `resume()`. */
  checkpoint(): Capture;
  /** Captures the guest with a shorter pause (memory copied while it runs); it runs on after. */
  checkpointLive?(): Promise<Capture>;
  resume(): void;
  /** Ends the guest now; idempotent. */
  stop(reason?: ExitReason, code?: number): void;
}
