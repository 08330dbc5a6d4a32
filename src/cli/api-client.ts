/**
 * How the operator commands reach the proxy's API (src/proxy/api.ts): where it is (`--api`,
 * ROAM_API, default http://127.0.0.1:7480), the admin token (`--admin-token`, ROAM_ADMIN_TOKEN,
 * `--admin-token-file`, else DATA_DIR/admin-token on the proxy's machine), and its answers turned
 * into RoamErrors with the proxy's own codes.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { resolveSecret } from '../common/secrets.js';
import { RoamError, type RoamErrorCode } from '../errors.js';
import type { EventView } from '../proxy/view.js';

export const DEFAULT_API = 'http://127.0.0.1:7480';
const REQUEST_TIMEOUT_MS = 30_000;

export interface ApiFlags {
  api?: string;
  adminToken?: string;
  adminTokenFile?: string;
  dataDir?: string;
}

function apiUrl(text: string): URL {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new RoamError('ROAM_ERR_USAGE', `invalid API address "${text}": use a URL like ${DEFAULT_API}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new RoamError('ROAM_ERR_USAGE', `invalid API address "${text}": use http:// or https://`);
  }
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return url;
}

/** Finds the API and the admin token, or says how to pass them. */
export function connect(flags: ApiFlags): ApiClient {
  const base = apiUrl(flags.api ?? process.env['ROAM_API'] ?? DEFAULT_API);
  // The proxy's data directory, as `roam proxy` chooses it (src/proxy/config.ts).
  const dataDir = flags.dataDir ?? process.env['ROAM_DATA_DIR'] ?? join(homedir(), '.roam', 'proxy');
  const stored = join(dataDir, 'admin-token');
  const secret = resolveSecret({
    value: flags.adminToken,
    env: 'ROAM_ADMIN_TOKEN',
    file: flags.adminTokenFile,
    stored,
  });
  if (!secret) {
    throw new RoamError(
      'ROAM_ERR_USAGE',
      `no admin token: pass --admin-token TOKEN or --admin-token-file FILE, or set ROAM_ADMIN_TOKEN ` +
        `(on the proxy's machine it is read from ${stored}; --data-dir or ROAM_DATA_DIR say where that is)`,
    );
  }
  const source =
    secret.source === 'stored'
      ? stored
      : secret.source === 'env'
        ? 'ROAM_ADMIN_TOKEN'
        : `--${secret.source === 'file' ? 'admin-token-file' : 'admin-token'}`;
  return new ApiClient(base, secret.value, source);
}

function describeCause(err: unknown): string {
  const cause = (err as { cause?: { code?: unknown; message?: unknown } }).cause;
  if (cause && typeof cause.message === 'string') return cause.message;
  return err instanceof Error ? err.message : String(err);
}

export class ApiClient {
  constructor(
    readonly base: URL,
    private readonly token: string,
    /** Where the token came from, for the message when the proxy refuses it. */
    private readonly tokenSource: string,
  ) {}

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  post<T>(path: string, body: unknown, timeoutMs?: number): Promise<T> {
    return this.request<T>('POST', path, body, timeoutMs);
  }

  delete<T>(path: string): Promise<T> {
    return this.request<T>('DELETE', path);
  }

  /** Live events (after the recent ones) from the server-sent event stream, until `signal` aborts. */
  async *follow(query: { after?: number; limit?: number }, signal: AbortSignal): AsyncGenerator<EventView> {
    const params = new URLSearchParams({ follow: '1' });
    if (query.after !== undefined) params.set('after', String(query.after));
    if (query.limit !== undefined) params.set('limit', String(query.limit));
    const res = await this.send('GET', `api/events?${params.toString()}`, undefined, signal, 'text/event-stream');
    if (!res.ok) await this.parse(res); // throws the proxy's error
    if (!res.body) throw new RoamError('ROAM_ERR_API', `the Roam API at ${this.base.href} sent no event stream`);
    const reader: ReadableStreamDefaultReader<Uint8Array> = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const data = buffer
            .slice(0, end)
            .split('\n')
            .filter((line) => line.startsWith('data:'))
            .map((line) => line.slice(5).replace(/^ /, ''))
            .join('\n');
          buffer = buffer.slice(end + 2);
          if (data) yield JSON.parse(data) as EventView;
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      throw this.unreachable(err);
    } finally {
      reader.releaseLock();
    }
    if (!signal.aborted) {
      throw new RoamError(
        'ROAM_ERR_HOST_UNREACHABLE',
        `the event stream from ${this.base.href} ended (did the proxy stop?)`,
      );
    }
  }

  private async request<T>(method: string, path: string, body?: unknown, timeoutMs = REQUEST_TIMEOUT_MS): Promise<T> {
    const res = await this.send(method, path, body, AbortSignal.timeout(timeoutMs), 'application/json', timeoutMs);
    return (await this.parse(res)) as T;
  }

  private async send(
    method: string,
    path: string,
    body: unknown,
    signal: AbortSignal,
    accept: string,
    timeoutMs = REQUEST_TIMEOUT_MS,
  ): Promise<Response> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}`, Accept: accept };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    try {
      return await fetch(new URL(path, this.base), {
        method,
        headers,
        signal,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (err) {
      if ((err as Error).name === 'TimeoutError') {
        throw new RoamError(
          'ROAM_ERR_TIMEOUT',
          `the Roam API at ${this.base.href} did not answer within ${timeoutMs / 1000} s`,
        );
      }
      if (signal.aborted) throw err;
      throw this.unreachable(err);
    }
  }

  private unreachable(err: unknown): RoamError {
    return new RoamError(
      'ROAM_ERR_HOST_UNREACHABLE',
      `cannot reach the Roam API at ${this.base.href} (${describeCause(err)}): is \`roam proxy\` running there? ` +
        'Pass --api URL or set ROAM_API',
      { cause: err },
    );
  }

  /** The JSON of a 2xx answer; a RoamError with the proxy's code for anything else. */
  private async parse(res: Response): Promise<unknown> {
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      if ((err as Error).name === 'TimeoutError')
        throw new RoamError('ROAM_ERR_TIMEOUT', `the Roam API at ${this.base.href} stopped answering`);
      throw this.unreachable(err);
    }
    let json: unknown;
    try {
      json = JSON.parse(text) as unknown;
    } catch {
      throw new RoamError(
        'ROAM_ERR_API',
        `${this.base.href} did not answer as the Roam API does (HTTP ${res.status}): is --api right?`,
      );
    }
    if (res.ok) return json;
    const error = (json as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    if (typeof error?.code !== 'string' || typeof error.message !== 'string' || !error.code.startsWith('ROAM_ERR_')) {
      throw new RoamError(
        'ROAM_ERR_API',
        `the Roam API at ${this.base.href} answered HTTP ${res.status} without an error message`,
      );
    }
    const code = error.code as RoamErrorCode;
    if (code === 'ROAM_ERR_UNAUTHORIZED') {
      throw new RoamError(code, `the proxy refused the admin token from ${this.tokenSource}: ${error.message}`);
    }
    throw new RoamError(code, error.message);
  }
}
