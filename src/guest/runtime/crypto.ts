/** Randomness comes from the host (the guest has no entropy of its own). */
import { hostBytes } from './host.js';

type IntegerArray = Int8Array | Uint8Array | Uint8ClampedArray | Int16Array | Uint16Array | Int32Array | Uint32Array;

export function getRandomValues<T extends IntegerArray>(array: T): T {
  if (array.byteLength > 65536) {
    throw Object.assign(new Error(`The ArrayBufferView's byte length (${array.byteLength}) exceeds 65536`), {
      name: 'QuotaExceededError',
    });
  }
  new Uint8Array(array.buffer, array.byteOffset, array.byteLength).set(hostBytes('random', array.byteLength));
  return array;
}

export function randomBytesRaw(n: number): Uint8Array {
  return hostBytes('random', n);
}

export function randomUUID(): string {
  const b = hostBytes('random', 16);
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export const webcrypto = { getRandomValues, randomUUID };
