/**
 * The dashboard: asks for the admin token (kept in this tab's session storage only), then shows
 * the roaming table live. Hosts, guests and streams are read every second and at once after any
 * event; the event log is followed as server-sent events (migrations, decisions, everything else).
 */
import './style.css';
import { Api, Unauthorized, storeToken, storedToken } from './api.js';
import type { EventView, GuestView, HostView, PolicyView, StreamView } from './api.js';
import { HostCharts } from './charts.js';
import { byId, clock, formatAgo, formatBytes, formatMs, h } from './dom.js';
import { applyMigrationEvent, type MigrationRow } from './timeline.js';
import { Topology } from './topology.js';

const POLL_MS = 1000;
const KEEP_EVENTS = 200;

interface State {
  hosts: HostView[];
  guests: GuestView[];
  streams: StreamView[];
  /** The control plane's view (utility, P(stay)); null when the proxy has none. */
  policy: PolicyView | null;
  events: EventView[];
  decisions: EventView[];
  migrations: Map<string, MigrationRow>;
}

const state: State = {
  hosts: [],
  guests: [],
  streams: [],
  policy: null,
  events: [],
  decisions: [],
  migrations: new Map(),
};
const charts = new HostCharts();
let topology: Topology | undefined;
let api: Api | undefined;
let session: AbortController | undefined;

function toast(text: string, kind: 'ok' | 'error' = 'ok'): void {
  const el = byId('toast');
  el.replaceChildren(h('div', { class: `toast ${kind}` }, text));
  setTimeout(() => {
    if (el.firstChild && el.textContent === text) el.replaceChildren();
  }, 6000);
}

// ---- login ------------------------------------------------------------------------------------

function showLogin(message = ''): void {
  session?.abort();
  api = undefined;
  byId('main').hidden = true;
  byId('signout').hidden = true;
  byId('login').hidden = false;
  byId('login-error').textContent = message;
  setLive(false);
  byId<HTMLInputElement>('token').focus();
}

async function open(token: string): Promise<void> {
  const candidate = new Api(token);
  try {
    await candidate.hosts();
  } catch (err) {
    storeToken(null);
    showLogin(err instanceof Unauthorized ? 'That token was refused.' : `Cannot reach the proxy: ${String(err)}`);
    return;
  }
  storeToken(token);
  api = candidate;
  byId('login').hidden = true;
  byId('main').hidden = false;
  byId('signout').hidden = false;
  start(candidate);
}

// ---- live data --------------------------------------------------------------------------------

function setLive(live: boolean): void {
  const el = byId('live');
  el.textContent = live ? 'live' : 'offline';
  el.className = `badge ${live ? 'on' : 'off'}`;
}

function start(client: Api): void {
  session?.abort();
  const controller = new AbortController();
  session = controller;
  const signal = controller.signal;
  let refreshing = false;
  let again = false;
  const refresh = async (): Promise<void> => {
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    try {
      const [hosts, guests, streams, policy] = await Promise.all([
        client.hosts(),
        client.guests(),
        client.streams(),
        client.policy().catch((err: unknown) => {
          if (err instanceof Unauthorized) throw err;
          return null;
        }),
      ]);
      if (signal.aborted) return;
      Object.assign(state, { hosts, guests, streams, policy });
      charts.record(hosts);
      render();
    } catch (err) {
      if (err instanceof Unauthorized) showLogin('The proxy refused the token.');
    } finally {
      refreshing = false;
      if (again && !signal.aborted) {
        again = false;
        void refresh();
      }
    }
  };
  const timer = setInterval(() => void refresh(), POLL_MS);
  signal.addEventListener('abort', () => clearInterval(timer));
  void (async () => {
    const backlog = await client.events(500).catch(() => [] as EventView[]);
    for (const e of backlog) take(e);
    await refresh();
    const after = backlog.at(-1)?.id ?? 0;
    await client.follow(
      after,
      (e) => {
        take(e);
        void refresh();
      },
      setLive,
      signal,
    );
  })().catch((err: unknown) => {
    if (err instanceof Unauthorized) showLogin('The proxy refused the token.');
  });
}

function take(e: EventView): void {
  if (state.events.some((x) => x.id === e.id)) return;
  state.events.push(e);
  if (state.events.length > KEEP_EVENTS) state.events.shift();
  if (e.kind.startsWith('decision.')) {
    state.decisions.push(e);
    if (state.decisions.length > KEEP_EVENTS) state.decisions.shift();
  }
  applyMigrationEvent(state.migrations, e);
}

// ---- actions ----------------------------------------------------------------------------------

async function act(what: string, run: (client: Api) => Promise<string>): Promise<void> {
  if (!api) return;
  toast(`${what}…`);
  try {
    toast(await run(api));
  } catch (err) {
    if (err instanceof Unauthorized) showLogin('The proxy refused the token.');
    else toast(`${what} failed: ${(err as Error).message}`, 'error');
  }
}

