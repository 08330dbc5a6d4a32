/**
 * The remote side of the migration benchmark (bench/migrate.ts), run inside the client namespace:
 *
 *   node --import tsx bench/migrate-driver.ts PROXY API_URL ADMIN_TOKEN_FILE
 *
 * It is both the operator (it asks the proxy's API for moves, as `roam migrate` does) and a remote
 * client that keeps traffic flowing to the guest during the moves. Commands arrive on stdin, one
 * JSON object a line with an `id`; each answer is a line `R <id> <json>` on stdout:
 *
 *   { cmd: 'ready', name, text, timeoutMs }   waits until the guest's console shows `text`
 *   { cmd: 'traffic', port, rate }            starts paced records to PROXY:port (rate per second)
 *   { cmd: 'migrate', name, to, precopy }     POST /api/guests/:name/migrate; answers with the
 *                                             MigrationView once the client has seen answers again
 *   { cmd: 'stopTraffic' }                    stops sending, waits for every answer, reports
 *
 * The traffic is examples/records.js's protocol ("SEQ DATA\n" answered by "SEQ HASH TOTAL\n"), each
 * answer checked: the next number, the data's FNV-1a hash, the guest's running count. Anything lost,
 * repeated, reordered, damaged, or the connection closing, is a failure, reported with every answer.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { RecordsLedger } from '../src/cli/records-ledger.js';

const [proxy = '', api = '', tokenFile = ''] = process.argv.slice(2);
const token = readFileSync(tokenFile, 'utf8').trim();

async function call<T>(method: string, path: string, body?: unknown, timeoutMs = 180_000): Promise<T> {
  const res = await fetch(`${api}/${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

/** Records at a steady rate on one connection, every answer checked. */
class PacedRecords {
  readonly socket: net.Socket;
  private readonly ledger = new RecordsLedger();
  private stopping = false;
  closed = false;
  readonly failures = this.ledger.failures;
  /** Longest time between two answers (or since the last one), in ms, since `resetGap()`. */
  maxGapMs = 0;
  private lastAnswerAt = performance.now();
  private readonly timer: NodeJS.Timeout;
  private readonly waiters = new Set<() => void>();

  constructor(port: number, rate: number) {
    this.socket = net.connect({ host: proxy, port });
    this.socket.setNoDelay(true);
    this.socket.setEncoding('utf8');
    this.socket.on('data', (chunk: string) => this.onData(chunk));
    this.socket.on('error', (err) => this.failures.push(`socket error: ${err.message}`));
    this.socket.on('close', () => {
      this.closed = true;
      if (!this.stopping) this.failures.push('the connection closed');
      this.wake();
    });
    // Every 5 ms, what the rate allows; never more than 64 unanswered (a move holds answers back).
    const perTick = Math.max(1, Math.round((rate * 5) / 1000));
    let owed = 0;
    this.timer = setInterval(() => {
      if (this.stopping || this.closed) return;
      owed = Math.min(owed + perTick, 64);
      let batch = '';
      while (owed > 0 && this.ledger.outstanding < 64) {
        batch += this.ledger.next(100);
        owed--;
      }
      if (batch) this.socket.write(batch);
    }, 5);
  }

  get answered(): number {
    return this.ledger.answered;
  }

  resetGap(): void {
    this.maxGapMs = 0;
    this.lastAnswerAt = performance.now();
  }

  /** Resolves once `n` more answers have come; rejects on a failure or after `timeoutMs`. */
  async more(n: number, timeoutMs: number): Promise<void> {
    const target = this.answered + n;
    const deadline = performance.now() + timeoutMs;
    while (this.answered < target) {
      if (this.failures.length > 0 || this.closed) throw new Error(`traffic failed: ${this.failures.join('; ')}`);
      if (performance.now() > deadline) {
        throw new Error(`the client saw only ${n - (target - this.answered)} of ${n} answers in ${timeoutMs} ms`);
      }
      await new Promise<void>((resolve) => {
        this.waiters.add(resolve);
        setTimeout(resolve, 50).unref();
      });
    }
  }

  async finish(timeoutMs = 30_000): Promise<{ sent: number; answered: number; failures: string[]; closed: boolean }> {
    this.stopping = true;
    clearInterval(this.timer);
    const deadline = performance.now() + timeoutMs;
    while (this.ledger.outstanding > 0 && !this.closed && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    if (this.ledger.outstanding > 0) this.ledger.fail(`${this.ledger.outstanding} never answered`);
    this.socket.destroy();
    return { sent: this.ledger.sent, answered: this.answered, failures: [...this.failures], closed: this.closed };
  }

  private wake(): void {
    for (const w of this.waiters) w();
    this.waiters.clear();
  }

  private onData(chunk: string): void {
    const now = performance.now();
    this.maxGapMs = Math.max(this.maxGapMs, now - this.lastAnswerAt);
    this.lastAnswerAt = now;
    this.ledger.take(chunk);
    this.wake();
  }
}

let traffic: PacedRecords | undefined;

interface Command {
  id: number;
  cmd: string;
  name?: string;
  text?: string;
  timeoutMs?: number;
  port?: number;
  rate?: number;
  to?: string;
  precopy?: boolean;
}

async function handle(c: Command): Promise<unknown> {
  switch (c.cmd) {
    case 'ready': {
      const deadline = Date.now() + (c.timeoutMs ?? 120_000);
      for (;;) {
        const logs = await call<Array<{ text: string }>>('GET', `api/guests/${c.name}/logs`);
        if (logs.some((l) => l.text.includes(c.text ?? ''))) return { ok: true };
        if (Date.now() > deadline) throw new Error(`${c.name} did not print ${c.text}: ${JSON.stringify(logs)}`);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
    case 'traffic': {
      traffic = new PacedRecords(c.port ?? 0, c.rate ?? 500);
      await traffic.more(20, 20_000);
      return { answered: traffic.answered };
    }
    case 'migrate': {
      if (!traffic) throw new Error('no traffic');
      const t = traffic;
      if (t.failures.length > 0) throw new Error(`traffic failed before the move: ${t.failures.join('; ')}`);
      t.resetGap();
      const before = t.answered;
      const view = await call<{ outcome: string | null }>('POST', `api/guests/${c.name}/migrate`, {
        to: c.to,
        precopy: c.precopy,
      });
      // The guest answers again from its new host before the next move.
      await t.more(10, 20_000);
      return { view, answered: t.answered - before, clientGapMs: t.maxGapMs };
    }
    case 'stopTraffic': {
      const result = await traffic?.finish();
      traffic = undefined;
      return result;
    }
    default:
      throw new Error(`unknown command ${c.cmd}`);
  }
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const c = JSON.parse(line) as Command;
  void handle(c).then(
    (result) => process.stdout.write(`R ${c.id} ${JSON.stringify({ ok: true, result })}\n`),
    (err: Error) => process.stdout.write(`R ${c.id} ${JSON.stringify({ ok: false, error: err.message })}\n`),
  );
});
lines.on('close', () => process.exit(0));
process.stdout.write('driver ready\n');
