/**
 * WebAssembly guests in a deployment, with real processes on loopback: `roam run prog.wasm`
 * through a proxy (a compiled echo server reached on the proxy's public port), `roam migrate` of a
 * computation mid-loop (it finishes on the other host with the uninterrupted run's output), a
 * client connection to the echo server that stays open across moves and keeps every byte, and
 * damaged modules refused with a clear error.
 *
 * The guests are the C examples in examples/wasm, built with Debian's clang for wasm32-wasi
 * (.ci/run installs it); without clang these tests are skipped, and say so.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { before, test } from 'node:test';
import { eventually, freePort, startHost, startProxy, type Started, type TestProxy } from './helpers/cluster.js';
import { ROOT, runRoam, tempDir } from './helpers/roam.js';
import { instrument } from '../src/wasm/instrument.js';

const hasClang = spawnSync('clang', ['--version']).status === 0;
const skip = hasClang ? false : 'clang for wasm32-wasi is not installed (apt-get install clang lld wasi-libc)';
let built = '';
let cacheDir = '';

before(async () => {
  if (!hasClang) return;
  built = tempDir({ after: (fn: () => void) => process.on('exit', fn) }, 'roam-wasm-proxy-');
  // Hosts and local runs share one cache of instrumented modules, this run's own.
  cacheDir = join(built, 'cache');
  process.env['ROAM_CACHE_DIR'] = cacheDir;
  const made = spawnSync('bash', [join(ROOT, 'examples/wasm/build.sh'), built], { encoding: 'utf8' });
  assert.equal(made.status, 0, made.stderr);
  // The computation's instrumented module is made once here: the move test is about the move.
  // (The echo server's is made by its host, in the first test: the path every deploy takes.)
  await instrument(readFileSync(join(built, 'journey.wasm')), { cacheDir: join(cacheDir, 'wasm') });
});

interface Stage {
  proxy: TestProxy;
  hosts: Started[];
  /** `--api URL --data-dir DIR`: the operator commands' flags for this proxy. */
  api: string[];
}

/** A proxy whose control plane stays still (these tests move guests by hand), and hosts. */
async function stage(
  t: { after(fn: () => void | Promise<void>): void },
  names: string[],
  env: Record<string, Record<string, string>> = {},
): Promise<Stage> {
  const policy = join(tempDir(t), 'policy.json');
  writeFileSync(policy, JSON.stringify({ enabled: false }));
  const proxy = await startProxy(t, ['--report-interval', '500', '--policy', policy]);
  const hosts = names.map((name) =>
    startHost(t, proxy, name, { env: { ROAM_CACHE_DIR: cacheDir, ...(env[name] ?? {}) } }),
  );
  await Promise.all(hosts.map((h) => h.waitFor(/joined the proxy/)));
  return { proxy, hosts, api: ['--api', `http://127.0.0.1:${proxy.apiPort}`, '--data-dir', proxy.dataDir] };
}

interface GuestRow {
  name: string;
  kind: string;
  state: string;
  hostName: string | null;
  exitCode: number | null;
  memoryBytes: number | null;
}

async function guest(proxy: TestProxy, name: string): Promise<GuestRow | undefined> {
  return (await proxy.api<GuestRow[]>('GET', '/api/guests')).body.find((g) => g.name === name);
}

