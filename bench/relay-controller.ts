/**
 * Case (c) of the relay benchmark, the controller side, in its own process: a stand-in for the
 * Interface Controller that joins the real Proxy over its control port with the join token (a
 * `LinkSession` from src/link/session.ts and the HELLO/WELCOME handshake, as
 * src/controller/controller.ts does), answers `deploy` with `deployed`, reports every interval
 * as a host must (or it is evicted), and serves every inbound stream directly in Node, with no
 * guest sandbox: the guest port picks echo, sink, source or stall (relay-lib.ts).
 *
 *   node --import tsx bench/relay-controller.ts CONTROL_PORT   (join token in ROAM_JOIN_TOKEN)
 */
import { randomUUID } from 'node:crypto';
import { LinkSession } from '../src/link/session.js';
import { ROAM_VERSION } from '../src/version.js';
import type { ConnectionFrame, ControlMessage, OpenFrame, ReportMessage } from '../src/wire/index.js';
import {
  announce,
  cpuOver,
  memorySample,
  profileStart,
  profileStop,
  serve,
  serveRequests,
  serviceOf,
} from './relay-lib.js';

const controlPort = Number(process.argv[2]);
const joinToken = process.env['ROAM_JOIN_TOKEN'] ?? '';
const hostId = randomUUID();
const guests = new Map<string, string>();
let streams = 0;

function report(): ReportMessage {
  return {
    type: 'report',
    intervalMs: 1000,
    cpu: { model: 'bench', mhz: null, cores: 1, usage: 0, capacity: 1 },
    memory: { totalBytes: 1 << 30, freeBytes: 1 << 29, limitBytes: null },
    network: { interfaces: [], linkMbps: null, rxBytesPerSec: 0, txBytesPerSec: 0, utilisation: null },
    cgroup: { version: null, cpuQuotaCores: null, memoryLimitBytes: null },
    guests: [...guests].map(([id, name]) => ({ id, name, memoryBytes: 0, cpuMs: 0, state: 'running' as const })),
  };
}

let reportTimer: NodeJS.Timeout | undefined;
const control = (message: ControlMessage): void => session.send({ type: 'control', message });
// As src/controller/controller.ts connects to the proxy.
const { socket, session } = LinkSession.connect(
  { host: '127.0.0.1', port: controlPort },
  {
    onFrame: (frame: ConnectionFrame) => {
      if (frame.type === 'welcome') {
        control(report());
        reportTimer = setInterval(() => control(report()), frame.message.reportIntervalMs);
        announce({ hostId, name: 'bench-host' });
      } else if (frame.type === 'control' && frame.message.type === 'deploy') {
        guests.set(frame.message.guestId, frame.message.name);
        control({ type: 'deployed', guestId: frame.message.guestId });
      } else if (frame.type === 'goaway') {
        console.error(`relay-controller: the proxy said goaway: ${frame.code}: ${frame.message}`);
        process.exit(1);
      }
    },
    onOpen: (frame: OpenFrame) => {
      const service = serviceOf(frame.port);
      if (!guests.has(frame.guest) || frame.direction !== 'inbound' || !service) {
        session.reject(frame, 'ECONNREFUSED', `nothing listens on port ${frame.port}`);
        return;
      }
      const stream = session.accept(frame);
      streams++;
      stream.once('close', () => streams--);
      serve(service, stream);
    },
    onClose: (error) => {
      clearInterval(reportTimer);
      if (error) console.error(`relay-controller: the link closed: ${error.message}`);
      process.exit(0);
    },
  },
);
socket.once('connect', () => {
  session.send({
    type: 'hello',
    message: { type: 'join', protocol: 1, token: joinToken, hostId, name: 'bench-host', version: ROAM_VERSION },
  });
});

serveRequests({
  memory: () => memorySample(),
  streams: () => streams,
  cpu: (args) => cpuOver((args as { ms: number }).ms),
  profileStart: () => profileStart(),
  profileStop: (args) => profileStop((args as { save?: string } | undefined)?.save),
});
