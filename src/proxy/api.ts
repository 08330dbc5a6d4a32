/**
 * The operators' HTTP API: the roaming table as JSON, deploy and stop, a guest's console, and the
 * event log (also live, as server-sent events). `roam ps/hosts/run/stop/logs/events` and the
 * dashboard use it. Contracts (keep them stable):
 *
 *   GET    /api/hosts                  200 HostView[]
 *   GET    /api/guests                 200 GuestView[]
 *   POST   /api/guests                 201 GuestView       body: DeployRequest (JSON, at most 40 MiB)
 *   DELETE /api/guests/:name           200 GuestView       stops it; 404 when unknown
 *   GET    /api/guests/:name/logs      200 LogRecordView[] ?tail=N
 *   POST   /api/guests/:name/migrate   200 MigrationView   body: { to?: HOST, precopy?: boolean }; answers
 *                                      when the move is over: `outcome` says moved or rolled-back
 *                                      (progress is in the event log meanwhile)
 *   POST   /api/hosts/:name/drain      200 DrainView       moves every guest off the host
 *   GET    /api/policy                 200 PolicyStatus    the control plane's policy, model, view
 *   GET    /api/streams                200 StreamView[]
 *   GET    /api/events                 200 EventView[]     ?after=ID&limit=N
 *   GET    /api/events?follow=1        text/event-stream   (or Accept: text/event-stream): the recent
 *                                      events, then live ones; `: heartbeat` comments every 15 s
 *
 * Outside /api, `pages` serves the dashboard and /metrics (src/proxy/pages.ts).
 *
 * Every /api call needs `Authorization: Bearer <admin token>` (401 with `WWW-Authenticate: Bearer`
 * otherwise). Errors are `{ "error": { "code": "ROAM_ERR_...", "message": "..." } }` with the status
 * mapped from the code; a client never sees a stack trace. The token is never logged.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { z } from 'zod';
import { tokenMatches } from '../common/secrets.js';
import { RoamError, isRoamError, type RoamErrorCode } from '../errors.js';
import { MESSAGE_LIMITS } from '../wire/index.js';
import type { DeployRequest, EventView, MigrateRequest, ProxyOperations } from './view.js';

/** The logger calls the API makes (a pino logger fits). */
export interface ApiLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface ApiServerOptions {
  ops: ProxyOperations;
  adminToken: string;
  host: string;
  /** 0 picks a free port (see the returned `port`). */
  port: number;
  logger?: ApiLogger;
  /** The largest request body accepted (default 40 MiB); larger ones get 413 before they are read. */
  maxBodyBytes?: number;
  /** How often an event stream gets a comment line that keeps proxies from closing it (default 15 s). */
  heartbeatMs?: number;
  /**
   * Paths outside /api (the dashboard, /metrics): answers and returns true, or returns false for
   * the API's own answer (a short text at `/`, 404 elsewhere). Its errors are answered as the API's.
   */
  pages?: PageHandler;
}

