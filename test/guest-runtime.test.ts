/**
 * The Node-like world a guest sees: ordinary small Node programs run unmodified, npm packages are
 * bundled in, and the pure built-ins, timers, files and sockets behave as in Node.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROOT, runRoam, startRoam, tempDir, writeGuest } from './helpers/roam.js';

test('an unmodified Node TCP echo server runs as a guest', async (t) => {
  const guest = startRoam(['guest', 'run', join(ROOT, 'examples/echo-server.js'), '--env', 'PORT=0']);
  t.after(() => guest.child.kill('SIGKILL'));
  const port = Number((await guest.waitFor(/listening on (\d+)/))[1]);
  const socket = net.connect(port, '127.0.0.1');
  const payload = Buffer.alloc(256 * 1024, 'roam');
  let received = Buffer.alloc(0);
  const echoed = new Promise<void>((resolve) =>
    socket.on('data', (d) => {
      received = Buffer.concat([received, d]);
      if (received.length >= payload.length) resolve();
    }),
  );
  socket.write(payload);
  await echoed;
  assert.ok(received.equals(payload), 'every byte echoed, in order');
  socket.destroy();
});

test('a guest importing a third-party npm package works', async () => {
  const r = await runRoam(['guest', 'run', join(ROOT, 'examples/uses-npm.ts')]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    '1.5s = 1500 ms, 2m = 120000 ms, 1h = 3600000 ms, 3d = 259200000 ms\nand 2 minutes the other way\n',
  );
});

test('a UDP guest answers datagrams', async (t) => {
  const file = writeGuest(
    tempDir(t),
    'udp.js',
    `const dgram = require('dgram');
const s = dgram.createSocket('udp4');
s.on('message', (msg, rinfo) => s.send('pong ' + msg, rinfo.port, rinfo.address));
s.bind(0, '127.0.0.1', () => console.log('udp on ' + s.address().port));`,
  );
  const guest = startRoam(['guest', 'run', file]);
  t.after(() => guest.child.kill('SIGKILL'));
  const port = Number((await guest.waitFor(/udp on (\d+)/))[1]);
  const client = dgram.createSocket('udp4');
  t.after(() => client.close());
  const reply = new Promise<string>((resolve) => client.once('message', (m) => resolve(m.toString())));
  client.send('ping 1', port, '127.0.0.1');
  assert.equal(await reply, 'pong ping 1');
});

test('the pure built-ins, timers and files behave as in Node', async (t) => {
  const file = writeGuest(
    tempDir(t),
    'builtins.mjs',
    `import { EventEmitter, once } from 'node:events';
import path from 'node:path';
import util from 'node:util';
import assert from 'node:assert';
import { StringDecoder } from 'node:string_decoder';
import { Readable, Transform, pipeline } from 'node:stream';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomUUID } from 'node:crypto';

const out = {};
const order = [];
setTimeout(() => order.push('timeout'), 0);
setImmediate(() => order.push('immediate'));
queueMicrotask(() => order.push('microtask'));
process.nextTick(() => order.push('tick'));
out.argv = process.argv.slice(2);
out.env = process.env.GREETING;
out.path = path.join('/a/b', '../c', 'd.txt');
out.format = util.format('%s has %d items: %j', 'cart', 3, { a: 1 });
out.inspect = util.inspect({ nested: { deep: [1, 2] } });
out.buffer = Buffer.from('héllo').toString('base64');
out.text = new TextDecoder().decode(new TextEncoder().encode('żółw'));
out.url = new URL('https://example.com:8443/p/a?x=1&y=2#h').searchParams.get('y');
out.uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(randomUUID());
const decoder = new StringDecoder('utf8');
const euro = Buffer.from('€');
out.decoder = decoder.write(euro.subarray(0, 1)) + decoder.write(euro.subarray(1));
try { assert.deepStrictEqual({ a: 1 }, { a: 2 }); } catch (e) { out.assert = e.code; }
const em = new EventEmitter();
setTimeout(() => em.emit('ready', 42), 5);
out.event = (await once(em, 'ready'))[0];
await sleep(5);
const upper = new Transform({ transform(chunk, _e, cb) { cb(null, chunk.toString().toUpperCase()); } });
const chunks = [];
await new Promise((resolve, reject) => pipeline(Readable.from(['a', 'b', 'c']), upper, async function* (src) { for await (const c of src) chunks.push(c.toString()); }, (err) => err ? reject(err) : resolve()));
out.stream = chunks.join('');
fs.mkdirSync('/work/sub', { recursive: true });
fs.writeFileSync('/work/sub/a.txt', 'one');
fs.appendFileSync('/work/sub/a.txt', ' two');
await fsp.writeFile('/work/b.txt', 'bee');
fs.renameSync('/work/b.txt', '/work/sub/b.txt');
out.files = fs.readdirSync('/work/sub');
out.content = fs.readFileSync('/work/sub/a.txt', 'utf8');
out.size = fs.statSync('/work/sub/a.txt').size;
out.isDir = (await fsp.stat('/work/sub')).isDirectory();
try { fs.readFileSync('/nope'); } catch (e) { out.enoent = e.code; }
const fd = fs.openSync('/work/sub/a.txt', 'r');
const buf = Buffer.alloc(3);
fs.readSync(fd, buf, 0, 3, 4);
fs.closeSync(fd);
out.pread = buf.toString();
out.order = order.slice(0, 2).concat(order.slice(2).sort());
console.log(JSON.stringify(out));
`,
  );
  const r = await runRoam(['guest', 'run', file, '--env', 'GREETING=hi', '--', 'x', 'y']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.deepEqual(out, {
    argv: ['x', 'y'],
    env: 'hi',
    path: '/a/c/d.txt',
    format: 'cart has 3 items: {"a":1}',
    inspect: '{ nested: { deep: [ 1, 2 ] } }',
    buffer: Buffer.from('héllo').toString('base64'),
    text: 'żółw',
    url: '2',
    uuid: true,
    decoder: '€',
    assert: 'ERR_ASSERTION',
    event: 42,
    stream: 'ABC',
    files: ['a.txt', 'b.txt'],
    content: 'one two',
    size: 7,
    isDir: true,
    enoent: 'ENOENT',
    pread: 'two',
    // Node runs ticks, then promise jobs; a zero timeout and an immediate race (as in Node).
    order: ['tick', 'microtask', 'immediate', 'timeout'],
  });
});

test('a guest sees no host files, no host environment and no other network', async (t) => {
  const file = writeGuest(
    tempDir(t),
    'escape.js',
    `const fs = require('fs'); const net = require('net');
const out = { passwd: fs.existsSync('/etc/passwd'), home: process.env.HOME ?? null, keys: Object.keys(process.env).length,
  hostFn: typeof globalThis.__roam_host, require: typeof require };
const c = net.connect(80, '10.255.255.1');
c.on('error', (e) => { out.connect = e.code; console.log(JSON.stringify(out)); });`,
  );
  const r = await runRoam(['guest', 'run', file]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    passwd: false,
    home: null,
    keys: 0,
    hostFn: 'undefined',
    require: 'function',
    connect: 'EACCES',
  });
});

test('every guest draws its own Math.random sequence', async (t) => {
  const file = writeGuest(tempDir(t), 'random.js', `console.log(JSON.stringify([Math.random(), Math.random()]));`);
  const [a, b] = await Promise.all([runRoam(['guest', 'run', file]), runRoam(['guest', 'run', file])]);
  const x = JSON.parse(a.stdout) as number[];
  const y = JSON.parse(b.stdout) as number[];
  assert.ok(x.every((v) => v >= 0 && v < 1) && x[0] !== x[1]);
  assert.notDeepEqual(x, y);
});
