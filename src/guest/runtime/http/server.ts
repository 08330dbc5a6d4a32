/**
 * The server: one `ServerConnection` per accepted socket parses requests, queues their responses
 * so pipelined requests are answered in order, and applies Node's keep-alive rules.
 */
import { Buffer } from 'buffer';
import { Server as NetServer, type Socket } from '../net.js';
import { clearTimeout, setTimeout, type Timeout } from '../timers.js';
import {
  BAD_REQUEST,
  CHUNKED,
  DEFAULT_MAX_HEADER_SIZE,
  HEADERS_TOO_LARGE,
  LINGER_MS,
  MAX_QUEUED_RESPONSES,
  REQUEST_TIMEOUT,
  STATUS_CODES,
  codedError,
  connResetError,
} from './common.js';
import { IncomingMessage } from './incoming.js';
import type { Listener, OutgoingHeaderValue } from './outgoing.js';
import { OutgoingMessage, headersSentError } from './outgoing.js';
import type { ParserInfo } from './parser.js';
import { Parser, asParseError, checkFraming, isParseError, newParser, parseError } from './parser.js';

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
