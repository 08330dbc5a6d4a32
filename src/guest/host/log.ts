/**
 * The guest's log: what it wrote to stdout and stderr, timestamped, kept in a bounded ring so it
 * can be read back (and travels, bounded, in the checkpoint image), and passed to a live sink.
 */
export type LogStream = 'out' | 'err';

export interface LogRecord {
  /** Virtual wall-clock time of the write, ms since the epoch. */
  t: number;
  stream: LogStream;
  text: string;
}

export interface LogState {
  records: LogRecord[];
  written: number;
}

export type LogSink = (record: LogRecord) => void;

export class GuestLog {
  private records: LogRecord[] = [];
  private bytes = 0;
  /** Total records ever written (so a reader can tell what it missed). */
  written = 0;

  constructor(
    private readonly maxBytes = 256 * 1024,
    private sink?: LogSink,
  ) {}

  setSink(sink: LogSink | undefined): void {
    this.sink = sink;
  }

  write(record: LogRecord): void {
    this.records.push(record);
    this.bytes += record.text.length;
    this.written++;
    while (this.bytes > this.maxBytes && this.records.length > 1) {
      const dropped = this.records.shift();
      this.bytes -= dropped?.text.length ?? 0;
    }
    this.sink?.(record);
  }

  tail(n = Infinity): LogRecord[] {
    return this.records.slice(-n);
  }

  capture(): LogState {
    return { records: this.records.slice(), written: this.written };
  }

  restore(state: LogState): void {
    this.records = state.records.slice();
    this.bytes = this.records.reduce((n, r) => n + r.text.length, 0);
    this.written = state.written;
  }
}
