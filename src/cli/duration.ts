/** Parses durations like `500ms`, `2s`, `1.5m`, `1h`, `7d` (a bare number means milliseconds). */
import { RoamError } from '../errors.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `flag`: the option the text came from, named in the error. */
export function parseDuration(text: string, flag = 'duration'): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) {
    throw new RoamError(
      'ROAM_ERR_USAGE',
      `invalid ${flag} "${text}": use a number with ms, s, m, h or d, such as 500ms, 90s, 10m or 2h`,
    );
  }
  return Math.round(Number(m[1]) * (UNITS[m[2] ?? 'ms'] ?? 1));
}

export function parseBytes(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i.exec(text.trim());
  if (!m) throw new RoamError('ROAM_ERR_USAGE', `invalid size "${text}": use e.g. 256MiB, 64m or 1g`);
  const unit = (m[2] ?? 'b').toLowerCase()[0];
  const mult = unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : 1;
  return Math.round(Number(m[1]) * mult);
}
