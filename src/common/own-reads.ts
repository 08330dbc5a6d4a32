/**
 * Reads of a server-accepted socket into a buffer of the caller's. Node 20 offers `onread` (no new
 * 64 KiB ArrayBuffer and no Readable push per read) only to sockets it connects or is handed a
 * handle for, not to the sockets a `net.Server` accepts. So the accepted socket's handle is handed
 * to a new `net.Socket({ handle, onread })` and the shell left behind is destroyed at once, which
 * also takes it off the server's connection count (the new socket is the caller's to close).
 * Measured by bench:relay on the proxy's link sockets, side by side with the code before: the
 * download's proxy CPU per byte went from 0.92-0.93 to 0.73-0.75 ns and its throughput up by a
 * quarter in two runs of three (the third, profiled, ranked them the other way). On the relayed
 * remote sockets it gained nothing and cost a third of the connection rate, so those read as Node
 * reads.
 *
 * The handle is Node's private `_handle`: where it is not what Node 20 has there (another runtime,
 * a later Node), `adoptWithOwnReads` returns undefined and the caller keeps the socket as it is.
 */
import net from 'node:net';

export interface OwnReads {
  /** The buffer the next read goes into: asked for before the first read and after each. */
  buffer: () => Uint8Array;
  /** `bytes` were read into `into`; returning false pauses the socket (as with Node's `onread`). */
  callback: (bytes: number, into: Uint8Array) => boolean;
}

interface TcpHandle {
  readStart(): number;
  useUserBuffer(buffer: Uint8Array): void;
}

function isTcpHandle(value: unknown): value is TcpHandle {
  if (typeof value !== 'object' || value === null) return false;
  const handle = value as Partial<Record<keyof TcpHandle, unknown>>;
  return typeof handle.readStart === 'function' && typeof handle.useUserBuffer === 'function';
}

/**
 * A socket on `accepted`'s connection that reads through `onread`, or undefined if this runtime
 * does not allow it or `accepted` holds bytes either way already (they would be lost). Call it in
 * the server's 'connection' listener, before any read was handled. `options`: as the server's
 * (`allowHalfOpen`; `pauseOnCreate`, its `pauseOnConnect`: no read until `resume()`).
 */
export function adoptWithOwnReads(
  accepted: net.Socket,
  onread: OwnReads,
  options: { allowHalfOpen?: boolean; pauseOnCreate?: boolean } = {},
): net.Socket | undefined {
  const shell = accepted as unknown as { _handle: unknown };
  const handle = shell._handle;
  if (!isTcpHandle(handle) || accepted.destroyed || accepted.connecting) return undefined;
  if (accepted.readableLength > 0 || accepted.writableLength > 0) return undefined;
  // The handle may be reading already; no read is handled before the new socket owns it (this
  // turn), and from then on reads go to its buffer.
  shell._handle = null;
  const socket = new net.Socket({ handle, onread, ...options } as net.SocketConstructorOpts);
  accepted.destroy();
  return socket;
}
