/**
 * The proxy's durable state, in SQLite in its data directory: hosts and their sessions (join, leave
 * and eviction times: the history the availability model learns from), guests (with their programs,
 * a JavaScript bundle or a WebAssembly module, so a guest can be placed again), and the event log.
 * The live roaming table is built on it.
 *
 * Statements are prepared once. Hosts report every second, so their reports (last_seen,
 * last_report, benchmark_score) are not committed one by one: they are queued and written together
 * in one transaction within REPORT_FLUSH_MS, and before any other statement runs, so the database
 * sees the same writes in the same order, grouped. A crash of the proxy loses at most the reports of
 * the last REPORT_FLUSH_MS; last_report is only a last known state (a host reports again when it
 * reconnects), and a last_seen that much older only evicts a host that never came back that much
 * sooner after a restart.
 */
import Database from 'better-sqlite3';

export type HostState = 'up' | 'left' | 'evicted' | 'disconnected';
export type SessionEnd = 'left' | 'evicted' | 'disconnected' | 'proxy-restart';
export type GuestState = 'pending' | 'starting' | 'running' | 'stopped' | 'exited' | 'failed' | 'lost';

export interface HostRow {
  id: string;
  name: string;
  address: string | null;
  peerPort: number | null;
  firstJoined: number;
  lastSeen: number | null;
  state: HostState;
  benchmarkScore: number | null;
  lastReport: unknown;
}

export interface PublishedPort {
  public: number;
  guest: number;
  protocol: 'tcp' | 'udp';
}

/** What a guest's program is: a JavaScript bundle, or a WebAssembly module. */
export type GuestKind = 'js' | 'wasm';

export interface GuestRow {
  id: string;
  name: string;
  kind: GuestKind;
  hostId: string | null;
  state: GuestState;
  publish: PublishedPort[];
  env: Record<string, string>;
  argv: string[];
  since: number;
  createdAt: number;
  exitCode: number | null;
  /** A deadline (ms since the epoch) and expected run time (ms) the guest declared. */
  deadline?: number | null;
  expectMs?: number | null;
}

