/**
 * A remote client of examples/records.js that checks every byte: it keeps sending numbered records
 * with random data over one TCP connection (a bounded number unanswered at a time) and checks each
 * answer: the next number, the data's FNV-1a hash, and the guest's own running count. Anything
 * lost, repeated, reordered or damaged, or the connection closing, is recorded as a failure.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';

export function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16);
}

export interface RecordsResult {
  sent: number;
  answered: number;
  failures: string[];
  closed: boolean;
}

export class RecordsClient {
  private readonly socket: net.Socket;
  private readonly sentData = new Map<number, string>();
  private nextSeq = 1;
  private nextAnswer = 1;
  private firstTotal: number | undefined;
  private buffered = '';
  private stopping = false;
  private closed = false;
  private readonly failures: string[] = [];
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
    this.socket.on('error', (err) => this.failures.push(`socket error: ${err.message}`));
    this.socket.on('close', () => {
      this.closed = true;
      if (!this.stopping) this.failures.push('the connection closed');
      this.settle?.();
    });
    void this.connected.then(() => this.pump());
  }

  get answered(): number {
    return this.nextAnswer - 1;
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
    while (this.answered < this.nextSeq - 1 && !this.closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.settle = resolve;
        setTimeout(resolve, 100).unref();
      });
    }
    if (this.answered < this.nextSeq - 1)
      this.failures.push(`${this.nextSeq - 1 - this.answered} records never answered`);
    this.socket.destroy();
    return { sent: this.nextSeq - 1, answered: this.answered, failures: [...this.failures], closed: this.closed };
  }

  private pump(): void {
    if (this.stopping || this.closed) return;
    let batch = '';
    while (this.nextSeq - this.nextAnswer < this.inFlight) {
      const data = randomBytes(this.size / 2).toString('hex');
      const seq = this.nextSeq++;
      this.sentData.set(seq, data);
      batch += `${seq} ${data}\n`;
    }
    if (batch) this.socket.write(batch);
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    let end: number;
    while ((end = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, end);
      this.buffered = this.buffered.slice(end + 1);
      const [seqText, hash, totalText] = line.split(' ');
      const seq = Number(seqText);
      const total = Number(totalText);
      if (seq !== this.nextAnswer) {
        this.failures.push(`answer ${seq} came where ${this.nextAnswer} was due`);
        if (this.failures.length > 20) this.socket.destroy();
        continue;
      }
      const data = this.sentData.get(seq) ?? '';
      if (hash !== fnv1a(data)) this.failures.push(`answer ${seq}: the data arrived damaged`);
      this.firstTotal ??= total - seq;
      if (total !== this.firstTotal + seq)
        this.failures.push(`answer ${seq}: the guest's count is ${total}, expected ${this.firstTotal + seq}`);
      this.sentData.delete(seq);
      this.nextAnswer++;
    }
    this.settle?.();
    this.pump();
  }
}
