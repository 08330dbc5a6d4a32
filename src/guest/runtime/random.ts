/**
 * Math.random from a generator seeded by the host when the guest starts. QuickJS seeds its own
 * from the clock when the context is made, so every guest booted from the same runtime template
 * would otherwise draw the same numbers. The generator's state lives in guest memory, so a
 * restored guest continues its sequence.
 */
import { on } from './dispatch.js';
import { hostBytes } from './host.js';

// xoshiro128**: small, fast, and good enough for Math.random (crypto uses the host directly).
const s = new Uint32Array(4);

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

function next(): number {
  const result = Math.imul(rotl(Math.imul(s[1] ?? 0, 5), 7), 9) >>> 0;
  const t = (s[1] ?? 0) << 9;
  s[2] = (s[2] ?? 0) ^ (s[0] ?? 0);
  s[3] = (s[3] ?? 0) ^ (s[1] ?? 0);
  s[1] = (s[1] ?? 0) ^ (s[2] ?? 0);
  s[0] = (s[0] ?? 0) ^ (s[3] ?? 0);
  s[2] = (s[2] ?? 0) ^ t;
  s[3] = rotl(s[3] ?? 0, 11);
  return result;
}

export function seedRandom(): void {
  const seed = hostBytes('random', 16);
  s.set(new Uint32Array(seed.buffer, seed.byteOffset, 4));
  if (s.every((v) => v === 0)) s[0] = 1;
}

Math.random = () => (next() * 2 ** 21 + (next() >>> 11)) / 2 ** 53;

on('seed', () => seedRandom());
