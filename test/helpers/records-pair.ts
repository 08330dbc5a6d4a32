/**
 * The usual stage of the migration tests on loopback: a proxy, host-a and host-b (each with its
 * own environment, for failpoints), the records guest on host-a with its TCP port published, and
 * a checking client that has had its first answers.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { deploy, freePort, startHost, startProxy, type Started, type TestProxy } from './cluster.js';
import { RecordsClient } from './records.js';
import { ROOT } from './roam.js';

export interface RecordsPair {
  proxy: TestProxy;
  a: Started;
  b: Started;
  client: RecordsClient;
  /** The guest's published TCP port. */
  port: number;
}

export async function startRecordsPair(
  t: { after(fn: () => void | Promise<void>): void },
  env: { a?: Record<string, string>; b?: Record<string, string> } = {},
): Promise<RecordsPair> {
  const proxy = await startProxy(t, ['--report-interval', '500']);
  const a = startHost(t, proxy, 'host-a', { env: env.a ?? {} });
  const b = startHost(t, proxy, 'host-b', { env: env.b ?? {} });
  await Promise.all([a.waitFor(/joined the proxy/), b.waitFor(/joined the proxy/)]);
  const tcp = await freePort();
  const made = await deploy(proxy, join(ROOT, 'examples/records.js'), {
    name: 'records',
    publish: [{ public: tcp, guest: 7000, protocol: 'tcp' }],
    on: 'host-a',
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const client = new RecordsClient(tcp);
  await client.connected;
  await client.waitForAnswers(100);
  return { proxy, a, b, client, port: tcp };
}
