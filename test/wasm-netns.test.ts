/**
 * A WebAssembly guest among hosts in network namespaces, each with its own address: the compiled
 * echo server (examples/wasm/echo-server.c) is published through the proxy, a client in a
 * namespace of its own keeps one connection busy, and the guest moves host-a -> host-b -> host-a
 * (with and without pre-copy) under it: every line comes back, in order, on that one connection.
 * Needs root, iproute2 and clang for wasm32-wasi: skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { netnsAvailable } from './helpers/netns.js';
import { startNetnsCluster, type NetnsCluster } from './helpers/netns-cluster.js';
import { ROOT, tempDir } from './helpers/roam.js';
import { instrument } from '../src/wasm/instrument.js';

const availability = netnsAvailable();
const hasClang = spawnSync('clang', ['--version']).status === 0;
const skip = !availability.ok
  ? `needs network namespaces: ${availability.reason}`
  : hasClang
    ? false
    : 'clang for wasm32-wasi is not installed (apt-get install clang lld wasi-libc)';

/**
 * Runs in the client namespace: one connection, one line at a time, each echo checked; prints
 * `echo N` every 25 answers, and on `stop` (stdin) a RESULT line.
 */
const CLIENT = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) });
let n = 0, buffer = '', closed = false, stopping = false;
const failures = [];
const next = () => { n++; s.write('line ' + n + '\\n'); };
s.setEncoding('utf8');
s.on('connect', next);
s.on('data', (d) => {
  buffer += d;
  let at;
  while ((at = buffer.indexOf('\\n')) >= 0) {
    const line = buffer.slice(0, at);
    buffer = buffer.slice(at + 1);
    const want = '#' + n + ' line ' + n;
    if (line !== want && failures.length < 10) failures.push('got ' + JSON.stringify(line) + ', want ' + JSON.stringify(want));
    if (n % 25 === 0) console.log('echo ' + n);
    if (stopping) return finish();
    setTimeout(next, 5);
  }
});
s.on('error', (e) => failures.push('error ' + e.message));
s.on('close', () => { closed = true; });
const finish = () => { console.log('RESULT ' + JSON.stringify({ answered: n, failures, closed })); process.exit(0); };
process.stdin.on('data', () => { stopping = true; });
`;

interface MigrationRow {
  outcome: string | null;
  to: string;
  error: string | null;
}

describe('a WebAssembly guest moves between hosts in network namespaces', { skip }, () => {
  let cluster: NetnsCluster;
  let built = '';
  before(async () => {
    built = tempDir({ after: (fn: () => void) => process.on('exit', fn) }, 'roam-wasm-netns-');
    const made = spawnSync('bash', [join(ROOT, 'examples/wasm/build.sh'), built], { encoding: 'utf8' });
    assert.equal(made.status, 0, made.stderr);
    // The hosts share this run's cache of instrumented modules, filled here once.
    const cacheDir = join(built, 'cache');
    await instrument(readFileSync(join(built, 'echo-server.wasm')), { cacheDir: join(cacheDir, 'wasm') });
    const policy = join(built, 'policy.json');
    writeFileSync(policy, JSON.stringify({ enabled: false })); // only the test moves the guest
    cluster = await startNetnsCluster({
      hosts: ['host-a', 'host-b'],
      others: ['client'],
      proxyArgs: ['--policy', policy],
      hostEnv: { 'host-a': { ROAM_CACHE_DIR: cacheDir }, 'host-b': { ROAM_CACHE_DIR: cacheDir } },
    });
  });
  after(() => cluster?.close());

  it('a client connection to the compiled echo server keeps every line across moves', async () => {
    const run = await cluster.roamJson<{ hostName: string; kind: string }>(
      'client',
      ['run', join(built, 'echo-server.wasm'), '--name', 'echo', '--publish', '7000', '--on', 'host-a'],
      120_000,
    );
    assert.equal(run.hostName, 'host-a');
    assert.equal(run.kind, 'wasm');
    const client = cluster.net.spawn('client', process.execPath, ['-e', CLIENT, cluster.proxyAddress, '7000'], {
      stdin: 'pipe',
    });
    await client.waitFor(/^echo 25$/m, 30_000);
    let mark = 25;
    for (const [to, precopy] of [
      ['host-b', true],
      ['host-a', false],
      ['host-b', false],
      ['host-a', true],
    ] as const) {
      const args = ['migrate', 'echo', '--to', to, ...(precopy ? [] : ['--no-precopy'])];
      const moved = await cluster.roamJson<MigrationRow>('client', args, 60_000);
      assert.equal(moved.outcome, 'moved', JSON.stringify(moved));
      mark = Number(/echo (\d+)\n?$/.exec(client.output())?.[1] ?? mark) + 25;
      await client.waitFor(new RegExp(`^echo ${mark}$`, 'm'), 30_000);
    }
    client.child.stdin?.write('stop\n');
    const line = await client.waitFor(/^RESULT (.*)$/m, 30_000);
    const result = JSON.parse(line[1] ?? '{}') as { answered: number; failures: string[]; closed: boolean };
    assert.deepEqual(result.failures, [], 'every line echoed, numbered in order');
    assert.equal(result.closed, false, 'the connection never closed');
    assert.ok(result.answered >= mark, `answers: ${result.answered}`);
    const guests = await cluster.roamJson<Array<{ name: string; hostName: string }>>('client', ['ps']);
    assert.equal(guests.find((g) => g.name === 'echo')?.hostName, 'host-a');
  });
});
