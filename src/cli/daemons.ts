/** `roam proxy` and `roam host`: the two long-running processes of a Roam deployment. */
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { createLogger, type Logger } from '../common/log.js';
import { resolveSecret } from '../common/secrets.js';
import { onStopSignals } from '../common/stop-signals.js';
import { drainCommand } from './operator.js';
import { Controller } from '../controller/controller.js';
import { RoamError } from '../errors.js';
import { nativeCodecProblem } from '../guest/image/native.js';
import { startApiServer } from '../proxy/api.js';
import { defaultProxyDataDir, resolveProxyConfig } from '../proxy/config.js';
import { Proxy } from '../proxy/proxy.js';
import { logEvents } from '../proxy/event-log.js';
import { proxyPages } from '../proxy/pages.js';

function int(value: string, what: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0)
    throw new RoamError('ROAM_ERR_USAGE', `${what} must be a whole number, got ${value}`);
  return n;
}

/** Runs `stop` on SIGINT or SIGTERM, once; a second interruption exits at once (stop-signals.ts). */
function onShutdown(stop: () => Promise<void>): void {
  onStopSignals(
    () =>
      void stop().then(
        () => process.exit(0),
        (err: unknown) => {
          process.stderr.write(`roam: ${(err as Error).message}\n`);
          process.exit(70);
        },
      ),
    () => process.exit(130),
  );
}

interface ProxyCliOptions {
  bind?: string;
  controlPort?: string;
  apiPort?: string;
  dataDir?: string;
  joinToken?: string;
  joinTokenFile?: string;
  adminToken?: string;
  adminTokenFile?: string;
  name?: string;
  reportInterval?: string;
  policy?: string;
  logLevel?: string;
  logFormat?: string;
}

/** Daemon logs go to stdout (a daemon's stdout is its log; the banner lines are plain text before them). */
function daemonLogger(proc: string, opts: { logLevel?: string; logFormat?: string }): Logger {
  return createLogger(proc, { level: opts.logLevel, format: opts.logFormat, destination: process.stdout });
}

async function runProxy(opts: ProxyCliOptions): Promise<void> {
  const logger = daemonLogger('proxy', opts);
  const config = resolveProxyConfig({
    bind: opts.bind,
    controlPort: opts.controlPort === undefined ? undefined : int(opts.controlPort, '--control-port'),
    apiPort: opts.apiPort === undefined ? undefined : int(opts.apiPort, '--api-port'),
    dataDir: opts.dataDir,
    joinToken: opts.joinToken,
    joinTokenFile: opts.joinTokenFile,
    adminToken: opts.adminToken,
    adminTokenFile: opts.adminTokenFile,
    name: opts.name,
    reportIntervalMs: opts.reportInterval === undefined ? undefined : int(opts.reportInterval, '--report-interval'),
    policyFile: opts.policy,
  });
  const proxy = await Proxy.start(config);
  const stopLogging = logEvents(proxy, logger);
  proxy.connections.log = (fields, message) => logger.debug(fields, message);
  const pages = proxyPages(proxy, { adminToken: config.adminToken, dataDir: config.dataDir });
  const api = await startApiServer({
    ops: proxy,
    adminToken: config.adminToken,
    host: config.bind,
    port: config.apiPort,
    logger: logger.child({ component: 'api' }),
    pages: pages.handler,
  });
  onShutdown(async () => {
    await api.close();
    pages.close();
    stopLogging();
    await proxy.close();
  });
  const shown = config.bind === '0.0.0.0' ? hostname() : config.bind;
  const lines = [
    `roam proxy ${config.name} is running (Ctrl-C stops it)`,
    `  control port ${proxy.controlPort}   hosts join here`,
    `  api port     ${api.port}   roam ps, roam run, the dashboard: http://${shown}:${api.port}/`,
    `  data         ${config.dataDir}${config.generated.length ? ` (new ${config.generated.join(' and ')} stored here, mode 0600)` : ''}`,
    ``,
    `To add a host, copy ${join(config.dataDir, 'join-token')} to it and run there:`,
    `  roam host --proxy ${shown}:${proxy.controlPort} --join-token-file ./join-token`,
    ``,
  ];
  process.stdout.write(lines.join('\n'));
}

interface HostCliOptions {
  proxy?: string;
  joinToken?: string;
  joinTokenFile?: string;
  name?: string;
  advertise?: string;
  peerPort?: string;
  peerBind?: string;
  drainTimeout?: string;
  dataDir?: string;
  benchmark: boolean;
  logLevel?: string;
  logFormat?: string;
}

