/** The HTTP parser: http-parser-js, with a little hardening against hostile input. */
import type { Buffer } from 'buffer';
import { HTTPParser } from 'http-parser-js';

export interface ParserInfo {
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
export interface Parser {
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
export const Parser = HTTPParser as ParserClass;
const kParseError = Symbol('http parse error');

export function parseError(code: string, reason: string): Error {
  return Object.assign(new Error(`Parse Error: ${reason}`), { code, reason, [kParseError]: true });
}

/** Gives http-parser-js errors Node's codes (the parser names only some of them). */
export function asParseError(err: Error): Error {
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

export function isParseError(err: unknown): err is Error {
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
export function newParser(kind: ParserKind, maxHeaderSize: number, handlers: ParserHandlers): Parser {
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
export function checkFraming(raw: string[], request: boolean): void {
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