export type PageHandler = (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean> | boolean;

export interface ApiServer {
  server: Server;
  port: number;
  /** Ends event streams, stops accepting, and waits for open requests (at most 2 s). Idempotent. */
  close(): Promise<void>;
}

export const MAX_BODY_BYTES = 40 * 1024 * 1024;
/** A follower whose unsent events exceed this is too slow: its event stream is closed. */
const FOLLOWER_BUFFER_LIMIT = 1024 * 1024;
const GUEST_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** A failure with its HTTP status; RoamErrors from the operations map through `statusFor`. */
class HttpError extends RoamError {
  constructor(
    readonly status: number,
    code: RoamErrorCode,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(code, message);
  }
}

export function statusFor(code: RoamErrorCode): number {
  switch (code) {
    case 'ROAM_ERR_USAGE':
    case 'ROAM_ERR_BUNDLE':
    case 'ROAM_ERR_UNSUPPORTED_BUILTIN':
    case 'ROAM_ERR_WASM_MODULE':
    case 'ROAM_ERR_WASM_FEATURE':
      return 400;
    case 'ROAM_ERR_UNAUTHORIZED':
      return 401;
    case 'ROAM_ERR_NOT_FOUND':
      return 404;
    case 'ROAM_ERR_CONFLICT':
      return 409;
    case 'ROAM_ERR_HOST_UNREACHABLE':
      return 502;
    case 'ROAM_ERR_NO_HOST':
      return 503;
    case 'ROAM_ERR_TIMEOUT':
      return 504;
    case 'ROAM_ERR_MIGRATION':
      return 502;
    default:
      return 500;
  }
}

const badRequest = (message: string) => new HttpError(400, 'ROAM_ERR_USAGE', message);

// ---- input ----------------------------------------------------------------------------------

const port = z
  .number({ error: 'must be a port number 1-65535' })
  .int({ error: 'must be a port number 1-65535' })
  .min(1, { error: 'must be a port number 1-65535' })
  .max(65535, { error: 'must be a port number 1-65535' });

/** Whether base64 text starts with a WebAssembly binary's magic and version 1 ("\0asm", 1). */
function isWasmModule(base64: string): boolean {
  const head = Buffer.from(base64.slice(0, 12), 'base64');
  return head.length >= 8 && head.readUInt32BE(0) === 0x0061736d && head.readUInt32LE(4) === 1;
}

const deploySchema = z
  .strictObject({
    name: z.string({ error: 'is required (a string)' }).regex(GUEST_NAME, {
      error: "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    }),
    bundle: z.string({ error: 'must be a string (the bundled program)' }).min(1, { error: 'is empty' }).optional(),
    wasm: z
      .base64({ error: 'must be the WebAssembly module in base64' })
      .min(1, { error: 'is empty' })
      .max(MESSAGE_LIMITS.wasm, {
        error: `is larger than ${(MESSAGE_LIMITS.wasm * 3) / 4 / 1024 / 1024} MiB of module`,
      })
      .refine((text) => isWasmModule(text), { error: 'is not a WebAssembly module (no \\0asm header)' })
      .optional(),
    publish: z
      .array(z.strictObject({ public: port, guest: port, protocol: z.enum(['tcp', 'udp']) }))
      .max(256)
      .default([]),
    env: z.record(z.string().regex(/^[^=\0]+$/, { error: 'names may not contain "=" or NUL' }), z.string()).default({}),
    argv: z.array(z.string()).default([]),
    on: z.string().min(1, { error: 'is empty' }).optional(),
    deadline: z.number().int().positive({ error: 'must be a time in ms since the epoch' }).optional(),
    expectMs: z.number().int().positive({ error: 'must be a positive number of ms' }).optional(),
  })
  .superRefine((value, ctx) => {
    if (value.bundle === undefined && value.wasm === undefined) {
      ctx.addIssue({ code: 'custom', path: ['bundle'], message: 'is required (the bundled program), or wasm instead' });
    } else if (value.bundle !== undefined && value.wasm !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['wasm'], message: 'cannot come with bundle: send one program' });
    }
    const seen = new Set<string>();
    for (const p of value.publish) {
      const key = `${p.protocol} ${p.public}`;
      if (seen.has(key)) ctx.addIssue({ code: 'custom', path: ['publish'], message: `${key} is published twice` });
      seen.add(key);
    }
  });

const migrateSchema = z.strictObject({
  to: z.string().min(1, { error: 'is empty' }).max(128).optional(),
  precopy: z.boolean({ error: 'must be true or false' }).optional(),
});

export function parseMigrateRequest(body: unknown): MigrateRequest {
  const result = migrateSchema.safeParse(body ?? {});
  if (result.success) return result.data;
  const problems = result.error.issues.map((i) => `${i.path.length ? i.path.join('.') : 'body'}: ${i.message}`);
  throw badRequest(`invalid migrate request: ${problems.join('; ')}`);
}

export function parseDeployRequest(body: unknown): DeployRequest {
  const result = deploySchema.safeParse(body);
  if (result.success) return result.data;
  const problems = result.error.issues.map((i) => `${i.path.length ? i.path.join('.') : 'body'}: ${i.message}`);
  throw badRequest(`invalid deploy request: ${problems.join('; ')}`);
}

function intParam(url: URL, name: string, max: number): number | undefined {
  const raw = url.searchParams.get(name);
  if (raw === null || raw === '') return undefined;
  if (!/^\d{1,15}$/.test(raw) || Number(raw) > max) {
    throw badRequest(`query parameter "${name}" must be a whole number from 0 to ${max}`);
  }
  return Number(raw);
}

/** Reads the body up to `limit` bytes, refusing more from the declared length or as it arrives. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () => new HttpError(413, 'ROAM_ERR_USAGE', `the request body is larger than ${limit} bytes`);
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err?: Error) => {
      req.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      if (err) reject(err);
      else resolve(Buffer.concat(chunks, size));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      req.pause(); // stop reading: the response closes the connection
      done(tooLarge());
    };
    const onEnd = () => done();
    const onError = (err: Error) => done(err);
    const onClose = () => done(badRequest('the request body ended early'));
    req.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  });
}

async function readJson(req: IncomingMessage, limit: number, optional = false): Promise<unknown> {
  const type = req.headers['content-type'];
  if (type !== undefined && !/^application\/json\s*(;|$)/i.test(type)) {
    throw new HttpError(415, 'ROAM_ERR_USAGE', 'send the request body as application/json');
  }
  const text = (await readBody(req, limit)).toString('utf8');
  if (!text.trim()) {
    if (optional) return undefined;
    throw badRequest('the request needs a JSON body');
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw badRequest(`the request body is not valid JSON: ${(err as Error).message}`);
  }
}

// ---- output ---------------------------------------------------------------------------------

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    ...headers,
  });
  res.end(text);
}

function sendError(res: ServerResponse, err: unknown, logger: ApiLogger | undefined, what: string): void {
  let status = 500;
  let code: RoamErrorCode = 'ROAM_ERR_API';
  let message = 'internal error in the proxy (its log has the details)';
  let headers: Record<string, string> = {};
  if (err instanceof HttpError) {
    ({ status, code, message, headers } = err);
  } else if (isRoamError(err)) {
    ({ code, message } = err);
    status = statusFor(code);
  }
  if (status >= 500) logger?.error({ err, request: what }, 'API request failed');
  if (status === 413) headers = { ...headers, Connection: 'close' };
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, status, { error: { code, message } }, headers);
}

// ---- routes ---------------------------------------------------------------------------------

interface ApiRequest {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  /** The decoded `:name` of the path, when the route has one. */
  name: string;
}

