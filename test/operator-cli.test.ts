/**
 * The operator commands (`roam run/ps/hosts/stop/logs/events`), run as child processes against a
 * real API server started here in front of an in-memory `ProxyOperations`. Needs `npm run build`.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { startApiServer } from '../src/proxy/api.js';
import type { EventView, GuestView, HostView, LogRecordView } from '../src/proxy/view.js';
import { FakeOps } from './helpers/fake-ops.js';
import { runRoam, startRoam, tempDir, writeGuest } from './helpers/roam.js';

const TOKEN = 'cli-test-admin-token';

// The commands must find the token only where each test says: not in this machine's environment.
const emptyDataDir = mkdtempSync(join(tmpdir(), 'roam-operator-'));
after(() => rmSync(emptyDataDir, { recursive: true, force: true }));
process.env['ROAM_DATA_DIR'] = emptyDataDir;
delete process.env['ROAM_ADMIN_TOKEN'];
delete process.env['ROAM_API'];

async function start(t: TestContext) {
  const ops = new FakeOps();
  const api = await startApiServer({ ops, adminToken: TOKEN, host: '127.0.0.1', port: 0 });
  t.after(() => api.close());
  const flags = ['--api', `http://127.0.0.1:${api.port}`, '--admin-token', TOKEN];
  // The flags go right after the command, before any `--`.
  const roam = (command: string, ...args: string[]) => runRoam([command, ...flags, ...args]);
  return { ops, api, flags, roam };
}

/** The cells of a table line (cells hold single spaces; columns are two or more apart). */
function cells(line: string): Array<{ start: number; end: number }> {
  return [...line.matchAll(/\S+(?: \S+)*/g)].map((m) => ({ start: m.index, end: m.index + m[0].length }));
}

/** Every row has a cell per column, left-aligned under its header or right-aligned (`right`). */
function assertAligned(table: string, columns: string[], right: string[] = []): void {
  const [header = '', ...rows] = table.trimEnd().split('\n');
  const heads = cells(header);
  assert.equal(heads.length, columns.length, header);
  for (const row of rows) {
    const cols = cells(row);
    assert.equal(cols.length, columns.length, `a cell per column in: ${row}`);
    columns.forEach((name, i) => {
      const [h, c] = [heads[i], cols[i]];
      if (right.includes(name)) assert.equal(c?.end, h?.end, `${name} right-aligned in:\n${table}`);
      else assert.equal(c?.start, h?.start, `${name} left-aligned in:\n${table}`);
    });
  }
}

test('hosts: a table with human units, or the raw JSON', async (t) => {
  const { ops, roam } = await start(t);
  const table = await roam('hosts');
  assert.equal(table.code, 0, table.stderr);
  const columns = [
    'NAME',
    'STATE',
    'ADDRESS',
    'RTT',
    'CPU',
    'CORES',
    'MEMORY FREE',
    'NETWORK',
    'SCORE',
    'GUESTS',
    'SEEN',
    'ID',
  ];
  assert.match(table.stdout, new RegExp(`^${columns.join(' +')}\\n`));
  assertAligned(table.stdout, columns, ['RTT', 'CPU', 'CORES', 'SCORE', 'GUESTS']);
  const hostA = table.stdout.split('\n').find((l) => l.startsWith('host-a')) ?? '';
  for (const cell of [
    'up',
    '10.0.0.2:7401',
    '0.4 ms',
    '12%',
    '1.5 GiB of 4.0 GiB',
    '3% of 1 Gb/s',
    '412',
    /\ds ago/,
    '3f2a1b9c',
  ]) {
    assert.match(hostA, typeof cell === 'string' ? new RegExp(cell.replace(/\./g, '\\.')) : cell);
  }
  assert.match(table.stdout, /\nhost-b +evicted +- /);
  const json = await roam('hosts', '--json');
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual(JSON.parse(json.stdout) as HostView[], JSON.parse(JSON.stringify(ops.hosts())));
});

