/**
 * Test harness for several hosts on one machine: each node gets its own Linux network namespace
 * with its own address, all wired by veth pairs to one bridge. The bridge lives in a namespace of
 * its own, so nothing is added to, or changed in, the machine's real network: the test subnet
 * exists only inside the namespaces and no namespace has a default route.
 *
 *     const net = await createNetwork({ nodes: ['proxy', 'host-a', 'client'] });
 *     t.after(() => net.close());
 *     const server = net.spawn('proxy', process.execPath, ['server.js']);
 *     await server.waitFor(/listening/);
 *     const r = await net.exec('client', 'curl', ['-s', `http://${net.address('proxy')}:8080/`]);
 *
 * Needs root and iproute2 (`ip`); call `netnsAvailable()` first and skip with its reason.
 *
 * Namespaces are named `roam-<pid>-<6 hex>` (the bridge) and `roam-<pid>-<6 hex>-<node>` (the
 * nodes). `close()` ends every process in them and deletes them; a process 'exit' hook (and
 * SIGINT/SIGTERM/SIGHUP) does the same synchronously, and `createNetwork` deletes namespaces left
 * by an earlier run whose pid is no longer alive.
 */
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { RunResult } from './roam.js';

export type { RunResult } from './roam.js';

const IP = 'ip';
const PREFIX = 'roam-';
/** `roam-<pid>-<6 hex>` optionally followed by `-<node>`. */
const NAME_RE = /^roam-(\d+)-[0-9a-f]{6}(?:-[a-z0-9][a-z0-9_-]*)?$/;
const NODE_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;
/** Interface names inside the namespaces (each well under the kernel's 15-character limit). */
const NODE_IF = 'eth0';
const BRIDGE_IF = 'br0';

export type Availability = { ok: true } | { ok: false; reason: string };

let availability: Availability | undefined;

/**
 * Whether this process can build test networks: root, iproute2, and a namespace that can be
 * created, populated with a veth pair and a bridge, entered with `ip netns exec`, and deleted.
 * The answer is computed once per process.
 */
export function netnsAvailable(): Availability {
  availability ??= probe();
  return availability;
}

function probe(): Availability {
  if (process.platform !== 'linux')
    return { ok: false, reason: `network namespaces need Linux, not ${process.platform}` };
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return { ok: false, reason: 'network namespaces need root (run the tests as root)' };
  }
  const version = spawnSync(IP, ['-V'], { encoding: 'utf8', timeout: 5000 });
  if (version.error || version.status !== 0) {
    return { ok: false, reason: `iproute2 \`ip\` is missing (${version.error?.message ?? version.stderr.trim()})` };
  }
  const ns = `${PREFIX}${process.pid}-${randomBytes(3).toString('hex')}-probe`;
  const steps: Array<[string, string[]]> = [
    ['ip netns add', ['netns', 'add', ns]],
    ['veth pair', ['-n', ns, 'link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'p1']],
    ['bridge', ['-n', ns, 'link', 'add', BRIDGE_IF, 'type', 'bridge']],
    ['ip netns exec', ['netns', 'exec', ns, IP, 'link', 'set', 'lo', 'up']],
  ];
  try {
    for (const [what, args] of steps) {
      const r = spawnSync(IP, args, { encoding: 'utf8', timeout: 5000 });
      if (r.error || r.status !== 0) {
        return { ok: false, reason: `${what} failed: ${r.error?.message ?? r.stderr.trim()}` };
      }
    }
    return { ok: true };
  } finally {
    spawnSync(IP, ['netns', 'delete', ns], { stdio: 'ignore', timeout: 5000 });
  }
}

export interface NetworkOptions {
  /** Node names: lower-case letters, digits, `-` and `_`, unique. */
  nodes: string[];
  /** An IPv4 subnet such as `10.99.0.0/24`; default `10.213.<random>.0/24`. Nodes get .1, .2, ... */
  subnet?: string;
}

export interface SpawnOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** `'pipe'` to write to the child's stdin; default `'ignore'`. */
  stdin?: 'ignore' | 'pipe';
}

export interface NetProcess {
  child: ChildProcess;
  /** Everything written to stdout so far. */
  output: () => string;
  /** Everything written to stderr so far. */
  errors: () => string;
  /** Resolves when stdout matches; rejects on timeout or if the process exits first. */
  waitFor: (re: RegExp, timeoutMs?: number) => Promise<RegExpMatchArray>;
  exited: Promise<RunResult>;
}

