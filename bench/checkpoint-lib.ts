/**
 * Helpers shared by the checkpoint benchmark (bench/checkpoint.ts) and its restore child
 * (bench/restore-child.ts): statistics, the plain-copy floor, the heap-building guest program and
 * a description of the machine.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { uninitialized } from '../src/guest/image/memory.js';

export const PAGE = 65536;

/** Limits every benchmark guest runs with; the restore child prepares its sandbox with the same. */
export const BENCH_LIMITS = { cpuBudgetMs: 60_000 };

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? NaN) + (s[mid] ?? NaN)) / 2;
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile(values: readonly number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}

/**
 * The plain copy floor, variant "pages": a fresh buffer of exactly `pages.length` pages (not
 * zeroed first, as a checkpoint's own copy is not), filled with one `set()` per page from where
 * each page lives in `source` (a whole linear memory).
 */
export function copyPages(source: Uint8Array, pages: Uint32Array): Uint8Array {
  const out = uninitialized(pages.length * PAGE);
  for (let i = 0; i < pages.length; i++) {
    const at = (pages[i] ?? 0) * PAGE;
    out.set(source.subarray(at, at + PAGE), i * PAGE);
  }
  return out;
}

/** Times `fn` in milliseconds. */
export function timed<T>(fn: () => T): [T, number] {
  const t0 = performance.now();
  const value = fn();
  return [value, performance.now() - t0];
}

export async function timedAsync<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const value = await fn();
  return [value, performance.now() - t0];
}

/**
 * Bytes of QuickJS heap one unit of `heapProgram` holds (its "memory used" line, allocator
 * overhead included), measured: 400000 units = 61.0 MiB more than an idle guest.
 */
export const BYTES_PER_UNIT = 160;

/**
 * A guest that builds `units` records of ordinary JavaScript data (objects with numbers and
 * strings, a Map indexing every fourth one, small arrays) in its main turn, keeps all of it
 * reachable, and then stays alive on a timer that touches one record per tick. It prints nothing.
 */
export function heapProgram(units: number): string {
  return `
const heap = { list: [], index: new Map(), arrays: [] };
for (let i = 0; i < ${units}; i++) {
  const record = { id: i, x: i * 1.5, y: i % 97, name: 'item-' + i, tag: 't' + (i % 1000) };
  heap.list.push(record);
  if (i % 4 === 0) heap.index.set('k' + i, record);
  if (i % 16 === 0) heap.arrays.push([i, i + 1, i + 2, 'a' + i]);
}
globalThis.__benchHeap = heap;
let ticks = 0;
setInterval(() => {
  ticks++;
  if (heap.list.length > 0) heap.list[ticks % heap.list.length].y = ticks;
}, 2);
`;
}

export interface MachineInfo {
  date: string;
  cpus: number;
  cpuModel: string;
  memory: string;
  node: string;
  os: string;
}

export function machineInfo(): MachineInfo {
  let date = new Date().toUTCString();
  try {
    date = execFileSync('date', ['-u'], { encoding: 'utf8' }).trim();
  } catch {
    // keep the JavaScript date
  }
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    if (line) cpuModel = line.split(':').slice(1).join(':').trim();
  } catch {
    // not Linux
  }
  return {
    date,
    cpus: os.availableParallelism(),
    cpuModel,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
  };
}

export const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);
export const ms = (value: number): string => (Number.isFinite(value) ? value.toFixed(1) : 'n/a');
export const ratio = (value: number): string => (Number.isFinite(value) ? `${value.toFixed(2)}x` : 'n/a');

export function markdownTable(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}
