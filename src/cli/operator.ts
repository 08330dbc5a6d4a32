/**
 * The operators' commands, all through the proxy's API: `roam run`, `ps`, `hosts`, `stop`, `logs`
 * and `events`. Their errors print `roam: <message>` and exit with the codes in EXIT_HELP.
 */
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, extname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command } from 'commander';
import { RoamError, isRoamError } from '../errors.js';
import { bundleGuest } from '../guest/bundle.js';
import { EXIT } from '../guest/exit-codes.js';
import { MESSAGE_LIMITS } from '../wire/index.js';
import type { PublishedPort } from '../proxy/store.js';
import type {
  DeployRequest,
  DrainView,
  EventView,
  GuestView,
  HostView,
  LogRecordView,
  MigrationView,
} from '../proxy/view.js';
import type { PolicyStatus } from '../proxy/control-plane.js';
import { DEFAULT_API, connect, type ApiFlags } from './api-client.js';
import { parseDuration } from './duration.js';
import { eventLine, guestsTable, hostsTable, placement } from './operator-view.js';
import { Progress, style } from './style.js';

/** Exit codes of the operator commands: sysexits values, none meaning two things across `roam`. */
export const OPERATOR_EXIT = {
  USAGE: EXIT.USAGE,
  NOT_FOUND: EXIT.NO_INPUT,
  BUNDLE_FAILED: EXIT.BUNDLE_FAILED,
  INTERNAL: EXIT.INTERNAL,
  CONFLICT: 73,
  UNAVAILABLE: 75,
  MOVE_FAILED: 76,
  REFUSED: 77,
} as const;

export const EXIT_HELP = `
Exit codes: 0 ok, 64 usage (bad flags or --publish, no admin token, a request the API refused as
invalid), 66 not found (the FILE or the guest named), 67 bundle failed or WebAssembly module refused, 70 internal error (here or
in the proxy), 73 conflict (a guest with that name exists), 75 unavailable (API unreachable or
timed out, or no host can take the guest: try again later), 76 the move failed (the guest still
runs where it was, or the message says why not), 77 admin token refused.`;

export function operatorExitCode(err: unknown): number {
  if (!isRoamError(err)) return OPERATOR_EXIT.INTERNAL;
  switch (err.code) {
    case 'ROAM_ERR_USAGE':
      return OPERATOR_EXIT.USAGE;
    case 'ROAM_ERR_NOT_FOUND':
    case 'ROAM_ERR_IO':
      return OPERATOR_EXIT.NOT_FOUND;
    case 'ROAM_ERR_BUNDLE':
    case 'ROAM_ERR_UNSUPPORTED_BUILTIN':
    case 'ROAM_ERR_WASM_MODULE':
    case 'ROAM_ERR_WASM_FEATURE':
      return OPERATOR_EXIT.BUNDLE_FAILED;
    case 'ROAM_ERR_CONFLICT':
      return OPERATOR_EXIT.CONFLICT;
    case 'ROAM_ERR_NO_HOST':
    case 'ROAM_ERR_HOST_UNREACHABLE':
    case 'ROAM_ERR_TIMEOUT':
      return OPERATOR_EXIT.UNAVAILABLE;
    case 'ROAM_ERR_UNAUTHORIZED':
      return OPERATOR_EXIT.REFUSED;
    case 'ROAM_ERR_MIGRATION':
      return OPERATOR_EXIT.MOVE_FAILED;
    default:
      return OPERATOR_EXIT.INTERNAL;
  }
}

/** Runs a command's action; its RoamErrors become `roam: message` and the mapped exit code. */
function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (err) {
      if (!isRoamError(err)) throw err;
      process.stderr.write(`roam: ${err.message}\n`);
      process.exitCode = operatorExitCode(err);
    }
  };
}

const usage = (message: string) => new RoamError('ROAM_ERR_USAGE', message);

/** `8080` (= 8080:8080/tcp), `8080:80`, `5353:53/udp`. */
export function parsePublish(spec: string): PublishedPort {
  const m = /^(\d+)(?::(\d+))?(?:\/(tcp|udp))?$/i.exec(spec.trim());
  if (!m?.[1]) {
    throw usage(`invalid --publish "${spec}": use PUBLIC[:GUEST][/udp], e.g. 8080, 8080:80 or 5353:53/udp`);
  }
  const port = (text: string, which: string) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1 || n > 65535) {
      throw usage(`invalid --publish "${spec}": the ${which} port must be 1-65535, not ${text}`);
    }
    return n;
  };
  const pub = port(m[1], 'public');
  return {
    public: pub,
    guest: m[2] === undefined ? pub : port(m[2], 'guest'),
    protocol: (m[3] ?? 'tcp').toLowerCase() as 'tcp' | 'udp',
  };
}

