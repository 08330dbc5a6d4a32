/**
 * The remote client of `roam demo`: it talks to the records guest (examples/records.js) through
 * the proxy and checks every byte. Over one TCP connection it sends numbered records with random
 * data (a bounded number unanswered) and checks each answer: the next number, the data's FNV-1a
 * hash, and the guest's running count going up by one. Over one keep-alive HTTP connection it reads
 * the guest's JSON every 200 ms and checks that its counters never go back. Anything lost, repeated,
 * reordered or damaged, or a connection closing, is a failure.
 */
import http from 'node:http';
import net from 'node:net';
import { RecordsLedger } from './records-ledger.js';

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
  private readonly ledger = new RecordsLedger();
  private failuresSeen = 0;
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
    while (this.ledger.outstanding < IN_FLIGHT) {
      const line = this.ledger.next(RECORD_BYTES);
      this.socket.write(line);
      this.stats.sent++;
      this.stats.bytesSent += line.length;
    }
  }

  private onData(chunk: string): void {
    this.stats.bytesReceived += chunk.length;
    this.stats.answered += this.ledger.take(chunk);
    for (const failure of this.ledger.failures.slice(this.failuresSeen)) this.fail(`tcp: ${failure}`);
    this.failuresSeen = this.ledger.failures.length;
    if (this.ledger.outstanding <= IN_FLIGHT / 2) {
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
    while (this.ledger.outstanding > 0 && this.stats.open && Date.now() < deadline) {
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
    if (this.ledger.outstanding > 0 && this.stats.open)
      this.fail(`tcp: ${this.ledger.outstanding} answer(s) never came`);
    this.socket.end();
    this.agent.destroy();
    return this.stats;
  }
}
