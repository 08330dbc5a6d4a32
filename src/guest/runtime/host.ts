/**
 * The guest's only door to the host: `__roam_host(op, ...args)`. The runtime takes it at startup
 * and removes it from the global object, so guest programs reach the host only through the
 * Node-like modules built on it. Values crossing the door are strings, numbers, booleans, null
 * and ArrayBuffers; structured data travels as JSON.
 */
export type HostArg = string | number | boolean | ArrayBuffer | null | undefined;
type HostFn = (op: string, ...args: HostArg[]) => unknown;

const g = globalThis as unknown as { __roam_host?: HostFn };
const hostFn: HostFn =
  g.__roam_host ??
  (() => {
    throw new Error('roam guest runtime: no host function');
  });
delete g.__roam_host;

export function host(op: string, ...args: HostArg[]): unknown {
  return hostFn(op, ...args);
}

export function hostString(op: string, ...args: HostArg[]): string {
  return String(host(op, ...args));
}

export function hostNumber(op: string, ...args: HostArg[]): number {
  return Number(host(op, ...args));
}

export function hostJson<T>(op: string, ...args: HostArg[]): T {
  return JSON.parse(String(host(op, ...args))) as T;
}

export function hostBytes(op: string, ...args: HostArg[]): Uint8Array {
  return new Uint8Array(host(op, ...args) as ArrayBuffer);
}

/** An ArrayBuffer holding exactly the bytes of `view` (what crosses the door). */
export function toArrayBuffer(view: Uint8Array): ArrayBuffer {
  if (view.byteOffset === 0 && view.byteLength === view.buffer.byteLength) return view.buffer as ArrayBuffer;
  return view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength) as ArrayBuffer;
}

/** A JSON argument from the host, parsed (the host only sends JSON it made itself). */
export function parseArg<T>(v: HostArg): T {
  return JSON.parse(typeof v === 'string' ? v : 'null') as T;
}
