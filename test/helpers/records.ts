/**
 * A remote client of examples/records.js that checks every byte: it keeps sending numbered records
 * with random data over one TCP connection (a bounded number unanswered at a time) and checks each
 * answer: the next number, the data's FNV-1a hash, and the guest's own running count. Anything
 * lost, repeated, reordered or damaged, or the connection closing, is recorded as a failure.
 */
import net from 'node:net';
import { RecordsLedger } from '../../src/cli/records-ledger.js';

export { fnv1a } from '../../src/cli/records-ledger.js';

export interface RecordsResult {
  sent: number;
  answered: number;
  failures: string[];
  closed: boolean;
}

export class RecordsClient {
  private readonly socket: net.Socket;
  private readonly ledger = new RecordsLedger();
  private stopping = false;
  private closed = false;
  private settle: (() => void) | undefined;
  readonly connected: Promise<void>;

  constructor(
    port: number,
    host = '127.0.0.1',
    private readonly inFlight = 32,
    private readonly size = 200,
  ) {
    this.socket = net.connect({ port, host });
    this.socket.setEncoding('utf8');
    this.connected = new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
    this.socket.on('data', (chunk: string) => this.onData(chunk));
    this.socket.on('error', (err) => this.ledger.fail(`socket error: ${err.message}`));
    this.socket.on('close', () => {
      this.closed = true;
      if (!this.stopping) this.ledger.fail('the connection closed');
      this.settle?.();
    });
    void this.connected.then(() => this.pump());
  }

  get answered(): number {
    return this.ledger.answered;
  }

  /** Resolves once `n` more answers have come (or the connection failed). */
  async waitForAnswers(n: number, timeoutMs = 30_000): Promise<void> {
    const target = this.answered + n;
    const deadline = Date.now() + timeoutMs;
    while (this.answered < target && !this.closed) {
      if (Date.now() > deadline) throw new Error(`only ${this.answered} of ${target} answers in ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        this.settle = resolve;
        setTimeout(resolve, 100).unref();
      });
    }
  }

  /** Stops sending, waits for every answer, closes; returns what happened. */
  async finish(timeoutMs = 30_000): Promise<RecordsResult> {
    this.stopping = true;
    const deadline = Date.now() + timeoutMs;
    while (this.ledger.outstanding > 0 && !this.closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.settle = resolve;
        setTimeout(resolve, 100).unref();
      });
    }
    if (this.ledger.outstanding > 0) this.ledger.fail(`${this.ledger.outstanding} records never answered`);
    this.socket.destroy();
    return {
      sent: this.ledger.sent,
      answered: this.answered,
      failures: [...this.ledger.failures],
      closed: this.closed,
    };
  }

  private pump(): void {
    if (this.stopping || this.closed) return;
    let batch = '';
    while (this.ledger.outstanding < this.inFlight) batch += this.ledger.next(this.size);
    if (batch) this.socket.write(batch);
  }

  private onData(chunk: string): void {
    this.ledger.take(chunk);
    // Far gone: stop reading on rather than pile up a thousand failures.
    if (this.ledger.failures.length > 20) this.socket.destroy();
    this.settle?.();
    this.pump();
  }
}
