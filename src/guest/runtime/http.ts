/**
 * `node:http` for guests, built on the guest's own `node:net` and the `http-parser-js` parser, so
 * an HTTP server or client in a guest is ordinary guest state: its sockets, parsers and pending
 * responses travel in the guest's memory like everything else.
 *
 * Server: one `ServerConnection` per accepted socket parses requests, queues their responses so
 * pipelined requests are answered in order, and applies Node's keep-alive rules. Client: a
 * `ClientRequest` takes a socket from an `Agent` (reusing an idle keep-alive one when it can) and
 * parses the response. Backpressure goes both ways: a body nobody reads pauses the socket, and a
 * response write the socket cannot take yet returns false until `'drain'`.
 */
import EventEmitter from 'events';
import { Buffer } from 'buffer';
import { HTTPParser } from 'http-parser-js';
import { Readable, Writable } from 'readable-stream';
import { DateClass } from './clock.js';
import { Server as NetServer, connect as netConnect, type Socket } from './net.js';
import { clearTimeout, setTimeout, type Timeout } from './timers.js';

// --- the parser (http-parser-js, with a little hardening against hostile input) ---

interface ParserInfo {
  versionMajor: number;
  versionMinor: number;
  headers: string[];
  method?: number | string;
  url?: string;
  statusCode?: number;
  statusMessage?: string;
  upgrade: boolean;
  shouldKeepAlive: boolean;
}
interface Parser {
  execute(chunk: Buffer): number | Error;
  finish(): Error | undefined;
  initialize(type: string): void;
  reinitialize(type: string): void;
  consumeLine(): string | undefined;
  parseHeader: (this: Parser, line: string, headers: string[]) => void;
  BODY_CHUNKHEAD(): void;
  maxHeaderSize: number;
  line: string;
  state: string;
  trailers: string[];
  body_bytes: number | null;
}
interface ParserClass {
  new (type: string): Parser;
  REQUEST: string;
  RESPONSE: string;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  methods: string[];
}
const Parser = HTTPParser as ParserClass;
const kParseError = Symbol('http parse error');

function parseError(code: string, reason: string): Error {
  return Object.assign(new Error(`Parse Error: ${reason}`), { code, reason, [kParseError]: true });
}

/** Gives http-parser-js errors Node's codes (the parser names only some of them). */
function asParseError(err: Error): Error {
  const e = err as Error & { code?: string; [kParseError]?: boolean };
  if (!e.code) {
    const m = e.message;
    e.code = /header size/.test(m)
      ? 'HPE_HEADER_OVERFLOW'
      : /method/.test(m)
        ? 'HPE_INVALID_METHOD'
        : /EOF/.test(m)
          ? 'HPE_INVALID_EOF_STATE'
          : 'HPE_INVALID_CONSTANT';
  }
  e[kParseError] = true;
  return e;
}

function isParseError(err: unknown): err is Error {
  return (
    err instanceof Error &&
    ((err as { [kParseError]?: boolean })[kParseError] === true || err.message === 'Parse Error')
  );
}

type ParserKind = 'REQUEST' | 'RESPONSE';

/**
 * A parser with our own header limit: the library's counts every byte of an `execute()` call that
 * ends between messages (body bytes included), so a large body would trip it, and it resets the
 * limit to its global one after each message. Headers and trailers are counted line by line
 * here, a partial line after each `execute()` by its owner. Chunk sizes that are not hexadecimal
 * are refused (the library would take `-5` and walk backwards through its input).
 */
function newParser(kind: ParserKind, maxHeaderSize: number, handlers: ParserHandlers): Parser {
  const parser = new Parser(kind === 'REQUEST' ? Parser.REQUEST : Parser.RESPONSE);
  parser.maxHeaderSize = Number.MAX_SAFE_INTEGER;
  let headerBytes = 0;
  parser.reinitialize = function (type: string) {
    this.initialize(type);
    headerBytes = 0;
  };
  const parseHeader = parser.parseHeader;
  parser.parseHeader = function (line: string, headers: string[]) {
    headerBytes += line.length + 2;
    if (headerBytes > maxHeaderSize) throw parseError('HPE_HEADER_OVERFLOW', 'Header overflow');
    parseHeader.call(this, line, headers);
  };
  parser.BODY_CHUNKHEAD = function () {
    const line = this.consumeLine();
    if (line === undefined) {
      if (this.line.length > 256) throw parseError('HPE_INVALID_CHUNK_SIZE', 'Chunk size line too long');
      return;
    }
    const m = /^([0-9a-fA-F]{1,12})[ \t]*(?:;.*)?$/.exec(line);
    if (!m?.[1]) throw parseError('HPE_INVALID_CHUNK_SIZE', 'Invalid character in chunk size');
    this.body_bytes = parseInt(m[1], 16);
    this.state = this.body_bytes ? 'BODY_CHUNK' : 'BODY_CHUNKTRAILERS';
  };
  const slots = parser as unknown as Record<number, unknown>;
  // Both calling conventions of the library: one info object, or the fields one by one.
  slots[Parser.kOnHeadersComplete] = (...args: unknown[]): number => {
    const first = args[0];
    if (args.length === 1 && first !== null && typeof first === 'object') return handlers.headers(first as ParserInfo);
    const [versionMajor, versionMinor, headers, method, url, statusCode, statusMessage, upgrade, shouldKeepAlive] =
      args;
    return handlers.headers({
      versionMajor: Number(versionMajor),
      versionMinor: Number(versionMinor),
      headers: headers as string[],
      method: method as number,
      url: url as string,
      statusCode: statusCode as number,
      statusMessage: statusMessage as string,
      upgrade: upgrade === true,
      shouldKeepAlive: shouldKeepAlive === true,
    });
  };
  slots[Parser.kOnBody] = (chunk: Buffer, start: number, length: number) =>
    handlers.body(start === 0 && length === chunk.length ? chunk : chunk.subarray(start, start + length));
  slots[Parser.kOnMessageComplete] = () => handlers.complete();
  slots[Parser.kOnHeaders] = (trailers: string[]) => handlers.trailers(trailers);
  return parser;
}

interface ParserHandlers {
  /** Returns 1 to tell the parser the message has no body (a response to HEAD). */
  headers(info: ParserInfo): number;
  body(chunk: Buffer): void;
  complete(): void;
  trailers(raw: string[]): void;
}

/** Framing headers the parser would take too loosely: Content-Length must be digits. */
function checkFraming(raw: string[], request: boolean): void {
  let contentLength: string | undefined;
  let transferEncoding: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] ?? '').toLowerCase();
    const value = raw[i + 1] ?? '';
    if (name === 'content-length') {
      if (!/^\s*\d{1,15}\s*$/.test(value)) throw parseError('HPE_INVALID_CONTENT_LENGTH', 'Invalid Content-Length');
      if (contentLength !== undefined && contentLength.trim() !== value.trim()) {
        throw parseError('HPE_UNEXPECTED_CONTENT_LENGTH', 'Duplicate Content-Length');
      }
      contentLength = value;
    } else if (name === 'transfer-encoding') {
      transferEncoding = transferEncoding === undefined ? value : `${transferEncoding}, ${value}`;
    }
  }
  if (request && transferEncoding !== undefined) {
    // As llhttp: a request body must end with chunked framing, and never has both framings.
    if (contentLength !== undefined) {
      throw parseError('HPE_UNEXPECTED_CONTENT_LENGTH', "Content-Length can't be present with Transfer-Encoding");
    }
    if (!/(?:^|,)\s*chunked\s*$/i.test(transferEncoding)) {
      throw parseError('HPE_INVALID_TRANSFER_ENCODING', 'Request has invalid `Transfer-Encoding`');
    }
  }
}

