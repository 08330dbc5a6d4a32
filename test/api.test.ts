/**
 * The operators' HTTP API (src/proxy/api.ts) on a real loopback port, in front of an in-memory
 * `ProxyOperations`: authentication, every endpoint's shape, validation, errors and their
 * statuses, body limits, and the live event stream.
 */
import assert from 'node:assert/strict';
import { request, type IncomingMessage } from 'node:http';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startApiServer } from '../src/proxy/api.js';
import type { EventView, GuestView, HostView, LogRecordView } from '../src/proxy/view.js';
import { FakeOps } from './helpers/fake-ops.js';

const TOKEN = 'test-admin-token-0123456789';

async function start(t: TestContext, extra: { maxBodyBytes?: number; heartbeatMs?: number } = {}) {
  const ops = new FakeOps();
  const api = await startApiServer({ ops, adminToken: TOKEN, host: '127.0.0.1', port: 0, ...extra });
  t.after(() => api.close());
  const base = `http://127.0.0.1:${api.port}`;
  const call = async (method: string, path: string, init: { body?: string; headers?: Record<string, string> } = {}) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { Authorization: `Bearer ${TOKEN}`, ...init.headers },
      ...(init.body === undefined ? {} : { body: init.body }),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, text, json: (): unknown => JSON.parse(text) };
  };
  const deploy = (body: unknown) =>
    call('POST', '/api/guests', { body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
  return { ops, api, base, call, deploy };
}

function errorOf(json: unknown): { code: string; message: string } {
  const error = (json as { error?: { code: string; message: string } }).error;
  assert.ok(error, `expected an error body, got ${JSON.stringify(json)}`);
  assert.deepEqual(Object.keys(error).sort(), ['code', 'message']);
  return error;
}

const bundle = 'console.log("hi")';

test('every /api call needs the admin token; / does not', async (t) => {
  const { base, call } = await start(t);
  for (const headers of [
    {} as Record<string, string>,
    { Authorization: 'Bearer wrong-token' },
    { Authorization: `Basic ${TOKEN}` },
  ]) {
    const res = await fetch(`${base}/api/hosts`, { headers });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer/);
    assert.equal(errorOf(await res.json()).code, 'ROAM_ERR_UNAUTHORIZED');
  }
  // Even unknown paths and methods say 401 first: nothing is learned without the token.
  assert.equal((await fetch(`${base}/api/nope`, { method: 'PUT' })).status, 401);
  assert.equal((await call('GET', '/api/hosts')).status, 200);
  const root = await fetch(`${base}/`);
  assert.equal(root.status, 200);
  assert.match(await root.text(), /Roam proxy/);
});

test('GET hosts, guests, streams and events return the views as JSON', async (t) => {
  const { ops, call, deploy } = await start(t);
  assert.equal(
    (await deploy({ name: 'web', bundle, publish: [{ public: 8080, guest: 80, protocol: 'tcp' }] })).status,
    201,
  );
  ops.streamList.push({
    id: 1,
    guestId: 'g',
    guestName: 'web',
    protocol: 'tcp',
    direction: 'inbound',
    remote: '192.0.2.1:5555',
    guestPort: 80,
    bytesIn: 10,
    bytesOut: 20,
    since: 1,
    state: 'open',
  });
  const hosts = await call('GET', '/api/hosts');
  assert.equal(hosts.status, 200);
  assert.match(hosts.headers.get('content-type') ?? '', /^application\/json/);
  assert.deepEqual(
    (hosts.json() as HostView[]).map((h) => h.name),
    ['host-a', 'host-b'],
  );
  const guests = (await call('GET', '/api/guests')).json() as GuestView[];
  assert.equal(guests.length, 1);
  assert.equal(guests[0]?.hostName, 'host-a');
  assert.deepEqual(guests[0]?.publish, [{ public: 8080, guest: 80, protocol: 'tcp' }]);
  assert.deepEqual((await call('GET', '/api/streams')).json(), ops.streamList);
  const events = (await call('GET', '/api/events')).json() as EventView[];
  assert.deepEqual(
    events.map((e) => e.kind),
    ['host.joined', 'host.joined', 'host.evicted', 'guest.started'],
  );
  const page = (await call('GET', '/api/events?after=1&limit=2')).json() as EventView[];
  assert.deepEqual(
    page.map((e) => e.id),
    [3, 4],
  );
  const logs = await call('GET', '/api/guests/web/logs?tail=2');
  assert.equal(logs.status, 200);
  assert.deepEqual(
    (logs.json() as LogRecordView[]).map((r) => r.text),
    ['web warns\n', 'web is ready\n'],
  );
  assert.equal((await call('GET', '/api/guests/nobody/logs')).status, 404);
});