test('run bundles the program, deploys it and says where it runs; ps lists it', async (t) => {
  const { ops, roam } = await start(t);
  assert.equal((await roam('ps')).stdout, 'no guests yet: start one with `roam run FILE --name NAME`\n');
  const dir = tempDir(t);
  const file = writeGuest(
    dir,
    'web.ts',
    `const greeting: string = 'hello from web';\nconsole.log(greeting, process.argv);\n`,
  );
  const r = await roam(
    'run',
    file,
    '--name',
    'web',
    '--publish',
    '8080:80',
    '--publish',
    '5353:53/udp',
    '--publish',
    '9000',
    '--env',
    'MODE=prod',
    '--',
    'one',
    '--two',
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'web running on host-a (3f2a1b9c), published tcp 8080 -> 80, udp 5353 -> 53, tcp 9000\n');
  const sent = ops.deployed[0];
  assert.ok(sent);
  assert.match(sent.bundle ?? '', /hello from web/);
  assert.doesNotMatch(sent.bundle ?? '', /: string/, 'TypeScript was compiled');
  assert.equal(sent.wasm, undefined);
  assert.deepEqual(sent.publish, [
    { public: 8080, guest: 80, protocol: 'tcp' },
    { public: 5353, guest: 53, protocol: 'udp' },
    { public: 9000, guest: 9000, protocol: 'tcp' },
  ]);
  assert.deepEqual(sent.env, { MODE: 'prod' });
  assert.deepEqual(sent.argv, ['one', '--two']);
  assert.equal(sent.on, undefined);

  const onB = await roam('run', file, '--name', 'web2', '--on', 'host-b', '--json');
  assert.equal(onB.code, 0, onB.stderr);
  assert.equal((JSON.parse(onB.stdout) as GuestView).hostName, 'host-b');
  assert.equal(ops.deployed[1]?.on, 'host-b');

  const ps = await roam('ps');
  assert.equal(ps.code, 0, ps.stderr);
  const columns = ['NAME', 'KIND', 'STATE', 'HOST', 'PUBLISHED', 'MEMORY', 'CPU', 'STREAMS', 'SINCE', 'IMAGE', 'ID'];
  assert.match(ps.stdout, new RegExp(`^${columns.join(' +')}\\n`));
  assertAligned(ps.stdout, columns, ['MEMORY', 'CPU', 'STREAMS']);
  assert.match(
    ps.stdout,
    /\nweb +js +running +host-a +tcp 8080->80, udp 5353->53, tcp 9000 +21\.0 MiB +1\.2 s +0 +3m ago +- +9d1e0000\n/,
  );
  assert.match(ps.stdout, /\nweb2 +js +running +host-b /);
  const json = await roam('ps', '--json');
  assert.deepEqual(
    (JSON.parse(json.stdout) as GuestView[]).map((g) => g.name),
    ['web', 'web2'],
  );
});

