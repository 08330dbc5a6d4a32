/**
 * `roam demo`: everything on one machine. A proxy, three hosts (each in its own network namespace
 * and CPU cgroup when run as root, else on loopback ports), the records guest (TCP, HTTP with a
 * small web page, UDP), a CPU-burning guest that loads host-a, and a client that keeps TCP and
 * HTTP traffic flowing through the proxy and checks every byte. The guest is moved by hand every
 * so often (the control plane moves guests off a loaded host once it is there). The dashboard
 * URL is printed; Ctrl-C stops and removes everything the demo started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { DAEMON_NODE_FLAGS, daemonEnv } from '../common/node-flags.js';
import { onStopSignals } from '../common/stop-signals.js';
import { RoamError, isRoamError } from '../errors.js';
import { bundleGuest } from '../guest/bundle.js';
import { packageRoot } from '../package-root.js';
import type { EventView, GuestView, MigrationView } from '../proxy/view.js';
import { ApiClient } from './api-client.js';
import { DemoClient, type ClientStats } from './demo-client.js';
import { canUseNamespaces, createDemoCgroups, createDemoNetwork, type DemoNetwork } from './demo-network.js';
import { parseDuration } from './duration.js';
import { style } from './style.js';
import { formatMs } from './table.js';

const HOSTS = ['host-a', 'host-b', 'host-c'];
const LOADED = 'host-a';

/** A guest that keeps most of a core busy, in short slices (its host's CPU budget is never near). */
const BURNER = `// Loads its host: busy for 42 ms of every 50.
let slices = 0;
setInterval(() => {
  const end = performance.now() + 42;
  while (performance.now() < end) slices++;
}, 50);
`;

interface DemoOptions {
  netns: boolean;
  apiPort?: string;
  moveEvery: string;
  moves?: string;
  load: boolean;
  logLevel: string;
}

interface Child {
  name: string;
  /** Where its output goes. */
  log: string;
  child: ChildProcess;
  exited: Promise<void>;
  waitFor(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
}

/**
 * util-linux's `setpriv`, where there is one. With it the demo's processes run in their own process
 * group, so that a terminal's Ctrl-C reaches the demo alone, which stops them in order (the client
 * first: a proxy stopping at the same moment resets its connection); and each is killed if the demo
 * dies without stopping them (its parent-death signal). Without it they share the demo's group.
 */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((path) => existsSync(path));

/** Starts a process; its output goes to `log`, and `waitFor` watches its stdout. */
function start(name: string, command: string, args: string[], log: string): Child {
  const [program, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', command, ...args]] : [command, args];
  const child = spawn(program, argv, {
    cwd: packageRoot(),
    stdio: ['ignore', 'pipe', 'pipe'],
    env: daemonEnv(), // (the client too: all are Roam's processes)
    detached: SETPRIV !== undefined,
  });
  const file = createWriteStream(log);
  let stdout = '';
  const waiters = new Set<() => void>();
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    file.write(d);
    if (stdout.length < 64 * 1024) stdout += d;
    for (const w of [...waiters]) w();
  });
  child.stderr?.on('data', (d: Buffer) => file.write(d));
  const exited = new Promise<void>((resolve) =>
    child.on('close', () => {
      file.end();
      for (const w of [...waiters]) w();
      resolve();
    }),
  );
  return {
    name,
    log,
    child,
    exited,
    waitFor: (re, timeoutMs) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new RoamError('ROAM_ERR_TIMEOUT', `${name} did not start in time (see ${log})`));
        }, timeoutMs);
        const check = (): void => {
          const m = re.exec(stdout);
          if (m) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve(m);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            clearTimeout(timer);
            waiters.delete(check);
            reject(new RoamError('ROAM_ERR_API', `${name} exited while starting (see ${log})`));
          }
        };
        waiters.add(check);
        check();
      }),
  };
}

async function stopChild(c: Child, graceMs = 5000): Promise<void> {
  if (c.child.exitCode !== null || c.child.signalCode !== null) return;
  c.child.kill('SIGTERM');
  const timer = setTimeout(() => c.child.kill('SIGKILL'), graceMs);
  await c.exited;
  clearTimeout(timer);
}

function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/** `preferred` if free, else one the kernel picks. */
async function choosePort(host: string, preferred: number, taken: Set<number>): Promise<number> {
  if (!taken.has(preferred) && (await portFree(host, preferred))) {
    taken.add(preferred);
    return preferred;
  }
  for (;;) {
    const server = net.createServer();
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port));
    });
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (!taken.has(port)) {
      taken.add(port);
      return port;
    }
  }
}

function since(t: number): string {
  const s = Math.max(0, Math.floor((Date.now() - t) / 1000));
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
}

const count = (n: number): string => n.toLocaleString('en-US');

