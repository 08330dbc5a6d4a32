/**
 * `node:http` in guests: real guests run by the real CLI in a child process, talked to over real
 * loopback sockets by Node's own `http` client and raw `net` sockets (and, for the guest as a
 * client, a real Node server).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { startRoam, tempDir, writeGuest } from './helpers/roam.js';

const TEST_TIMEOUT = 90_000;

type Roam = ReturnType<typeof startRoam>;

/** Runs `source` as a guest; resolves once it printed `listening on PORT`. */
async function startGuest(
  t: TestContext,
  source: string,
  extraArgs: string[] = [],
): Promise<{ roam: Roam; port: number }> {
  const dir = tempDir(t);
  const file = writeGuest(dir, 'guest.js', source);
  const roam = startRoam(['guest', 'run', file, ...extraArgs]);
  t.after(() => {
    if (roam.child.exitCode === null && roam.child.signalCode === null) roam.child.kill('SIGKILL');
  });
  const m = await roam.waitFor(/listening on (\d+)/, 30_000);
  return { roam, port: Number(m[1]) };
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  socket: net.Socket;
}

/** One request with Node's client; the body is read whole. */
function request(options: http.RequestOptions, body?: Buffer | string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', ...options }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), socket: res.socket }),
      );
      res.on('error', reject);
    });
    req.setTimeout(30_000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

/** The resumed guest binds its port again while the test connects: retry a refused connection, bounded. */
async function requestWithRetry(options: http.RequestOptions): Promise<Reply> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await request(options);
    } catch (err) {
      if (attempt >= 100 || (err as { code?: string }).code !== 'ECONNREFUSED') throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Writes `bytes` on a raw connection and collects everything until the server closes it. */
function rawExchange(port: number, bytes: string | Buffer, options: { endAfterWrite?: boolean } = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new Error(`no close from the server; got so far: ${JSON.stringify(Buffer.concat(chunks).toString('latin1'))}`),
      );
    }, 30_000);
    socket.on('connect', () => {
      socket.write(bytes);
      if (options.endAfterWrite) socket.end();
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
  });
}

function adler32(bytes: Buffer): number {
  let s1 = 1;
  let s2 = 0;
  for (const b of bytes) {
    s1 = (s1 + b) % 65521;
    s2 = (s2 + s1) % 65521;
  }
  return ((s2 << 16) | s1) >>> 0;
}

/** A program exactly as one would write it for Node. */
const ORDINARY_SERVER = `
const http = require('node:http');

const server = http.createServer((req, res) => {
  if (req.method === 'POST') {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      res.writeHead(201, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ method: req.method, url: req.url, type: req.headers['content-type'], body }));
    });
    return;
  }
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.setHeader('X-Powered-By', 'roam');
  res.end('hello from ' + req.url + ' (' + req.headers['x-test'] + ')');
});

server.listen(0, () => {
  console.log('listening on', server.address().port);
});
`;

