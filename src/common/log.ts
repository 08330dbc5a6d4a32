/**
 * Structured logs for every long-running process (`roam proxy`, `roam host`, `roam demo`): pino,
 * one JSON object a line (`--log-format json`, the default when stderr is not a terminal) or one
 * readable line (`--log-format pretty`: `12:03:04.512 INFO  host=host-a guest=web message`), at
 * `--log-level` (default info). Records name the process (`proc`), and scoped loggers add `host`,
 * `guest`, `stream` and `migration` ids. Secrets never reach a log: fields whose names say they hold
 * one are censored, and callers never pass tokens.
 */
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { RoamError } from '../errors.js';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['pretty', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface LogOptions {
  level?: string;
  format?: string;
  /** Where lines go (default: stderr, so stdout stays for what a command prints). */
  destination?: NodeJS.WritableStream;
  /** Colour in pretty lines (default: when the destination is a terminal and NO_COLOR is unset). */
  colour?: boolean;
}

/** Field names whose values are never written (any depth pino can address: top level and one down). */
const REDACT = [
  'token',
  'joinToken',
  'adminToken',
  'authorization',
  'password',
  '*.token',
  '*.joinToken',
  '*.adminToken',
  '*.authorization',
  'req.headers.authorization',
];

export function parseLogLevel(text: string | undefined): LogLevel {
  const level = (text ?? 'info').toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new RoamError('ROAM_ERR_USAGE', `invalid --log-level "${text}": use one of ${LOG_LEVELS.join(', ')}`);
  }
  return level as LogLevel;
}

export function parseLogFormat(text: string | undefined, destinationIsTty: boolean): LogFormat {
  if (text === undefined) return destinationIsTty ? 'pretty' : 'json';
  if (!(LOG_FORMATS as readonly string[]).includes(text)) {
    throw new RoamError('ROAM_ERR_USAGE', `invalid --log-format "${text}": use pretty or json`);
  }
  return text as LogFormat;
}

const LEVEL_NAMES: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};
const LEVEL_COLOURS: Record<number, string> = { 10: '90', 20: '90', 30: '36', 40: '33', 50: '31', 60: '35' };
/** Fields shown first, in this order, as `key=value`. */
const LEAD = ['proc', 'host', 'guest', 'stream', 'migration'];
const HIDDEN = new Set(['level', 'time', 'msg', 'pid', 'hostname', ...LEAD]);

function fieldText(value: unknown): string {
  if (typeof value === 'string') return /[\s"=]/.test(value) || value === '' ? JSON.stringify(value) : value;
  return JSON.stringify(value) ?? String(value);
}

/** One JSON log record as a readable line (pino-pretty's job, for the few fields Roam logs). */
export function prettyLine(json: string, colour = false): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const paint = (code: string, text: string) => (colour ? `\x1b[${code}m${text}\x1b[0m` : text);
  const level = typeof record['level'] === 'number' ? record['level'] : 30;
  const time = new Date(typeof record['time'] === 'number' ? record['time'] : Date.now());
  const two = (n: number) => String(n).padStart(2, '0');
  const stamp = `${two(time.getHours())}:${two(time.getMinutes())}:${two(time.getSeconds())}.${String(time.getMilliseconds()).padStart(3, '0')}`;
  const parts = [paint('90', stamp), paint(LEVEL_COLOURS[level] ?? '0', (LEVEL_NAMES[level] ?? 'LOG').padEnd(5))];
  for (const key of LEAD) if (record[key] !== undefined) parts.push(paint('90', `${key}=`) + fieldText(record[key]));
  parts.push(typeof record['msg'] === 'string' ? record['msg'] : fieldText(record['msg'] ?? ''));
  let stack = '';
  for (const [key, value] of Object.entries(record)) {
    if (HIDDEN.has(key)) continue;
    if (key === 'err' && value && typeof value === 'object') {
      const err = value as { message?: unknown; stack?: unknown };
      parts.push(`${paint('90', 'err=')}${fieldText(err.message)}`);
      if (typeof err.stack === 'string' && level >= 50) stack = `\n${err.stack.replace(/^/gm, '    ')}`;
      continue;
    }
    parts.push(`${paint('90', `${key}=`)}${fieldText(value)}`);
  }
  return `${parts.join(' ')}${stack}\n`;
}

/** A stream that turns pino's JSON lines into pretty ones. */
function prettyStream(out: NodeJS.WritableStream, colour: boolean): Writable {
  let partial = '';
  return new Writable({
    write(chunk: Buffer | string, _enc, done) {
      const text = partial + chunk.toString();
      const lines = text.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) if (line) out.write(prettyLine(line, colour));
      done();
    },
  });
}

/** The process's root logger; `proc` names it (proxy, host, demo). */
export function createLogger(proc: string, options: LogOptions = {}): Logger {
  const destination = options.destination ?? process.stderr;
  const tty = (destination as { isTTY?: boolean }).isTTY === true;
  const level = parseLogLevel(options.level);
  const format = parseLogFormat(options.format, tty);
  const colour = options.colour ?? (tty && !process.env['NO_COLOR']);
  const stream = format === 'pretty' ? prettyStream(destination, colour) : destination;
  return pino(
    {
      level,
      base: { proc, pid: process.pid },
      redact: { paths: REDACT, censor: '[secret]' },
      serializers: { err: pino.stdSerializers.err },
    },
    stream,
  );
}

/** A logger that writes nothing (for library code whose caller gave none). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
