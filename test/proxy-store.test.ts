/**
 * The proxy's Store queues host reports and writes them together (src/proxy/store.ts): the
 * database must still see every write in the order it was asked for, get the queue on close, and
 * a report that comes after close must not take the process down when its flush timer fires.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { REPORT_FLUSH_MS, Store } from '../src/proxy/store.js';

interface Row {
  last_seen: number;
  last_report: string;
  benchmark_score: number | null;
  state: string;
}

function withStore(run: (store: Store, read: () => Row | undefined) => Promise<void> | void): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'roam-store-'));
  const path = join(dir, 'roam.db');
  const store = new Store(path);
  const read = (): Row | undefined => {
    const db = new Database(path, { readonly: true });
    try {
      return db.prepare(`SELECT last_seen, last_report, benchmark_score, state FROM hosts WHERE id = 'a'`).get() as
        Row | undefined;
    } finally {
      db.close();
    }
  };
  return Promise.resolve(run(store, read)).finally(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
}

describe('Store reports', () => {
  it('writes queued reports before any other statement, in order', () =>
    withStore((store, read) => {
      store.hostJoined({ id: 'a', name: 'a', address: null, peerPort: null }, 1);
      store.hostReported('a', { n: 1 }, 2.5, 10);
      store.hostReported('a', { n: 2 }, null, 20);
      assert.equal(read()?.last_seen, 1, 'not written yet');
      // Ending the session writes the reports first: last_seen is the end's, the score the first report's.
      store.hostEnded('a', 'left', 30);
      assert.deepEqual(read(), { last_seen: 30, last_report: '{"n":2}', benchmark_score: 2.5, state: 'left' });
    }));

  it('writes them within REPORT_FLUSH_MS on its own, and on close', () =>
    withStore(async (store, read) => {
      store.hostJoined({ id: 'a', name: 'a', address: null, peerPort: null }, 1);
      store.hostReported('a', { n: 1 }, null, 10);
      await new Promise((resolve) => setTimeout(resolve, REPORT_FLUSH_MS + 200));
      assert.equal(read()?.last_seen, 10);
      store.hostReported('a', { n: 2 }, null, 20);
      store.close();
      assert.equal(read()?.last_seen, 20, 'close writes what is queued');
      // After close: dropped, and the flush timer does not throw.
      store.hostReported('a', { n: 3 }, null, 30);
      store.close();
      await new Promise((resolve) => setTimeout(resolve, REPORT_FLUSH_MS + 200));
      assert.equal(read()?.last_seen, 20);
    }));
});