type Handler = (r: ApiRequest) => Promise<void> | void;

interface Route {
  path: RegExp;
  methods: Record<string, Handler>;
}

function routes(options: ApiServerOptions, followers: Set<ServerResponse>): Route[] {
  const { ops } = options;
  const maxBody = options.maxBodyBytes ?? MAX_BODY_BYTES;
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  return [
    { path: /^\/api\/hosts$/, methods: { GET: ({ res }) => sendJson(res, 200, ops.hosts()) } },
    {
      path: /^\/api\/guests$/,
      methods: {
        GET: ({ res }) => sendJson(res, 200, ops.guests()),
        POST: async ({ req, res }) => {
          const request = parseDeployRequest(await readJson(req, maxBody));
          sendJson(res, 201, await ops.deploy(request));
        },
      },
    },
    {
      path: /^\/api\/guests\/([^/]+)$/,
      methods: { DELETE: async ({ res, name }) => sendJson(res, 200, await ops.stop(name)) },
    },
    {
      path: /^\/api\/guests\/([^/]+)\/logs$/,
      methods: {
        GET: async ({ res, url, name }) => {
          const tail = intParam(url, 'tail', 1_000_000);
          sendJson(res, 200, await ops.logs(name, tail === undefined ? {} : { tail }));
        },
      },
    },
    {
      path: /^\/api\/guests\/([^/]+)\/migrate$/,
      methods: {
        POST: async ({ req, res, name }) => {
          const request = parseMigrateRequest(await readJson(req, 64 * 1024, true));
          sendJson(res, 200, await ops.migrate(name, request));
        },
      },
    },
    { path: /^\/api\/policy$/, methods: { GET: ({ res }) => sendJson(res, 200, ops.policy()) } },
    {
      path: /^\/api\/hosts\/([^/]+)\/drain$/,
      methods: { POST: async ({ res, name }) => sendJson(res, 200, await ops.drain(name)) },
    },
    { path: /^\/api\/streams$/, methods: { GET: ({ res }) => sendJson(res, 200, ops.streams()) } },
    {
      path: /^\/api\/events$/,
      methods: {
        GET: (r) => {
          const after = intParam(r.url, 'after', Number.MAX_SAFE_INTEGER);
          const limit = intParam(r.url, 'limit', 10_000);
          const follow = ['1', 'true'].includes(r.url.searchParams.get('follow') ?? '');
          if (!follow && !(r.req.headers.accept ?? '').includes('text/event-stream')) {
            sendJson(r.res, 200, ops.events(eventQuery(after, limit)));
            return;
          }
          // A reconnecting EventSource says where it was.
          const lastEventId = /^\d+$/.test(String(r.req.headers['last-event-id']))
            ? Number(r.req.headers['last-event-id'])
            : undefined;
          followEvents(r, ops, eventQuery(after ?? lastEventId, limit), heartbeatMs, followers, options.logger);
        },
      },
    },
  ];
}

