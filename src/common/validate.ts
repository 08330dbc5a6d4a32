/**
 * Small validators for untrusted JSON that is read on a hot path (an image's header and guest
 * state, read by every restore), written out because a schema library cost more than the rest of
 * the read: zod took 4-7 ms over the first value a process checked. Each takes the path of the
 * value it checks and throws a ValidationError that names it, as in `meta.kind: expected ...`.
 */

export class ValidationError extends Error {}

export type Fields = Record<string, unknown>;

/** The path of `key` inside the value at `path` ("(root)" is the whole value). */
export function at(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path === '(root)' ? key : `${path}.${key}`;
}

/**
 * `value` as an object that has every key in `required`. With `strict`, any key beyond
 * `required` and `optional` is an error; without it, unknown keys are left for the caller to drop.
 */
export function object(
  value: unknown,
  path: string,
  required: readonly string[],
  optional: readonly string[] = [],
  strict = true,
): Fields {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ValidationError(`${path}: expected an object`);
  }
  const fields = value as Fields;
  if (strict) {
    for (const key of Object.keys(fields)) {
      if (!required.includes(key) && !optional.includes(key)) {
        throw new ValidationError(`${path}: unknown key "${key}"`);
      }
    }
  }
  for (const key of required) if (!Object.hasOwn(fields, key)) throw new ValidationError(`${at(path, key)}: missing`);
  return fields;
}

/** `value` as an array of at most `max` items, each checked by `item`. */
export function array<T>(value: unknown, path: string, max: number, item: (value: unknown, path: string) => T): T[] {
  if (!Array.isArray(value)) throw new ValidationError(`${path}: expected an array`);
  if (value.length > max) throw new ValidationError(`${path}: expected at most ${max} items`);
  const out = new Array<T>(value.length);
  for (let i = 0; i < value.length; i++) out[i] = item(value[i], at(path, i));
  return out;
}

export function integer(value: unknown, path: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ValidationError(`${path}: expected an integer from ${min} to ${max}`);
  }
  return value;
}

/** A finite number, at least `min`. */
export function finite(value: unknown, path: string, min = -Infinity): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new ValidationError(
      min === -Infinity ? `${path}: expected a finite number` : `${path}: expected a finite number of at least ${min}`,
    );
  }
  return value;
}

export function boolean(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') throw new ValidationError(`${path}: expected true or false`);
  return value;
}

export function text(value: unknown, path: string, min = 0, max = Infinity): string {
  if (typeof value !== 'string' || value.length < min || value.length > max) {
    const bounds = max === Infinity ? `of at least ${min}` : `of ${min} to ${max}`;
    throw new ValidationError(`${path}: expected a string ${bounds} characters`);
  }
  return value;
}

/** Standard base64 with its padding (as Buffer#toString('base64') writes it). */
const BASE64 = /^(?:[0-9a-zA-Z+/]{4})*(?:[0-9a-zA-Z+/]{2}==|[0-9a-zA-Z+/]{3}=)?$/;

export function base64(value: unknown, path: string, maxLength: number): string {
  const s = text(value, path, 0, maxLength);
  if (!BASE64.test(s)) throw new ValidationError(`${path}: expected base64`);
  return s;
}

export function oneOf<T extends string>(value: unknown, path: string, options: readonly T[]): T {
  if (!options.includes(value as T)) throw new ValidationError(`${path}: expected one of ${options.join(', ')}`);
  return value as T;
}

/** `null`, or what `item` makes of the value. */
export function nullable<T>(value: unknown, path: string, item: (value: unknown, path: string) => T): T | null {
  return value === null ? null : item(value, path);
}