test('run refuses bad input before sending anything, and reports the proxy refusals', async (t) => {
  const { ops, roam } = await start(t);
  const file = writeGuest(tempDir(t), 'app.js', 'console.log(1);\n');
  const cases: Array<[string[], number, RegExp]> = [
    [['--publish', '70000'], 64, /invalid --publish "70000": the public port must be 1-65535/],
    [['--publish', '80:0'], 64, /the guest port must be 1-65535, not 0/],
    [['--publish', 'http'], 64, /invalid --publish "http": use PUBLIC\[:GUEST\]\[\/udp\]/],
    [['--publish', '53/sctp'], 64, /invalid --publish/],
    [['--env', 'NOVALUE'], 64, /invalid --env "NOVALUE": use KEY=VALUE/],
    [['--name', '../x'], 64, /name: must be 1-63 letters/],
    [['--name', 'nohost'], 75, /no host is up to take nohost/],
    [['--name', 'away', '--on', 'host-z'], 66, /no host named host-z/],
  ];
  for (const [args, code, message] of cases) {
    const r = await roam('run', file, ...args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^roam: .*${message.source}`));
  }
  const missing = await roam('run', join(tempDir(t), 'nope.js'));
  assert.equal(missing.code, 66);
  assert.match(missing.stderr, /roam: cannot read .*nope\.js/);
  const broken = await roam('run', writeGuest(tempDir(t), 'broken.js', 'let = ;\n'));
  assert.equal(broken.code, 67);
  assert.equal((await roam('run', file, '--name', 'app')).code, 0);
  const again = await roam('run', file, '--name', 'app');
  assert.equal(again.code, 73);
  assert.match(again.stderr, /roam: a guest named app is already running/);
  assert.deepEqual(
    ops.deployed.map((d) => d.name),
    ['nohost', 'away', 'app', 'app'],
    'only well-formed requests reached the proxy',
  );
});

test('stop stops a guest; an unknown one exits 66', async (t) => {
  const { ops, roam } = await start(t);
  await ops.deploy({ name: 'web', bundle: 'x', publish: [], env: {}, argv: [] });
  const r = await roam('stop', 'web');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'web stopped (was on host-a)\n');
  assert.equal(ops.guestMap.get('web')?.state, 'stopped');
  const json = await roam('stop', 'web', '--json');
  assert.equal((JSON.parse(json.stdout) as GuestView).state, 'stopped');
  const missing = await roam('stop', 'nobody');
  assert.equal(missing.code, 66);
  assert.equal(missing.stderr, 'roam: no guest named nobody\n');
});

test('logs prints the console (stdout and stderr apart), --tail, --json; --follow prints new lines until Ctrl-C', async (t) => {
  const { ops, roam, flags } = await start(t);
  await ops.deploy({ name: 'web', bundle: 'x', publish: [], env: {}, argv: [] });
  const all = await roam('logs', 'web');
  assert.equal(all.code, 0, all.stderr);
  assert.equal(all.stdout, 'web says hello\nweb is ready\n');
  assert.equal(all.stderr, 'web warns\n');
  assert.equal((await roam('logs', 'web', '--tail', '1')).stdout, 'web is ready\n');
  const json = JSON.parse((await roam('logs', 'web', '--json')).stdout) as LogRecordView[];
  assert.deepEqual(json, ops.logMap.get('web'));
  assert.equal((await roam('logs', 'nobody')).code, 66);
  assert.equal((await roam('logs', 'web', '--tail', 'x')).code, 64);

  const follow = startRoam(['logs', 'web', '--follow', ...flags]);
  t.after(() => follow.child.kill('SIGKILL'));
  await follow.waitFor(/web is ready\n/);
  ops.log('web', 'later line\n', 1001); // same time as the last record: still new
  ops.log('web', 'even later\n', 5000);
  await follow.waitFor(/even later\n/, 5000);
  follow.child.kill('SIGINT');
  const done = await follow.exited;
  assert.equal(done.code, 0, done.stderr);
  assert.equal(done.stdout, 'web says hello\nweb is ready\nlater line\neven later\n', 'each line once, in order');
});

test('events lists the event log; --follow streams new ones until Ctrl-C', async (t) => {
  const { ops, roam, flags } = await start(t);
  const list = await roam('events');
  assert.equal(list.code, 0, list.stderr);
  const lines = list.stdout.trimEnd().split('\n');
  assert.equal(lines.length, 3);
  assert.match(lines[0] ?? '', /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {2}host\.joined +host-a joined$/);
  const json = JSON.parse((await roam('events', '--json', '--after', '1', '--limit', '1')).stdout) as EventView[];
  assert.deepEqual(
    json.map((e) => e.id),
    [3],
  );

  const follow = startRoam(['events', '--follow', '--json', ...flags]);
  t.after(() => follow.child.kill('SIGKILL'));
  await follow.waitFor(/"id":3/);
  ops.emit('guest.started', 'web started on host-a');
  await follow.waitFor(/"id":4/);
  follow.child.kill('SIGINT');
  const done = await follow.exited;
  assert.equal(done.code, 0, done.stderr);
  const seen = done.stdout
    .trimEnd()
    .split('\n')
    .map((l) => (JSON.parse(l) as EventView).kind);
  assert.deepEqual(seen, ['host.joined', 'host.joined', 'host.evicted', 'guest.started']);
});

test('the admin token: missing (64, says how to pass it), refused (77), from a file or the data directory', async (t) => {
  const { api } = await start(t);
  const apiFlag = ['--api', `http://127.0.0.1:${api.port}`];
  const missing = await runRoam(['ps', ...apiFlag]);
  assert.equal(missing.code, 64);
  assert.match(
    missing.stderr,
    /^roam: no admin token: pass --admin-token TOKEN or --admin-token-file FILE, or set ROAM_ADMIN_TOKEN/,
  );
  assert.match(missing.stderr, new RegExp(`${emptyDataDir}/admin-token`));
  const wrong = await runRoam(['ps', ...apiFlag, '--admin-token', 'not-it']);
  assert.equal(wrong.code, 77);
  assert.match(wrong.stderr, /roam: the proxy refused the admin token from --admin-token/);
  assert.doesNotMatch(wrong.stderr, /not-it/);

  const dir = tempDir(t);
  writeFileSync(join(dir, 'admin-token'), `${TOKEN}\n`, { mode: 0o600 });
  assert.equal((await runRoam(['ps', ...apiFlag, '--data-dir', dir])).code, 0);
  assert.equal((await runRoam(['ps', ...apiFlag, '--admin-token-file', join(dir, 'admin-token')])).code, 0);
  const noFile = await runRoam(['ps', ...apiFlag, '--admin-token-file', join(dir, 'nope')]);
  assert.equal(noFile.code, 66);
  assert.match(noFile.stderr, /cannot read secret file/);
});

test('an API that is not there exits 75 and says how to point at the right one', async () => {
  const closed = await new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
  const r = await runRoam(['ps', '--api', `127.0.0.1:${closed}`, '--admin-token', TOKEN]);
  assert.equal(r.code, 75);
  assert.match(
    r.stderr,
    /roam: cannot reach the Roam API at http:\/\/127\.0\.0\.1:\d+\/ \(.*ECONNREFUSED.*\).*--api URL or set ROAM_API/,
  );
  const bad = await runRoam(['ps', '--api', 'ftp://x', '--admin-token', TOKEN]);
  assert.equal(bad.code, 64);
});
