/**
 * The client side of examples/records.js's protocol, without I/O: numbered records out
 * ("SEQ DATA\n"), answers in ("SEQ HASH TOTAL\n"), each answer checked: the next number, the
 * data's FNV-1a hash, and the guest's running count going up by one per record. `roam demo`'s
 * client, the migration tests and the migration benchmark all check traffic with it.
 */
import { randomBytes } from 'node:crypto';

export function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16);
}

/** Failures kept, at most: past that, one more changes nothing. */
const MAX_FAILURES = 100;

export class RecordsLedger {
  private readonly pending = new Map<number, string>();
  private nextSeq = 1;
  private nextAnswer = 1;
  /** The guest's count before our first record (other clients may have sent some). */
  private baseTotal: number | undefined;
  private buffered = '';
  readonly failures: string[] = [];

  /** Records sent so far. */
  get sent(): number {
    return this.nextSeq - 1;
  }

  /** Answers taken so far (in order; an out-of-order one is a failure and is not counted). */
  get answered(): number {
    return this.nextAnswer - 1;
  }

  /** Records sent and not answered yet. */
  get outstanding(): number {
    return this.pending.size;
  }

  /** The next record, as the line to write; `dataBytes` of random data (hex). */
  next(dataBytes: number): string {
    const seq = this.nextSeq++;
    const data = randomBytes(Math.max(1, dataBytes >> 1)).toString('hex');
    this.pending.set(seq, data);
    return `${seq} ${data}\n`;
  }

  /** Takes bytes from the connection; returns how many answers they completed. */
  take(chunk: string): number {
    this.buffered += chunk;
    let taken = 0;
    let end: number;
    while ((end = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, end);
      this.buffered = this.buffered.slice(end + 1);
      const [seqText, hash, totalText] = line.split(' ');
      const seq = Number(seqText);
      const total = Number(totalText);
      if (seq !== this.nextAnswer) {
        this.fail(`answer ${seq} came where ${this.nextAnswer} was due`);
        continue;
      }
      if (hash !== fnv1a(this.pending.get(seq) ?? '')) this.fail(`answer ${seq}: the data arrived damaged`);
      this.baseTotal ??= total - seq;
      if (total !== this.baseTotal + seq) {
        this.fail(`answer ${seq}: the guest's count is ${total}, expected ${this.baseTotal + seq}`);
      }
      this.pending.delete(seq);
      this.nextAnswer++;
      taken++;
    }
    return taken;
  }

  fail(what: string): void {
    if (this.failures.length < MAX_FAILURES) this.failures.push(what);
  }
}