test('POST /api/guests deploys (201) with defaults filled; DELETE stops (200), 404 when unknown', async (t) => {
  const { ops, call, deploy } = await start(t);
  const made = await deploy({ name: 'web.1', bundle, on: 'host-a' });
  assert.equal(made.status, 201);
  assert.equal((made.json() as GuestView).state, 'running');
  assert.deepEqual(ops.deployed[0], { name: 'web.1', bundle, publish: [], env: {}, argv: [], on: 'host-a' });
  const stopped = await call('DELETE', '/api/guests/web.1');
  assert.equal(stopped.status, 200);
  assert.equal((stopped.json() as GuestView).state, 'stopped');
  const missing = await call('DELETE', '/api/guests/nobody');
  assert.equal(missing.status, 404);
  assert.deepEqual(errorOf(missing.json()), { code: 'ROAM_ERR_NOT_FOUND', message: 'no guest named nobody' });
  // Names are percent-decoded from the path.
  assert.equal((await call('DELETE', '/api/guests/no%20body')).status, 404);
  assert.equal((await call('DELETE', '/api/guests/%E0%A4%A')).status, 400);
});

test('invalid deploy requests get 400 with ROAM_ERR_USAGE and say what is wrong', async (t) => {
  const { ops, call, deploy } = await start(t);
  const cases: Array<[unknown, RegExp]> = [
    [{ bundle }, /name: is required/],
    [{ name: '../etc', bundle }, /name: must be 1-63 letters/],
    [{ name: 'web' }, /bundle: is required/],
    [
      { name: 'web', bundle, publish: [{ public: 70000, guest: 80, protocol: 'tcp' }] },
      /publish\.0\.public: must be a port/,
    ],
    [
      { name: 'web', bundle, publish: [{ public: 80, guest: 0, protocol: 'tcp' }] },
      /publish\.0\.guest: must be a port/,
    ],
    [{ name: 'web', bundle, publish: [{ public: 80, guest: 80, protocol: 'sctp' }] }, /publish\.0\.protocol/],
    [{ name: 'web', bundle, publish: [{ public: 80, guest: 80 }] }, /publish\.0\.protocol/],
    [{ name: 'web', bundle, publish: '8080' }, /publish:/],
    [
      {
        name: 'web',
        bundle,
        publish: [
          { public: 80, guest: 80, protocol: 'tcp' },
          { public: 80, guest: 81, protocol: 'tcp' },
        ],
      },
      /tcp 80 is published twice/,
    ],
    [{ name: 'web', bundle, env: { 'A=B': 'x' } }, /env/],
    [{ name: 'web', bundle, argv: [1] }, /argv\.0/],
    [{ name: 'web', bundle, extra: true }, /extra/],
    [[], /body:/],
  ];
  for (const [body, message] of cases) {
    const res = await deploy(body);
    assert.equal(res.status, 400, JSON.stringify(body));
    const error = errorOf(res.json());
    assert.equal(error.code, 'ROAM_ERR_USAGE');
    assert.match(error.message, message, JSON.stringify(body));
  }
  const notJson = await call('POST', '/api/guests', {
    body: '{"name":',
    headers: { 'Content-Type': 'application/json' },
  });
  assert.equal(notJson.status, 400);
  assert.match(errorOf(notJson.json()).message, /not valid JSON/);
  const empty = await call('POST', '/api/guests', { body: '', headers: { 'Content-Type': 'application/json' } });
  assert.equal(empty.status, 400);
  const text = await call('POST', '/api/guests', { body: 'name=web', headers: { 'Content-Type': 'text/plain' } });
  assert.equal(text.status, 415);
  assert.equal(ops.deployed.length, 0, 'nothing invalid reaches the proxy');
});