function migrate(guest: string, to: string): Promise<void> {
  return act(`moving ${guest}`, async (client) => {
    const v = await client.migrate(guest, to || undefined);
    return v.outcome === 'moved'
      ? `moved ${v.guest} from ${v.from} to ${v.to}: pause ${formatMs(v.pauseMs)}, total ${formatMs(v.totalMs)}`
      : `the move of ${v.guest} failed at ${v.step ?? '?'}: ${v.error ?? '?'}`;
  });
}

// ---- rendering --------------------------------------------------------------------------------

function controlPlane(host: HostView): PolicyView['hosts'][number] | undefined {
  return state.policy?.hosts.find((x) => x.name === host.name);
}

/** The control plane's utility of the host; without one, the scarcer of CPU and memory headroom. */
function utility(host: HostView): number | null {
  const given = controlPlane(host)?.utility;
  if (typeof given === 'number') return given;
  const m = host.metrics;
  if (!m) return null;
  return Math.max(0, Math.min(1 - m.cpu.usage, m.memory.freeBytes / Math.max(1, m.memory.totalBytes)));
}

function pct(v: number | null | undefined): string {
  return v === null || v === undefined ? '-' : `${Math.round(v * 100)}%`;
}

function renderHosts(): void {
  const box = byId('hosts');
  const keep = new Set(state.hosts.map((x) => x.id));
  charts.forget(keep);
  box.replaceChildren(
    ...state.hosts.map((host) => {
      const m = host.metrics;
      return h(
        'article',
        { class: `card host ${host.state}`, 'data-host': host.name },
        h(
          'header',
          {},
          h('strong', {}, host.name),
          h('span', { class: `badge ${host.state}` }, host.state),
          h('span', { class: 'grow' }),
          h(
            'button',
            {
              type: 'button',
              class: 'small',
              disabled: host.state !== 'up' || host.guests === 0,
              title: 'move every guest off this host',
              onclick: () => {
                if (confirm(`Move every guest off ${host.name}?`))
                  void act(`draining ${host.name}`, async (c) => {
                    const v = await c.drain(host.name);
                    return `drained ${v.host}: ${v.moved} moved, ${v.failed} not`;
                  });
              },
            },
            'Drain',
          ),
        ),
        h(
          'dl',
          {},
          h('dt', {}, 'utility'),
          h(
            'dd',
            { 'data-field': 'utility', class: controlPlane(host)?.lowForSeconds != null ? 'low' : '' },
            pct(utility(host)),
            controlPlane(host)?.lowForSeconds != null
              ? ` (low for ${Math.round(controlPlane(host)?.lowForSeconds ?? 0)} s)`
              : '',
          ),
          h('dt', {}, 'P(stay)'),
          h('dd', {}, controlPlane(host) ? pct(controlPlane(host)?.pStay) : '-'),
          h('dt', {}, 'score'),
          h('dd', {}, host.benchmarkScore === null ? '-' : host.benchmarkScore.toPrecision(3)),
          h('dt', {}, 'RTT'),
          h('dd', {}, formatMs(host.rttMs)),
          h('dt', {}, 'CPU'),
          h('dd', {}, m ? `${pct(m.cpu.usage)} of ${Number(m.cpu.capacity.toFixed(2))}` : '-'),
          h('dt', {}, 'memory free'),
          h('dd', {}, m ? `${formatBytes(m.memory.freeBytes)}` : '-'),
          h('dt', {}, 'guests'),
          h('dd', {}, host.guests),
        ),
        charts.element(host.id, 260),
        h('div', { class: 'legend' }, h('span', { class: 'cpu' }, 'CPU'), ' ', h('span', { class: 'mem' }, 'memory')),
      );
    }),
  );
}

function renderGuests(): void {
  const body = byId('guests').querySelector('tbody');
  if (!body) return;
  const up = state.hosts.filter((x) => x.state === 'up');
  const moving = new Set([...state.migrations.values()].filter((m) => m.state === 'running').map((m) => m.guest));
  body.replaceChildren(
    ...state.guests.map((g) => {
      const select = h(
        'select',
        { 'aria-label': `where to move ${g.name}`, 'data-action': 'target' },
        h('option', { value: '' }, 'best host'),
        ...up.filter((x) => x.name !== g.hostName).map((x) => h('option', { value: x.name }, x.name)),
      );
      return h(
        'tr',
        { 'data-guest': g.name, class: moving.has(g.name) ? 'moving' : '' },
        // A WebAssembly guest says so beside its name (JavaScript is the usual kind).
        h(
          'td',
          {},
          h('strong', {}, g.name),
          g.kind === 'wasm' ? h('span', { class: 'kind', title: 'WebAssembly guest' }, ' wasm') : '',
        ),
        h('td', {}, h('span', { class: `badge ${g.state}` }, moving.has(g.name) ? 'moving' : g.state)),
        h('td', { 'data-field': 'host' }, g.hostName ?? '-'),
        h('td', {}, formatAgo(g.since)),
        h('td', {}, formatBytes(g.memoryBytes)),
        h(
          'td',
          {},
          g.publish.map((p) => `${p.protocol} ${p.public}${p.public === p.guest ? '' : `→${p.guest}`}`).join(', ') ||
            '-',
        ),
        h('td', {}, g.streams),
        h(
          'td',
          { class: 'actions' },
          select,
          h(
            'button',
            {
              type: 'button',
              'data-action': 'migrate',
              disabled: g.state !== 'running' || moving.has(g.name) || up.length < 2,
              onclick: () => void migrate(g.name, select.value),
            },
            'Migrate',
          ),
          h(
            'button',
            {
              type: 'button',
              class: 'danger',
              'data-action': 'stop',
              onclick: () => {
                if (confirm(`Stop ${g.name}? Its connections close.`))
                  void act(`stopping ${g.name}`, async (c) => `${(await c.stop(g.name)).name} stopped`);
              },
            },
            'Stop',
          ),
        ),
      );
    }),
  );
}

