/**
 * Secrets (join and admin tokens) come from a flag, an environment variable or a file, so they
 * need not appear in `ps`; generated ones are stored with mode 0600. Never log a secret: `mask()`
 * is how one appears in output, if at all.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { RoamError } from '../errors.js';

export function generateToken(): string {
  return randomBytes(24).toString('base64url');
}

/** Reads a secret file; refuses one that others can read (as ssh does with keys). */
export function readSecretFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new RoamError('ROAM_ERR_IO', `cannot read secret file ${path}: ${(err as Error).message}`, { cause: err });
  }
  const value = text.trim();
  if (!value) throw new RoamError('ROAM_ERR_USAGE', `secret file ${path} is empty`);
  return value;
}

export function writeSecretFile(path: string, value: string): void {
  writeFileSync(path, `${value}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
}

/**
 * The first of: the flag's value, the environment variable, the file named by the `...-file` flag,
 * or the stored file (creating it with a new token when `generate` is set).
 */
export function resolveSecret(options: {
  value?: string | undefined;
  env?: string | undefined;
  file?: string | undefined;
  stored?: string | undefined;
  generate?: boolean;
}): { value: string; source: 'flag' | 'env' | 'file' | 'stored' | 'generated' } | undefined {
  if (options.value) return { value: options.value, source: 'flag' };
  const fromEnv = options.env ? process.env[options.env] : undefined;
  if (fromEnv) return { value: fromEnv, source: 'env' };
  if (options.file) return { value: readSecretFile(options.file), source: 'file' };
  if (options.stored && existsSync(options.stored)) return { value: readSecretFile(options.stored), source: 'stored' };
  if (options.stored && options.generate) {
    const value = generateToken();
    writeSecretFile(options.stored, value);
    return { value, source: 'generated' };
  }
  return undefined;
}

/** Compares a presented token with the expected one in constant time. */
export function tokenMatches(presented: string, expected: string): boolean {
  const a = Buffer.from(presented);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}