async function logText(proxy: TestProxy, name: string): Promise<string> {
  const r = await proxy.api<Array<{ stream: string; text: string }>>('GET', `/api/guests/${name}/logs?tail=1000`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body
    .filter((l) => l.stream === 'out')
    .map((l) => l.text)
    .join('');
}

/** A client of the echo server: one line out, its numbered echo back, over one connection. */
class LineClient {
  private buffer = '';
  private waiting: ((line: string) => void) | undefined;
  closed = false;
  readonly socket: net.Socket;
  readonly connected: Promise<void>;

  constructor(port: number) {
    this.socket = net.connect({ host: '127.0.0.1', port });
    this.connected = new Promise((resolve, reject) => {
      this.socket.once('connect', resolve).once('error', reject);
    });
    this.socket.setEncoding('utf8');
    this.socket.on('data', (d: string) => {
      this.buffer += d;
      this.deliver();
    });
    this.socket.on('error', () => {});
    this.socket.on('close', () => (this.closed = true));
  }

  /** Resolves when the connection has closed (rejects after `timeoutMs`: the test fails). */
  closing(what: string, timeoutMs = 20_000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private deliver(): void {
    const at = this.buffer.indexOf('\n');
    if (at < 0 || !this.waiting) return;
    const line = this.buffer.slice(0, at);
    this.buffer = this.buffer.slice(at + 1);
    const resolve = this.waiting;
    this.waiting = undefined;
    resolve(line);
  }

  /** Sends a line and resolves with the echo (bounded: the test fails if it never comes). */
  ask(text: string, timeoutMs = 20_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no echo of "${text}" in ${timeoutMs} ms`)), timeoutMs);
      this.waiting = (line) => {
        clearTimeout(timer);
        resolve(line);
      };
      this.socket.write(`${text}\n`);
      this.deliver();
    });
  }
}

test('roam run prog.wasm --publish: a compiled echo server answers on the proxy public port', { skip }, async (t) => {
  const { proxy, hosts, api } = await stage(t, ['host-a']);
  const port = await freePort();
  const run = await runRoam(
    ['run', join(built, 'echo-server.wasm'), '--name', 'echo', '--publish', `${port}:7000`, ...api],
    { timeoutMs: 60_000 },
  );
  assert.equal(run.code, 0, `${run.stderr}\nhost-a:\n${hosts[0]?.output()}`);
  assert.match(run.stdout, new RegExp(`^echo running on host-a \\([0-9a-f]{8}\\), published tcp ${port} -> 7000\\n$`));

  const client = new LineClient(port);
  t.after(() => client.socket.destroy());
  await client.connected;
  assert.equal(await client.ask('hello'), '#1 hello');
  assert.equal(await client.ask('again'), '#2 again');

  // The operator's view of a WebAssembly guest: kind, memory from the host's reports, logs.
  const row = await eventually(async () => {
    const g = await guest(proxy, 'echo');
    return g?.memoryBytes ? g : undefined;
  }, 'a report of the guest');
  assert.equal(row.kind, 'wasm');
  assert.equal(row.state, 'running');
  assert.ok((row.memoryBytes ?? 0) >= 65536, `memory ${row.memoryBytes}`);
  const ps = await runRoam(['ps', ...api]);
  assert.equal(ps.code, 0, ps.stderr);
  assert.match(ps.stdout, /\necho +wasm +running +host-a +tcp \d+->7000 /);
  const logs = await runRoam(['logs', 'echo', ...api]);
  assert.equal(logs.code, 0, logs.stderr);
  assert.match(logs.stdout, /ready\n(.*\n)*.*served 2\n/);

  const stopped = await runRoam(['stop', 'echo', ...api]);
  assert.equal(stopped.code, 0, stopped.stderr);
  await client.closing('the connection closed by the stop');
  assert.equal(stopped.stdout, 'echo stopped (was on host-a)\n');
  assert.equal(await guest(proxy, 'echo'), undefined, 'a stopped guest leaves the table');
});

test(
  'roam migrate moves a WebAssembly computation mid-loop: it finishes on the other host with the uninterrupted output',
  { skip },
  async (t) => {
    const N = '1500000000';
    // The uninterrupted run, in this process's neighbour, while the cluster does the same work.
    const whole = runRoam(['guest', 'run', join(built, 'journey.wasm'), '--', N], { timeoutMs: 180_000 });
    const { proxy, hosts, api } = await stage(t, ['host-a', 'host-b']);
    const run = await runRoam(
      ['run', join(built, 'journey.wasm'), '--name', 'journey', '--on', 'host-a', ...api, '--', N],
      {
        timeoutMs: 60_000,
      },
    );
    assert.equal(run.code, 0, run.stderr);
    await eventually(
      async () => ((await logText(proxy, 'journey')).startsWith('started') ? true : undefined),
      'the loop to start',
    );

    const moved = await runRoam(['migrate', 'journey', '--to', 'host-b', ...api], { timeoutMs: 60_000 });
    assert.equal(
      moved.code,
      0,
      `${moved.stdout}${moved.stderr}\nhost-a:\n${hosts[0]?.output()}\nhost-b:\n${hosts[1]?.output()}`,
    );
    assert.match(moved.stdout, /moved journey from host-a to host-b\n {2}pause \d+\.\d ms/);
    t.diagnostic(moved.stdout.split('\n').slice(-2).join(' ').trim());
    const during = await logText(proxy, 'journey');
    assert.doesNotMatch(during, /result/, 'moved before the loop ended (else the test proves nothing)');

    const done = await eventually(
      async () => {
        const g = await guest(proxy, 'journey');
        return g?.state === 'exited' ? g : undefined;
      },
      'the computation to finish',
      150_000,
    );
    assert.equal(done.hostName, 'host-b');
    assert.equal(done.exitCode, 0);
    const reference = await whole;
    assert.equal(reference.code, 0, reference.stderr);
    assert.match(reference.stdout, /^result [0-9a-f]{16}$/m);
    assert.equal(await logText(proxy, 'journey'), reference.stdout);
  },
);

test('a connection to a WebAssembly echo server stays open across moves and keeps every byte', { skip }, async (t) => {
  const { proxy, hosts, api } = await stage(t, ['host-a', 'host-b']);
  const port = await freePort();
  const run = await runRoam(
    ['run', join(built, 'echo-server.wasm'), '--name', 'echo', '--publish', `${port}:7000`, '--on', 'host-a', ...api],
    { timeoutMs: 60_000 },
  );
  assert.equal(run.code, 0, run.stderr);
  const client = new LineClient(port);
  t.after(() => client.socket.destroy());
  await client.connected;
  let n = 0;
  const exchange = async (count: number): Promise<void> => {
    for (let i = 0; i < count; i++) {
      n++;
      const text = `line ${n} ${'x'.repeat(n % 200)}`;
      assert.equal(await client.ask(text), `#${n} ${text}`);
    }
  };
  await exchange(20);
  let where = 'host-a';
  for (const precopy of [true, false, true]) {
    const to = where === 'host-a' ? 'host-b' : 'host-a';
    // A line in flight while the guest moves: its echo comes from wherever the guest is then.
    n++;
    const text = `line ${n} in flight`;
    const inFlight = client.ask(text);
    const moved = await proxy.api<{ outcome: string; to: string }>('POST', '/api/guests/echo/migrate', { to, precopy });
    assert.equal(
      moved.body.outcome,
      'moved',
      `${JSON.stringify(moved.body)}\nhost-a:\n${hosts[0]?.output()}\nhost-b:\n${hosts[1]?.output()}`,
    );
    assert.equal(await inFlight, `#${n} ${text}`);
    where = to;
    await exchange(20);
  }
  // `roam host drain` moves it too, the same way.
  const drained = await runRoam(['host', 'drain', where, ...api], { timeoutMs: 60_000 });
  assert.equal(drained.code, 0, drained.stdout + drained.stderr);
  assert.match(drained.stdout, new RegExp(`drained ${where}: 1 guest\\(s\\) moved, 0 not`));
  where = where === 'host-a' ? 'host-b' : 'host-a';
  await exchange(10);
  assert.equal(client.closed, false, 'the connection never closed');
  assert.equal((await guest(proxy, 'echo'))?.hostName, where);
  // A new client reaches the guest where it is now.
  const second = new LineClient(port);
  t.after(() => second.socket.destroy());
  await second.connected;
  second.socket.end(); // the server serves one connection at a time: this one waits its turn
  client.socket.end();
  // The client's end reaches the guest, which closes; a moved connection ends like any other.
  await client.closing('the first client closed by the server');
  await second.closing('the second client served and closed');
  assert.match(await logText(proxy, 'echo'), new RegExp(`served ${n}\\n`));
});