// --- constants and validation ---

export const STATUS_CODES: Record<number, string> = {
  100: 'Continue',
  101: 'Switching Protocols',
  102: 'Processing',
  103: 'Early Hints',
  200: 'OK',
  201: 'Created',
  202: 'Accepted',
  203: 'Non-Authoritative Information',
  204: 'No Content',
  205: 'Reset Content',
  206: 'Partial Content',
  207: 'Multi-Status',
  208: 'Already Reported',
  226: 'IM Used',
  300: 'Multiple Choices',
  301: 'Moved Permanently',
  302: 'Found',
  303: 'See Other',
  304: 'Not Modified',
  305: 'Use Proxy',
  307: 'Temporary Redirect',
  308: 'Permanent Redirect',
  400: 'Bad Request',
  401: 'Unauthorized',
  402: 'Payment Required',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  407: 'Proxy Authentication Required',
  408: 'Request Timeout',
  409: 'Conflict',
  410: 'Gone',
  411: 'Length Required',
  412: 'Precondition Failed',
  413: 'Payload Too Large',
  414: 'URI Too Long',
  415: 'Unsupported Media Type',
  416: 'Range Not Satisfiable',
  417: 'Expectation Failed',
  418: "I'm a Teapot",
  421: 'Misdirected Request',
  422: 'Unprocessable Entity',
  423: 'Locked',
  424: 'Failed Dependency',
  425: 'Too Early',
  426: 'Upgrade Required',
  428: 'Precondition Required',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  451: 'Unavailable For Legal Reasons',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported',
  506: 'Variant Also Negotiates',
  507: 'Insufficient Storage',
  508: 'Loop Detected',
  509: 'Bandwidth Limit Exceeded',
  510: 'Not Extended',
  511: 'Network Authentication Required',
};

/** The methods the parser accepts, sorted as Node lists them. */
export const METHODS: string[] = [...Parser.methods].sort();

