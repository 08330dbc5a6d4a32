/**
 * What the proxy's API port serves besides /api: the dashboard (a static page bundled at build
 * time into dist/dashboard, see src/dashboard/) and `GET /metrics` for Prometheus.
 *
 * The dashboard's files hold no data and no secret, so they are served to anyone; the page asks
 * the operator for the admin token and sends it as a bearer header on each /api call, so the token
 * never appears in a URL, a referrer or a log. A strict Content-Security-Policy (scripts and
 * connections to this origin only, no framing) keeps other origins from using a pasted token.
 *
 * `/metrics` needs a bearer token too: host names, addresses and guest names are a map of the
 * deployment, worth keeping from strangers. It accepts the admin token or the metrics token (file
 * `metrics-token` in the proxy's data directory, generated on first start, or ROAM_METRICS_TOKEN),
 * which reads metrics and nothing else, so that Prometheus need not hold a token that can move or
 * stop guests (Prometheus: `authorization: { credentials_file: ... }`).
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { resolveSecret, tokenMatches } from '../common/secrets.js';
import { packageRoot } from '../package-root.js';
import type { PageHandler } from './api.js';
import { createProxyMetrics, type MetricsSource } from './metrics.js';

const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
};

export const DASHBOARD_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

function send(
  res: ServerResponse,
  status: number,
  type: string,
  body: string | Buffer,
  extra: Record<string, string> = {},
) {
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': Buffer.byteLength(body),
    'X-Content-Type-Options': 'nosniff',
    ...extra,
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function bearer(req: IncomingMessage): string | undefined {
  const m = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '');
  return m?.[1];
}

export interface PagesOptions {
  adminToken: string;
  dataDir: string;
  /** Where the built page is (default: dist/dashboard of the package). */
  dashboardDir?: string;
}

export function proxyPages(source: MetricsSource, options: PagesOptions): { handler: PageHandler; close(): void } {
  const dir = options.dashboardDir ?? join(packageRoot(), 'dist', 'dashboard');
  const metricsToken = resolveSecret({
    env: 'ROAM_METRICS_TOKEN',
    stored: join(options.dataDir, 'metrics-token'),
    generate: true,
  });
  const metrics = createProxyMetrics(source);
  const cache = new Map<string, Buffer>();
  const handler: PageHandler = async (req, res, url) => {
    const method = req.method ?? 'GET';
    if (url.pathname === '/metrics') {
      if (method !== 'GET') return false;
      const token = bearer(req);
      const ok =
        token !== undefined &&
        (tokenMatches(token, options.adminToken) ||
          (metricsToken !== undefined && tokenMatches(token, metricsToken.value)));
      if (!ok) {
        send(res, 401, 'text/plain; charset=utf-8', 'metrics need "Authorization: Bearer <metrics or admin token>"\n', {
          'WWW-Authenticate': 'Bearer realm="roam-metrics"',
        });
        return true;
      }
      send(res, 200, metrics.contentType, await metrics.render(), { 'Cache-Control': 'no-store' });
      return true;
    }
    const asset = ASSETS[url.pathname];
    if (!asset || (method !== 'GET' && method !== 'HEAD')) return false;
    let body = cache.get(asset.file);
    if (!body) {
      try {
        body = readFileSync(join(dir, asset.file));
      } catch {
        send(
          res,
          503,
          'text/plain; charset=utf-8',
          'the dashboard is not built: run `npm run build` in the roam folder\n',
        );
        return true;
      }
      cache.set(asset.file, body);
    }
    send(res, 200, asset.type, body, {
      'Cache-Control': 'no-cache',
      'Content-Security-Policy': DASHBOARD_CSP,
      'X-Frame-Options': 'DENY',
      'Referrer-Policy': 'no-referrer',
    });
    return true;
  };
  return { handler, close: () => metrics.close() };
}
