/** Constants and header validation shared by the server and the client. */
import { Buffer } from 'buffer';
import { Parser } from './parser.js';

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

export const DEFAULT_MAX_HEADER_SIZE = 16384;
/** More pipelined requests than this waiting for their turn pause reading from the connection. */
export const MAX_QUEUED_RESPONSES = 32;
/** How long a connection we have ended waits for the peer to close before we drop it. */
export const LINGER_MS = 5000;
export const BODYLESS_METHODS = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT']);
const TOKEN = /^[\^_`a-zA-Z\-0-9!#$%&'*+.|~]+$/;
const INVALID_HEADER_CHAR = /[^\t\x20-\x7e\x80-\xff]/;
export const CHUNKED = /(?:^|\W)chunked(?:$|\W)/i;
export const CONNECTION_CLOSE = /(?:^|\W)close(?:$|\W)/i;
export const CRLF = Buffer.from('\r\n', 'latin1');
export const BAD_REQUEST = 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n';
export const REQUEST_TIMEOUT = 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n';
export const HEADERS_TOO_LARGE = 'HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n';

export function codedError(code: string, message: string, Ctor: ErrorConstructor = Error): Error {
  return Object.assign(new Ctor(message), { code });
}

export function connResetError(message: string): Error {
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

export function byteLength(chunk: unknown, encoding: unknown): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk, (encoding as BufferEncoding | undefined) ?? 'utf8');
  return (chunk as Uint8Array).byteLength;
}
