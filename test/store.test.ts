/**
 * The proxy's SQLite store across versions: a database made before guests had a kind (or a
 * deadline) opens, gains the columns, and its guests read back as JavaScript guests; WebAssembly
 * guests keep their module's bytes exactly.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { Store } from '../src/proxy/store.js';
import { tempDir } from './helpers/roam.js';

test('a database from before guest kinds gains the column; its guests are JavaScript', (t) => {
  const file = join(tempDir(t), 'roam.db');
  const old = new Database(file);
  old.exec(`CREATE TABLE guests (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, host_id TEXT, state TEXT NOT NULL, publish TEXT NOT NULL,
    env TEXT NOT NULL, argv TEXT NOT NULL, bundle BLOB NOT NULL, since INTEGER NOT NULL,
    created_at INTEGER NOT NULL, exit_code INTEGER)`);
  old
    .prepare(`INSERT INTO guests VALUES ('g1', 'web', NULL, 'running', '[]', '{}', '[]', ?, 1, 1, NULL)`)
    .run(Buffer.from('console.log(1)'));
  old.close();

  const store = new Store(file);
  t.after(() => store.close());
  const [web] = store.guests();
  assert.equal(web?.kind, 'js');
  assert.deepEqual(store.guestProgram('g1'), { kind: 'js', bundle: 'console.log(1)' });

  const module = Uint8Array.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 0xff, 0x80]);
  store.addGuest(
    {
      id: 'g2',
      name: 'job',
      kind: 'wasm',
      hostId: null,
      state: 'starting',
      publish: [],
      env: {},
      argv: [],
      since: 2,
      createdAt: 2,
    },
    module,
  );
  assert.equal(store.guests().find((g) => g.id === 'g2')?.kind, 'wasm');
  const program = store.guestProgram('g2');
  assert.ok(program?.kind === 'wasm');
  assert.deepEqual(Uint8Array.from(program.module), module);

  // Opening it again changes nothing.
  store.close();
  const again = new Store(file);
  t.after(() => again.close());
  assert.deepEqual(
    again.guests().map((g) => [g.id, g.kind]),
    [
      ['g2', 'wasm'],
      ['g1', 'js'],
    ],
  );
});
