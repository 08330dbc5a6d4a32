/**
 * Load generator for bench/policy.ts: COUNT controllers that speak the real protocol to a real
 * `roam proxy`, each on its own TCP connection: HELLO (a `join` with the join token), then, once
 * WELCOMEd, a CONTROL `report` every reportIntervalMs (staggered over the interval, fresh numbers
 * each time, encoded with src/wire's encodeFrame), and a PONG for every PING, as LinkSession does.
 *
 *     node --import tsx bench/policy-load.ts HOST PORT TOKEN_FILE COUNT FIRST_INDEX
 *
 * Prints `joined N` once all have joined, then `stats reports=R pings=P errors=E` every 5 s.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { FrameDecoder, encodeFrame, type Frame, type ReportMessage } from '../src/wire/index.js';

const [host = '127.0.0.1', portText = '7400', tokenFile = '', countText = '1', firstText = '0'] = process.argv.slice(2);
const token = readFileSync(tokenFile, 'utf8').trim();
const count = Number(countText);
const first = Number(firstText);
let joined = 0;
let reports = 0;
let pings = 0;
let errors = 0;
const timers: NodeJS.Timeout[] = [];

function report(i: number): ReportMessage {
  const usage = Math.random() * 0.6;
  return {
    type: 'report',
    intervalMs: 1000,
    cpu: { model: 'Simulated CPU @ 2.40GHz', mhz: 2400, cores: 4, usage, capacity: 4 },
    memory: { totalBytes: 8 * 2 ** 30, freeBytes: Math.floor((4 + Math.random()) * 2 ** 30), limitBytes: null },
    network: {
      interfaces: ['eth0'],
      linkMbps: 1000,
      rxBytesPerSec: Math.floor(Math.random() * 1e5),
      txBytesPerSec: Math.floor(Math.random() * 1e5),
      utilisation: Math.random() * 0.01,
    },
    cgroup: { version: 2, cpuQuotaCores: null, memoryLimitBytes: null },
    guests:
      i % 4 === 0
        ? [
            {
              id: `load-guest-${i}`,
              name: `load-guest-${i}`,
              memoryBytes: 64 * 2 ** 20,
              cpuMs: reports,
              state: 'running',
            },
          ]
        : [],
    benchmarkScore: 1 + (i % 7) / 10,
  };
}

function open(i: number): void {
  const socket = net.connect({ host, port: Number(portText) });
  const decoder = new FrameDecoder();
  const send = (frame: Frame): boolean => socket.write(encodeFrame(frame));
  socket.setNoDelay(true);
  socket.on('connect', () => {
    send({
      type: 'hello',
      message: {
        type: 'join',
        protocol: 1,
        token,
        hostId: randomUUID(),
        name: `load-${i}`,
        version: '0.1.0',
        advertise: '127.0.0.1',
        peerPort: 20_000 + (i % 40_000),
      },
    });
  });
  socket.on('data', (chunk: Buffer) => {
    let frames: Frame[];
    try {
      frames = decoder.push(chunk);
    } catch {
      errors++;
      socket.destroy();
      return;
    }
    for (const frame of frames) {
      if (frame.type === 'welcome') {
        joined++;
        if (joined === count) console.log(`joined ${joined}`);
        const every = frame.message.reportIntervalMs;
        const start = setTimeout(() => {
          const timer = setInterval(() => {
            if (socket.writable) {
              send({ type: 'control', message: report(i) });
              reports++;
            }
          }, every);
          timers.push(timer);
        }, Math.random() * every);
        timers.push(start);
      } else if (frame.type === 'ping') {
        pings++;
        send({ type: 'pong', nonce: frame.nonce });
      } else if (frame.type === 'goaway') {
        errors++;
        console.log(`goaway ${frame.code}: ${frame.message}`);
      }
    }
  });
  socket.on('error', () => errors++);
  socket.on('close', () => {
    if (!stopping) errors++;
  });
}

let stopping = false;
process.on('SIGTERM', () => {
  stopping = true;
  for (const t of timers) clearTimeout(t);
  process.exit(0);
});
setInterval(() => console.log(`stats reports=${reports} pings=${pings} errors=${errors} joined=${joined}`), 5000);
// Join at a steady pace (a few per ms) so the proxy's accept queue never overflows.
let next = 0;
const opener = setInterval(() => {
  for (let k = 0; k < 20 && next < count; k++) open(first + next++);
  if (next >= count) clearInterval(opener);
}, 10);
