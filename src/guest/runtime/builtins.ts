/**
 * The built-in modules guests can import, made on first use so a guest pays (in heap, and so in
 * checkpoint size) only for what it imports. Pure modules come from well-kept polyfills.
 */
import assert from 'assert';
import * as bufferModule from 'buffer';
import EventEmitter from 'events';
import path from 'path-browserify';
import querystring from 'querystring-es3';
import stream from 'readable-stream';
import streamPromises from 'readable-stream/lib/stream/promises.js';
import * as stringDecoder from 'string_decoder';
import * as url from 'url';
import * as util from 'util';
import type { GuestBuiltin } from '../builtin-names.js';
import { console } from './console.js';
import { getRandomValues, randomBytesRaw, randomUUID, webcrypto } from './crypto.js';
import { dgramModule } from './dgram.js';
import { fsModule, fsPromises } from './fs.js';
import { httpModule } from './http/index.js';
import { netModule } from './net.js';
import { process } from './process.js';
import { timersModule } from './timers.js';

type Factory = () => unknown;
const factories = new Map<string, Factory>();
const cache = new Map<string, unknown>();

export function defineBuiltin(name: GuestBuiltin, factory: Factory): void {
  factories.set(name, factory);
}

export function requireBuiltin(name: string): unknown {
  const bare = name.startsWith('node:') ? name.slice(5) : name;
  if (cache.has(bare)) return cache.get(bare);
  const factory = factories.get(bare);
  if (!factory) {
    throw Object.assign(new Error(`Cannot find module '${name}': the Roam guest runtime does not provide it`), {
      code: 'MODULE_NOT_FOUND',
    });
  }
  const mod = factory();
  cache.set(bare, mod);
  return mod;
}

defineBuiltin('assert', () => assert);
defineBuiltin('assert/strict', () => (assert as { strict: unknown }).strict);
defineBuiltin('buffer', () => bufferModule);
defineBuiltin('console', () => console);
defineBuiltin('crypto', () => ({
  getRandomValues,
  randomUUID,
  webcrypto,
  randomBytes: (n: number, cb?: (err: Error | null, buf: unknown) => void) => {
    const buf = bufferModule.Buffer.from(randomBytesRaw(n));
    if (cb) queueMicrotask(() => cb(null, buf));
    return buf;
  },
  randomInt: (min: number, max?: number) => {
    if (max === undefined) [min, max] = [0, min];
    const span = max - min;
    const r = new Uint32Array(1);
    getRandomValues(r);
    return min + ((r[0] ?? 0) % span);
  },
}));
defineBuiltin('dgram', () => dgramModule);
defineBuiltin('fs', () => fsModule);
defineBuiltin('fs/promises', () => fsPromises);
defineBuiltin('http', () => httpModule);
defineBuiltin('events', () => Object.assign(EventEmitter, { EventEmitter, default: EventEmitter }));
defineBuiltin('net', () => netModule);
defineBuiltin('path', () => Object.assign(path, { posix: path }));
defineBuiltin('path/posix', () => path);
defineBuiltin('process', () => process);
defineBuiltin('querystring', () => querystring);
defineBuiltin('stream', () => {
  if (!('promises' in stream)) Object.defineProperty(stream, 'promises', { value: streamPromises, enumerable: true });
  return stream;
});
defineBuiltin('stream/promises', () => streamPromises);
defineBuiltin('string_decoder', () => stringDecoder);
defineBuiltin('timers', () => timersModule);
defineBuiltin('timers/promises', () => timersModule.promises);
defineBuiltin('url', () => ({ ...url, URL: globalThis.URL, URLSearchParams: globalThis.URLSearchParams }));
defineBuiltin('util', () => util);
defineBuiltin('util/types', () => (util as { types: unknown }).types);
