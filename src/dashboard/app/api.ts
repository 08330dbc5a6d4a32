/**
 * The dashboard's way to the proxy's API: every call carries the admin token as a bearer header
 * (never in a URL), and the event log is followed as server-sent events read from a fetch() body,
 * since EventSource cannot send headers.
 */
import type { DrainView, EventView, GuestView, HostView, MigrationView, StreamView } from '../../proxy/view.js';

export type { DrainView, EventView, GuestView, HostView, MigrationView, StreamView };

const TOKEN_KEY = 'roam.adminToken';

/** What the dashboard reads of GET /api/policy (the control plane's view). */
export interface PolicyView {
  hosts: Array<{ name: string; utility: number | null; lowForSeconds: number | null; pStay: number }>;
  moving: string[];
  policy?: { threshold?: number };
}

export class Unauthorized extends Error {}

export interface ApiErrorBody {
  error?: { code?: string; message?: string };
}

export function storedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storeToken(token: string | null): void {
  if (token === null) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
}

export class Api {
  constructor(private readonly token: string) {}

  private async call<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const res = await fetch(path, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      ...(signal ? { signal } : {}),
    });
    if (res.status === 401) throw new Unauthorized('the admin token was refused');
    const text = await res.text();
    const parsed: unknown = text ? JSON.parse(text) : null;
    if (!res.ok) {
      const err = (parsed as ApiErrorBody | null)?.error;
      throw new Error(err?.message ?? `${method} ${path}: HTTP ${res.status}`);
    }
    return parsed as T;
  }

  hosts = () => this.call<HostView[]>('GET', '/api/hosts');
  guests = () => this.call<GuestView[]>('GET', '/api/guests');
  streams = () => this.call<StreamView[]>('GET', '/api/streams');
  policy = () => this.call<PolicyView>('GET', '/api/policy');
  events = (limit: number) => this.call<EventView[]>('GET', `/api/events?limit=${limit}`);
  migrate = (guest: string, to: string | undefined) =>
    this.call<MigrationView>('POST', `/api/guests/${encodeURIComponent(guest)}/migrate`, to ? { to } : {});
  drain = (host: string) => this.call<DrainView>('POST', `/api/hosts/${encodeURIComponent(host)}/drain`, {});
  stop = (guest: string) => this.call<GuestView>('DELETE', `/api/guests/${encodeURIComponent(guest)}`);

  /**
   * Follows the event log from after `after`, calling `onEvent` for each; reconnects (from the last
   * id seen) until `signal` aborts. `onState` says whether the stream is live.
   */
  async follow(
    after: number,
    onEvent: (e: EventView) => void,
    onState: (live: boolean) => void,
    signal: AbortSignal,
  ): Promise<void> {
    let last = after;
    let delay = 250;
    while (!signal.aborted) {
      try {
        const res = await fetch(`/api/events?follow=1&after=${last}`, {
          headers: { authorization: `Bearer ${this.token}`, accept: 'text/event-stream' },
          cache: 'no-store',
          credentials: 'omit',
          signal,
        });
        if (res.status === 401) throw new Unauthorized('the admin token was refused');
        if (!res.ok || !res.body) throw new Error(`event stream: HTTP ${res.status}`);
        onState(true);
        delay = 250;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end: number;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = block
              .split('\n')
              .filter((l) => l.startsWith('data:'))
              .map((l) => l.slice(5).trimStart())
              .join('\n');
            if (!data) continue;
            const event = JSON.parse(data) as EventView;
            if (event.id > last) last = event.id;
            onEvent(event);
          }
        }
      } catch (err) {
        if (err instanceof Unauthorized) throw err;
        if (signal.aborted) return;
      }
      onState(false);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }
}