export interface TestNetwork {
  /** `roam-<pid>-<6 hex>`: the bridge's namespace, and the prefix of every node's namespace. */
  readonly id: string;
  readonly subnet: string;
  readonly nodes: readonly string[];
  /** The node's IPv4 address in the test subnet. */
  address(node: string): string;
  /** The node's namespace name, for `ip -n NAME ...` or `ip netns exec NAME ...`. */
  namespace(node: string): string;
  /** Starts `command args` inside the node's namespace; `close()` ends it. */
  spawn(node: string, command: string, args?: string[], options?: SpawnOptions): NetProcess;
  /** Runs a short command inside the node's namespace; rejects if it outlives `timeoutMs`. */
  exec(
    node: string,
    command: string,
    args?: string[],
    options?: SpawnOptions & { timeoutMs?: number },
  ): Promise<RunResult>;
  /**
   * Unplugs (`'down'`) or replugs (`'up'`) the node's cable: the bridge's end of its veth pair.
   * The node keeps its address and its sockets; packets to and from it are dropped, so open
   * connections stall rather than reset, as when a real cable is cut.
   */
  setLink(node: string, state: 'up' | 'down'): Promise<void>;
  /** Ends every process (SIGTERM, SIGKILL after `graceMs`) and deletes the namespaces. Idempotent. */
  close(graceMs?: number): Promise<void>;
}

/** Networks not yet closed, for the exit hook. */
const open = new Set<Network>();

export async function createNetwork(options: NetworkOptions): Promise<TestNetwork> {
  const availability = netnsAvailable();
  if (!availability.ok) throw new Error(`network namespaces unavailable: ${availability.reason}`);
  const nodes = [...options.nodes];
  if (nodes.length === 0) throw new Error('createNetwork needs at least one node');
  for (const node of nodes) {
    if (!NODE_RE.test(node)) throw new Error(`invalid node name ${JSON.stringify(node)}: use [a-z0-9_-], at most 32`);
  }
  if (new Set(nodes).size !== nodes.length) throw new Error(`duplicate node names in ${nodes.join(', ')}`);
  const subnet = options.subnet ?? `10.213.${randomInt(256)}.0/24`;
  const addresses = hostAddresses(subnet, nodes.length);

  await cleanLeaked();
  const net = new Network(`${PREFIX}${process.pid}-${randomBytes(3).toString('hex')}`, subnet, nodes, addresses);
  open.add(net);
  installExitHooks();
  try {
    await net.build();
  } catch (err) {
    await net.close(0).catch(() => undefined);
    throw err;
  }
  return net;
}

class Network implements TestNetwork {
  readonly nodes: readonly string[];
  /** Namespaces created so far, bridge first: what close() deletes. */
  readonly created: string[] = [];
  readonly children = new Set<ChildProcess>();
  private readonly addresses = new Map<string, string>();
  private readonly prefixLength: number;
  private closing: Promise<void> | undefined;

  constructor(
    readonly id: string,
    readonly subnet: string,
    nodes: string[],
    addresses: string[],
  ) {
    this.nodes = nodes;
    nodes.forEach((node, i) => this.addresses.set(node, addresses[i]!));
    this.prefixLength = Number(subnet.split('/')[1]);
  }

  async build(): Promise<void> {
    const bridgeNs = this.id;
    await ip('netns', 'add', bridgeNs);
    this.created.push(bridgeNs);
    await ip('-n', bridgeNs, 'link', 'set', 'lo', 'up');
    await ip('-n', bridgeNs, 'link', 'add', BRIDGE_IF, 'type', 'bridge');
    await ip('-n', bridgeNs, 'link', 'set', BRIDGE_IF, 'up');
    for (const [i, node] of this.nodes.entries()) {
      const ns = this.namespace(node);
      await ip('netns', 'add', ns);
      this.created.push(ns);
      // Created inside the bridge's namespace with the peer placed straight into the node's:
      // the veth pair never exists in the root namespace.
      await ip('-n', bridgeNs, 'link', 'add', port(i), 'type', 'veth', 'peer', 'name', NODE_IF, 'netns', ns);
      await ip('-n', bridgeNs, 'link', 'set', port(i), 'master', BRIDGE_IF, 'up');
      await ip('-n', ns, 'link', 'set', 'lo', 'up');
      await ip('-n', ns, 'addr', 'add', `${this.address(node)}/${this.prefixLength}`, 'dev', NODE_IF);
      await ip('-n', ns, 'link', 'set', NODE_IF, 'up');
    }
  }