const DEFAULT_MAX_HEADER_SIZE = 16384;
/** More pipelined requests than this waiting for their turn pause reading from the connection. */
const MAX_QUEUED_RESPONSES = 32;
/** How long a connection we have ended waits for the peer to close before we drop it. */
const LINGER_MS = 5000;
const BODYLESS_METHODS = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT']);
const TOKEN = /^[\^_`a-zA-Z\-0-9!#$%&'*+.|~]+$/;
const INVALID_HEADER_CHAR = /[^\t\x20-\x7e\x80-\xff]/;
const CHUNKED = /(?:^|\W)chunked(?:$|\W)/i;
const CONNECTION_CLOSE = /(?:^|\W)close(?:$|\W)/i;
const CRLF = Buffer.from('\r\n', 'latin1');
const BAD_REQUEST = 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n';
const REQUEST_TIMEOUT = 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n';
const HEADERS_TOO_LARGE = 'HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n';

function codedError(code: string, message: string, Ctor: ErrorConstructor = Error): Error {
  return Object.assign(new Ctor(message), { code });
}

function connResetError(message: string): Error {
  return codedError('ECONNRESET', message);
}

export function validateHeaderName(name: unknown, label = 'Header name'): void {
  if (typeof name !== 'string' || !name || !TOKEN.test(name)) {
    throw codedError('ERR_INVALID_HTTP_TOKEN', `${label} must be a valid HTTP token ["${String(name)}"]`, TypeError);
  }
}

export function validateHeaderValue(name: string, value: unknown): void {
  if (value === undefined) {
    throw codedError(
      'ERR_HTTP_INVALID_HEADER_VALUE',
      `Invalid value "${String(value)}" for header "${name}"`,
      TypeError,
    );
  }
  for (const v of Array.isArray(value) ? (value as unknown[]) : [value]) {
    if (INVALID_HEADER_CHAR.test(String(v))) {
      throw codedError('ERR_INVALID_CHAR', `Invalid character in header content ["${name}"]`, TypeError);
    }
  }
}

function byteLength(chunk: unknown, encoding: unknown): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk, (encoding as BufferEncoding | undefined) ?? 'utf8');
  return (chunk as Uint8Array).byteLength;
}

// --- incoming messages (requests on the server, responses on the client) ---

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

function headersFrom(raw: string[]): IncomingHttpHeaders {
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

// --- outgoing messages (responses on the server, requests on the client) ---

type OutgoingHeaderValue = string | number | readonly string[];
type Listener = (...args: unknown[]) => void;
type WriteCallback = (err?: Error | null) => void;

function headersSentError(action: string): Error {
  return codedError('ERR_HTTP_HEADERS_SENT', `Cannot ${action} headers after they are sent to the client`);
}

export class OutgoingMessage extends Writable {
  socket: Socket | null = null;
  chunkedEncoding = false;
  useChunkedEncodingByDefault = true;
  sendDate = false;
  shouldKeepAlive = true;
  finished = false;
  _header: string | null = null;
  _hasBody = true;
  _last = false;
  _contentLength: number | null = null;
  _keepAliveTimeout = 0;
  #headers = new Map<string, [string, OutgoingHeaderValue]>();
  #headerFlushed = false;
  /** A write (or the final one) waiting for the socket: pipelined responses wait their turn. */
  #waiting: (() => void) | undefined;
  /** Bytes before the header (100 Continue) waiting for the socket. */
  #raw: Buffer[] = [];
  #trailer = '';

  constructor(options: { emitClose?: boolean; autoDestroy?: boolean } = {}) {
    super({
      decodeStrings: true,
      emitClose: options.emitClose ?? true,
      autoDestroy: options.autoDestroy ?? true,
    } as ConstructorParameters<typeof Writable>[0]);
  }

  get connection(): Socket | null {
    return this.socket;
  }
  get headersSent(): boolean {
    return this._header !== null;
  }

  setHeader(name: string, value: OutgoingHeaderValue): this {
    if (this._header !== null) throw headersSentError('set');
    validateHeaderName(name);
    validateHeaderValue(name, value);
    this.#headers.set(name.toLowerCase(), [name, value]);
    return this;
  }
  appendHeader(name: string, value: OutgoingHeaderValue): this {
    if (this._header !== null) throw headersSentError('append');
    validateHeaderName(name);
    validateHeaderValue(name, value);
    const key = name.toLowerCase();
    const current = this.#headers.get(key);
    if (!current) this.#headers.set(key, [name, value]);
    else {
      const before = Array.isArray(current[1]) ? (current[1] as string[]) : [String(current[1])];
      const more = Array.isArray(value) ? (value as string[]) : [String(value)];
      this.#headers.set(key, [current[0], [...before, ...more]]);
    }
    return this;
  }
  setHeaders(headers: Map<string, OutgoingHeaderValue> | Record<string, OutgoingHeaderValue>): this {
    const entries = headers instanceof Map ? [...headers.entries()] : Object.entries(headers);
    for (const [k, v] of entries) this.setHeader(k, v);
    return this;
  }
  getHeader(name: string): OutgoingHeaderValue | undefined {
    return this.#headers.get(String(name).toLowerCase())?.[1];
  }
  getHeaderNames(): string[] {
    return [...this.#headers.keys()];
  }
  getRawHeaderNames(): string[] {
    return [...this.#headers.values()].map(([name]) => name);
  }
  getHeaders(): Record<string, OutgoingHeaderValue> {
    const out = Object.create(null) as Record<string, OutgoingHeaderValue>;
    for (const [key, [, value]] of this.#headers) out[key] = value;
    return out;
  }
  hasHeader(name: string): boolean {
    return this.#headers.has(String(name).toLowerCase());
  }
  removeHeader(name: string): void {
    if (this._header !== null) throw headersSentError('remove');
    this.#headers.delete(String(name).toLowerCase());
  }
  addTrailers(headers: Record<string, string> | Array<[string, string]>): void {
    const entries = Array.isArray(headers) ? headers : Object.entries(headers);
    for (const [name, value] of entries) {
      validateHeaderName(name, 'Trailer name');
      validateHeaderValue(name, value);
      this.#trailer += `${name}: ${value}\r\n`;
    }
  }

  /** Builds the header block from the implicit state (statusCode, setHeader). */
  _implicitHeader(): void {
    throw codedError('ERR_METHOD_NOT_IMPLEMENTED', 'The _implicitHeader() method is not implemented');
  }

  /** The Content-Length to announce when the whole body is given to end(); null for none. */
  _lengthForEnd(n: number): number | null {
    return n;
  }

  /** Whether a message with no length framing can still leave the connection open. */
  _delimitsWithoutLength(): boolean {
    return false;
  }

  /** Node's `_storeHeader`: the framing and keep-alive decisions, then the header text. */
  _storeHeader(firstLine: string): void {
    let header = firstLine;
    let connection: string | undefined;
    let contentLength = false;
    let transferEncoding: string | undefined;
    let date = false;
    let trailer = false;
    for (const [key, [name, value]] of this.#headers) {
      const values = Array.isArray(value) ? (value as string[]) : [String(value)];
      for (const v of values) header += `${name}: ${v}\r\n`;
      const joined = values.join(', ');
      if (key === 'connection') connection = joined;
      else if (key === 'content-length') contentLength = true;
      else if (key === 'transfer-encoding') transferEncoding = joined;
      else if (key === 'date') date = true;
      else if (key === 'trailer') trailer = true;
    }
    if (this.sendDate && !date) header += `Date: ${new DateClass().toUTCString()}\r\n`;
    if (connection !== undefined) {
      if (CONNECTION_CLOSE.test(connection)) {
        this._last = true;
        this.shouldKeepAlive = false;
      } else this.shouldKeepAlive = true;
    }
    let delimited = true;
    if (!this._hasBody) this.chunkedEncoding = false;
    else if (transferEncoding !== undefined) {
      this.chunkedEncoding = CHUNKED.test(transferEncoding);
      delimited = this.chunkedEncoding;
    } else if (contentLength) this.chunkedEncoding = false;
    else if (this._contentLength !== null && !trailer) header += `Content-Length: ${this._contentLength}\r\n`;
    else if (this.useChunkedEncodingByDefault) {
      header += 'Transfer-Encoding: chunked\r\n';
      this.chunkedEncoding = true;
    } else delimited = false;
    const canKeepAlive = delimited || this._delimitsWithoutLength();
    if (connection === undefined) {
      if (this.shouldKeepAlive && canKeepAlive) {
        header += 'Connection: keep-alive\r\n';
        if (this._keepAliveTimeout > 0)
          header += `Keep-Alive: timeout=${Math.floor(this._keepAliveTimeout / 1000)}\r\n`;
      } else {
        this._last = true;
        header += 'Connection: close\r\n';
      }
    } else if (!canKeepAlive) this._last = true;
    this._header = `${header}\r\n`;
  }

  override write(chunk: unknown, encoding?: unknown, cb?: unknown): boolean {
    if (chunk === null) throw codedError('ERR_STREAM_NULL_VALUES', 'May not write null values to stream', TypeError);
    if (this._header === null && !this.finished) this._implicitHeader();
    return super.write(chunk, encoding as string, cb as WriteCallback);
  }

  override end(chunk?: unknown, encoding?: unknown, cb?: unknown): this {
    if (typeof chunk === 'function') {
      cb = chunk;
      chunk = undefined;
      encoding = undefined;
    } else if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    const done = typeof cb === 'function' ? (cb as (err?: Error | null) => void) : undefined;
    if (this.finished) {
      if (done) {
        if (this.writableFinished) {
          queueMicrotask(() =>
            done(codedError('ERR_STREAM_ALREADY_FINISHED', 'Cannot call end after a stream was finished')),
          );
        } else this.once('finish', () => done());
      }
      return this;
    }
    const hasChunk = chunk !== undefined && chunk !== null;
    if (this._header === null) {
      this._contentLength = this._lengthForEnd(hasChunk ? byteLength(chunk, encoding) : 0);
      this._implicitHeader();
    }
    if (hasChunk) super.write(chunk, encoding as string);
    this.finished = true;
    if (done) super.end(() => done());
    else super.end();
    return this;
  }

  /** Sends the header now (with no body yet). */
  flushHeaders(): void {
    if (this._header === null) this._implicitHeader();
    if (!this.#headerFlushed && this.socket && !this.#waiting && this.writableLength === 0) this.#send([], () => {});
  }

  override _write(chunk: Buffer, _encoding: string, callback: WriteCallback): void {
    if (this._header === null) this._implicitHeader();
    let parts: Buffer[] = [];
    if (this._hasBody && chunk.length > 0) {
      parts = this.chunkedEncoding ? [Buffer.from(`${chunk.length.toString(16)}\r\n`, 'latin1'), chunk, CRLF] : [chunk];
    }
    this.#send(parts, callback);
  }

  override _final(callback: WriteCallback): void {
    if (this._header === null) this._implicitHeader();
    const parts = this._hasBody && this.chunkedEncoding ? [Buffer.from(`0\r\n${this.#trailer}\r\n`, 'latin1')] : [];
    this.#send(parts, callback);
  }

  override _destroy(err: Error | null, callback: (err: Error | null) => void): void {
    // Ending a message halfway leaves the peer nothing to make of the rest of the connection.
    if (this.socket && !this.socket.destroyed && !this.writableFinished) this.socket.destroy();
    callback(err);
  }

  /** The socket this message writes to is now its own (its turn in a pipelined connection). */
  assignSocket(socket: Socket): void {
    this.socket = socket;
    const waiting = this.#waiting;
    this.#waiting = undefined;
    if (waiting) waiting();
    else if (this.#raw.length > 0) {
      const raw = Buffer.concat(this.#raw);
      this.#raw = [];
      if (!socket.destroyed && !socket.writableEnded) socket.write(raw);
    }
  }
  detachSocket(): void {
    this.socket = null;
  }

  /** Bytes that go out before the header (an interim response such as 100 Continue). */
  _writeRaw(bytes: Buffer): void {
    if (this.#headerFlushed) return;
    if (this.socket && !this.#waiting && this.writableLength === 0) {
      if (!this.socket.destroyed && !this.socket.writableEnded) this.socket.write(bytes);
    } else this.#raw.push(bytes);
  }

  #send(parts: Buffer[], callback: WriteCallback): void {
    const socket = this.socket;
    if (!socket) {
      this.#waiting = () => this.#send(parts, callback);
      return;
    }
    const out = this.#raw;
    this.#raw = [];
    if (!this.#headerFlushed && this._header !== null) {
      out.push(Buffer.from(this._header, 'latin1'));
      this.#headerFlushed = true;
    }
    out.push(...parts);
    if (out.length === 0 || socket.destroyed || socket.writableEnded) {
      callback();
      return;
    }
    // A dead socket ends this message through the connection, not as a write error here.
    socket.write(out.length === 1 ? out[0] : Buffer.concat(out), () => callback());
  }
}

// --- the server ---

export interface ServerOptions {
  keepAliveTimeout?: number;
  maxHeaderSize?: number;
  requestTimeout?: number;
  headersTimeout?: number;
  noDelay?: boolean;
  requireHostHeader?: boolean;
  [key: string]: unknown;
}

export class ServerResponse extends OutgoingMessage {
  statusCode = 200;
  statusMessage: string | undefined = undefined;
  readonly req: IncomingMessage;
  _sent100 = false;
  readonly #server: Server | undefined;

  constructor(req: IncomingMessage, server?: Server) {
    super();
    this.req = req;
    this.#server = server;
    this.sendDate = true;
    if (req.method === 'HEAD') this._hasBody = false;
    if (req.httpVersionMajor < 1 || (req.httpVersionMajor === 1 && req.httpVersionMinor < 1)) {
      this.useChunkedEncodingByDefault = CHUNKED.test(String(req.headers.te ?? ''));
      this.shouldKeepAlive = false;
    }
  }

  override _implicitHeader(): void {
    this.writeHead(this.statusCode);
  }

  writeHead(statusCode: number, reason?: unknown, headers?: unknown): this {
    if (this._header !== null) throw headersSentError('write');
    const code = Number(statusCode) | 0;
    if (code < 100 || code > 999) {
      throw codedError('ERR_HTTP_INVALID_STATUS_CODE', `Invalid status code: ${String(statusCode)}`, RangeError);
    }
    if (typeof reason === 'string') this.statusMessage = reason;
    else {
      headers = reason;
      if (!this.statusMessage) this.statusMessage = STATUS_CODES[code] ?? 'unknown';
    }
    this.statusCode = code;
    if (/[\r\n]/.test(this.statusMessage ?? '')) {
      throw codedError('ERR_INVALID_CHAR', 'Invalid character in statusMessage', TypeError);
    }
    if (Array.isArray(headers)) {
      const list = headers as unknown[];
      if (list.length > 0 && Array.isArray(list[0])) {
        for (const pair of list as Array<[string, string]>) this.appendHeader(pair[0], pair[1]);
      } else {
        if (list.length % 2 !== 0) {
          throw codedError('ERR_INVALID_ARG_VALUE', "The argument 'headers' is invalid", TypeError);
        }
        for (let i = 0; i < list.length; i += 2) this.appendHeader(String(list[i]), list[i + 1] as string);
      }
    } else if (headers !== null && typeof headers === 'object') {
      for (const [k, v] of Object.entries(headers as Record<string, OutgoingHeaderValue | undefined>)) {
        if (v !== undefined) this.setHeader(k, v);
      }
    }
    if (code === 204 || code === 304 || (code >= 100 && code <= 199)) this._hasBody = false;
    const server = this.#server;
    if (server) {
      // A server that is closing keeps no connection open for more requests.
      if (!server.listening) this.shouldKeepAlive = false;
      this._keepAliveTimeout = server.keepAliveTimeout;
    }
    this._storeHeader(`HTTP/1.1 ${code} ${this.statusMessage ?? ''}\r\n`);
    return this;
  }

  writeContinue(cb?: () => void): void {
    this._writeRaw(Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1'));
    this._sent100 = true;
    if (cb) queueMicrotask(cb);
  }
  writeProcessing(cb?: () => void): void {
    this._writeRaw(Buffer.from('HTTP/1.1 102 Processing\r\n\r\n', 'latin1'));
    if (cb) queueMicrotask(cb);
  }
  setTimeout(ms: number, cb?: () => void): this {
    if (cb) this.on('timeout', cb);
    this.socket?.setTimeout(ms);
    return this;
  }
}

/** One accepted connection: parses its requests and sends their responses in order. */
class ServerConnection {
  readonly #parser: Parser;
  readonly #responses: ServerResponse[] = [];
  #incoming: IncomingMessage | undefined;
  #upgrade: IncomingMessage | undefined;
  #bodyPaused = false;
  #queuePaused = false;
  /** No new requests on this connection (one asked to close, the peer ended). */
  #noMore = false;
  /** No more bytes are parsed at all (a parse error, our side ended, or the socket handed over). */
  #stopped = false;
  #peerEnded = false;
  #detached = false;
  #keepAliveTimer: Timeout | undefined;
  #headersTimer: Timeout | undefined;
  #lingerTimer: Timeout | undefined;
  readonly #listeners: Array<[string, (...args: never[]) => void]> = [];

  constructor(
    readonly server: Server,
    readonly socket: Socket,
  ) {
    this.#parser = newParser('REQUEST', server.maxHeaderSize, {
      headers: (info) => this.#onHeaders(info),
      body: (chunk) => this.#onBody(chunk),
      complete: () => this.#onComplete(),
      trailers: (raw) => this.#incoming?._setTrailers(raw),
    });
    this.#listen('data', (buf: Buffer) => this.#onData(buf));
    this.#listen('end', () => this.#onEnd());
    this.#listen('error', (err: Error) => this.#onSocketError(err));
    this.#listen('close', () => this.#onClose());
    if (server.noDelay) socket.setNoDelay(true);
    if (server.timeout > 0) socket.setTimeout(server.timeout);
    // As Node: an idle socket (server.timeout, req/res.setTimeout) is news for whoever listens,
    // and is closed when nobody does.
    this.#listen('timeout', () => {
      const req = this.#incoming;
      const res = this.#responses[0];
      const heard = [req?.emit('timeout', socket), res?.emit('timeout', socket), server.emit('timeout', socket)];
      if (!heard.includes(true)) socket.destroy();
    });
    this.#startHeadersTimer();
  }

  /** No request in progress: closeIdleConnections() may close it. */
  get idle(): boolean {
    return this.#responses.length === 0 && this.#incoming === undefined;
  }

  #listen(event: string, fn: (...args: never[]) => void): void {
    this.socket.on(event, fn as Listener);
    this.#listeners.push([event, fn]);
  }

  #detach(): void {
    if (this.#detached) return;
    this.#detached = true;
    this.#clearTimers();
    for (const [event, fn] of this.#listeners) this.socket.off(event, fn as Listener);
    this.server._forget(this);
  }

  #clearTimers(): void {
    if (this.#keepAliveTimer) clearTimeout(this.#keepAliveTimer);
    this.#keepAliveTimer = undefined;
    this.#clearHeadersTimer();
    if (this.#lingerTimer) clearTimeout(this.#lingerTimer);
    this.#lingerTimer = undefined;
  }

  #onData(buf: Buffer): void {
    if (this.#detached || this.#stopped) return;
    if (this.#keepAliveTimer) {
      clearTimeout(this.#keepAliveTimer);
      this.#keepAliveTimer = undefined;
    }
    let offset = 0;
    while (offset < buf.length && !this.#detached) {
      let consumed: number | Error;
      try {
        consumed = this.#parser.execute(offset === 0 ? buf : buf.subarray(offset));
      } catch (err) {
        if (!isParseError(err)) {
          // The program's own handler threw: it goes up as Node would, and this connection is done.
          this.socket.destroy();
          throw err;
        }
        consumed = err;
      }
      if (consumed instanceof Error) {
        this.#parseFailed(asParseError(consumed));
        return;
      }
      if (this.#upgrade) {
        this.#handOver(this.#upgrade, buf.subarray(offset + consumed));
        return;
      }
      if (!(consumed > 0)) break;
      offset += consumed;
      if (this.#stopped) break;
    }
    if (this.#detached || this.#stopped) return;
    // Lines the parser is still collecting (chunk sizes, trailers) are bounded like headers.
    const parser = this.#parser;
    if (parser.line.length > this.server.maxHeaderSize) {
      this.#parseFailed(parseError('HPE_HEADER_OVERFLOW', 'Header overflow'));
      return;
    }
    // A request head split across packets must be complete within headersTimeout (slowloris).
    if (parser.state === 'HEADER' || (parser.state === 'REQUEST_LINE' && parser.line.length > 0)) {
      this.#startHeadersTimer();
    }
  }

  #startHeadersTimer(): void {
    const ms = this.server.headersTimeout;
    if (this.#headersTimer || !(ms > 0)) return;
    this.#headersTimer = setTimeout(() => {
      this.#headersTimer = undefined;
      const parser = this.#parser;
      const waiting = this.#responses.length === 0 && this.#incoming === undefined;
      const midHead = parser.state === 'HEADER' || parser.state === 'REQUEST_LINE';
      if (!this.#detached && !this.#stopped && waiting && midHead) {
        this.#parseFailed(codedError('ERR_HTTP_REQUEST_TIMEOUT', 'Request timeout'));
      }
    }, ms).unref();
  }

  #clearHeadersTimer(): void {
    if (this.#headersTimer) clearTimeout(this.#headersTimer);
    this.#headersTimer = undefined;
  }

  #onHeaders(info: ParserInfo): number {
    this.#clearHeadersTimer();
    if (this.#noMore || this.#detached) return 0;
    if ((info.url ?? '').length > this.server.maxHeaderSize) throw parseError('HPE_HEADER_OVERFLOW', 'Header overflow');
    checkFraming(info.headers, true);
    const server = this.server;
    const req = new IncomingMessage(this.socket);
    req._setHead(info, server.maxHeadersCount);
    req.method = typeof info.method === 'number' ? (Parser.methods[info.method] ?? 'GET') : String(info.method);
    req.url = info.url ?? '';
    if (!info.shouldKeepAlive) this.#noMore = true;
    if (info.upgrade) {
      const event = req.method === 'CONNECT' ? 'connect' : 'upgrade';
      if (server.listenerCount(event) > 0) {
        this.#upgrade = req;
        this.#noMore = true;
        return 0;
      }
      if (req.method === 'CONNECT') {
        this.#noMore = true;
        this.socket.destroy();
        return 0;
      }
      // An Upgrade nobody handles is an ordinary request (Node 18+).
      req.upgrade = false;
    }
    this.#incoming = req;
    req._onRead = () => this.#resumeBody();
    const res = new ServerResponse(req, server);
    res.shouldKeepAlive = info.shouldKeepAlive;
    res.once('finish', () => this.#responseDone(res));
    this.#responses.push(res);
    if (this.#responses.length === 1) res.assignSocket(this.socket);
    else if (this.#responses.length > MAX_QUEUED_RESPONSES && !this.#queuePaused) {
      this.#queuePaused = true;
      this.socket.pause();
    }
    const expect = req.headers.expect;
    if (server.requireHostHeader && req.httpVersion === '1.1' && req.headers.host === undefined) {
      // As Node (and RFC 9112): an HTTP/1.1 request must say which host it is for.
      res.writeHead(400, { Connection: 'close' });
      res.end();
    } else if (expect !== undefined) {
      if (/^100-continue$/i.test(String(expect).trim())) {
        if (server.listenerCount('checkContinue') > 0) server.emit('checkContinue', req, res);
        else {
          res.writeContinue();
          server.emit('request', req, res);
        }
      } else if (server.listenerCount('checkExpectation') > 0) server.emit('checkExpectation', req, res);
      else {
        res.writeHead(417);
        res.end();
      }
    } else server.emit('request', req, res);
    return 0;
  }

  #onBody(chunk: Buffer): void {
    const req = this.#incoming;
    if (!req || req.destroyed) return;
    if (!req.push(chunk) && !this.#bodyPaused) {
      this.#bodyPaused = true;
      this.socket.pause();
    }
  }

  #onComplete(): void {
    const req = this.#incoming;
    this.#incoming = undefined;
    if (!req) return;
    req.complete = true;
    req.push(null);
    // The rest of the stream is the next request's: it may flow again.
    this.#resumeBody();
  }

  #resumeBody(): void {
    if (!this.#bodyPaused || this.#detached) return;
    this.#bodyPaused = false;
    if (!this.#queuePaused) this.socket.resume();
  }

  #responseDone(res: ServerResponse): void {
    if (this.#detached) return;
    const i = this.#responses.indexOf(res);
    if (i >= 0) this.#responses.splice(i, 1);
    const req = res.req;
    // A body the handler never read is read and dropped, so the next request can be parsed.
    if (!req._consuming && !req.readableEnded) req._dump();
    if (res._last) {
      this.#closeSoon();
      return;
    }
    const next = this.#responses[0];
    if (next) {
      next.assignSocket(this.socket);
      if (this.#queuePaused && this.#responses.length <= MAX_QUEUED_RESPONSES / 2) {
        this.#queuePaused = false;
        if (!this.#bodyPaused) this.socket.resume();
      }
      return;
    }
    if (this.#peerEnded || this.#noMore || !this.server.listening) {
      this.#closeSoon();
      return;
    }
    const ms = this.server.keepAliveTimeout;
    if (ms > 0 && this.#incoming === undefined) {
      this.#keepAliveTimer = setTimeout(() => {
        this.#keepAliveTimer = undefined;
        if (this.idle) this.socket.destroy();
      }, ms).unref();
    }
  }

  /** Ends our side, reads and drops whatever else comes, and drops the connection if the peer lingers. */
  #closeSoon(): void {
    this.#noMore = true;
    this.#stopped = true;
    this.#clearTimers();
    const socket = this.socket;
    if (socket.destroyed) return;
    if (!socket.writableEnded) socket.end();
    this.#bodyPaused = false;
    this.#queuePaused = false;
    socket.resume();
    this.#lingerTimer = setTimeout(() => socket.destroy(), LINGER_MS).unref();
  }

  #onEnd(): void {
    if (this.#detached) return;
    const err = this.#stopped ? undefined : this.#parser.finish();
    if (err instanceof Error) {
      this.#parseFailed(asParseError(err));
      return;
    }
    this.#peerEnded = true;
    this.#noMore = true;
    if (this.#responses.length === 0) this.#closeSoon();
  }

  #parseFailed(err: Error): void {
    this.#noMore = true;
    this.#stopped = true;
    const socket = this.socket;
    Object.assign(err, { bytesParsed: 0 });
    if (this.server.listenerCount('clientError') > 0) {
      this.server.emit('clientError', err, socket);
      return;
    }
    const active = this.#responses[0];
    if (!socket.destroyed && !socket.writableEnded && (!active || !active.headersSent)) {
      const code = (err as { code?: string }).code;
      socket.write(
        code === 'HPE_HEADER_OVERFLOW'
          ? HEADERS_TOO_LARGE
          : code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? REQUEST_TIMEOUT
            : BAD_REQUEST,
      );
      for (const res of this.#responses.splice(0)) res.destroy();
      this.#closeSoon();
    } else socket.destroy();
  }

  #onSocketError(err: Error): void {
    if (this.#detached) return;
    this.#noMore = true;
    if (this.server.listenerCount('clientError') > 0) this.server.emit('clientError', err, this.socket);
    else this.socket.destroy();
  }

  #onClose(): void {
    if (this.#detached) return;
    this.#detach();
    const req = this.#incoming;
    this.#incoming = undefined;
    if (req && !req.complete) req.destroy(connResetError('aborted'));
    for (const res of this.#responses.splice(0)) res.destroy();
  }

  /** An Upgrade or CONNECT someone listens for: the socket is theirs from here. */
  #handOver(req: IncomingMessage, head: Buffer): void {
    this.#upgrade = undefined;
    this.#detach();
    req.complete = true;
    req.push(null);
    this.server.emit(req.method === 'CONNECT' ? 'connect' : 'upgrade', req, this.socket, Buffer.from(head));
  }
}

export class Server extends NetServer {
  timeout = 0;
  keepAliveTimeout = 5000;
  headersTimeout = 60000;
  requestTimeout = 300000;
  maxHeadersCount: number | null = null;
  maxRequestsPerSocket = 0;
  maxHeaderSize: number;
  noDelay: boolean;
  requireHostHeader: boolean;
  readonly #connections = new Set<ServerConnection>();

  constructor(...args: unknown[]) {
    const listener = typeof args[args.length - 1] === 'function' ? (args.pop() as RequestListener) : undefined;
    const first = args[0];
    const options = (first !== null && typeof first === 'object' ? first : {}) as ServerOptions;
    super({ allowHalfOpen: true });
    this.maxHeaderSize = typeof options.maxHeaderSize === 'number' ? options.maxHeaderSize : DEFAULT_MAX_HEADER_SIZE;
    this.noDelay = options.noDelay !== false;
    this.requireHostHeader = options.requireHostHeader !== false;
    if (typeof options.keepAliveTimeout === 'number') this.keepAliveTimeout = options.keepAliveTimeout;
    if (typeof options.requestTimeout === 'number') this.requestTimeout = options.requestTimeout;
    if (typeof options.headersTimeout === 'number') this.headersTimeout = options.headersTimeout;
    this.on('connection', (socket: Socket) => {
      this.#connections.add(new ServerConnection(this, socket));
    });
    if (listener) this.on('request', listener);
  }

  override close(cb?: (...args: unknown[]) => void): this {
    this.closeIdleConnections();
    return super.close(cb);
  }

  closeAllConnections(): void {
    for (const conn of [...this.#connections]) conn.socket.destroy();
  }

  closeIdleConnections(): void {
    for (const conn of [...this.#connections]) if (conn.idle) conn.socket.destroy();
  }

  setTimeout(ms: number, cb?: () => void): this {
    this.timeout = ms;
    if (cb) this.on('timeout', cb);
    return this;
  }

  /** @internal A connection closed or was handed over. */
  _forget(conn: ServerConnection): void {
    this.#connections.delete(conn);
  }
}

type RequestListener = (req: IncomingMessage, res: ServerResponse) => void;

export function createServer(...args: unknown[]): Server {
  return new Server(...args);
}

// --- the client ---

export interface AgentOptions {
  keepAlive?: boolean;
  keepAliveMsecs?: number;
  maxSockets?: number;
  maxFreeSockets?: number;
  maxTotalSockets?: number;
  timeout?: number;
  scheduling?: 'lifo' | 'fifo';
}

interface ConnectOptions {
  host: string;
  port: number;
  localAddress?: string;
  family?: number;
}

/**
 * A small `http.Agent`: sockets are made on demand (no queueing under maxSockets), and with
 * `keepAlive` one idle socket per host:port is kept (unref'd) for the next request.
 */
export class Agent extends EventEmitter {
  keepAlive: boolean;
  keepAliveMsecs: number;
  maxSockets: number;
  maxFreeSockets: number;
  maxTotalSockets: number;
  timeout: number | undefined;
  scheduling: 'lifo' | 'fifo';
  defaultPort = 80;
  protocol = 'http:';
  readonly options: AgentOptions;
  readonly sockets: Record<string, Socket[]> = Object.create(null) as Record<string, Socket[]>;
  readonly freeSockets: Record<string, Socket[]> = Object.create(null) as Record<string, Socket[]>;
  readonly requests: Record<string, ClientRequest[]> = Object.create(null) as Record<string, ClientRequest[]>;
  readonly #freeCleanup = new WeakMap<Socket, () => void>();

  constructor(options: AgentOptions = {}) {
    super();
    this.options = { ...options };
    this.keepAlive = options.keepAlive === true;
    this.keepAliveMsecs = options.keepAliveMsecs ?? 1000;
    this.maxSockets = options.maxSockets ?? Infinity;
    this.maxFreeSockets = options.maxFreeSockets ?? 256;
    this.maxTotalSockets = options.maxTotalSockets ?? Infinity;
    this.timeout = options.timeout;
    this.scheduling = options.scheduling ?? 'lifo';
  }

  getName(options: Partial<ConnectOptions> = {}): string {
    let name = `${options.host ?? 'localhost'}:`;
    if (options.port) name += String(options.port);
    name += ':';
    if (options.localAddress) name += options.localAddress;
    if (options.family === 4 || options.family === 6) name += `:${options.family}`;
    return name;
  }

  createConnection(options: ConnectOptions, cb?: () => void): Socket {
    return netConnect({ host: options.host, port: options.port }, cb);
  }

  keepSocketAlive(socket: Socket): boolean {
    socket.setKeepAlive();
    socket.unref();
    return true;
  }

  reuseSocket(socket: Socket, _req: ClientRequest): void {
    socket.ref();
  }

  addRequest(req: ClientRequest, options: ConnectOptions): void {
    const name = this.getName(options);
    const free = this.freeSockets[name];
    while (free && free.length > 0) {
      const socket = (this.scheduling === 'lifo' ? free.pop() : free.shift()) as Socket;
      this.#freeCleanup.get(socket)?.();
      this.#freeCleanup.delete(socket);
      if (socket.destroyed) continue;
      if (free.length === 0) delete this.freeSockets[name];
      (this.sockets[name] ??= []).push(socket);
      this.reuseSocket(socket, req);
      req.onSocket(socket, true, name);
      return;
    }
    delete this.freeSockets[name];
    const socket = this.createConnection(options);
    (this.sockets[name] ??= []).push(socket);
    socket.once('close', () => this.#forget(name, socket));
    req.onSocket(socket, false, name);
  }

  /** @internal A request is done with `socket`: keep it for the next one, or close it. */
  _release(socket: Socket, name: string, idleMs: number | undefined): void {
    remove(this.sockets, name, socket);
    const free = this.freeSockets[name] ?? [];
    if (!this.keepAlive || socket.destroyed || !socket.writable || free.length >= this.maxFreeSockets) {
      socket.destroy();
      return;
    }
    if (!this.keepSocketAlive(socket)) {
      socket.destroy();
      return;
    }
    this.freeSockets[name] = free;
    free.push(socket);
    // While idle, anything from the server (data, end, an error) ends the socket.
    const drop = (): void => {
      socket.destroy();
    };
    const ignore = (): void => {};
    socket.on('data', drop);
    socket.on('end', drop);
    socket.on('timeout', drop);
    socket.on('error', ignore);
    const ms = idleMs ?? this.timeout;
    if (ms !== undefined && ms > 0) socket.setTimeout(ms);
    this.#freeCleanup.set(socket, () => {
      socket.off('data', drop);
      socket.off('end', drop);
      socket.off('timeout', drop);
      socket.off('error', ignore);
      socket.setTimeout(0);
    });
    this.emit('free', socket, name);
  }

  #forget(name: string, socket: Socket): void {
    remove(this.sockets, name, socket);
    remove(this.freeSockets, name, socket);
  }

  destroy(): void {
    for (const list of [...Object.values(this.sockets), ...Object.values(this.freeSockets)]) {
      for (const socket of [...list]) socket.destroy();
    }
  }
}

function remove(lists: Record<string, Socket[]>, name: string, socket: Socket): void {
  const list = lists[name];
  if (!list) return;
  const i = list.indexOf(socket);
  if (i >= 0) list.splice(i, 1);
  if (list.length === 0) delete lists[name];
}

const agents = { global: new Agent({ keepAlive: true, scheduling: 'lifo', timeout: 5000 }) };

export interface RequestOptions {
  protocol?: string;
  host?: string;
  hostname?: string;
  port?: number | string;
  defaultPort?: number;
  path?: string;
  method?: string;
  headers?: Record<string, OutgoingHeaderValue | undefined> | string[];
  auth?: string;
  agent?: Agent | false | null;
  timeout?: number;
  setHost?: boolean;
  createConnection?: (options: ConnectOptions) => Socket;
  signal?: { aborted: boolean; reason?: unknown; addEventListener(type: string, fn: () => void): void };
  localAddress?: string;
  family?: number;
  maxHeaderSize?: number;
}

interface UrlLike {
  href: string;
  protocol: string;
  hostname: string;
  port: string;
  pathname: string;
  search: string;
  hash: string;
  username: string;
  password: string;
}

function isURL(value: unknown): value is UrlLike {
  const v = value as UrlLike | null;
  return (
    v !== null &&
    typeof v === 'object' &&
    typeof v.href === 'string' &&
    typeof v.protocol === 'string' &&
    typeof v.hostname === 'string' &&
    typeof v.pathname === 'string'
  );
}

function urlToHttpOptions(url: UrlLike): RequestOptions {
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const options: RequestOptions = {
    protocol: url.protocol,
    hostname,
    path: `${url.pathname || ''}${url.search || ''}`,
  };
  if (url.port !== '') options.port = Number(url.port);
  if (url.username || url.password) {
    options.auth = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
  }
  return options;
}

export class ClientRequest extends OutgoingMessage {
  method: string;
  path: string;
  host: string;
  protocol = 'http:';
  agent: Agent | undefined;
  reusedSocket = false;
  aborted = false;
  res: IncomingMessage | null = null;
  maxHeadersCount: number | null = null;
  readonly #maxHeaderSize: number;
  #agentName = '';
  #parser: Parser | undefined;
  #listeners: Array<[string, (...args: never[]) => void]> = [];
  #timeoutMs = 0;
  #paused = false;
  #informational = false;
  #upgrading = false;
  #responseKeepAlive = false;
  #responseDone = false;
  #junk = false;
  #keepAliveHintMs: number | undefined;
  #released = false;
  #closed = false;
  #hadError = false;
  #destroyCalled = false;
  #destroyError: Error | undefined;

  constructor(input: unknown, options?: unknown, cb?: unknown) {
    super({ emitClose: false, autoDestroy: false });
    let base: RequestOptions | undefined;
    if (typeof input === 'string') base = urlToHttpOptions(new URL(input));
    else if (isURL(input)) base = urlToHttpOptions(input);
    else {
      cb = options;
      options = input;
    }
    let opts: RequestOptions;
    if (typeof options === 'function') {
      cb = options;
      opts = { ...(base ?? {}) };
    } else opts = { ...(base ?? {}), ...((options ?? {}) as RequestOptions) };

    let agent: Agent | undefined;
    if (opts.agent === false) agent = new Agent();
    else if (opts.agent === undefined || opts.agent === null) {
      agent = typeof opts.createConnection === 'function' ? undefined : agents.global;
    } else agent = opts.agent;
    this.agent = agent;
    const defaultPort = opts.defaultPort ?? agent?.defaultPort ?? 80;
    const protocol = opts.protocol ?? agent?.protocol ?? 'http:';
    if (protocol !== 'http:') {
      throw codedError('ERR_INVALID_PROTOCOL', `Protocol "${protocol}" not supported. Expected "http:"`, TypeError);
    }
    const host = opts.hostname || opts.host || 'localhost';
    const port = Number(opts.port ?? defaultPort) || defaultPort;
    const path = opts.path ?? '/';
    if (/[^\u0021-\u00ff]/.test(path)) {
      throw codedError('ERR_UNESCAPED_CHARACTERS', 'Request path contains unescaped characters', TypeError);
    }
    const method = (opts.method ?? 'GET').toUpperCase();
    validateHeaderName(method, 'Method');
    this.method = method;
    this.path = path;
    this.host = host;
    this.#maxHeaderSize = opts.maxHeaderSize ?? DEFAULT_MAX_HEADER_SIZE;
    if (typeof cb === 'function') this.once('response', cb as (res: IncomingMessage) => void);

    const headers = opts.headers;
    if (Array.isArray(headers)) {
      for (let i = 0; i + 1 < headers.length; i += 2) this.appendHeader(String(headers[i]), String(headers[i + 1]));
    } else if (headers) {
      for (const [k, v] of Object.entries(headers)) if (v !== undefined) this.setHeader(k, v);
    }
    if (opts.setHost !== false && !this.hasHeader('host')) {
      let hostHeader = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
      if (port !== defaultPort) hostHeader += `:${port}`;
      this.setHeader('Host', hostHeader);
    }
    if (opts.auth && !this.hasHeader('authorization')) {
      this.setHeader('Authorization', `Basic ${Buffer.from(opts.auth).toString('base64')}`);
    }
    this.useChunkedEncodingByDefault = !BODYLESS_METHODS.has(method);
    this.shouldKeepAlive = agent?.keepAlive === true;
    if (opts.timeout !== undefined) this.setTimeout(opts.timeout);

    const signal = opts.signal;
    if (signal) {
      const abortWith = (): void => {
        this.destroy(Object.assign(new Error('The operation was aborted'), { name: 'AbortError', code: 'ABORT_ERR' }));
      };
      if (signal.aborted) queueMicrotask(abortWith);
      else signal.addEventListener('abort', abortWith);
    }

    const connect: ConnectOptions = { host, port };
    if (opts.localAddress) connect.localAddress = opts.localAddress;
    if (opts.family) connect.family = opts.family;
    if (agent) agent.addRequest(this, connect);
    else this.onSocket((opts.createConnection as (o: ConnectOptions) => Socket)(connect), false, '');
  }

  override _implicitHeader(): void {
    this._storeHeader(`${this.method} ${this.path} HTTP/1.1\r\n`);
  }
  override _lengthForEnd(n: number): number | null {
    // GET and friends announce no length for an empty body, as Node.
    return n > 0 || this.useChunkedEncodingByDefault ? n : null;
  }
  override _delimitsWithoutLength(): boolean {
    return true;
  }
  override _destroy(err: Error | null, callback: (err: Error | null) => void): void {
    callback(err);
  }

  /** @internal The agent hands over a socket (new and connecting, or an idle kept-alive one). */
  onSocket(socket: Socket, reused: boolean, name: string): void {
    this.socket = socket;
    this.reusedSocket = reused;
    this.#agentName = name;
    if (this.#destroyCalled) {
      socket.destroy();
      return;
    }
    this.#parser = newParser('RESPONSE', this.#maxHeaderSize, {
      headers: (info) => this.#onHeaders(info),
      body: (chunk) => this.#onBody(chunk),
      complete: () => this.#onComplete(),
      trailers: (raw) => this.res?._setTrailers(raw),
    });
    this.#listen(socket, 'data', (buf: Buffer) => this.#onData(buf));
    this.#listen(socket, 'end', () => this.#onEnd());
    this.#listen(socket, 'error', (err: Error) => this.#onError(err));
    this.#listen(socket, 'close', () => this.#onClose());
    this.#listen(socket, 'timeout', () => {
      if (this.res && !this.res.complete) this.res.emit('timeout');
      this.emit('timeout');
    });
    if (this.#timeoutMs > 0) socket.setTimeout(this.#timeoutMs);
    this.assignSocket(socket);
    queueMicrotask(() => this.emit('socket', socket));
  }

  setTimeout(ms: number, cb?: () => void): this {
    if (cb) this.once('timeout', cb);
    this.#timeoutMs = ms;
    if (this.socket && !this.#released) this.socket.setTimeout(ms);
    return this;
  }
  setNoDelay(noDelay = true): void {
    this.socket?.setNoDelay(noDelay);
  }
  setSocketKeepAlive(): void {}

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    queueMicrotask(() => this.emit('abort'));
    this.destroy();
  }

  override destroy(err?: Error): this {
    if (this.#destroyCalled) return this;
    this.#destroyCalled = true;
    this.#destroyError = err;
    this.res?._dump();
    if (this.socket && !this.#released) this.socket.destroy();
    else if (!this.socket) {
      queueMicrotask(() => {
        if (!this.aborted && !this.#hadError) {
          this.#hadError = true;
          this.emit('error', err ?? connResetError('socket hang up'));
        }
        this.#emitClose();
      });
    } else if (err) queueMicrotask(() => this.emit('error', err));
    super.destroy();
    return this;
  }

  #listen(socket: Socket, event: string, fn: (...args: never[]) => void): void {
    socket.on(event, fn as Listener);
    this.#listeners.push([event, fn]);
  }

  #detach(): void {
    const socket = this.socket;
    if (!socket) return;
    for (const [event, fn] of this.#listeners) socket.off(event, fn as Listener);
    this.#listeners = [];
    socket.setTimeout(0);
  }

  #emitClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    queueMicrotask(() => this.emit('close'));
  }

  #onData(buf: Buffer): void {
    const parser = this.#parser;
    if (!parser || this.#released) return;
    if (this.#responseDone) {
      this.#junk = true;
      return;
    }
    let offset = 0;
    while (offset < buf.length) {
      let consumed: number | Error;
      try {
        consumed = parser.execute(offset === 0 ? buf : buf.subarray(offset));
      } catch (err) {
        if (!isParseError(err)) {
          this.socket?.destroy();
          throw err;
        }
        consumed = err;
      }
      if (consumed instanceof Error) {
        this.#parseFailed(asParseError(consumed));
        return;
      }
      if (this.#upgrading) {
        this.#handOver(buf.subarray(offset + consumed));
        return;
      }
      if (!(consumed > 0)) break;
      offset += consumed;
      if (this.#responseDone) break;
    }
    if (parser.line.length > this.#maxHeaderSize && !this.#responseDone) {
      this.#parseFailed(parseError('HPE_HEADER_OVERFLOW', 'Header overflow'));
    }
  }

  #onHeaders(info: ParserInfo): number {
    if (this.#responseDone) {
      this.#junk = true;
      return 1;
    }
    checkFraming(info.headers, false);
    const status = info.statusCode ?? 0;
    if (status >= 100 && status < 200 && status !== 101) {
      this.#informational = true;
      const headers = headersFrom(info.headers);
      if (status === 100) this.emit('continue');
      this.emit('information', {
        statusCode: status,
        statusMessage: info.statusMessage ?? '',
        httpVersion: `${info.versionMajor}.${info.versionMinor}`,
        httpVersionMajor: info.versionMajor,
        httpVersionMinor: info.versionMinor,
        headers,
        rawHeaders: info.headers,
      });
      return 0;
    }
    const socket = this.socket;
    const res = new IncomingMessage(socket);
    res._setHead(info, this.maxHeadersCount);
    res.statusCode = status;
    res.statusMessage = info.statusMessage ?? '';
    res.req = this;
    this.res = res;
    this.#responseKeepAlive = info.shouldKeepAlive;
    const hint = /timeout=(\d+)/.exec(String(res.headers['keep-alive'] ?? ''));
    // As Node: leave a second before the server's announced idle timeout, and do not reuse a
    // socket the server keeps for less than that.
    if (hint?.[1]) this.#keepAliveHintMs = Math.max(0, Number(hint[1]) * 1000 - 1000);
    res._onRead = () => {
      if (this.#paused && !this.#released && socket) {
        this.#paused = false;
        socket.resume();
      }
    };
    if (status === 101) {
      if (this.listenerCount('upgrade') > 0) {
        this.#upgrading = true;
        return 0;
      }
      socket?.destroy();
      return 1;
    }
    // No body, whatever the headers say, for HEAD and for 204 and 304.
    const skipBody = this.method === 'HEAD' || status === 204 || status === 304 ? 1 : 0;
    if (!this.emit('response', res)) res._dump();
    return skipBody;
  }

  #onBody(chunk: Buffer): void {
    const res = this.res;
    if (!res || this.#responseDone || res.destroyed) return;
    if (!res.push(chunk) && !this.#paused) {
      this.#paused = true;
      this.socket?.pause();
    }
  }

  #onComplete(): void {
    if (this.#informational) {
      this.#informational = false;
      return;
    }
    const res = this.res;
    if (!res || this.#responseDone) return;
    this.#responseDone = true;
    res.complete = true;
    if (this.#paused) {
      this.#paused = false;
      this.socket?.resume();
    }
    res.once('end', () => this.#release());
    res.once('close', () => this.#release());
    res.push(null);
  }

  /** The response was read to its end (or dropped): the socket goes back to the agent or closes. */
  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#detach();
    const socket = this.socket;
    if (socket) {
      const reuse =
        this.agent !== undefined &&
        this.shouldKeepAlive &&
        !this._last &&
        this.#responseKeepAlive &&
        this.writableFinished &&
        this.res?.readableEnded === true &&
        !this.#junk &&
        this.#keepAliveHintMs !== 0 &&
        !socket.destroyed;
      if (reuse && this.agent) this.agent._release(socket, this.#agentName, this.#keepAliveHintMs);
      else socket.destroy();
    }
    this.#emitClose();
  }

  #onEnd(): void {
    if (this.#released || !this.#parser) return;
    if (!this.#responseDone) {
      const err = this.#parser.finish();
      if (err instanceof Error && this.res) {
        this.#parseFailed(asParseError(err));
        return;
      }
    }
    if (!this.#responseDone) this.socket?.destroy();
  }

  #onError(err: Error): void {
    if (this.#released || this.#hadError) return;
    this.#hadError = true;
    if (!this.aborted) this.emit('error', err);
  }

  #parseFailed(err: Error): void {
    if (!this.#hadError) {
      this.#hadError = true;
      if (!this.aborted) this.emit('error', err);
    }
    this.socket?.destroy();
  }

  #onClose(): void {
    if (this.#released) return;
    if (this.#responseDone) {
      // Complete: the reader may still be busy with it; the socket is released when it is done.
      return;
    }
    this.#released = true;
    this.#detach();
    const res = this.res;
    if (res) {
      if (!res.complete) res.destroy(connResetError('aborted'));
    } else if (!this.#hadError) {
      this.#hadError = true;
      if (!this.aborted) this.emit('error', this.#destroyError ?? connResetError('socket hang up'));
    }
    this.#emitClose();
  }

  #handOver(head: Buffer): void {
    const socket = this.socket;
    const res = this.res;
    this.#released = true;
    this.#detach();
    if (!socket || !res) return;
    res.complete = true;
    res.push(null);
    this.emit('upgrade', res, socket, Buffer.from(head));
    this.#emitClose();
  }
}

export function request(...args: unknown[]): ClientRequest {
  return new ClientRequest(args[0], args[1], args[2]);
}

export function get(...args: unknown[]): ClientRequest {
  const req = request(...args);
  req.end();
  return req;
}

export const httpModule = {
  METHODS,
  STATUS_CODES,
  Agent,
  ClientRequest,
  IncomingMessage,
  OutgoingMessage,
  Server,
  ServerResponse,
  createServer,
  request,
  get,
  validateHeaderName,
  validateHeaderValue,
  maxHeaderSize: DEFAULT_MAX_HEADER_SIZE,
  setMaxIdleHTTPParsers(): void {},
  get globalAgent(): Agent {
    return agents.global;
  },
  set globalAgent(agent: Agent) {
    agents.global = agent;
  },
};