/** Failures injected into a WebAssembly guest's move (src/common/failpoints.ts), as for JavaScript guests. */
const faults: Array<{ name: string; env: Record<string, Record<string, string>>; says: RegExp }> = [
  {
    name: 'the target dies during pre-copy',
    env: { 'host-b': { ROAM_FAILPOINTS: 'migrate.target.precopyPages=exit' } },
    says: /host-b/,
  },
  {
    name: 'the image is damaged in transit',
    env: { 'host-a': { ROAM_FAILPOINTS: 'migrate.source.corrupt=corrupt' } },
    says: /checksum/,
  },
];

for (const fault of faults) {
  test(
    `a WebAssembly move fails (${fault.name}): it rolls back, the server runs on with its connection`,
    { skip },
    async (t) => {
      const { proxy, api } = await stage(t, ['host-a', 'host-b'], fault.env);
      const port = await freePort();
      const run = await runRoam(
        [
          'run',
          join(built, 'echo-server.wasm'),
          '--name',
          'echo',
          '--publish',
          `${port}:7000`,
          '--on',
          'host-a',
          ...api,
        ],
        { timeoutMs: 60_000 },
      );
      assert.equal(run.code, 0, run.stderr);
      const client = new LineClient(port);
      t.after(() => client.socket.destroy());
      await client.connected;
      assert.equal(await client.ask('before'), '#1 before');

      const moved = await proxy.api<{ outcome: string; error: string | null }>('POST', '/api/guests/echo/migrate', {
        to: 'host-b',
      });
      assert.equal(moved.body.outcome, 'rolled-back', JSON.stringify(moved.body));
      const events = (await proxy.api<Array<{ kind: string; message: string }>>('GET', '/api/events?limit=1000')).body;
      const said = events.filter((e) => e.kind.startsWith('migration.')).map((e) => e.message);
      assert.match(said.join('\n'), fault.says);

      // It runs exactly once, on host-a, and the same connection carries on where it was.
      assert.equal(await client.ask('after'), '#2 after');
      assert.equal((await guest(proxy, 'echo'))?.hostName, 'host-a');
      assert.equal(client.closed, false);
    },
  );
}