  address(node: string): string {
    const address = this.addresses.get(node);
    if (address === undefined)
      throw new Error(`unknown node ${JSON.stringify(node)} (nodes: ${this.nodes.join(', ')})`);
    return address;
  }

  namespace(node: string): string {
    this.address(node); // validates the name
    return `${this.id}-${node}`;
  }

  spawn(node: string, command: string, args: string[] = [], options: SpawnOptions = {}): NetProcess {
    if (this.closing) throw new Error(`network ${this.id} is closed`);
    const child = spawn(IP, ['netns', 'exec', this.namespace(node), command, ...args], {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'],
    });
    this.children.add(child);
    let stdout = '';
    let stderr = '';
    const label = `${command} on ${node}`;
    const waiters: Array<{ re: RegExp; resolve: (m: RegExpMatchArray) => void }> = [];
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      for (const w of waiters.slice()) {
        const m = stdout.match(w.re);
        if (m) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<RunResult>((resolve) => {
      // 'error' (e.g. `ip` missing) is followed by 'close', which settles this promise.
      child.on('error', (err) => (stderr += `${String(err)}\n`));
      child.on('close', (code, signal) => {
        this.children.delete(child);
        resolve({ code, signal, stdout, stderr });
      });
    });
    return {
      child,
      output: () => stdout,
      errors: () => stderr,
      exited,
      waitFor(re, timeoutMs = 10_000) {
        const m = stdout.match(re);
        if (m) return Promise.resolve(m);
        return new Promise((resolve, reject) => {
          const timer = setTimeout(() => {
            waiters.splice(waiters.indexOf(w), 1);
            reject(new Error(`timed out waiting for ${re} from ${label}:\n${stdout}\nstderr: ${stderr}`));
          }, timeoutMs);
          const w = {
            re,
            resolve: (m: RegExpMatchArray) => {
              clearTimeout(timer);
              resolve(m);
            },
          };
          waiters.push(w);
          void exited.then((r) => {
            if (!waiters.includes(w)) return;
            waiters.splice(waiters.indexOf(w), 1);
            clearTimeout(timer);
            reject(
              new Error(`${label} exited (${r.code ?? r.signal}) before printing ${re}:\n${stdout}\nstderr: ${stderr}`),
            );
          });
        });
      },
    };
  }

  async exec(
    node: string,
    command: string,
    args: string[] = [],
    options: SpawnOptions & { timeoutMs?: number } = {},
  ): Promise<RunResult> {
    const p = this.spawn(node, command, args, options);
    const timeoutMs = options.timeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        p.child.kill('SIGKILL');
        reject(
          new Error(
            `${command} on ${node} timed out after ${timeoutMs} ms\nstdout: ${p.output()}\nstderr: ${p.errors()}`,
          ),
        );
      }, timeoutMs);
    });
    try {
      return await Promise.race([p.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async setLink(node: string, state: 'up' | 'down'): Promise<void> {
    const i = this.nodes.indexOf(node);
    this.address(node);
    await ip('-n', this.id, 'link', 'set', port(i), state);
  }

  close(graceMs = 1000): Promise<void> {
    this.closing ??= this.shutdown(graceMs);
    return this.closing;
  }

  private async shutdown(graceMs: number): Promise<void> {
    const running = [...this.children].filter((c) => c.exitCode === null && c.signalCode === null);
    const ended = Promise.all(running.map((c) => new Promise<void>((resolve) => c.once('close', () => resolve()))));
    for (const c of running) c.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'grace over'>(
      (resolve) => (timer = setTimeout(() => resolve('grace over'), graceMs)),
    );
    if ((await Promise.race([ended, graceOver])) === 'grace over') {
      for (const c of running) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
    clearTimeout(timer);
    // Anything else still inside (grandchildren, strays) goes too, before the namespaces: a
    // deleted namespace lives on, unnamed, while a process is inside it.
    const failures: string[] = [];
    for (const ns of this.created.slice().reverse()) {
      await killInside(ns);
      try {
        await ip('netns', 'delete', ns);
      } catch (err) {
        if (!/No such file|not exist/i.test(String(err))) failures.push(String(err));
      }
    }
    // The pipes of a SIGKILLed child close promptly; wait for them, but never forever.
    await Promise.race([ended, new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    this.created.length = 0;
    open.delete(this);
    if (open.size === 0) removeSignalHooks();
    if (failures.length > 0) throw new Error(`closing network ${this.id}:\n${failures.join('\n')}`);
  }

  /** For the exit hook: the same as close(), synchronously and without grace. */
  closeSync(): void {
    for (const c of this.children) {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
    for (const ns of this.created.slice().reverse()) {
      killInsideSync(ns);
      try {
        execFileSync(IP, ['netns', 'delete', ns], { stdio: 'ignore', timeout: 5000 });
      } catch {
        // Best effort: the next createNetwork removes leftovers.
      }
    }
    this.created.length = 0;
    open.delete(this);
  }
}

/** The bridge's end of node i's veth pair. */
function port(i: number): string {
  return `p${i}`;
}

function ip(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(IP, args, { encoding: 'utf8', timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`ip ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

function parsePids(text: string): number[] {
  return text
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number)
    .filter((pid) => pid !== process.pid);
}

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/** SIGKILLs every process inside the namespace and waits (up to 2 s) until none is left. */
async function killInside(ns: string): Promise<void> {
  const deadline = Date.now() + 2000;
  for (;;) {
    const pids = parsePids(await ip('netns', 'pids', ns).catch(() => ''));
    if (pids.length === 0 || Date.now() > deadline) return;
    for (const pid of pids) kill(pid);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function killInsideSync(ns: string): void {
  try {
    const out = execFileSync(IP, ['netns', 'pids', ns], { encoding: 'utf8', timeout: 5000, stdio: 'pipe' });
    for (const pid of parsePids(out)) kill(pid);
  } catch {
    // No such namespace, or nothing inside.
  }
}

/** Whether the process exists and is not a zombie (pid 1 may be slow to reap orphans). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    return !/^Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, ''));
  } catch {
    return true;
  }
}

/** Deletes `roam-<pid>-...` namespaces whose creating process is gone (a crashed earlier run). */
async function cleanLeaked(): Promise<void> {
  const list = await ip('netns', 'list').catch(() => '');
  for (const line of list.split('\n')) {
    const name = line.trim().split(/\s+/)[0] ?? '';
    const m = NAME_RE.exec(name);
    if (!m || alive(Number(m[1]))) continue;
    await killInside(name);
    await ip('netns', 'delete', name).catch(() => undefined);
  }
}

/** Parses `a.b.c.d/len` and returns the first `count` host addresses (.1, .2, ...). */
function hostAddresses(subnet: string, count: number): string[] {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(subnet);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const len = m ? Number(m[5]) : NaN;
  if (!m || octets.some((o) => o > 255) || !(len >= 8 && len <= 30)) {
    throw new Error(`invalid subnet ${JSON.stringify(subnet)}: expected IPv4 a.b.c.d/8..30`);
  }
  const size = 2 ** (32 - len);
  const base = octets.reduce((acc, o) => acc * 256 + o, 0);
  if (base % size !== 0) throw new Error(`subnet ${subnet} has host bits set`);
  if (count > size - 2) throw new Error(`subnet ${subnet} holds ${size - 2} hosts, not ${count}`);
  return Array.from({ length: count }, (_, i) => {
    const a = base + 1 + i;
    return [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.');
  });
}

// Safety nets: if the process ends without close(), delete the namespaces synchronously.

let exitHookInstalled = false;
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
let signalHooksInstalled = false;

function closeAllSync(): void {
  for (const net of [...open]) net.closeSync();
}

function onSignal(signal: NodeJS.Signals): void {
  closeAllSync();
  removeSignalHooks();
  // Keep the signal's usual effect when nobody else handles it.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function installExitHooks(): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', closeAllSync);
  }
  if (!signalHooksInstalled) {
    signalHooksInstalled = true;
    for (const s of SIGNALS) process.on(s, onSignal);
  }
}

function removeSignalHooks(): void {
  if (!signalHooksInstalled) return;
  signalHooksInstalled = false;
  for (const s of SIGNALS) process.removeListener(s, onSignal);
}