function renderTimeline(): void {
  const rows = [...state.migrations.values()].sort((a, b) => b.startedAt - a.startedAt).slice(0, 30);
  const longest = Math.max(1, ...rows.map((r) => r.totalMs ?? 0));
  byId('timeline').replaceChildren(
    ...(rows.length
      ? rows.map((r) =>
          h(
            'li',
            { class: `migration ${r.state}`, 'data-migration': r.id, 'data-guest': r.guest },
            h('span', { class: 'time' }, clock(r.startedAt)),
            h('strong', {}, r.guest),
            ` ${r.from} → ${r.to} `,
            r.state === 'moved'
              ? h('span', { class: 'cost' }, `pause ${formatMs(r.pauseMs)} · total ${formatMs(r.totalMs)}`)
              : r.state === 'failed'
                ? h('span', { class: 'error' }, `failed at ${r.step ?? '?'}: ${r.error ?? ''}`)
                : h('span', { class: 'step' }, `${r.step ?? 'starting'}…`),
            r.totalMs !== null ? bar((100 * r.totalMs) / longest) : null,
          ),
        )
      : [h('li', { class: 'empty' }, 'no migrations yet')]),
  );
}

/** A bar of `percent` width (set through the CSSOM: the page's CSP allows no style attributes). */
function bar(percent: number): HTMLElement {
  const fill = h('span', { class: 'total' });
  fill.style.width = `${Math.max(2, percent)}%`;
  return h('div', { class: 'bar' }, fill);
}

function reasons(e: EventView): string {
  return e.data === null || e.data === undefined ? '' : JSON.stringify(e.data, null, 1);
}

function renderLogs(): void {
  byId('decisions').replaceChildren(
    ...(state.decisions.length
      ? [...state.decisions]
          .reverse()
          .slice(0, 50)
          .map((e) =>
            h(
              'li',
              { class: e.kind.replace(/\./g, '-') },
              h('span', { class: 'time' }, clock(e.t)),
              h('span', { class: 'kind' }, e.kind.slice('decision.'.length)),
              ` ${e.message}`,
              reasons(e) ? h('details', {}, h('summary', {}, 'inputs and reasons'), h('pre', {}, reasons(e))) : null,
            ),
          )
      : [h('li', { class: 'empty' }, 'no decisions yet (the control plane records them here)')]),
  );
  byId('events').replaceChildren(
    ...[...state.events]
      .reverse()
      .slice(0, 60)
      .map((e) =>
        h(
          'li',
          { class: e.kind.endsWith('failed') ? 'failed' : '' },
          h('span', { class: 'time' }, clock(e.t)),
          h('span', { class: 'kind' }, e.kind),
          ` ${e.message}`,
        ),
      ),
  );
}

function render(): void {
  const up = state.hosts.filter((x) => x.state === 'up').length;
  const running = state.guests.filter((g) => g.state === 'running').length;
  byId('summary').textContent =
    `${up} host(s) up · ${running} guest(s) running · ${state.streams.length} connection(s)`;
  renderHosts();
  renderGuests();
  renderTimeline();
  renderLogs();
  const moves = [...state.migrations.values()]
    .filter((m) => m.state === 'running')
    .map((m) => ({ guest: m.guest, from: m.from, to: m.to }));
  topology?.render(state.hosts, state.guests, state.streams, moves);
}

// ---- start ------------------------------------------------------------------------------------

function main(): void {
  topology = new Topology(byId('topology') as unknown as SVGSVGElement);
  byId<HTMLFormElement>('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = byId<HTMLInputElement>('token');
    const token = input.value.trim();
    input.value = '';
    if (token) void open(token);
  });
  byId('signout').addEventListener('click', () => {
    storeToken(null);
    showLogin();
  });
  const token = storedToken();
  if (token) void open(token);
  else showLogin();
}

main();
