/** Outgoing messages: responses on the server, requests on the client. */
import { Buffer } from 'buffer';
import { Writable } from 'readable-stream';
import { DateClass } from '../clock.js';
import { type Socket } from '../net.js';
import {
  CHUNKED,
  CONNECTION_CLOSE,
  CRLF,
  byteLength,
  codedError,
  validateHeaderName,
  validateHeaderValue,
} from './common.js';

export type OutgoingHeaderValue = string | number | readonly string[];
export type Listener = (...args: unknown[]) => void;
type WriteCallback = (err?: Error | null) => void;

export function headersSentError(action: string): Error {
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
