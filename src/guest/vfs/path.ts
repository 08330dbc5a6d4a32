import { VfsError } from './errors.js';

/** Linux limits; they also bound the memory a single path or name can make the host hold. */
export const PATH_MAX = 4096;
export const NAME_MAX = 255;

export interface ParsedPath {
  /** Components after normalization; empty for the root. */
  readonly parts: readonly string[];
  /** The path ended in '/', '/.' or '/..': like Linux, the target must then be a directory. */
  readonly mustBeDir: boolean;
}

const encoder = new TextEncoder();

/** UTF-8 length, which is what Linux measures against PATH_MAX and NAME_MAX. */
export function utf8Length(text: string): number {
  return encoder.encode(text).length;
}

/**
 * Lone surrogates cannot be encoded to UTF-8 and back, so a name holding one would change (and
 * could collide with another name) when the image is restored. Refuse them up front.
 */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * A name's rules other than its encoding: not empty, not '.' or '..', no '/' or NUL. (A name read
 * from an image as strict UTF-8 of at most 255 bytes needs only these: vfs/image.ts.)
 */
export function isPlainName(name: string): boolean {
  return name.length > 0 && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0');
}

export function isValidName(name: string): boolean {
  return isPlainName(name) && !LONE_SURROGATE.test(name) && utf8Length(name) <= NAME_MAX;
}

/**
 * Normalizes an absolute POSIX path lexically: there are no symlinks, so '..' can be resolved
 * without looking at the tree. `path` is typed `unknown` because it comes from guest code.
 */
export function parsePath(path: unknown, syscall: string): ParsedPath {
  if (typeof path !== 'string' || !path.startsWith('/') || path.includes('\0')) {
    throw new VfsError('EINVAL', syscall, typeof path === 'string' ? path : String(path));
  }
  // A UTF-16 unit is at most 3 UTF-8 bytes, so only long strings need measuring.
  if (path.length * 3 >= PATH_MAX && utf8Length(path) >= PATH_MAX) {
    throw new VfsError('ENAMETOOLONG', syscall, path);
  }
  const parts: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      parts.pop();
      continue;
    }
    if (LONE_SURROGATE.test(part)) throw new VfsError('EINVAL', syscall, path);
    if (part.length * 3 > NAME_MAX && utf8Length(part) > NAME_MAX) {
      throw new VfsError('ENAMETOOLONG', syscall, path);
    }
    parts.push(part);
  }
  return { parts, mustBeDir: /\/(\.{1,2})?$/.test(path) };
}

export function joinPath(parts: readonly string[]): string {
  return '/' + parts.join('/');
}