describe('guest node:http', { timeout: TEST_TIMEOUT }, () => {
  it('runs an ordinary Node HTTP server unmodified: GET and POST with a body', async (t) => {
    const { port } = await startGuest(t, ORDINARY_SERVER);

    const get = await request({ port, path: '/greeting?x=1', headers: { 'X-Test': 'yes' }, agent: false });
    assert.equal(get.status, 200);
    assert.equal(get.body.toString(), 'hello from /greeting?x=1 (yes)');
    assert.equal(get.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(get.headers['x-powered-by'], 'roam');
    assert.equal(get.headers['content-length'], String(Buffer.byteLength('hello from /greeting?x=1 (yes)')));
    assert.equal(get.headers['transfer-encoding'], undefined);
    assert.ok(get.headers.date && !Number.isNaN(Date.parse(get.headers.date)), `a Date header: ${get.headers.date}`);

    const payload = JSON.stringify({ name: 'Zoë', items: [1, 2, 3] });
    const post = await request(
      { port, path: '/items', method: 'POST', headers: { 'Content-Type': 'application/json' }, agent: false },
      payload,
    );
    assert.equal(post.status, 201);
    assert.deepEqual(JSON.parse(post.body.toString()), {
      method: 'POST',
      url: '/items',
      type: 'application/json',
      body: payload,
    });

    // Expect: 100-continue: the guest says Continue before the body is sent.
    const continued = await new Promise<Reply & { sawContinue: boolean }>((resolve, reject) => {
      let sawContinue = false;
      const req = http.request(
        {
          host: '127.0.0.1',
          port,
          path: '/expect',
          method: 'POST',
          headers: { Expect: '100-continue', 'Content-Length': '5' },
          agent: false,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks),
              socket: res.socket,
              sawContinue,
            }),
          );
        },
      );
      req.on('continue', () => {
        sawContinue = true;
        req.end('later');
      });
      req.on('error', reject);
      req.flushHeaders();
    });
    assert.ok(continued.sawContinue);
    assert.equal((JSON.parse(continued.body.toString()) as { body: string }).body, 'later');
  });

  it('keeps a connection alive for several requests from a keep-alive agent', async (t) => {
    const { port } = await startGuest(
      t,
      `
const http = require('http');
let n = 0;
const server = http.createServer((req, res) => {
  n++;
  res.end(JSON.stringify({ n, remotePort: req.socket.remotePort, url: req.url }));
});
server.listen(0, () => console.log('listening on ' + server.address().port));
`,
    );
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    const sockets = new Set<net.Socket>();
    const remotePorts = new Set<number>();
    for (let i = 1; i <= 5; i++) {
      const reply = await request({ port, path: `/r${i}`, agent });
      sockets.add(reply.socket);
      assert.equal(reply.status, 200);
      assert.match(String(reply.headers.connection), /keep-alive/i);
      const seen = JSON.parse(reply.body.toString()) as { n: number; remotePort: number; url: string };
      assert.equal(seen.n, i);
      assert.equal(seen.url, `/r${i}`);
      remotePorts.add(seen.remotePort);
    }
    assert.equal(sockets.size, 1, 'the client used one socket');
    assert.equal(remotePorts.size, 1, 'the guest saw one connection');

    // Connection: close from the client is honoured: the guest closes after answering.
    const closing = await rawExchange(port, 'GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const text = closing.toString('latin1');
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(text, /\r\nConnection: close\r\n/i);
  });

  it('answers pipelined requests in order, HEAD and 204 without a body', async (t) => {
    const { port } = await startGuest(
      t,
      `
const http = require('http');
const server = http.createServer((req, res) => {
  if (req.url === '/slow') {
    // Answered last although it arrives first: the responses must still go out in order.
    setTimeout(() => res.end('slow body'), 50);
    return;
  }
  if (req.url === '/empty') {
    res.statusCode = 204;
    res.end();
    return;
  }
  res.setHeader('Content-Type', 'text/plain');
  res.setHeader('Content-Length', '11');
  res.end(req.method === 'HEAD' ? undefined : 'hello world');
});
server.listen(0, () => console.log('listening on ' + server.address().port));
`,
    );
    const reply = await rawExchange(
      port,
      'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n' +
        'HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n' +
        'DELETE /empty HTTP/1.1\r\nHost: x\r\n\r\n' +
        'GET /get HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    );
    const text = reply.toString('latin1');
    const responses = text.split(/(?=HTTP\/1\.1 )/);
    assert.equal(responses.length, 4, text);
    const [slow, head, empty, last] = responses as [string, string, string, string];
    assert.match(slow, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(slow.endsWith('\r\n\r\nslow body'), slow);
    assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(head, /\r\nContent-Length: 11\r\n/);
    assert.ok(head.endsWith('\r\n\r\n'), `HEAD has no body: ${JSON.stringify(head)}`);
    assert.match(empty, /^HTTP\/1\.1 204 No Content\r\n/);
    assert.ok(empty.endsWith('\r\n\r\n'), `204 has no body: ${JSON.stringify(empty)}`);
    assert.doesNotMatch(empty, /Transfer-Encoding|Content-Length/i);
    assert.match(last, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(last.endsWith('\r\n\r\nhello world'), last);

    // HEAD through Node's client on a kept-alive connection, then a GET on the same socket.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    const h = await request({ port, path: '/h', method: 'HEAD', agent });
    assert.equal(h.status, 200);
    assert.equal(h.body.length, 0);
    const g = await request({ port, path: '/g', agent });
    assert.equal(g.body.toString(), 'hello world');
    assert.equal(g.socket, h.socket);
  });

  it('streams a chunked response as it is written', async (t) => {
    const { port } = await startGuest(
      t,
      `
const http = require('http');
const held = [];
const server = http.createServer((req, res) => {
  if (req.url === '/stream') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.write('first part\\n');
    held.push(res);
    return;
  }
  if (req.url === '/release') {
    const stream = held.shift();
    stream.write('second part\\n');
    stream.end('the end\\n');
    res.end('released');
    return;
  }
  res.statusCode = 404;
  res.end();
});
server.listen(0, () => console.log('listening on ' + server.address().port));
`,
    );
    const chunks: string[] = [];
    const done = new Promise<{ headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/stream', agent: false }, (res) => {
        res.setEncoding('utf8');
        let released = false;
        res.on('data', (c: string) => {
          chunks.push(c);
          if (!released) {
            // The first part arrived while the guest still holds the response open.
            released = true;
            assert.equal(c, 'first part\n');
            request({ port, path: '/release', agent: false }).then(
              (r) => assert.equal(r.body.toString(), 'released'),
              reject,
            );
          }
        });
        res.on('end', () => resolve({ headers: res.headers, body: chunks.join('') }));
        res.on('error', reject);
      });
      req.on('error', reject);
    });
    const { headers, body } = await done;
    assert.equal(headers['transfer-encoding'], 'chunked');
    assert.equal(headers['content-length'], undefined);
    assert.equal(body, 'first part\nsecond part\nthe end\n');
    assert.ok(chunks.length >= 2, `the body came in pieces: ${JSON.stringify(chunks)}`);
  });

  it('echoes a 5 MiB request body byte for byte (backpressure both ways)', async (t) => {
    const { roam, port } = await startGuest(
      t,
      `
const http = require('http');
let drains = 0;
const server = http.createServer((req, res) => {
  if (req.url === '/echo') {
    res.setHeader('Content-Type', 'application/octet-stream');
    req.pipe(res);
    return;
  }
  if (req.url === '/big') {
    // 8 MiB written by hand, honouring write()'s answer and 'drain'.
    const piece = Buffer.alloc(65536);
    for (let i = 0; i < piece.length; i++) piece[i] = i & 0xff;
    let left = 128;
    const pump = () => {
      while (left > 0) {
        left--;
        if (!res.write(piece)) {
          res.once('drain', () => { drains++; pump(); });
          return;
        }
      }
      res.end(() => console.log('big done, drains ' + drains));
    };
    pump();
    return;
  }
  res.end('?');
});
server.listen(0, () => console.log('listening on ' + server.address().port));
`,
    );
    const size = 5 * 1024 * 1024;
    const payload = randomBytes(size);
    const echoed = await new Promise<Buffer>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/echo', method: 'POST', agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(Buffer.concat(chunks)));
        res.on('error', reject);
      });
      req.on('error', reject);
      // Written in pieces with no length announced: the guest sees a chunked request body.
      let offset = 0;
      const writeMore = (): void => {
        while (offset < size) {
          const piece = payload.subarray(offset, offset + 100_000);
          offset += piece.length;
          if (!req.write(piece)) {
            req.once('drain', writeMore);
            return;
          }
        }
        req.end();
      };
      writeMore();
    });
    assert.equal(echoed.length, size);
    assert.equal(createHash('sha256').update(echoed).digest('hex'), createHash('sha256').update(payload).digest('hex'));
    assert.ok(echoed.equals(payload));

    const big = await request({ port, path: '/big', agent: false });
    assert.equal(big.headers['transfer-encoding'], 'chunked');
    assert.equal(big.body.length, 8 * 1024 * 1024);
    for (let i = 0; i < big.body.length; i += 65536 * 17 + 5) assert.equal(big.body[i], i & 0xff);
    const m = await roam.waitFor(/big done, drains (\d+)/);
    assert.ok(Number(m[1]) > 0, 'write() returned false and drain followed');
  });

  it('answers a malformed request with 400 and closes, and keeps serving others', async (t) => {
    const { roam, port } = await startGuest(t, ORDINARY_SERVER);
    const garbage = await rawExchange(port, 'THIS IS NOT HTTP\r\n\r\n');
    assert.match(garbage.toString('latin1'), /^HTTP\/1\.1 400 Bad Request\r\n/);

    const badLength = await rawExchange(port, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello');
    assert.match(badLength.toString('latin1'), /^HTTP\/1\.1 400 Bad Request\r\n/);

    const badChunk = await rawExchange(
      port,
      'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n',
    );
    assert.match(badChunk.toString('latin1'), /^HTTP\/1\.1 400 Bad Request\r\n/);

    const smuggle = await rawExchange(
      port,
      'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    );
    assert.match(smuggle.toString('latin1'), /^HTTP\/1\.1 400 Bad Request\r\n/);

    const noHost = await rawExchange(port, 'GET / HTTP/1.1\r\n\r\n');
    assert.match(noHost.toString('latin1'), /^HTTP\/1\.1 400 Bad Request\r\n/);

    const huge = await rawExchange(port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(40_000)}\r\n\r\n`);
    assert.match(huge.toString('latin1'), /^HTTP\/1\.1 431 /);

    const ok = await request({ port, path: '/after', headers: { 'X-Test': 'still' }, agent: false });
    assert.equal(ok.body.toString(), 'hello from /after (still)');
    assert.equal(roam.child.exitCode, null, 'the guest is still running');
  });

  it("emits 'clientError' to a listener instead of answering by itself", async (t) => {
    const { roam, port } = await startGuest(
      t,
      `
const http = require('http');
const server = http.createServer((req, res) => res.end('ok'));
server.on('clientError', (err, socket) => {
  console.log('clientError ' + err.code);
  socket.end('HTTP/1.1 400 Custom\\r\\nConnection: close\\r\\n\\r\\n');
});
server.listen(0, () => console.log('listening on ' + server.address().port));
`,
    );
    const reply = await rawExchange(port, 'NOT HTTP AT ALL\r\n\r\n');
    assert.match(reply.toString('latin1'), /^HTTP\/1\.1 400 Custom\r\n/);
    await roam.waitFor(/clientError HPE_/);
  });

  it('follows HTTP/1.0 rules: close by default, keep-alive when asked', async (t) => {
    const { port } = await startGuest(t, ORDINARY_SERVER);
    const plain = (await rawExchange(port, 'GET /old HTTP/1.0\r\n\r\n')).toString('latin1');
    assert.match(plain, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(plain, /\r\nConnection: close\r\n/i);
    assert.doesNotMatch(plain, /Transfer-Encoding/i);
    assert.ok(plain.endsWith('hello from /old (undefined)'), plain);

    // Keep-alive asked for: two requests on one connection, the second one closes it.
    const both = (
      await rawExchange(port, 'GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n')
    ).toString('latin1');
    const parts = both.split(/(?=HTTP\/1\.1 )/);
    assert.equal(parts.length, 2, both);
    assert.match(parts[0] ?? '', /\r\nConnection: keep-alive\r\n/i);
    assert.match(parts[0] ?? '', /\r\nContent-Length: \d+\r\n/i);
    assert.ok(parts[0]?.endsWith('hello from /a (undefined)'));
    assert.match(parts[1] ?? '', /\r\nConnection: close\r\n/i);
  });

  it('closes idle keep-alive connections after keepAliveTimeout, and on close()', async (t) => {
    const { roam, port } = await startGuest(
      t,
      `
const http = require('http');
let served = 0;
const server = http.createServer((req, res) => {
  served++;
  if (req.url === '/shutdown') server.close(() => console.log('server closed'));
  res.end('r' + served);
});
server.keepAliveTimeout = 300;
server.headersTimeout = 400;
server.listen(0, () => console.log('listening on ' + server.address().port));
`,
    );
    // An idle kept-alive socket is closed by the guest after its keepAliveTimeout.
    const idleClosed = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => socket.write('GET /one HTTP/1.1\r\nHost: x\r\n\r\n'));
      let got = '';
      socket.setEncoding('latin1');
      socket.on('data', (d: string) => (got += d));
      socket.on('end', () => resolve(got));
      socket.on('error', reject);
      setTimeout(() => reject(new Error('not closed after keepAliveTimeout')), 20_000).unref();
    });
    assert.match(idleClosed, /Keep-Alive: timeout=0\r\n/);
    assert.ok(idleClosed.endsWith('r1'));

    // A request head that never completes gets 408 after headersTimeout (no slowloris).
    const slow = await rawExchange(port, 'GET /slowloris HTTP/1.1\r\nHost: x\r\nX-Partial: ');
    assert.match(slow.toString('latin1'), /^HTTP\/1\.1 408 Request Timeout\r\n/);

    // close() ends idle connections at once, so the server closes and the guest can exit.
    const agent = new http.Agent({ keepAlive: true });
    t.after(() => agent.destroy());
    const first = await request({ port, path: '/two', agent });
    assert.equal(first.body.toString(), 'r2');
    const last = await request({ port, path: '/shutdown', agent });
    assert.equal(last.body.toString(), 'r3');
    assert.match(String(last.headers.connection), /close/i, 'a closing server says so');
    await roam.waitFor(/server closed/);
    const exit = await roam.exited;
    assert.equal(exit.code, 0, exit.stderr);
  });

  it('closeAllConnections() drops connections with a response in flight', async (t) => {
    const { roam, port } = await startGuest(
      t,
      `
const http = require('http');
const server = http.createServer((req, res) => {
  if (req.url === '/hold') {
    res.write('partial');
    console.log('holding');
    return;
  }
  res.end('bye', () => {
    server.closeAllConnections();
    server.close(() => console.log('server closed'));
  });
});
server.listen(0, () => console.log('listening on ' + server.address().port));
`,
    );
    const held = new Promise<string>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port, path: '/hold', agent: false }, (res) => {
          res.on('data', () => {});
          res.on('aborted', () => resolve('aborted'));
          res.on('error', () => {});
          res.on('end', () => reject(new Error('the held response ended normally')));
        })
        .on('error', reject);
    });
    await roam.waitFor(/holding/);
    const bye = await request({ port, path: '/kill', agent: false });
    assert.equal(bye.body.toString(), 'bye');
    assert.equal(await held, 'aborted');
    await roam.waitFor(/server closed/);
    const exit = await roam.exited;
    assert.equal(exit.code, 0, exit.stderr);
  });

  it('keeps serving after a checkpoint and a resume in another process', async (t) => {
    const dir = tempDir(t);
    const file = writeGuest(
      dir,
      'counter.js',
      `
const http = require('http');
let hits = 0;
const server = http.createServer((req, res) => {
  hits++;
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify({ hits, url: req.url }));
});
server.listen(0, '127.0.0.1', () => console.log('listening on ' + server.address().port));
`,
    );
    const image = join(dir, 'counter.img');
    const first = startRoam(['guest', 'run', file, '--checkpoint-after', '1500ms', '--out', image]);
    t.after(() => first.child.kill('SIGKILL'));
    const port = Number((await first.waitFor(/listening on (\d+)/))[1]);
    // A kept-alive connection is open (and idle) when the checkpoint is taken.
    const agent = new http.Agent({ keepAlive: true });
    t.after(() => agent.destroy());
    const before = await request({ port, path: '/before', agent });
    assert.deepEqual(JSON.parse(before.body.toString()), { hits: 1, url: '/before' });
    const done = await first.exited;
    assert.equal(done.code, 0, done.stderr);

    const second = startRoam(['guest', 'resume', image]);
    t.after(() => second.child.kill('SIGKILL'));
    const after = await requestWithRetry({ port, path: '/after', agent: false });
    assert.deepEqual(JSON.parse(after.body.toString()), { hits: 2, url: '/after' }, 'the counter went on');
    assert.equal(second.child.exitCode, null, 'the resumed guest still runs');
  });

  it('works as an HTTP client against a real Node server', async (t) => {
    const big = randomBytes(2 * 1024 * 1024);
    const seen: Array<{
      method: string;
      url: string;
      headers: http.IncomingHttpHeaders;
      body: string;
      remotePort: number;
    }> = [];
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push({
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          body: Buffer.concat(chunks).toString(),
          remotePort: req.socket.remotePort ?? 0,
        });
        if (req.url === '/chunked') {
          res.setHeader('X-Kind', 'chunked');
          res.write('alpha-');
          setImmediate(() => res.end('omega'));
          return;
        }
        if (req.url === '/big') {
          res.setHeader('Content-Length', String(big.length));
          res.end(big);
          return;
        }
        if (req.url === '/bigchunked') {
          let offset = 0;
          const more = (): void => {
            while (offset < big.length) {
              const piece = big.subarray(offset, offset + 50_000);
              offset += piece.length;
              if (!res.write(piece)) {
                res.once('drain', more);
                return;
              }
            }
            res.end();
          };
          more();
          return;
        }
        if (req.url === '/json') {
          res.setHeader('Content-Type', 'application/json');
          res.setHeader('Set-Cookie', ['a=1', 'b=2']);
          res.end(JSON.stringify({ got: Buffer.concat(chunks).toString(), type: req.headers['content-type'] }));
          return;
        }
        res.writeHead(404, 'Nope');
        res.end('missing');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => {
      server.closeAllConnections();
      server.close();
    });
    const port = (server.address() as AddressInfo).port;

    const dir = tempDir(t);
    const file = writeGuest(
      dir,
      'client.js',
      `
const http = require('node:http');
const base = 'http://127.0.0.1:' + process.env.PORT;

function get(path) {
  return new Promise((resolve, reject) => {
    http.get(base + path, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, message: res.statusMessage, headers: res.headers, body }));
    }).on('error', reject);
  });
}

