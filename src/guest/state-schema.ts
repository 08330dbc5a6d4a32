/**
 * The host-side state in a checkpoint image, validated before use: an image is untrusted input
 * (it may come from another machine), and its checksum only proves it was not damaged on the way.
 */
import { z } from 'zod';
import { Buffer } from 'node:buffer';
import { RoamError } from '../errors.js';
import type { HostValue } from './sandbox/sandbox.js';

const finite = z.number().finite();
const nonNegative = finite.nonnegative();
const id = z.number().int().positive();
const port = z.number().int().min(0).max(65535);

const address = z.object({ address: z.string().max(256), family: z.enum(['IPv4', 'IPv6']), port });
const endpoints = z.object({
  localAddress: z.string().max(256),
  localPort: port,
  remoteAddress: z.string().max(256),
  remotePort: port,
  remoteFamily: z.string().max(16),
});
const listenRequest = z.object({ port, host: z.string().max(256).nullable() });

export const guestStateSchema = z.object({
  limits: z.object({
    memoryBytes: z
      .number()
      .int()
      .min(16 * 1024 * 1024)
      .max(4 * 1024 ** 3),
    cpuBudgetMs: z.number().int().positive(),
    stackBytes: z
      .number()
      .int()
      .positive()
      .max(64 * 1024 * 1024),
  }),
  argv: z.array(z.string()).max(1024),
  clock: z.object({ wall: nonNegative, mono: nonNegative }),
  timers: z.array(z.object({ id, remaining: nonNegative, ref: z.boolean() })).max(1_000_000),
  immediatePending: z.boolean(),
  net: z.object({
    nextId: id,
    sockets: z
      .array(
        z.object({
          id,
          endpoints: endpoints.nullable(),
          bytesIn: nonNegative,
          bytesOut: nonNegative,
          ref: z.boolean(),
          paused: z.boolean().optional(),
          ended: z.boolean().optional(),
          link: z
            .object({
              streamId: z.number().int().min(0).max(0xffff_ffff),
              received: nonNegative,
              sent: nonNegative,
              acked: nonNegative,
              unacked: z.base64().max(64 * 1024 * 1024),
              ended: z.boolean(),
            })
            .optional(),
        }),
      )
      .max(100_000),
    servers: z
      .array(z.object({ id, request: listenRequest, address: address.nullable(), ref: z.boolean() }))
      .max(10_000),
  }),
  dgram: z.object({
    sockets: z
      .array(
        z.object({
          id,
          request: z.object({ type: z.enum(['udp4', 'udp6']), port, host: z.string().max(256).nullable() }),
          address: address.nullable(),
          ref: z.boolean(),
        }),
      )
      .max(10_000),
  }),
  log: z.object({
    records: z.array(z.object({ t: nonNegative, stream: z.enum(['out', 'err']), text: z.string() })).max(1_000_000),
    written: nonNegative,
  }),
  cpuMs: nonNegative,
  /**
   * Events that reached the guest while it was frozen for the capture (for example a connect that
   * completed while a move waited for it), in order; the guest gets them where it resumes. Values
   * as `HostValue`, with bytes as `{ b64 }` and undefined as `{ undefined: true }`. Absent: none.
   */
  held: z
    .array(
      z.tuple([
        z.string().max(64),
        z
          .array(
            z.union([
              z.string(),
              finite,
              z.boolean(),
              z.null(),
              z.strictObject({ b64: z.base64().max(64 * 1024 * 1024) }),
              z.strictObject({ undefined: z.literal(true) }),
            ]),
          )
          .max(16),
      ]),
    )
    .max(100_000)
    .optional(),
});

export type GuestState = z.infer<typeof guestStateSchema>;

export function parseGuestState(value: unknown): GuestState {
  const result = guestStateSchema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue ? issue.path.join('.') || '(root)' : '(root)';
    throw new RoamError(
      'ROAM_ERR_IMAGE_MALFORMED',
      `the image's guest state is malformed at ${where}: ${issue?.message ?? 'invalid'}`,
    );
  }
  return result.data;
}

type HeldEvent = [string, HostValue[]];

/** Held events as the state carries them (JSON: bytes in base64, undefined kept apart from null). */
export function encodeHeld(held: readonly HeldEvent[]): NonNullable<GuestState['held']> {
  return held.map(([kind, args]) => [
    kind,
    args.map((a) =>
      a instanceof Uint8Array
        ? { b64: Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64') }
        : a === undefined
          ? { undefined: true as const }
          : a,
    ),
  ]);
}

export function decodeHeld(held: GuestState['held']): HeldEvent[] {
  return (held ?? []).map(([kind, args]) => [
    kind,
    args.map((a) =>
      a !== null && typeof a === 'object' ? ('b64' in a ? new Uint8Array(Buffer.from(a.b64, 'base64')) : undefined) : a,
    ),
  ]);
}