test('errors from the operations map to statuses; internal errors show no details', async (t) => {
  const { deploy } = await start(t);
  assert.equal((await deploy({ name: 'web', bundle })).status, 201);
  const conflict = await deploy({ name: 'web', bundle });
  assert.equal(conflict.status, 409);
  assert.equal(errorOf(conflict.json()).code, 'ROAM_ERR_CONFLICT');
  const noHost = await deploy({ name: 'nohost', bundle });
  assert.equal(noHost.status, 503);
  assert.equal(errorOf(noHost.json()).code, 'ROAM_ERR_NO_HOST');
  const unknownHost = await deploy({ name: 'x', bundle, on: 'host-z' });
  assert.equal(unknownHost.status, 404);
  const crash = await deploy({ name: 'crash', bundle });
  assert.equal(crash.status, 500);
  assert.equal(errorOf(crash.json()).code, 'ROAM_ERR_API');
  assert.doesNotMatch(crash.text, /secret|exploded|\bat\b.*:\d+/);
});

test('unknown paths are 404, wrong methods 405 with Allow, bad query parameters 400', async (t) => {
  const { call } = await start(t);
  for (const path of ['/api/nope', '/api/hosts/extra', '/favicon.ico', '/api/guests/web/logs/more']) {
    const res = await call('GET', path);
    assert.equal(res.status, 404, path);
    assert.equal(errorOf(res.json()).code, 'ROAM_ERR_NOT_FOUND');
  }
  const cases: Array<[string, string, string]> = [
    ['PUT', '/api/hosts', 'GET'],
    ['DELETE', '/api/guests', 'GET, POST'],
    ['GET', '/api/guests/web', 'DELETE'],
    ['POST', '/api/events', 'GET'],
    ['POST', '/', 'GET'],
  ];
  for (const [method, path, allow] of cases) {
    const res = await call(method, path);
    assert.equal(res.status, 405, `${method} ${path}`);
    assert.equal(res.headers.get('allow'), allow);
  }
  for (const query of ['limit=abc', 'limit=20000', 'after=-1', 'after=1.5']) {
    const res = await call('GET', `/api/events?${query}`);
    assert.equal(res.status, 400, query);
    assert.match(errorOf(res.json()).message, /must be a whole number/);
  }
  assert.equal((await call('GET', '/api/guests/web/logs?tail=x')).status, 400);
});

/** Sends a body the way a client that does not stop would, until the server answers or closes. */
function pushBody(port: number, headers: Record<string, string>, total: number) {
  return new Promise<{ status: number | undefined; sent: number; closed: boolean }>((resolve) => {
    let sent = 0;
    let status: number | undefined;
    let settled = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      req.destroy();
      resolve({ status, sent, closed });
    };
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/api/guests', headers });
    req.on('response', (res) => {
      status = res.statusCode;
      res.resume();
      res.on('end', () => finish(false)).on('error', () => finish(true));
    });
    req.on('error', () => finish(true));
    req.on('close', () => setTimeout(() => finish(true), 50));
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    const pump = () => {
      while (!settled && sent < total) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      if (!settled) req.end();
    };
    pump();
  });
}