function eventQuery(after: number | undefined, limit: number | undefined): { after?: number; limit?: number } {
  return { ...(after === undefined ? {} : { after }), ...(limit === undefined ? {} : { limit }) };
}

/** The recent events, then live ones, as server-sent events, until the client goes away. */
function followEvents(
  { res }: ApiRequest,
  ops: ProxyOperations,
  query: { after?: number; limit?: number },
  heartbeatMs: number,
  followers: Set<ServerResponse>,
  logger: ApiLogger | undefined,
): void {
  // Subscribe before reading the backlog so nothing falls between the two; ids drop repeats.
  let lastId = query.after ?? 0;
  let early: EventView[] | undefined = [];
  const send = (event: EventView) => {
    if (event.id <= lastId || res.destroyed || res.writableEnded) return;
    lastId = event.id;
    res.write(`id: ${event.id}\ndata: ${JSON.stringify(event)}\n\n`);
    if (res.writableLength > FOLLOWER_BUFFER_LIMIT) {
      logger?.warn({ behind: res.writableLength }, 'closing an event stream whose client does not keep up');
      res.destroy();
    }
  };
  const unsubscribe = ops.subscribe((event) => {
    if (early) return void early.push(event);
    try {
      send(event);
    } catch (err) {
      // Never into the proxy's emitter: this follower alone goes.
      logger?.error({ err }, 'cannot send an event to a follower');
      res.destroy();
    }
  });
  let backlog: EventView[];
  try {
    backlog = ops.events(query);
  } catch (err) {
    unsubscribe();
    throw err;
  }
  res.writeHead(200, {
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-store, no-transform',
    'X-Accel-Buffering': 'no',
    Connection: 'keep-alive',
  });
  res.write('retry: 2000\n\n');
  for (const event of backlog) send(event);
  for (const event of early) send(event);
  early = undefined;
  const heartbeat = setInterval(() => {
    if (!res.destroyed && !res.writableEnded) res.write(': heartbeat\n\n');
  }, heartbeatMs);
  followers.add(res);
  res.on('close', () => {
    clearInterval(heartbeat);
    unsubscribe();
    followers.delete(res);
  });
}

function authorized(req: IncomingMessage, adminToken: string): 'ok' | 'missing' | 'wrong' {
  const header = req.headers.authorization;
  if (!header) return 'missing';
  const m = /^Bearer +(\S+) *$/i.exec(header);
  return m?.[1] !== undefined && tokenMatches(m[1], adminToken) ? 'ok' : 'wrong';
}

function unauthorized(result: 'missing' | 'wrong'): HttpError {
  return result === 'missing'
    ? new HttpError(401, 'ROAM_ERR_UNAUTHORIZED', 'the API needs the admin token: send "Authorization: Bearer TOKEN"', {
        'WWW-Authenticate': 'Bearer realm="roam"',
      })
    : new HttpError(401, 'ROAM_ERR_UNAUTHORIZED', 'the admin token is not right', {
        'WWW-Authenticate': 'Bearer realm="roam", error="invalid_token"',
      });
}

