/** What a piece of the host side of the sandbox provides (timers, net, fs, ...). */
import type { HostValue } from '../sandbox/sandbox.js';

export type HostOp = (args: readonly HostValue[]) => HostValue | void;

export interface HostBinding {
  ops(): Record<string, HostOp>;
  /** Handles that keep the guest alive (ref'd timers, servers, sockets, calls in flight). */
  readonly refCount?: number;
  freeze?(): void;
  thaw?(): void;
  close?(): void;
}