test('a body over the limit gets 413 from its declared length, or is cut off as it streams', async (t) => {
  const { api } = await start(t);
  const auth = { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' };
  // Declared too large: refused from the header, before a byte of it is read.
  const declared = await pushBody(api.port, { ...auth, 'Content-Length': String(41 * 1024 * 1024) }, 0);
  assert.equal(declared.status, 413);

  const small = await start(t, { maxBodyBytes: 1024 * 1024 });
  const total = 256 * 1024 * 1024;
  const streamed = await pushBody(small.api.port, { ...auth, 'Transfer-Encoding': 'chunked' }, total);
  // The server answers 413 (or, if the client was mid-write, just closes) long before 256 MiB.
  assert.ok(streamed.status === 413 || streamed.closed, JSON.stringify(streamed));
  assert.ok(streamed.sent < 64 * 1024 * 1024, `the server read on: ${streamed.sent} bytes sent`);
  // And it keeps serving.
  assert.equal((await small.call('GET', '/api/hosts')).status, 200);
});

/** Reads server-sent events from a fetch response: data events and comment lines. */
function sseReader(res: Response) {
  const reader: ReadableStreamDefaultReader<Uint8Array> = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  return {
    /** The next block (event or comment), as its lines. */
    async next(): Promise<string[] | undefined> {
      for (;;) {
        const end = buffer.indexOf('\n\n');
        if (end >= 0) {
          const block = buffer.slice(0, end).split('\n');
          buffer = buffer.slice(end + 2);
          return block;
        }
        const { done, value } = await reader.read();
        if (done) return undefined;
        buffer += decoder.decode(value, { stream: true });
      }
    },
    /** The next data event, skipping comments and `retry:`. */
    async event(): Promise<EventView | undefined> {
      for (;;) {
        const block = await this.next();
        if (!block) return undefined;
        const data = block.find((l) => l.startsWith('data: '));
        if (data) return JSON.parse(data.slice(6)) as EventView;
      }
    },
  };
}

async function until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await sleep(10);
  }
}

test('GET /api/events as an event stream: the backlog, then live events; unsubscribes on disconnect', async (t) => {
  const { ops, base } = await start(t, { heartbeatMs: 50 });
  const abort = new AbortController();
  const res = await fetch(`${base}/api/events`, {
    headers: { Authorization: `Bearer ${TOKEN}`, Accept: 'text/event-stream' },
    signal: abort.signal,
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const sse = sseReader(res);
  assert.deepEqual([(await sse.event())?.id, (await sse.event())?.id, (await sse.event())?.id], [1, 2, 3]);
  assert.equal(ops.listeners.size, 1);
  const live = ops.emit('guest.started', 'web started on host-a');
  assert.deepEqual(await sse.event(), JSON.parse(JSON.stringify(live)));
  // Heartbeats keep the stream alive between events.
  let heartbeat = false;
  for (let i = 0; i < 5 && !heartbeat; i++) heartbeat = (await sse.next())?.includes(': heartbeat') ?? false;
  assert.ok(heartbeat, 'a heartbeat comment arrives');
  abort.abort();
  await until(() => ops.listeners.size === 0, 'the stream unsubscribed');
});

test('?follow=1 with after, and Last-Event-ID, resume where the client was', async (t) => {
  const { ops, base, api } = await start(t);
  const open = async (query: string, headers: Record<string, string> = {}) => {
    const res = await fetch(`${base}/api/events${query}`, {
      headers: { Authorization: `Bearer ${TOKEN}`, ...headers },
    });
    assert.equal(res.status, 200);
    return sseReader(res);
  };
  const afterTwo = await open('?follow=1&after=2');
  assert.equal((await afterTwo.event())?.id, 3);
  const resumed = await open('', { Accept: 'text/event-stream', 'Last-Event-ID': '3' });
  ops.emit('guest.stopped', 'web stopped');
  assert.equal((await afterTwo.event())?.id, 4);
  assert.equal((await resumed.event())?.id, 4);
  // Closing the server ends open event streams (and closing twice is fine).
  await Promise.all([api.close(), api.close()]);
  assert.equal(await afterTwo.event(), undefined);
  assert.equal(await resumed.event(), undefined);
  assert.equal(ops.listeners.size, 0);
});

test('a follower that stops reading is dropped, not buffered without bound', async (t) => {
  const { ops, api } = await start(t);
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port: api.port,
      path: '/api/events?follow=1',
      headers: { Authorization: `Bearer ${TOKEN}` },
    });
    req.on('response', resolve).on('error', reject).end();
  });
  t.after(() => res.destroy());
  res.pause(); // and never read again
  await until(() => ops.listeners.size === 1, 'the stream subscribed');
  const big = 'x'.repeat(16 * 1024);
  for (let i = 0; i < 2000 && ops.listeners.size > 0; i++) ops.emit('load', big);
  await until(() => ops.listeners.size === 0, 'the slow follower was dropped');
});