function post(path, data) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { hostname: '127.0.0.1', port: Number(process.env.PORT), path, method: 'POST', headers: { 'Content-Type': 'application/json' } },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    req.write(data.slice(0, 5));
    req.end(data.slice(5));
  });
}

async function main() {
  const a = await get('/chunked');
  console.log('chunked', a.status, a.headers['transfer-encoding'], a.headers['x-kind'], JSON.stringify(a.body));
  const b = await post('/json', JSON.stringify({ hello: 'world' }));
  console.log('json', b.status, JSON.stringify(b.headers['set-cookie']), b.body);
  const c = await get('/nothing');
  console.log('missing', c.status, c.message, c.body);
  for (const path of ['/big', '/bigchunked']) {
    const got = await new Promise((resolve, reject) => {
      http.get(base + path, (res) => {
        let length = 0;
        let s1 = 1;
        let s2 = 0;
        let pauses = 0;
        res.on('data', (chunk) => {
          for (let i = 0; i < chunk.length; i++) {
            s1 = (s1 + chunk[i]) % 65521;
            s2 = (s2 + s1) % 65521;
          }
          length += chunk.length;
          if (pauses < 3) {
            // A slow reader: the socket must wait for it, and lose nothing.
            pauses++;
            res.pause();
            setTimeout(() => res.resume(), 20);
          }
        });
        res.on('end', () => resolve(path + ' ' + res.headers['transfer-encoding'] + ' ' + length + ' ' + (((s2 << 16) | s1) >>> 0)));
      }).on('error', reject);
    });
    console.log('download', got);
  }
  const refused = await new Promise((resolve) => {
    http.get('http://127.0.0.1:1/', () => resolve('connected?')).on('error', (err) => resolve(err.code));
  });
  console.log('refused', refused);
  console.log('client done');
}
main();
`,
    );
    const roam = startRoam(['guest', 'run', file, '--env', `PORT=${port}`]);
    t.after(() => {
      if (roam.child.exitCode === null) roam.child.kill('SIGKILL');
    });
    const exit = await Promise.race([
      roam.exited,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`guest did not exit: ${roam.output()}`)), 40_000).unref(),
      ),
    ]);
    assert.equal(exit.code, 0, `${exit.stdout}\n${exit.stderr}`);
    const out = exit.stdout;
    assert.match(out, /^chunked 200 chunked chunked "alpha-omega"$/m);
    assert.match(out, /^json 200 \["a=1","b=2"\] \{"got":"\{\\"hello\\":\\"world\\"\}","type":"application\/json"\}$/m);
    assert.match(out, /^missing 404 Nope missing$/m);
    assert.match(out, /^refused ECONNREFUSED$/m);
    assert.match(out, new RegExp(`^download /big undefined ${big.length} ${adler32(big)}$`, 'm'));
    assert.match(out, new RegExp(`^download /bigchunked chunked ${big.length} ${adler32(big)}$`, 'm'));
    assert.match(out, /^client done$/m);

    assert.deepEqual(
      seen.map((s) => `${s.method} ${s.url}`),
      ['GET /chunked', 'POST /json', 'GET /nothing', 'GET /big', 'GET /bigchunked'],
    );
    assert.equal(seen[0]?.headers.host, `127.0.0.1:${port}`);
    assert.equal(seen[1]?.body, '{"hello":"world"}');
    assert.equal(seen[1]?.headers['transfer-encoding'], 'chunked', 'a body written in pieces goes chunked');
    // The global agent keeps one connection alive between the requests, as Node's does.
    assert.equal(new Set(seen.map((s) => s.remotePort)).size, 1, 'one kept-alive connection');
  });
});
