/**
 * Memory of the host: total and what is available to start new work. "Free" is the kernel's
 * MemAvailable (free pages plus the page cache and slab it can reclaim without swapping), which is
 * what `free` shows as "available"; MemFree alone undercounts badly on any machine with a page cache.
 */
import { lines } from './read.js';

export interface MemoryInfo {
  totalBytes: number;
  /** MemAvailable, or on kernels older than 3.14 MemFree + Buffers + Cached. */
  availableBytes: number;
}

/** Parses `/proc/meminfo` (values in kB, meaning KiB); `undefined` without MemTotal and a free figure. */
export function parseMemInfo(text: string | undefined): MemoryInfo | undefined {
  if (typeof text !== 'string') return undefined;
  const kb = new Map<string, number>();
  for (const line of lines(text)) {
    const m = /^([A-Za-z0-9_()]+):\s*(\d{1,20})(?:\s*kB)?\s*$/.exec(line.trim());
    if (m && m[1] !== undefined && m[2] !== undefined) kb.set(m[1], Number(m[2]));
  }
  const total = kb.get('MemTotal');
  if (total === undefined || !(total > 0)) return undefined;
  let available = kb.get('MemAvailable');
  if (available === undefined) {
    const free = kb.get('MemFree');
    if (free === undefined) return undefined;
    available = free + (kb.get('Buffers') ?? 0) + (kb.get('Cached') ?? 0);
  }
  return { totalBytes: total * 1024, availableBytes: Math.min(available, total) * 1024 };
}