export interface EventRow {
  id: number;
  t: number;
  kind: string;
  hostId: string | null;
  guestId: string | null;
  message: string;
  data: unknown;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS hosts (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  address TEXT,
  peer_port INTEGER,
  first_joined INTEGER NOT NULL,
  last_seen INTEGER,
  state TEXT NOT NULL,
  benchmark_score REAL,
  last_report TEXT
);
CREATE TABLE IF NOT EXISTS host_sessions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  host_id TEXT NOT NULL REFERENCES hosts(id),
  joined_at INTEGER NOT NULL,
  ended_at INTEGER,
  end_reason TEXT
);
CREATE INDEX IF NOT EXISTS host_sessions_host ON host_sessions(host_id, joined_at);
CREATE TABLE IF NOT EXISTS guests (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  host_id TEXT,
  state TEXT NOT NULL,
  publish TEXT NOT NULL,
  env TEXT NOT NULL,
  argv TEXT NOT NULL,
  bundle BLOB NOT NULL,
  since INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  exit_code INTEGER
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  t INTEGER NOT NULL,
  kind TEXT NOT NULL,
  host_id TEXT,
  guest_id TEXT,
  message TEXT NOT NULL,
  data TEXT
);
`;

interface RawHost {
  id: string;
  name: string;
  address: string | null;
  peer_port: number | null;
  first_joined: number;
  last_seen: number | null;
  state: HostState;
  benchmark_score: number | null;
  last_report: string | null;
}

interface RawGuest {
  id: string;
  name: string;
  host_id: string | null;
  state: GuestState;
  publish: string;
  env: string;
  argv: string;
  since: number;
  created_at: number;
  exit_code: number | null;
  deadline: number | null;
  expect_ms: number | null;
  kind: GuestKind;
}

interface RawEvent {
  id: number;
  t: number;
  kind: string;
  host_id: string | null;
  guest_id: string | null;
  message: string;
  data: string | null;
}

/** Reports are written at most this late (and before any other statement). */
export const REPORT_FLUSH_MS = 500;

interface PendingReport {
  id: string;
  report: unknown;
  benchmarkScore: number | null;
  now: number;
}

function parseJson(text: string | null): unknown {
  return text === null ? null : (JSON.parse(text) as unknown);
}

export class Store {
  private readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();
  private pending: PendingReport[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly writeReports: (reports: PendingReport[]) => void;

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    // Commits reach the log at once and the disk at the log's next sync (see `durably`).
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    this.db.exec(SCHEMA);
    // Columns added since the first schema: a database from an older Roam gains them.
    const columns = new Set(
      (this.db.prepare(`PRAGMA table_info(guests)`).all() as Array<{ name: string }>).map((c) => c.name),
    );
    if (!columns.has('deadline')) this.db.exec(`ALTER TABLE guests ADD COLUMN deadline INTEGER`);
    if (!columns.has('expect_ms')) this.db.exec(`ALTER TABLE guests ADD COLUMN expect_ms INTEGER`);
    // Guests from before WebAssembly guests were all JavaScript.
    if (!columns.has('kind')) this.db.exec(`ALTER TABLE guests ADD COLUMN kind TEXT NOT NULL DEFAULT 'js'`);
    this.writeReports = this.db.transaction((reports: PendingReport[]) => {
      const update = this.sql(
        `UPDATE hosts SET last_seen = ?, last_report = ?, benchmark_score = COALESCE(?, benchmark_score) WHERE id = ?`,
      );
      for (const r of reports) update.run(r.now, JSON.stringify(r.report), r.benchmarkScore, r.id);
    });
  }

  close(): void {
    if (!this.db.open) return;
    this.flush();
    this.db.close();
  }

  /**
   * The statement for `source`, prepared on first use and kept. The queued reports are written first, so
   * statements run in the order they were asked for. Every statement but a report's goes through here.
   */
  private prepare(source: string): Database.Statement {
    this.flush();
    return this.sql(source);
  }

  private sql(source: string): Database.Statement {
    let statement = this.statements.get(source);
    if (!statement) {
      statement = this.db.prepare(source);
      this.statements.set(source, statement);
    }
    return statement;
  }

  /** Writes the queued reports, in the order they came, in one transaction (none once closed). */
  flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.pending.length === 0) return;
    if (!this.db.open) {
      this.pending = [];
      return;
    }
    const reports = this.pending;
    this.pending = [];
    this.writeReports(reports);
  }

  /** Sessions left open by a proxy that stopped: they end at its restart (their hosts reconnect). */
  closeStaleSessions(now: number): void {
    this.prepare(`UPDATE host_sessions SET ended_at = ?, end_reason = 'proxy-restart' WHERE ended_at IS NULL`).run(now);
    this.prepare(`UPDATE hosts SET state = 'disconnected' WHERE state = 'up'`).run();
  }

  hostJoined(host: { id: string; name: string; address: string | null; peerPort: number | null }, now: number): void {
    this.prepare(
      `INSERT INTO hosts (id, name, address, peer_port, first_joined, last_seen, state)
         VALUES (@id, @name, @address, @peerPort, @now, @now, 'up')
         ON CONFLICT(id) DO UPDATE SET name = @name, address = @address, peer_port = @peerPort, last_seen = @now, state = 'up'`,
    ).run({ ...host, now });
    this.prepare(`INSERT INTO host_sessions (host_id, joined_at) VALUES (?, ?)`).run(host.id, now);
  }

  /** Queues a host's report (see the header: written within REPORT_FLUSH_MS, before any other statement). */
  hostReported(id: string, report: unknown, benchmarkScore: number | null, now: number): void {
    this.pending.push({ id, report, benchmarkScore, now });
    this.flushTimer ??= setTimeout(() => this.flush(), REPORT_FLUSH_MS).unref();
  }

  hostEnded(id: string, reason: SessionEnd, now: number): void {
    const state: HostState = reason === 'left' ? 'left' : reason === 'evicted' ? 'evicted' : 'disconnected';
    this.prepare(`UPDATE hosts SET state = ?, last_seen = ? WHERE id = ?`).run(state, now, id);
    this.prepare(`UPDATE host_sessions SET ended_at = ?, end_reason = ? WHERE host_id = ? AND ended_at IS NULL`).run(
      now,
      reason,
      id,
    );
  }

  hosts(): HostRow[] {
    return (this.prepare(`SELECT * FROM hosts ORDER BY name`).all() as RawHost[]).map((r) => ({
      id: r.id,
      name: r.name,
      address: r.address,
      peerPort: r.peer_port,
      firstJoined: r.first_joined,
      lastSeen: r.last_seen,
      state: r.state,
      benchmarkScore: r.benchmark_score,
      lastReport: parseJson(r.last_report),
    }));
  }

  hostSessions(hostId: string): Array<{ joinedAt: number; endedAt: number | null; endReason: SessionEnd | null }> {
    return (
      this.prepare(
        `SELECT joined_at, ended_at, end_reason FROM host_sessions WHERE host_id = ? ORDER BY joined_at`,
      ).all(hostId) as Array<{ joined_at: number; ended_at: number | null; end_reason: SessionEnd | null }>
    ).map((r) => ({ joinedAt: r.joined_at, endedAt: r.ended_at, endReason: r.end_reason }));
  }

  /** `program`: the bundle's source (kind 'js') or the module's bytes (kind 'wasm'). */
  addGuest(guest: Omit<GuestRow, 'exitCode'>, program: string | Uint8Array): void {
    this.prepare(
      `INSERT INTO guests (id, name, kind, host_id, state, publish, env, argv, bundle, since, created_at, deadline, expect_ms)
         VALUES (@id, @name, @kind, @hostId, @state, @publish, @env, @argv, @bundle, @since, @createdAt, @deadline, @expectMs)`,
    ).run({
      ...guest,
      deadline: guest.deadline ?? null,
      expectMs: guest.expectMs ?? null,
      publish: JSON.stringify(guest.publish),
      env: JSON.stringify(guest.env),
      argv: JSON.stringify(guest.argv),
      bundle: typeof program === 'string' ? Buffer.from(program, 'utf8') : Buffer.from(program),
    });
  }

  /** `durable`: on disk when this returns, whatever befalls the machine (see `durably`). */
  updateGuest(
    id: string,
    change: { state: GuestState; hostId?: string | null; exitCode?: number | null },
    now: number,
    durable = false,
  ): void {
    const write = (): void => {
      this.prepare(
        `UPDATE guests SET state = @state, host_id = COALESCE(@hostId, host_id), exit_code = @exitCode, since = @now WHERE id = @id`,
      ).run({ id, state: change.state, hostId: change.hostId ?? null, exitCode: change.exitCode ?? null, now });
    };
    if (durable) this.durably(write);
    else write();
  }

  /**
   * Runs `write` with the log synced to disk at its commit (0.3-1.4 ms here), and with it every
   * write before it. The others are committed to the log without a sync (WAL, synchronous NORMAL,
   * better-sqlite3's default, made explicit above): they survive the proxy's crash, not the
   * machine's. Kept for what must survive that too: a move's commit point.
   */
  private durably(write: () => void): void {
    this.db.pragma('synchronous = FULL');
    try {
      write();
    } finally {
      this.db.pragma('synchronous = NORMAL');
    }
  }

  removeGuest(id: string): void {
    this.prepare(`DELETE FROM guests WHERE id = ?`).run(id);
  }

  guests(): GuestRow[] {
    return (this.prepare(`SELECT * FROM guests ORDER BY name`).all() as RawGuest[]).map((r) => ({
      id: r.id,
      name: r.name,
      kind: r.kind,
      hostId: r.host_id,
      state: r.state,
      publish: JSON.parse(r.publish) as PublishedPort[],
      env: JSON.parse(r.env) as Record<string, string>,
      argv: JSON.parse(r.argv) as string[],
      since: r.since,
      createdAt: r.created_at,
      exitCode: r.exit_code,
      deadline: r.deadline,
      expectMs: r.expect_ms,
    }));
  }

  /** Every host session, for the availability model: join, end and why it ended. */
  sessions(): Array<{ hostId: string; joinedAt: number; endedAt: number | null; endReason: string | null }> {
    return (
      this.prepare(
        `SELECT host_id, joined_at, ended_at, end_reason FROM host_sessions ORDER BY joined_at`,
      ).all() as Array<{
        host_id: string;
        joined_at: number;
        ended_at: number | null;
        end_reason: string | null;
      }>
    ).map((r) => ({ hostId: r.host_id, joinedAt: r.joined_at, endedAt: r.ended_at, endReason: r.end_reason }));
  }

  /** A guest's program: the bundle's source, or the WebAssembly module's bytes. */
  guestProgram(id: string): { kind: 'js'; bundle: string } | { kind: 'wasm'; module: Uint8Array } | undefined {
    const row = this.prepare(`SELECT kind, bundle FROM guests WHERE id = ?`).get(id) as
      { kind: GuestKind; bundle: Buffer } | undefined;
    if (!row) return undefined;
    return row.kind === 'wasm'
      ? { kind: 'wasm', module: row.bundle }
      : { kind: 'js', bundle: row.bundle.toString('utf8') };
  }

  addEvent(e: Omit<EventRow, 'id'>): EventRow {
    const info = this.prepare(
      `INSERT INTO events (t, kind, host_id, guest_id, message, data) VALUES (?, ?, ?, ?, ?, ?)`,
    ).run(e.t, e.kind, e.hostId, e.guestId, e.message, e.data === undefined ? null : JSON.stringify(e.data));
    return { ...e, id: Number(info.lastInsertRowid) };
  }

  events(options: { after?: number; limit?: number } = {}): EventRow[] {
    const rows = this.prepare(`SELECT * FROM events WHERE id > ? ORDER BY id DESC LIMIT ?`).all(
      options.after ?? 0,
      Math.min(options.limit ?? 200, 10_000),
    ) as RawEvent[];
    return rows.reverse().map((r) => ({
      id: r.id,
      t: r.t,
      kind: r.kind,
      hostId: r.host_id,
      guestId: r.guest_id,
      message: r.message,
      data: parseJson(r.data),
    }));
  }
}