async function handle(
  options: ApiServerOptions,
  table: Route[],
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://api.invalid');
  const method = req.method ?? 'GET';
  if (!url.pathname.startsWith('/api/') && options.pages && (await options.pages(req, res, url))) return;
  if (url.pathname === '/') {
    if (method !== 'GET') throw new HttpError(405, 'ROAM_ERR_USAGE', `${method} is not allowed on /`, { Allow: 'GET' });
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end(
      'Roam proxy: the operators API is under /api (Authorization: Bearer <admin token>); the dashboard comes later.\n',
    );
    return;
  }
  if (!url.pathname.startsWith('/api/'))
    throw new HttpError(404, 'ROAM_ERR_NOT_FOUND', `no such path: ${url.pathname}`);
  const auth = authorized(req, options.adminToken);
  if (auth !== 'ok') {
    options.logger?.warn({ remote: req.socket.remoteAddress, path: url.pathname, token: auth }, 'API call refused');
    throw unauthorized(auth);
  }
  for (const route of table) {
    const m = route.path.exec(url.pathname);
    if (!m) continue;
    const handler = route.methods[method];
    if (!handler) {
      const allow = Object.keys(route.methods).join(', ');
      throw new HttpError(405, 'ROAM_ERR_USAGE', `${method} is not allowed on ${url.pathname} (use ${allow})`, {
        Allow: allow,
      });
    }
    let name: string;
    try {
      name = decodeURIComponent(m[1] ?? '');
    } catch {
      throw badRequest('the guest name in the path is not valid percent-encoding');
    }
    await handler({ req, res, url, name });
    return;
  }
  throw new HttpError(404, 'ROAM_ERR_NOT_FOUND', `no such API path: ${url.pathname}`);
}

/**
 * Open connections and the requests each has in flight, so that `close()` can end the idle ones
 * (Node's `closeIdleConnections` leaves alone a connection that has not sent a request yet).
 */
function trackConnections(server: Server): { endIdle(): void } {
  const inFlight = new Map<Socket, number>();
  let closing = false;
  server.on('connection', (socket: Socket) => {
    inFlight.set(socket, 0);
    socket.on('close', () => inFlight.delete(socket));
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    inFlight.set(socket, (inFlight.get(socket) ?? 0) + 1);
    res.on('close', () => {
      const left = inFlight.get(socket);
      if (left === undefined) return;
      inFlight.set(socket, left - 1);
      if (closing && left === 1) socket.end();
    });
  });
  return {
    endIdle() {
      closing = true;
      for (const [socket, n] of inFlight) if (n === 0) socket.end();
    },
  };
}

export function startApiServer(options: ApiServerOptions): Promise<ApiServer> {
  const followers = new Set<ServerResponse>();
  const table = routes(options, followers);
  const server = createServer((req, res) => {
    const what = `${req.method ?? '?'} ${(req.url ?? '').split('?')[0] ?? ''}`;
    handle(options, table, req, res).catch((err: unknown) => sendError(res, err, options.logger, what));
  });
  const connections = trackConnections(server);
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= new Promise<void>((resolve) => {
      const hard = setTimeout(() => server.closeAllConnections(), 2000);
      server.close(() => {
        clearTimeout(hard);
        resolve();
      });
      for (const res of followers) res.end();
      connections.endIdle();
    }));
  return new Promise((resolve, reject) => {
    const onListenError = (err: Error) =>
      reject(
        new RoamError('ROAM_ERR_IO', `the API cannot listen on ${options.host}:${options.port}: ${err.message}`, {
          cause: err,
        }),
      );
    server.once('error', onListenError);
    server.listen(options.port, options.host, () => {
      server.off('error', onListenError).on('error', (err) => options.logger?.error({ err }, 'API server error'));
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : options.port;
      options.logger?.info({ bind: options.host, port }, 'API listening');
      resolve({ server, port, close });
    });
  });
}