function parseEnv(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const kv of pairs) {
    const i = kv.indexOf('=');
    if (i <= 0) throw usage(`invalid --env "${kv}": use KEY=VALUE`);
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return env;
}

function parseCount(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d{1,9}$/.test(text)) throw usage(`invalid ${flag} "${text}": use a whole number`);
  return Number(text);
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** An AbortSignal that Ctrl-C (or SIGTERM) aborts, for the commands that follow. */
function interrupted(): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGINT', stop).once('SIGTERM', stop);
  return {
    signal: controller.signal,
    dispose: () => void process.off('SIGINT', stop).off('SIGTERM', stop),
  };
}

const guestPath = (name: string) => `api/guests/${encodeURIComponent(name)}`;

interface RunOptions extends ApiFlags {
  name?: string;
  publish?: string[];
  on?: string;
  env?: string[];
  json?: boolean;
  deadline?: string;
  expect?: string;
}

async function run(file: string, argv: string[], opts: RunOptions): Promise<void> {
  const api = connect(opts);
  const request: Omit<DeployRequest, 'bundle' | 'wasm'> = {
    name: opts.name ?? basename(file, extname(file)),
    publish: (opts.publish ?? []).map(parsePublish),
    env: parseEnv(opts.env ?? []),
    argv,
    ...(opts.on ? { on: opts.on } : {}),
    ...(opts.deadline ? { deadline: Date.now() + parseDuration(opts.deadline, '--deadline') } : {}),
    ...(opts.expect ? { expectMs: parseDuration(opts.expect, '--expect') } : {}),
  };
  let source: Buffer;
  try {
    source = await readFile(file);
  } catch (err) {
    throw new RoamError('ROAM_ERR_IO', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  // Progress on a terminal only (one line on stderr, rewritten in place); elsewhere the placement
  // line is the plain output, and stderr holds only warnings and the error, if any.
  const progress = opts.json || process.stderr.isTTY !== true ? undefined : new Progress(process.stderr);
  let program: { bundle: string } | { wasm: string };
  let size: number;
  if (isWasmFile(file, source)) {
    // A WebAssembly guest: the module goes as it is (its host instruments it).
    checkWasmModule(file, source);
    program = { wasm: source.toString('base64') };
    size = source.length;
  } else {
    progress?.step(`bundling ${file}`);
    const { code, warnings } = await bundleGuest(file);
    for (const w of warnings) process.stderr.write(`roam: warning: ${w}\n`);
    program = { bundle: code };
    size = Buffer.byteLength(code);
  }
  progress?.step(
    `sending ${request.name} (${(size / 1024).toFixed(0)} KiB) to the proxy, which places and starts it${request.on ? ` on ${request.on}` : ''}`,
  );
  let guest: GuestView;
  try {
    guest = await api.post<GuestView>('api/guests', { ...request, ...program }, 120_000);
  } finally {
    progress?.done();
  }
  if (opts.json) printJson(guest);
  else process.stdout.write(placement(guest));
}

/** WebAssembly's binary magic, "\0asm". */
const WASM_MAGIC = Buffer.from([0x00, 0x61, 0x73, 0x6d]);

/** A `.wasm` file, or any file that starts with WebAssembly's magic. */
function isWasmFile(file: string, source: Buffer): boolean {
  return extname(file).toLowerCase() === '.wasm' || source.subarray(0, 4).equals(WASM_MAGIC);
}

/** Refuses what cannot be a module before it travels (the host validates it whole). */
function checkWasmModule(file: string, source: Buffer): void {
  if (source.length < 8 || !source.subarray(0, 4).equals(WASM_MAGIC)) {
    throw new RoamError('ROAM_ERR_WASM_MODULE', `${file} is not a WebAssembly module (it does not start with \\0asm)`);
  }
  if (source.readUInt32LE(4) !== 1) {
    throw new RoamError(
      'ROAM_ERR_WASM_MODULE',
      `${file} is a WebAssembly binary of version ${source.readUInt32LE(4)}; Roam runs version 1 modules`,
    );
  }
  const limit = (MESSAGE_LIMITS.wasm / 4) * 3;
  if (source.length > limit) {
    throw new RoamError(
      'ROAM_ERR_WASM_MODULE',
      `${file} is ${(source.length / 2 ** 20).toFixed(1)} MiB; a WebAssembly guest's module may be at most ${limit / 2 ** 20} MiB`,
    );
  }
}

async function list<T>(
  path: string,
  opts: ApiFlags & { json?: boolean },
  show: (rows: T[]) => string,
  none: string,
): Promise<void> {
  const rows = await connect(opts).get<T[]>(path);
  if (opts.json) printJson(rows);
  else process.stdout.write(rows.length ? show(rows) : `${none}\n`);
}

async function stop(name: string, opts: ApiFlags & { json?: boolean }): Promise<void> {
  const guest = await connect(opts).delete<GuestView>(guestPath(name));
  if (opts.json) printJson(guest);
  else process.stdout.write(`${guest.name} ${guest.state}${guest.hostName ? ` (was on ${guest.hostName})` : ''}\n`);
}

/** `90s`, `10m`, `2h`, `1d` or plain milliseconds. */
async function showPolicy(opts: ApiFlags & { json?: boolean }): Promise<void> {
  const status = await connect(opts).get<PolicyStatus>('api/policy');
  if (opts.json) {
    printJson(status);
    return;
  }
  const m = status.model;
  const lines = [
    '# policy in force (YAML; pass your own with `roam proxy --policy FILE`)',
    ...Object.entries(status.policy).map(([k, v]) =>
      typeof v === 'object'
        ? `${k}: { ${Object.entries(v as object)
            .map(([a, b]) => `${a}: ${String(b)}`)
            .join(', ')} }`
        : `${k}: ${String(v)}`,
    ),
    '',
    `# availability model: ${m.kind}, from ${m.sessions} host sessions; held-out accuracy ${m.accuracy === null ? 'not known yet (too little history)' : `${(m.accuracy * 100).toFixed(1)}% on ${m.heldOut} sessions`}`,
    ...status.hosts.map(
      (h) =>
        `#   ${h.name}: utility ${h.utility === null ? '-' : h.utility.toFixed(2)}${h.lowForSeconds !== null ? ` (low for ${h.lowForSeconds.toFixed(0)} s)` : ''}, P(stays ${status.policy.horizonMinutes} min) ${h.pStay.toFixed(2)}`,
    ),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

const mb = (bytes: number | null): string => `${((bytes ?? 0) / 1e6).toFixed(2)} MB`;

/** The summary `roam migrate` prints when a move is over. */
export function migrationSummary(v: MigrationView): string {
  if (v.outcome !== 'moved') {
    return `${style.red('the move')} of ${v.guest} from ${v.from} to ${v.to} failed at ${v.step ?? '?'}: ${v.error ?? 'unknown'}
`;
  }
  const pause = v.pauseMs === null ? 'unknown (the source did not report it)' : `${v.pauseMs.toFixed(1)} ms`;
  const rounds = v.precopyRounds
    ? `, ${v.precopyRounds} pre-copy round(s) ${mb(v.precopyBytes)} + final ${mb(v.finalBytes)}`
    : v.precopy
      ? ', no pre-copy round (all of it fit in the pause)'
      : '';
  return (
    `${style.green('moved')} ${v.guest} from ${v.from} to ${v.to}
` +
    `  pause ${pause} (freeze to resume), total ${(v.totalMs ?? 0).toFixed(0)} ms, ${mb(v.bytesSent)} sent${rounds}
`
  );
}

async function migrate(
  name: string,
  opts: ApiFlags & { to?: string; precopy: boolean; json?: boolean; quiet?: boolean },
): Promise<void> {
  const api = connect(opts);
  const guests = await api.get<GuestView[]>('api/guests');
  const guest = guests.find((g) => g.name === name);
  if (!guest) throw new RoamError('ROAM_ERR_NOT_FOUND', `no guest named ${name}`);
  // Progress: the move's events, followed while the request runs.
  const watch = new AbortController();
  const [latest] = await api.get<EventView[]>('api/events?limit=1');
  // On a terminal one line shows the step (pre-copy rounds, freeze, transfer, commit); otherwise
  // each step is a plain line.
  const shown = opts.json || opts.quiet ? undefined : new Progress(process.stdout);
  const progress = !shown
    ? Promise.resolve()
    : (async () => {
        try {
          for await (const e of api.follow({ after: latest?.id ?? 0 }, watch.signal)) {
            if (e.guestId === guest.id && e.kind.startsWith('migration.') && e.kind !== 'migration.completed') {
              shown.step(e.message);
            }
          }
        } catch {
          // Progress is a courtesy: the summary below is what counts.
        }
      })();
  let view: MigrationView;
  try {
    view = await api.post<MigrationView>(
      `${guestPath(name)}/migrate`,
      { ...(opts.to ? { to: opts.to } : {}), precopy: opts.precopy },
      180_000,
    );
  } finally {
    // Let the last progress events arrive before the summary.
    await sleep(opts.json || opts.quiet ? 0 : 100);
    watch.abort();
    await progress;
    shown?.done();
  }
  if (opts.json) printJson(view);
  else process.stdout.write(migrationSummary(view));
  if (view.outcome !== 'moved') process.exitCode = OPERATOR_EXIT.MOVE_FAILED;
}

async function drain(name: string | undefined, opts: ApiFlags & { json?: boolean }): Promise<void> {
  const host = name ?? hostname();
  const view = await connect(opts).post<DrainView>(`api/hosts/${encodeURIComponent(host)}/drain`, {}, 600_000);
  if (opts.json) printJson(view);
  else {
    for (const m of view.migrations) process.stdout.write(migrationSummary(m));
    process.stdout.write(`drained ${view.host}: ${view.moved} guest(s) moved, ${view.failed} not
`);
  }
  if (view.failed > 0) process.exitCode = OPERATOR_EXIT.MOVE_FAILED;
}

/** `roam host drain [HOST]`: an operator command under the daemon's name. */
export function drainCommand(): Command {
  return withApi(
    new Command('drain')
      .description('move every guest off a host (default: this machine), keeping their connections')
      .argument('[host]', 'the host name or id (default: this machine name)')
      .option('--json', 'print the result as JSON')
      .action(action(drain)),
  );
}

/** Where a `logs --follow` reader is: the last time printed and how many records at that time. */
interface LogCursor {
  t: number;
  atT: number;
}

/** The records not printed yet (records come oldest first; equal times are counted). */
export function unseenLogs(records: LogRecordView[], cursor: LogCursor): LogRecordView[] {
  let skip = cursor.atT;
  const fresh = records.filter((r) => r.t > cursor.t || (r.t === cursor.t && skip-- <= 0));
  for (const r of fresh) {
    if (r.t === cursor.t) cursor.atT++;
    else Object.assign(cursor, { t: r.t, atT: 1 });
  }
  return fresh;
}

async function logs(name: string, opts: ApiFlags & { follow?: boolean; tail?: string; json?: boolean }): Promise<void> {
  const api = connect(opts);
  const tail = parseCount(opts.tail, '--tail');
  const fetchLogs = (n: number | undefined) =>
    api.get<LogRecordView[]>(`${guestPath(name)}/logs${n === undefined ? '' : `?tail=${n}`}`);
  const print = (records: LogRecordView[]) => {
    for (const r of records) {
      if (opts.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else (r.stream === 'err' ? process.stderr : process.stdout).write(r.text);
    }
  };
  const first = await fetchLogs(tail);
  if (!opts.follow) {
    if (opts.json) printJson(first);
    else print(first);
    return;
  }
  const cursor: LogCursor = { t: -Infinity, atT: 0 };
  print(unseenLogs(first, cursor));
  const { signal, dispose } = interrupted();
  try {
    for (;;) {
      await sleep(500, undefined, { signal });
      print(unseenLogs(await fetchLogs(1000), cursor));
    }
  } catch (err) {
    if (!signal.aborted) throw err;
  } finally {
    dispose();
  }
}

async function events(opts: ApiFlags & { follow?: boolean; json?: boolean; after?: string; limit?: string }) {
  const api = connect(opts);
  const after = parseCount(opts.after, '--after');
  const limit = parseCount(opts.limit, '--limit');
  if (!opts.follow) {
    const params = new URLSearchParams();
    if (after !== undefined) params.set('after', String(after));
    if (limit !== undefined) params.set('limit', String(limit));
    const list = await api.get<EventView[]>(`api/events${params.size ? `?${params.toString()}` : ''}`);
    if (opts.json) printJson(list);
    else process.stdout.write(list.map(eventLine).join(''));
    return;
  }
  const { signal, dispose } = interrupted();
  try {
    const query = { ...(after === undefined ? {} : { after }), ...(limit === undefined ? {} : { limit }) };
    for await (const event of api.follow(query, signal)) {
      process.stdout.write(opts.json ? `${JSON.stringify(event)}\n` : eventLine(event));
    }
  } finally {
    dispose();
  }
}

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

/** The options every operator command has (where the API is, the admin token) and the exit codes. */
function withApi(cmd: Command): Command {
  return cmd
    .option('--api <url>', `the proxy's API (default: ROAM_API, else ${DEFAULT_API})`)
    .option('--admin-token <token>', 'the admin token (default: ROAM_ADMIN_TOKEN, else the proxy data directory)')
    .option('--admin-token-file <file>', 'read the admin token from this file')
    .option(
      '--data-dir <dir>',
      "the proxy's data directory, on its machine (default: ROAM_DATA_DIR, else ~/.roam/proxy)",
    )
    .addHelpText('after', EXIT_HELP);
}

/** The operator commands, to add to the `roam` program. */
export function operatorCommands(): Command[] {
  const runCmd = new Command('run')
    .description(
      'bundle a program (or take a WebAssembly module) and start it as a guest on the best host (or --on HOST)',
    )
    .argument('<file>', 'the program (.ts, .js, .mjs, or a WASI .wasm module)')
    .argument('[args...]', 'arguments for the program (after --)')
    .option('--name <name>', 'the guest name (default: the file name)')
    .option(
      '--publish <port>',
      'publish a port on the proxy: PUBLIC[:GUEST][/udp], e.g. 8080, 8080:80, 5353:53/udp; repeat for more',
      collect,
    )
    .option('--on <host>', 'run it on this host (name or id) instead of the best by score')
    .option('--deadline <duration>', 'finish within this long (e.g. 30m): placed and moved to make that likely')
    .option('--expect <duration>', 'how long it runs on a host of benchmark score 1 (with --deadline)')
    .option('--env <KEY=VALUE>', 'an environment variable for the guest; repeat for more', collect)
    .option('--json', 'print the guest as JSON')
    .action(action(run));
  const ps = new Command('ps')
    .description('list the guests: state, host, published ports, memory, CPU, connections')
    .option('--json', 'print JSON')
    .action(
      action((opts: ApiFlags & { json?: boolean }) =>
        list<GuestView>('api/guests', opts, guestsTable, 'no guests yet: start one with `roam run FILE --name NAME`'),
      ),
    );
  const hosts = new Command('hosts')
    .description('list the hosts: state, round-trip time, CPU, memory, network, score')
    .option('--json', 'print JSON')
    .action(
      action((opts: ApiFlags & { json?: boolean }) =>
        list<HostView>(
          'api/hosts',
          opts,
          hostsTable,
          'no host has joined yet: run `roam host --proxy ADDRESS` on a machine',
        ),
      ),
    );
  const stopCmd = new Command('stop')
    .description('stop a guest')
    .argument('<name>', 'the guest')
    .option('--json', 'print the guest as JSON')
    .action(action(stop));
  const logsCmd = new Command('logs')
    .description("print a guest's console output, fetched from its host")
    .argument('<name>', 'the guest')
    .option('-f, --follow', 'keep printing new output (every 500 ms) until Ctrl-C')
    .option('--tail <n>', 'only the last N records')
    .option('--json', 'print the records as JSON (with --follow: one per line)')
    .action(action(logs));
  const eventsCmd = new Command('events')
    .description('print the event log (joins, leaves, placements, stops, ...)')
    .option('-f, --follow', 'keep printing new events as they happen until Ctrl-C')
    .option('--after <id>', 'only events after this id')
    .option('--limit <n>', 'at most this many (the most recent)')
    .option('--json', 'print JSON (with --follow: one event per line)')
    .action(action(events));
  const migrateCmd = new Command('migrate')
    .description('move a running guest to another host while its connections stay open')
    .argument('<name>', 'the guest')
    .option('--to <host>', 'the host to move to (name or id; default: the best other host by score)')
    .option('--no-precopy', 'freeze first and send everything then (longer pause, fewer bytes)')
    .option('--json', 'print the result as JSON (no progress lines)')
    .option('-q, --quiet', 'print only the summary')
    .action(action(migrate));
  const policyCmd = new Command('policy').description("the control plane's policy");
  policyCmd.addCommand(
    withApi(
      new Command('show')
        .description('print the policy in force (defaults filled in), the availability model and what it sees')
        .option('--json', 'print JSON')
        .action(action(showPolicy)),
    ),
  );
  const all = [runCmd, ps, hosts, stopCmd, logsCmd, eventsCmd, migrateCmd];
  for (const cmd of all) withApi(cmd);
  return [...all, policyCmd];
}