function parseProxyAddress(text: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(text);
  if (!m?.[1]) throw new RoamError('ROAM_ERR_USAGE', `invalid --proxy "${text}": use HOST or HOST:PORT`);
  const port = m[2] === undefined ? 7400 : Number(m[2]);
  if (port < 1 || port > 65535) throw new RoamError('ROAM_ERR_USAGE', `invalid port in --proxy "${text}"`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

async function runHost(opts: HostCliOptions): Promise<void> {
  if (!opts.proxy) {
    throw new RoamError('ROAM_ERR_USAGE', "required option '--proxy <addr[:port]>' not specified (the proxy to join)");
  }
  const token = resolveSecret({ value: opts.joinToken, env: 'ROAM_JOIN_TOKEN', file: opts.joinTokenFile });
  if (!token) {
    throw new RoamError(
      'ROAM_ERR_USAGE',
      'no join token: pass --join-token-file FILE (a copy of the proxy data directory join-token), or set ROAM_JOIN_TOKEN',
    );
  }
  const name = opts.name ?? hostname();
  const logger = daemonLogger('host', opts).child({ host: name });
  const controller = await Controller.start({
    proxy: parseProxyAddress(opts.proxy),
    joinToken: token.value,
    name,
    dataDir: opts.dataDir ?? process.env['ROAM_HOST_DATA_DIR'] ?? join(homedir(), '.roam', 'host'),
    ...(opts.advertise ? { advertise: opts.advertise } : {}),
    ...(opts.peerPort ? { peerPort: int(opts.peerPort, '--peer-port') } : {}),
    ...(opts.peerBind ? { peerBind: opts.peerBind } : {}),
    ...(opts.drainTimeout ? { drainTimeoutMs: int(opts.drainTimeout, '--drain-timeout') * 1000 } : {}),
    benchmark: opts.benchmark,
    log: (line, fields = {}) => {
      const { level = 'info', ...ids } = fields;
      logger[level](ids, line);
    },
  });
  process.stdout.write(`roam host ${name} (${controller.hostId}) joined the proxy at ${opts.proxy}\n`);
  const slowImages = nativeCodecProblem();
  if (slowImages !== undefined) {
    logger.warn(
      { imageCodec: 'portable' },
      `images are decoded by the portable path, restores are slower: ${slowImages}`,
    );
  }
  onShutdown(() => controller.close('the host was asked to stop (signal)'));
}

export function proxyCommand(): Command {
  return new Command('proxy')
    .description("run the Proxy: the guests' public address, the roaming table, and the API")
    .option('--bind <addr>', 'address to listen on', '0.0.0.0')
    .option('--control-port <port>', 'where hosts join (default 7400)')
    .option('--api-port <port>', 'the HTTP API and dashboard (default 7480)')
    .option('--data-dir <dir>', `state, tokens and database (default ${defaultProxyDataDir()})`)
    .option('--join-token <token>', 'token hosts must present (default: generated; or ROAM_JOIN_TOKEN)')
    .option('--join-token-file <file>', 'read the join token from a file')
    .option('--admin-token <token>', 'token the API requires (default: generated; or ROAM_ADMIN_TOKEN)')
    .option('--admin-token-file <file>', 'read the admin token from a file')
    .option('--name <name>', 'how the proxy names itself (default: the machine name)')
    .option('--policy <file>', 'the control plane policy, YAML or JSON (or ROAM_POLICY; see `roam policy show`)')
    .addOption(new Option('--report-interval <ms>', 'how often hosts report').default(undefined).hideHelp())
    .option('--log-level <level>', 'trace, debug, info, warn, error or silent', 'info')
    .option('--log-format <format>', 'pretty or json (default: pretty on a terminal, else json)')
    .action(async (opts: ProxyCliOptions) => runProxy(opts));
}

export function hostCommand(): Command {
  return new Command('host')
    .description('run the Interface Controller: offer this machine to a proxy and run guests on it')
    .option('--proxy <addr[:port]>', 'the proxy to join (port 7400 by default); required')
    .option('--join-token <token>', 'the join token (or ROAM_JOIN_TOKEN; prefer --join-token-file)')
    .option('--join-token-file <file>', 'read the join token from a file')
    .option('--name <name>', 'this host name (default: the machine name)')
    .option('--advertise <addr>', 'address other hosts reach this one at')
    .option('--peer-port <port>', 'port other hosts send moving guests to (default: any free port)')
    .option('--peer-bind <addr>', 'address the peer port listens on (default: all)')
    .option('--drain-timeout <seconds>', 'on SIGINT/SIGTERM, how long to wait for guests to move away (default 30)')
    .option('--data-dir <dir>', 'where the host id is kept (default ~/.roam/host)')
    .option('--no-benchmark', 'skip the benchmark at start (its score helps placement)')
    .option('--log-level <level>', 'trace, debug, info, warn, error or silent', 'info')
    .option('--log-format <format>', 'pretty or json (default: pretty on a terminal, else json)')
    .enablePositionalOptions()
    .addCommand(drainCommand())
    .action(async (opts: HostCliOptions) => runHost(opts));
}
