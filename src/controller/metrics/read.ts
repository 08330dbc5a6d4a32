/**
 * How the metrics code reaches the host: one function that returns a file's text, or `undefined`
 * when it cannot (missing file, permission, EINVAL from sysfs, anything). Tests pass a fake one
 * holding fixture strings; parsers never see a path, only text.
 */
import { readFileSync } from 'node:fs';

export type FileReader = (path: string) => string | undefined;

/** Reads a file synchronously as UTF-8; every failure is `undefined`, never an exception. */
export const readHostFile: FileReader = (path) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
};

/** A whole non-negative decimal integer (surrounding whitespace allowed), else `undefined`. */
export function parseCount(text: string | undefined): number | undefined {
  if (typeof text !== 'string') return undefined;
  const t = text.trim();
  if (!/^\d{1,30}$/.test(t)) return undefined;
  const n = Number(t);
  return Number.isFinite(n) ? n : undefined;
}

/** A whole decimal integer that may be negative (`-1` is how the kernel says "none"), else `undefined`. */
export function parseSignedCount(text: string | undefined): number | undefined {
  if (typeof text !== 'string') return undefined;
  const t = text.trim();
  if (!/^-?\d{1,30}$/.test(t)) return undefined;
  const n = Number(t);
  return Number.isFinite(n) ? n : undefined;
}

/** Lines of a text, without empty ones; tolerant of CRLF. */
export function lines(text: string): string[] {
  return text.split(/\r?\n/).filter((l) => l.trim() !== '');
}