test('roam run refuses a damaged or foreign .wasm with a clear error', { skip }, async (t) => {
  const { proxy, api } = await stage(t, ['host-a']);
  const dir = tempDir(t);

  // Not WebAssembly at all: refused before it travels.
  const text = join(dir, 'notes.wasm');
  writeFileSync(text, 'hello, I am text\n');
  const local = await runRoam(['run', text, '--name', 'notes', ...api]);
  assert.equal(local.code, 67, local.stderr);
  assert.match(local.stderr, /notes\.wasm is not a WebAssembly module/);

  // A truncated module: the header is right, the host refuses the rest.
  const whole = readFileSync(join(built, 'echo-server.wasm'));
  const cut = join(dir, 'cut.wasm');
  writeFileSync(cut, whole.subarray(0, Math.floor(whole.length / 2)));
  const refused = await runRoam(['run', cut, '--name', 'cut', ...api], { timeoutMs: 60_000 });
  assert.equal(refused.code, 67, refused.stdout + refused.stderr);
  assert.match(refused.stderr, /^roam: the host refused the program: .*(WebAssembly|module)/m);
  assert.equal((await guest(proxy, 'cut'))?.state, 'failed');

  // The API itself refuses bodies that are not a module, or send two programs.
  const bad = await proxy.api<{ error: { code: string; message: string } }>('POST', '/api/guests', {
    name: 'bad',
    wasm: Buffer.from('not a module').toString('base64'),
  });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error.message, /wasm: is not a WebAssembly module/);
  const both = await proxy.api<{ error: { code: string; message: string } }>('POST', '/api/guests', {
    name: 'both',
    bundle: 'console.log(1)',
    wasm: whole.toString('base64'),
  });
  assert.equal(both.status, 400);
  assert.match(both.body.error.message, /wasm: cannot come with bundle/);
  const neither = await proxy.api<{ error: { code: string; message: string } }>('POST', '/api/guests', {
    name: 'neither',
  });
  assert.equal(neither.status, 400);
  assert.match(neither.body.error.message, /bundle: is required/);
});