function statusLine(stats: ClientStats, where: string, moves: number): string {
  const ok = stats.failures.length === 0;
  const verdict = ok ? style.green('nothing lost') : style.red(`${stats.failures.length} problem(s)`);
  return (
    `client: ${count(stats.answered)} records answered in order (${count(stats.bytesSent + stats.bytesReceived)} bytes), ` +
    `${count(stats.httpOk)} HTTP answers, ${verdict}; one TCP connection ${stats.open ? 'open' : 'CLOSED'} for ${since(stats.since)} ` +
    `across ${moves} move(s); records on ${style.bold(where)}`
  );
}

/** The last lines each process wrote to its log: a start that failed usually says why there. */
function logTails(children: readonly Child[], lines = 15): string {
  return children
    .map((c) => {
      let text: string;
      try {
        text = readFileSync(c.log, 'utf8');
      } catch {
        return `--- ${c.name}: no log`;
      }
      const tail = text.trimEnd().split('\n').slice(-lines);
      return `--- ${c.name}, the last ${tail.length} lines of its log:\n${tail.join('\n')}`;
    })
    .join('\n');
}

/** After a forced stop's SIGKILLs, how long to wait for the processes to be gone before exiting. */
const FORCED_EXIT_WAIT_MS = 2000;

async function runDemo(opts: DemoOptions): Promise<void> {
  const moveEveryMs = parseDuration(opts.moveEvery, '--move-every');
  const maxMoves = opts.moves === undefined ? undefined : Number(opts.moves);
  if (maxMoves !== undefined && (!Number.isInteger(maxMoves) || maxMoves < 0))
    throw new RoamError('ROAM_ERR_USAGE', '--moves must be a whole number');
  const out = (line: string): void => void process.stdout.write(`${line}\n`);
  const tty = process.stdout.isTTY === true;
  const dir = mkdtempSync(join(tmpdir(), 'roam-demo-'));
  const cleanups: Array<() => void | Promise<void>> = [() => rmSync(dir, { recursive: true, force: true })];
  const children: Child[] = [];
  let finishing: Promise<void> | undefined;
  let clientRef: DemoClient | undefined;
  let api: ApiClient | undefined;
  /** Moves of the records guest: by hand (`byHand`) and all, the control plane's included. */
  let moves = 0;
  let byHand = 0;
  const timers: NodeJS.Timeout[] = [];
  const following = new AbortController();

  const finish = (why: string): Promise<void> =>
    (finishing ??= (async () => {
      for (const t of timers) clearInterval(t);
      following.abort();
      if (tty) process.stdout.write('\r\x1b[2K');
      out(`\n${why}: stopping everything the demo started`);
      let failed = false;
      if (clientRef) {
        const stats = await clientRef.finish();
        failed = stats.failures.length > 0;
        out(
          failed
            ? style.red(
                `the client saw ${stats.failures.length} problem(s):\n  ${stats.failures.slice(0, 10).join('\n  ')}`,
              )
            : style.green(
                `the client sent ${count(stats.sent)} records and got every answer, in order and intact, over one TCP ` +
                  `connection across ${moves} move(s), and ${count(stats.httpOk)} HTTP answers: no byte lost`,
              ),
        );
      }
      // Guests first, so that no host drains on its way out.
      for (const name of ['records', 'burner']) {
        await api?.delete<GuestView>(`api/guests/${name}`).catch(() => undefined);
      }
      await Promise.all(children.filter((c) => c.name !== 'proxy').map((c) => stopChild(c)));
      await Promise.all(children.filter((c) => c.name === 'proxy').map((c) => stopChild(c)));
      for (const c of cleanups.reverse()) await c();
      out('removed the hosts, the proxy, their namespaces, cgroups and files');
      process.exitCode = failed ? 1 : 0;
    })());
  // Files go even when a second signal cuts the orderly stop short (the namespaces and cgroups
  // have their own exit hooks); the folder holds the proxy's tokens.
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const offSignals = onStopSignals(
    () => void finish('interrupted'),
    () => {
      for (const c of children) c.child.kill('SIGKILL');
      // Exit hooks remove the cgroups, and a cgroup goes only once its processes are gone.
      const gone = Promise.all(children.map((c) => c.exited));
      const limit = new Promise((resolve) => setTimeout(resolve, FORCED_EXIT_WAIT_MS).unref());
      void Promise.race([gone, limit]).then(() => process.exit(130));
    },
  );

  try {
    // --- the machines ---
    const ns = opts.netns ? canUseNamespaces() : ({ ok: false, reason: '--no-netns' } as const);
    let network: DemoNetwork | undefined;
    if (ns.ok) {
      network = createDemoNetwork(HOSTS);
      const n = network;
      cleanups.push(() => n.close());
    }
    const cgroups = createDemoCgroups(HOSTS, 1);
    if ('close' in cgroups) cleanups.push(() => cgroups.close());
    const bind = network?.rootAddress ?? '127.0.0.1';
    const taken = new Set<number>();
    const apiPort = opts.apiPort !== undefined ? Number(opts.apiPort) : await choosePort(bind, 7480, taken);
    const controlPort = await choosePort(bind, 7400, taken);

    out(style.bold('Roam demo'));
    out(
      `  machines   ${network ? `three hosts, each in its own network namespace on ${bind.replace(/\.1$/, '.0/24')}` : `three hosts on loopback (${ns.ok ? '' : `no namespaces: ${ns.reason}`})`}`,
    );
    out(
      `  load       ${'close' in cgroups ? `each host has its own CPU cgroup (1 core); ${LOADED} gets a CPU-burning guest` : `no CPU cgroups (${cgroups.reason}): every host measures the whole machine`}`,
    );

    const roam = join(packageRoot(), 'bin', 'roam');
    const logFlags = ['--log-format', 'json', '--log-level', opts.logLevel];
    const proxy = start(
      'proxy',
      process.execPath,
      [
        ...DAEMON_NODE_FLAGS,
        roam,
        'proxy',
        '--bind',
        bind,
        '--control-port',
        String(controlPort),
        '--api-port',
        String(apiPort),
        '--data-dir',
        join(dir, 'proxy'),
        '--name',
        'demo-proxy',
        '--report-interval',
        '500',
        ...logFlags,
      ],
      join(dir, 'proxy.log'),
    );
    children.push(proxy);
    const apiPortActual = Number((await proxy.waitFor(/api port +(\d+)/, 20_000))[1]);
    const base = `http://${bind}:${apiPortActual}`;
    const tokenFile = join(dir, 'proxy', 'admin-token');
    api = new ApiClient(new URL(`${base}/`), readFileSync(tokenFile, 'utf8').trim(), tokenFile);

    for (const name of HOSTS) {
      let cmd = { command: process.execPath, args: [...DAEMON_NODE_FLAGS, roam, 'host'] };
      cmd.args.push(
        '--proxy',
        `${bind}:${controlPort}`,
        '--join-token-file',
        join(dir, 'proxy', 'join-token'),
        '--name',
        name,
        '--data-dir',
        join(dir, name),
        '--no-benchmark',
        '--drain-timeout',
        '5',
        ...logFlags,
      );
      if (network) cmd = network.wrap(name, cmd.command, cmd.args);
      if ('close' in cgroups) cmd = cgroups.wrap(name, cmd.command, cmd.args);
      children.push(start(name, cmd.command, cmd.args, join(dir, `${name}.log`)));
    }
    await Promise.all(children.filter((c) => c.name !== 'proxy').map((c) => c.waitFor(/joined the proxy/, 30_000)));
    out(`  hosts      ${HOSTS.join(', ')} joined`);

    // --- the guests ---
    const records = await bundleGuest(join(packageRoot(), 'examples', 'records.js'));
    const tcpPort = await choosePort(bind, 7000, taken);
    const httpPort = await choosePort(bind, 8080, taken);
    const udpPort = await choosePort(bind, 9000, taken);
    const placed = await api.post<GuestView>(
      'api/guests',
      {
        name: 'records',
        bundle: records.code,
        publish: [
          { public: tcpPort, guest: 7000, protocol: 'tcp' },
          { public: httpPort, guest: 8080, protocol: 'tcp' },
          { public: udpPort, guest: 9000, protocol: 'udp' },
        ],
        env: {},
        argv: [],
        on: 'host-b',
      },
      60_000,
    );
    let where = placed.hostName;
    if (opts.load) {
      const file = join(dir, 'burner.js');
      writeFileSync(file, BURNER);
      const burner = await bundleGuest(file);
      await api.post<GuestView>(
        'api/guests',
        { name: 'burner', bundle: burner.code, publish: [], env: {}, argv: [], on: LOADED },
        60_000,
      );
    }
    const client = new DemoClient(bind, tcpPort, httpPort);
    clientRef = client;
    await client.connected;

    out('');
    out(`  dashboard  ${style.bold(`${base}/`)}   paste the admin token: cat ${tokenFile}`);
    out(`  guest      http://${bind}:${httpPort}/page (web page), tcp ${tcpPort} (records), udp ${udpPort}`);
    out(`  metrics    curl -H "Authorization: Bearer $(cat ${join(dir, 'proxy', 'metrics-token')})" ${base}/metrics`);
    out(`  commands   ./bin/roam ps --api ${base} --admin-token-file ${tokenFile}   (also hosts, events -f, migrate)`);
    out(`  logs       ${dir}/*.log`);
    out(
      `Moving records by hand every ${formatMs(moveEveryMs)}${opts.load ? `; ${LOADED} is loaded, so the control plane may move guests too` : ''}. Ctrl-C stops it all.`,
    );
    out('');

    // --- what happens ---
    // Decisions and the moves the demo did not make itself (the control plane's), as they happen.
    let moving = false;
    const events = api;
    void (async () => {
      const [latest] = await events.get<EventView[]>('api/events?limit=1');
      for await (const e of events.follow({ after: latest?.id ?? 0 }, following.signal)) {
        const theirs = /^migration\.(completed|failed)$/.test(e.kind) && !moving;
        if (!e.kind.startsWith('decision.') && !theirs) continue;
        if (tty) process.stdout.write('\r\x1b[2K');
        out(`${style.cyan(e.kind)} ${e.message}`);
        if (theirs) {
          if (e.kind === 'migration.completed' && e.guestId === placed.id) moves++;
          const guests = await events.get<GuestView[]>('api/guests');
          where = guests.find((g) => g.name === 'records')?.hostName ?? where;
        }
      }
    })().catch(() => undefined);

    const status = (): void => {
      const line = statusLine(client.stats, where ?? '?', moves);
      if (tty) process.stdout.write(`\r\x1b[2K${line.slice(0, (process.stdout.columns || 200) + 40)}`);
    };
    timers.push(setInterval(status, 1000));
    if (!tty) timers.push(setInterval(() => out(statusLine(client.stats, where ?? '?', moves)), 10_000));

    const moveOnce = async (): Promise<void> => {
      if (moving || finishing) return;
      moving = true;
      try {
        const others = HOSTS.filter((h) => h !== where && (!opts.load || h !== LOADED));
        const to = others[byHand % others.length] ?? HOSTS.find((h) => h !== where);
        const before = client.stats.answered;
        const v = await events.post<MigrationView>('api/guests/records/migrate', { to }, 180_000);
        moves++;
        byHand++;
        if (tty) process.stdout.write('\r\x1b[2K');
        if (v.outcome === 'moved') {
          where = v.to;
          const pause = v.pauseMs === null ? '?' : `${v.pauseMs.toFixed(1)} ms`;
          out(
            `${style.green('moved')} records ${v.from} → ${v.to}: pause ${pause}, total ${(v.totalMs ?? 0).toFixed(0)} ms; ` +
              `the client had ${count(before)} answers, ${client.stats.failures.length ? style.red('and problems') : 'nothing lost'}`,
          );
        } else {
          out(`${style.red('move failed')} records ${v.from} → ${v.to} at ${v.step ?? '?'}: ${v.error ?? '?'}`);
        }
        if (maxMoves !== undefined && byHand >= maxMoves) void finish(`done after ${byHand} move(s) by hand`);
      } catch (err) {
        if (tty) process.stdout.write('\r\x1b[2K');
        // The control plane may be moving it right now: that is no failure.
        if (isRoamError(err) && err.code === 'ROAM_ERR_CONFLICT') out(`not moving records by hand: ${err.message}`);
        else out(`${style.red('move failed')}: ${(err as Error).message}`);
      } finally {
        moving = false;
      }
    };
    if (maxMoves === 0) void finish('done (no moves asked for)');
    else timers.push(setInterval(() => void moveOnce(), moveEveryMs));
    await new Promise<void>((resolve) => {
      const wait = setInterval(() => {
        if (finishing) {
          clearInterval(wait);
          resolve();
        }
      }, 100);
    });
    await finishing;
  } catch (err) {
    // The folder goes with the demo: what its processes said about the failure is shown first.
    if (!finishing) out(logTails(children));
    await finish(`the demo could not start: ${(err as Error).message}`);
    throw err;
  } finally {
    offSignals();
  }
}

export function demoCommand(): Command {
  return new Command('demo')
    .description(
      'everything on this machine: a proxy, three hosts, a guest with a web page and a client that checks every byte while the guest moves; prints the dashboard URL',
    )
    .option('--no-netns', 'keep the hosts on loopback even as root (default: a network namespace each, as root)')
    .option('--api-port <port>', 'the API and dashboard port (default 7480 if free, else any)')
    .option('--move-every <duration>', 'how often to move the guest by hand', '15s')
    .option('--no-load', 'no CPU-burning guest on host-a')
    .option('--log-level <level>', "the proxy's and hosts' log level (their logs go to files)", 'info')
    .addOption(new Option('--moves <n>', 'stop after this many moves by hand').hideHelp())
    .addHelpText(
      'after',
      `
Ctrl-C stops and removes everything the demo started (processes, namespaces, cgroups, files);
a second Ctrl-C, half a second or more later, kills what is left at once (exit code 130).
Exit code 0 when the client lost nothing, 1 when it saw a problem.`,
    )
    .action(async (opts: DemoOptions) => runDemo(opts));
}
