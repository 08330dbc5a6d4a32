/**
 * The Node built-in modules a guest may import (with or without the `node:` prefix). The bundler
 * refuses any other built-in at bundle time; the guest runtime provides exactly these.
 */
export const GUEST_BUILTINS = [
  'assert',
  'assert/strict',
  'buffer',
  'console',
  'crypto',
  'dgram',
  'events',
  'fs',
  'fs/promises',
  'http',
  'net',
  'path',
  'path/posix',
  'process',
  'querystring',
  'stream',
  'stream/promises',
  'string_decoder',
  'timers',
  'timers/promises',
  'url',
  'util',
  'util/types',
] as const;

export type GuestBuiltin = (typeof GUEST_BUILTINS)[number];
