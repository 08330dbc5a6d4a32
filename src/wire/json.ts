/**
 * JSON payloads: strict UTF-8, then JSON, then a schema. Every failure on the way in is a
 * WIRE_BAD_MESSAGE; a message that fails its schema on the way out is refused the same way, so we
 * never send what a peer of the same version would reject.
 */
import type { z } from 'zod';
import { WireError, type WireErrorOptions } from './errors.js';

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

/** Describes the first schema issue as `path: message`, e.g. `guests[2].state: Invalid option`. */
export function describeIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (issue === undefined) return 'invalid';
  const path = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');
  const where = path === '' ? '(root)' : path.slice(path.startsWith('.') ? 1 : 0);
  const more = error.issues.length > 1 ? ` (and ${error.issues.length - 1} more)` : '';
  return `${where}: ${issue.message}${more}`;
}

/** Decodes a payload as strict UTF-8 JSON; `what` names it in errors ("OPEN payload"). */
export function parseJsonValue(bytes: Uint8Array, what: string, context: WireErrorOptions): unknown {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch (cause) {
    throw new WireError('WIRE_BAD_MESSAGE', `${what} is not valid UTF-8`, { ...context, cause });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw new WireError('WIRE_BAD_MESSAGE', `${what} is not valid JSON`, { ...context, cause });
  }
}

/** Decodes a JSON payload and validates it against a schema. */
export function parseJson<T>(bytes: Uint8Array, schema: z.ZodType<T>, what: string, context: WireErrorOptions): T {
  return validate(parseJsonValue(bytes, what, context), schema, what, context);
}

/** Checks a value against a schema; returns the parsed value (unknown keys dropped). */
export function validate<T>(value: unknown, schema: z.ZodType<T>, what: string, context: WireErrorOptions): T {
  let result: z.ZodSafeParseResult<T>;
  try {
    result = schema.safeParse(value);
  } catch (cause) {
    // A schema never throws on data, but a refinement is code: keep the error typed whatever happens.
    throw new WireError('WIRE_BAD_MESSAGE', `${what} could not be checked`, { ...context, cause });
  }
  if (!result.success) {
    throw new WireError('WIRE_BAD_MESSAGE', `${what} is invalid: ${describeIssue(result.error)}`, {
      ...context,
      cause: result.error,
    });
  }
  return result.data;
}

/** Serialises a value to UTF-8 JSON (JSON.stringify escapes lone surrogates, so the bytes are valid UTF-8). */
export function jsonBytes(value: unknown): Uint8Array {
  return utf8Encoder.encode(JSON.stringify(value));
}
