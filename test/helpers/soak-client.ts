/**
 * The remote client of the migration soak, run inside a client namespace:
 *   node --import tsx test/helpers/soak-client.ts PROXY TCP_PORT HTTP_PORT UDP_PORT
 * It talks to examples/records.js three ways at once, until it reads "stop" on stdin:
 *   - TCP: numbered, hashed records on one connection (helpers/records.ts checks every answer);
 *   - HTTP: GET / one after another on a keep-alive connection, each must succeed;
 *   - UDP: numbered pings, each resent until answered (UDP may drop a datagram during a move).
 * It prints `tcp N` every 50 TCP answers, then `RESULT {json}` at the end.
 */
import dgram from 'node:dgram';
import http from 'node:http';
import { RecordsClient } from './records.js';

const [proxy = '127.0.0.1', tcpPort, httpPort, udpPort] = process.argv.slice(2);

const records = new RecordsClient(Number(tcpPort), proxy);
let stopping = false;

// HTTP keep-alive: one connection, reused (a new one would be counted).
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const httpStats = {
  ok: 0,
  failed: 0,
  sockets: 0,
  lastRecords: 0,
  regressions: 0,
  lastNow: 0,
  clockRegressions: 0,
  lastTicks: 0,
  tickRegressions: 0,
  errors: [] as string[],
};
agent.on('free', () => {});
const seenSockets = new WeakSet<object>();
function get(): Promise<void> {
  return new Promise((resolve) => {
    const req = http.get({ host: proxy, port: Number(httpPort), path: '/', agent, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        try {
          const parsed = JSON.parse(body) as { records: number; now: number; ticks: number };
          if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
          if (parsed.records < httpStats.lastRecords) httpStats.regressions++;
          if (parsed.now < httpStats.lastNow) httpStats.clockRegressions++;
          if (parsed.ticks < httpStats.lastTicks) httpStats.tickRegressions++;
          httpStats.lastRecords = parsed.records;
          httpStats.lastNow = parsed.now;
          httpStats.lastTicks = parsed.ticks;
          httpStats.ok++;
        } catch (err) {
          httpStats.failed++;
          httpStats.errors.push((err as Error).message);
        }
        resolve();
      });
    });
    req.on('socket', (s) => {
      if (!seenSockets.has(s)) {
        seenSockets.add(s);
        httpStats.sockets++;
      }
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err) => {
      httpStats.failed++;
      httpStats.errors.push(err.message);
      resolve();
    });
  });
}
const httpLoop = (async () => {
  while (!stopping) {
    await get();
    await new Promise((r) => setTimeout(r, 5));
  }
})();

// UDP: ping N until answered, then N+1.
const udp = dgram.createSocket('udp4');
const udpStats = { answered: 0, resent: 0, unanswered: 0 };
let ping = 0;
let waitingFor: ((answer: string) => void) | undefined;
udp.on('message', (msg) => waitingFor?.(msg.toString()));
const udpLoop = (async () => {
  while (!stopping) {
    ping++;
    const expect = `u${ping}`;
    let answered = false;
    for (let attempt = 0; attempt < 50 && !answered; attempt++) {
      if (attempt > 0) udpStats.resent++;
      udp.send(expect, Number(udpPort), proxy);
      answered = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 200);
        waitingFor = (answer) => {
          if (answer.split(' ')[0] !== expect) return; // a late answer to an earlier resend
          clearTimeout(timer);
          resolve(true);
        };
      });
    }
    if (answered) udpStats.answered++;
    else udpStats.unanswered++;
    await new Promise((r) => setTimeout(r, 20));
  }
})();

let reported = 0;
const progress = setInterval(() => {
  while (records.answered >= reported + 50) {
    reported += 50;
    process.stdout.write(`tcp ${reported}\n`);
  }
}, 20);

process.stdin.setEncoding('utf8');
process.stdin.on('data', (d: string) => {
  if (!d.includes('stop') || stopping) return;
  stopping = true;
  void (async () => {
    clearInterval(progress);
    const tcp = await records.finish();
    await Promise.all([httpLoop, udpLoop]);
    agent.destroy();
    udp.close();
    process.stdout.write(`RESULT ${JSON.stringify({ tcp, http: httpStats, udp: udpStats })}\n`);
    process.exit(0);
  })();
});
