/**
 * The remote client of `roam demo`: it talks to the records guest (examples/records.js) through
 * the proxy and checks every byte. Over one TCP connection it sends numbered records with random
 * data (a bounded number unanswered) and checks each answer: the next number, the data's FNV-1a
 * hash, and the guest's running count going up by one. Over one keep-alive HTTP connection it reads
 * the guest's JSON every 200 ms and checks that its counters never go back. Anything lost, repeated,
 * reordered or damaged, or a connection closing, is a failure.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';

export function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16);
}

export interface ClientStats {
  sent: number;
  answered: number;
  bytesSent: number;
  bytesReceived: number;
  httpOk: number;
  failures: string[];
  /** When the TCP connection opened (it is one connection for the whole run). */
  since: number;
  open: boolean;
}

const IN_FLIGHT = 16;
const RECORD_BYTES = 120;
/** Between bursts: enough traffic to see, little CPU on a small machine. */
const PACE_MS = 20;

export class DemoClient {
  private readonly socket: net.Socket;
  private readonly pending = new Map<number, string>();
  private nextSeq = 1;
  private nextAnswer = 1;
  private lastTotal: number | undefined;
  private buffered = '';
  private stopping = false;
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  private httpTimer: NodeJS.Timeout | undefined;
  private pumpTimer: NodeJS.Timeout | undefined;
  private lastHttp: { records: number; ticks: number; now: number } | undefined;
  readonly stats: ClientStats = {
    sent: 0,
    answered: 0,
    bytesSent: 0,
    bytesReceived: 0,
    httpOk: 0,
    failures: [],
    since: 0,
    open: false,
  };
  readonly connected: Promise<void>;

  constructor(
    private readonly host: string,
    tcpPort: number,
    private readonly httpPort: number,
  ) {
    this.socket = net.connect({ host, port: tcpPort });
    this.socket.setEncoding('utf8');
    this.connected = new Promise((resolve, reject) => {
      this.socket.once('connect', () => {
        this.stats.since = Date.now();
        this.stats.open = true;
        resolve();
      });
      this.socket.once('error', reject);
    });
    this.socket.on('data', (chunk: string) => this.onData(chunk));
    this.socket.on('error', (err) => this.fail(`tcp: ${err.message}`));
    this.socket.on('close', () => {
      this.stats.open = false;
      if (!this.stopping) this.fail('tcp: the connection closed');
    });
    void this.connected.then(
      () => {
        this.pump();
        this.pollHttp();
      },
      () => undefined,
    );
  }

  private fail(what: string): void {
    if (this.stats.failures.length < 100) this.stats.failures.push(what);
  }

  private pump(): void {
    if (this.stopping || !this.stats.open) return;
    while (this.pending.size < IN_FLIGHT) {
      const seq = this.nextSeq++;
      const data = randomBytes(RECORD_BYTES / 2).toString('hex');
      this.pending.set(seq, data);
      const line = `${seq} ${data}\n`;
      this.socket.write(line);
      this.stats.sent++;
      this.stats.bytesSent += line.length;
    }
  }

  private onData(chunk: string): void {
    this.stats.bytesReceived += chunk.length;
    this.buffered += chunk;
    let end: number;
    while ((end = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, end);
      this.buffered = this.buffered.slice(end + 1);
      const [seqText, hash, totalText] = line.split(' ');
      const seq = Number(seqText);
      const total = Number(totalText);
      const data = this.pending.get(seq);
      if (seq !== this.nextAnswer) this.fail(`tcp: answer ${seq} came where ${this.nextAnswer} was due`);
      else if (data === undefined || hash !== fnv1a(data)) this.fail(`tcp: answer ${seq} is damaged`);
      else if (this.lastTotal !== undefined && total !== this.lastTotal + 1)
        this.fail(`tcp: the guest's count went from ${this.lastTotal} to ${total}`);
      this.pending.delete(seq);
      this.nextAnswer = seq + 1;
      this.lastTotal = total;
      this.stats.answered++;
    }
    if (this.pending.size <= IN_FLIGHT / 2) {
      clearTimeout(this.pumpTimer);
      this.pumpTimer = setTimeout(() => this.pump(), PACE_MS);
    }
  }

  private pollHttp(): void {
    if (this.stopping) return;
    const req = http.get(
      { host: this.host, port: this.httpPort, path: '/', agent: this.agent, timeout: 30_000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => {
          try {
            const now = JSON.parse(body) as { records: number; ticks: number; now: number };
            const last = this.lastHttp;
            if (last && (now.records < last.records || now.ticks < last.ticks || now.now < last.now))
              this.fail(`http: the guest's counters went back (${JSON.stringify(last)} then ${body})`);
            this.lastHttp = now;
            this.stats.httpOk++;
          } catch {
            this.fail(`http: not JSON: ${body.slice(0, 80)}`);
          }
          this.httpTimer = setTimeout(() => this.pollHttp(), 200);
        });
      },
    );
    req.on('error', (err) => {
      if (this.stopping) return;
      this.fail(`http: ${err.message}`);
      this.httpTimer = setTimeout(() => this.pollHttp(), 1000);
    });
  }

  /** Stops sending, waits (a bounded time) for the answers still due, and closes. */
  async finish(timeoutMs = 5000): Promise<ClientStats> {
    this.stopping = true;
    clearTimeout(this.pumpTimer);
    clearTimeout(this.httpTimer);
    const deadline = Date.now() + timeoutMs;
    while (this.pending.size > 0 && this.stats.open && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.socket.off('data', done).off('close', done);
          resolve();
        };
        const timer = setTimeout(done, 100);
        this.socket.once('data', done).once('close', done);
      });
    }
    if (this.pending.size > 0 && this.stats.open) this.fail(`tcp: ${this.pending.size} answer(s) never came`);
    this.socket.end();
    this.agent.destroy();
    return this.stats;
  }
}
