/** Incoming messages: requests on the server, responses on the client. */
import { Readable } from 'readable-stream';
import { type Socket } from '../net.js';
import type { ClientRequest } from './client.js';
import type { ParserInfo } from './parser.js';

export type IncomingHttpHeaders = Record<string, string | string[] | undefined>;

/** Headers Node keeps only the first of. */
const SINGLE_VALUED = new Set([
  'age',
  'authorization',
  'content-length',
  'content-type',
  'etag',
  'expires',
  'from',
  'host',
  'if-modified-since',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'proxy-authorization',
  'referer',
  'retry-after',
  'server',
  'user-agent',
]);

/** Joins a header into `dest` as Node does: set-cookie an array, cookie with `; `, others `, `. */
function addHeaderLine(dest: IncomingHttpHeaders, field: string, value: string): void {
  const key = field.toLowerCase();
  if (key === '__proto__') return;
  const current = dest[key];
  if (key === 'set-cookie') {
    if (Array.isArray(current)) current.push(value);
    else dest[key] = [value];
  } else if (current === undefined) {
    dest[key] = value;
  } else if (!SINGLE_VALUED.has(key)) {
    dest[key] = `${String(current)}${key === 'cookie' ? '; ' : ', '}${value}`;
  }
}

export function headersFrom(raw: string[]): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  for (let i = 0; i + 1 < raw.length; i += 2) addHeaderLine(out, raw[i] ?? '', raw[i + 1] ?? '');
  return out;
}

function distinct(raw: string[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const key = (raw[i] ?? '').toLowerCase();
    if (key === '__proto__') continue;
    (out[key] ??= []).push(raw[i + 1] ?? '');
  }
  return out;
}

export class IncomingMessage extends Readable {
  socket: Socket | null;
  httpVersionMajor = 1;
  httpVersionMinor = 1;
  httpVersion = '1.1';
  complete = false;
  aborted = false;
  upgrade = false;
  headers: IncomingHttpHeaders = {};
  rawHeaders: string[] = [];
  trailers: IncomingHttpHeaders = {};
  rawTrailers: string[] = [];
  url = '';
  method: string | null = null;
  statusCode: number | null = null;
  statusMessage: string | null = null;
  req: ClientRequest | undefined;
  _consuming = false;
  _dumped = false;
  /** Called when the reader wants more: the connection resumes the socket it paused. */
  _onRead: (() => void) | undefined;

  constructor(socket: Socket | null) {
    super();
    this.socket = socket;
    // As Node: no read-ahead until someone reads, so `_consuming` tells a reader from none.
    this._readableState.readingMore = true;
  }

  get connection(): Socket | null {
    return this.socket;
  }
  get headersDistinct(): Record<string, string[]> {
    return distinct(this.rawHeaders);
  }
  get trailersDistinct(): Record<string, string[]> {
    return distinct(this.rawTrailers);
  }

  setTimeout(ms: number, cb?: () => void): this {
    if (cb) this.on('timeout', cb);
    this.socket?.setTimeout(ms);
    return this;
  }

  override _read(): void {
    if (!this._consuming) {
      this._readableState.readingMore = false;
      this._consuming = true;
    }
    this._onRead?.();
  }

  /** Reads and discards the body (a response nobody listens to, a request nobody read). */
  _dump(): void {
    if (this._dumped) return;
    this._dumped = true;
    this.removeAllListeners('data');
    this.resume();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    if (!this.readableEnded || !this.complete) {
      this.aborted = true;
      this.emit('aborted');
    }
    if (this.socket && !this.socket.destroyed && !this.complete) this.socket.destroy();
    // As Node: an error is emitted only to someone listening for it.
    cb(this.listenerCount('error') > 0 ? err : null);
  }

  /** Fills in the start line and headers the parser found. */
  _setHead(info: ParserInfo, maxHeadersCount: number | null): void {
    this.httpVersionMajor = info.versionMajor;
    this.httpVersionMinor = info.versionMinor;
    this.httpVersion = `${info.versionMajor}.${info.versionMinor}`;
    const limit = maxHeadersCount && maxHeadersCount > 0 ? maxHeadersCount * 2 : 4000;
    this.rawHeaders = info.headers.length > limit ? info.headers.slice(0, limit) : info.headers;
    this.headers = headersFrom(this.rawHeaders);
    this.upgrade = info.upgrade;
  }

  _setTrailers(raw: string[]): void {
    this.rawTrailers = raw;
    this.trailers = headersFrom(raw);
  }
}
