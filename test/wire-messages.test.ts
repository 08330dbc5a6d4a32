/**
 * Control-message schemas: every message round-trips through a CONTROL (or HELLO/WELCOME) frame,
 * and every string, array and record a peer sends is bounded.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ExitReason } from '../src/guest/guest.js';
import type { LogRecord } from '../src/guest/host/log.js';
import type { SandboxLimits } from '../src/guest/sandbox/sandbox.js';
import {
  DEFAULT_MAX_CONTROL_PAYLOAD,
  MESSAGE_LIMITS,
  WireError,
  controlMessageSchema,
  decodeFrame,
  encodeFrame,
  type ControlMessage,
  type DeployMessage,
  type GuestExitedMessage,
  type LogRecordMessage,
  type ReportMessage,
  type WireErrorCode,
} from '../src/wire/index.js';

// Drift checks, enforced by `npm run typecheck`: the wire's enums and shapes match the guest's.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const exitReasonsMatch: Same<GuestExitedMessage['reason'], ExitReason> = true;
const limitsMatch: Same<keyof NonNullable<DeployMessage['limits']>, keyof SandboxLimits> = true;
const logRecordsMatch: Same<LogRecordMessage, LogRecord> = true;
void [exitReasonsMatch, limitsMatch, logRecordsMatch];

const REPORT: ReportMessage = {
  type: 'report',
  intervalMs: 1000,
  cpu: { model: 'AMD EPYC 7B13', mhz: 2450, cores: 2, usage: 0.25, capacity: 0.5 },
  memory: { totalBytes: 8 * 2 ** 30, freeBytes: 2 ** 30, limitBytes: 2 ** 31 },
  network: { interfaces: ['eth0'], linkMbps: null, rxBytesPerSec: 1200.5, txBytesPerSec: 0, utilisation: null },
  cgroup: { version: 1, cpuQuotaCores: 0.5, memoryLimitBytes: 2 ** 31 },
  guests: [{ id: 'web-1', name: 'web', memoryBytes: 20_000_000, cpuMs: 1234.5, state: 'running' }],
  benchmarkScore: 812,
};

const DEPLOY: DeployMessage = {
  type: 'deploy',
  guestId: '0d5c2c52-6b1d-4b8e-9a55-7c1f5fb1e6a1',
  name: 'web',
  bundle: 'console.log("hi")\n',
  env: { PORT: '80', EMPTY: '' },
  argv: ['node', 'app.js', '--verbose'],
  publish: [{ public: 8080, guest: 80, protocol: 'tcp' }],
  limits: { memoryBytes: 64 * 1024 * 1024 },
};

const MESSAGES: ControlMessage[] = [
  REPORT,
  { type: 'leave', reason: 'host is shutting down' },
  DEPLOY,
  { type: 'deployed', guestId: 'web-1' },
  { type: 'deployFailed', guestId: 'web-1', code: 'ROAM_ERR_BUNDLE', message: 'syntax error at 1:3' },
  { type: 'stop', guestId: 'web-1' },
  { type: 'guestExited', guestId: 'web-1', code: 68, reason: 'memory-limit', message: 'exceeded 64 MiB' },
  { type: 'guestExited', guestId: 'web-1', code: 0, reason: 'exit' },
  { type: 'logs', requestId: 7, guestId: 'web-1', tail: 100 },
  { type: 'logs', requestId: 0, guestId: 'web-1' },
  { type: 'logsResult', requestId: 7, guestId: 'web-1', records: [{ t: 1.7e12, stream: 'err', text: 'oops\n' }] },
  {
    type: 'migrate',
    migrationId: 'm-1',
    guestId: 'web-1',
    token: 'ab'.repeat(32),
    target: { hostId: '0d5c2c52-6b1d-4b8e-9a55-7c1f5fb1e6a1', name: 'host-b', address: '10.0.0.3', peerPort: 7401 },
    precopy: true,
    stepTimeoutMs: 5000,
  },
  { type: 'migrateAck', migrationId: 'm-1' },
  {
    type: 'migrateIn',
    migrationId: 'm-1',
    guestId: 'web-1',
    name: 'web',
    token: 'ab'.repeat(32),
    sourceHostId: '0d5c2c52-6b1d-4b8e-9a55-7c1f5fb1e6a1',
    stepTimeoutMs: 5000,
  },
  { type: 'migrateProgress', migrationId: 'm-1', step: 'precopy', round: 0, pages: 12, bytes: 786432, ms: 3.5 },
  { type: 'migrateCommit', migrationId: 'm-1', streams: [1, 3, 8] },
  { type: 'migrateCommitted', migrationId: 'm-1' },
  { type: 'migrateAbort', migrationId: 'm-1', step: 'transfer', code: 'ROAM_ERR_MIGRATION', message: 'peer closed' },
  { type: 'migrateAborted', migrationId: 'm-1', reason: 'the target failed' },
  {
    type: 'migrateFailed',
    migrationId: 'm-1',
    step: 'restore',
    code: 'ROAM_ERR_IMAGE_MALFORMED',
    message: 'bad state',
  },
  {
    type: 'migrateDone',
    migrationId: 'm-1',
    pauseMs: 12.5,
    totalMs: 240,
    bytesSent: 9_100_000,
    precopyRounds: 2,
    precopyBytes: 8_000_000,
    finalBytes: 1_100_000,
  },
  { type: 'drain', reason: 'SIGTERM' },
  { type: 'drained', moved: 2, failed: 0 },
  { type: 'backup', guestId: 'g-1' },
  { type: 'backupFailed', guestId: 'g-1', code: 'ROAM_ERR_GUEST_STATE', message: 'the guest is moving' },
  { type: 'restore', guestId: 'g-1', name: 'web', takenAt: 1_790_000_000_000 },
];

function roundTrip(message: ControlMessage): ControlMessage {
  const frame = decodeFrame(encodeFrame({ type: 'control', message }));
  assert.equal(frame.type, 'control');
  return frame.message;
}

/** A message the schema refuses: decoding it from raw JSON is WIRE_BAD_MESSAGE naming `field`. */
function refused(message: unknown, field: string | RegExp): void {
  const parsed = controlMessageSchema.safeParse(message);
  assert.equal(parsed.success, false, `schema accepted ${JSON.stringify(message).slice(0, 200)}`);
  let caught: unknown;
  try {
    encodeFrame({ type: 'control', message: message as ControlMessage }, { maxControlPayload: 2 ** 32 - 1 });
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof WireError);
  assert.equal(caught.code, 'WIRE_BAD_MESSAGE' satisfies WireErrorCode);
  assert.match(caught.message, typeof field === 'string' ? new RegExp(field.replace(/[[\].]/g, '\\$&')) : field);
}

describe('control messages', () => {
  it('every message type round-trips', () => {
    const types = new Set<string>();
    for (const message of MESSAGES) {
      types.add(message.type);
      assert.deepEqual(roundTrip(message), message);
    }
    assert.equal(types.size, controlMessageSchema.options.length, 'a sample of every control message');
  });

  it('a report says null for what a host cannot measure, and only there', () => {
    const minimal: ReportMessage = {
      type: 'report',
      intervalMs: 0,
      cpu: { model: '', mhz: null, cores: 1, usage: 0, capacity: 1 },
      memory: { totalBytes: 0, freeBytes: 0, limitBytes: null },
      network: { interfaces: [], linkMbps: null, rxBytesPerSec: 0, txBytesPerSec: 0, utilisation: null },
      cgroup: { version: null, cpuQuotaCores: null, memoryLimitBytes: null },
      guests: [],
    };
    assert.deepEqual(roundTrip(minimal), minimal);
    refused({ ...REPORT, cpu: { ...REPORT.cpu, usage: 1.5 } }, 'cpu.usage');
    refused({ ...REPORT, cpu: { ...REPORT.cpu, cores: 0 } }, 'cpu.cores');
    refused({ ...REPORT, network: { ...REPORT.network, linkMbps: undefined } }, 'network.linkMbps');
    refused({ ...REPORT, memory: { ...REPORT.memory, freeBytes: -1 } }, 'memory.freeBytes');
    refused({ ...REPORT, guests: [{ ...REPORT.guests[0], state: 'zombie' }] }, 'guests[0].state');
    refused({ ...REPORT, guests: Array(MESSAGE_LIMITS.reportGuests + 1).fill(REPORT.guests[0]) }, 'guests');
  });

  it('a deploy is bounded in every field', () => {
    refused({ ...DEPLOY, bundle: 'x'.repeat(MESSAGE_LIMITS.bundle + 1) }, 'bundle');
    refused({ ...DEPLOY, argv: Array(MESSAGE_LIMITS.argvItems + 1).fill('a') }, 'argv');
    refused({ ...DEPLOY, argv: ['x'.repeat(MESSAGE_LIMITS.argvItem + 1)] }, 'argv[0]');
    const env = Object.fromEntries(Array.from({ length: MESSAGE_LIMITS.envEntries + 1 }, (_, i) => [`K${i}`, 'v']));
    refused({ ...DEPLOY, env }, /env.*at most/);
    refused({ ...DEPLOY, env: { K: 'x'.repeat(MESSAGE_LIMITS.envValue + 1) } }, 'env.K');
    refused({ ...DEPLOY, env: { ['k'.repeat(MESSAGE_LIMITS.envKey + 1)]: 'v' } }, 'env');
    refused({ ...DEPLOY, publish: [{ public: 0, guest: 80, protocol: 'tcp' }] }, 'publish[0].public');
    refused({ ...DEPLOY, publish: [{ public: 80, guest: 80, protocol: 'icmp' }] }, 'publish[0].protocol');
    refused({ ...DEPLOY, limits: { memoryBytes: 2 ** 40 } }, 'limits.memoryBytes');
    refused({ ...DEPLOY, guestId: '../etc/passwd' }, 'guestId');
    refused({ ...DEPLOY, guestId: 'g'.repeat(MESSAGE_LIMITS.id + 1) }, 'guestId');
  });

  it('a deploy env named __proto__ is refused, not silently dropped', () => {
    const json = `{"type":"deploy","guestId":"g","name":"n","bundle":"","env":{"__proto__":"x"},"argv":[],"publish":[]}`;
    const raw = new TextEncoder().encode(json);
    const frame = new Uint8Array(16 + raw.length);
    frame.set([0x52, 1, 3, 0, 0, 0, 0, 0], 0);
    new DataView(frame.buffer).setUint32(8, raw.length);
    frame.set(raw, 16);
    assert.throws(
      () => decodeFrame(frame),
      (err) => err instanceof WireError && err.code === 'WIRE_BAD_MESSAGE',
    );
  });

  it('a large bundle fits a CONTROL frame at the default limit', () => {
    const bundle = 'const x = "ü";\n'.repeat(1024 * 1024); // 16 Mi characters, 17 MiB of UTF-8
    const frame = encodeFrame({ type: 'control', message: { ...DEPLOY, bundle } });
    assert.ok(frame.length < DEFAULT_MAX_CONTROL_PAYLOAD);
    const decoded = decodeFrame(frame);
    assert.ok(decoded.type === 'control' && decoded.message.type === 'deploy');
    assert.equal(decoded.message.bundle, bundle);
  });

  it('log records and requests are bounded', () => {
    refused({ type: 'logs', requestId: -1, guestId: 'g' }, 'requestId');
    refused({ type: 'logs', requestId: 1, guestId: 'g', tail: 0 }, 'tail');
    refused(
      {
        type: 'logsResult',
        requestId: 1,
        guestId: 'g',
        records: [{ t: 0, stream: 'out', text: 'x'.repeat(MESSAGE_LIMITS.logText + 1) }],
      },
      'records[0].text',
    );
    refused(
      { type: 'logsResult', requestId: 1, guestId: 'g', records: [{ t: 0, stream: 'in', text: '' }] },
      'records[0].stream',
    );
  });

  it('handshake messages check their fields', () => {
    const join = {
      type: 'join',
      protocol: 1,
      token: 't',
      hostId: '3f0e6a52-8a4e-4c43-9b7e-2f5d2a7c9e10',
      name: 'h',
      version: '0.1.0',
    } as const;
    assert.deepEqual(decodeFrame(encodeFrame({ type: 'hello', message: join })), { type: 'hello', message: join });
    for (const bad of [
      { hostId: 'not-a-uuid' },
      { token: '' },
      { peerPort: 70000 },
      { name: 'n'.repeat(MESSAGE_LIMITS.name + 1) },
    ]) {
      assert.throws(
        () => encodeFrame({ type: 'hello', message: { ...join, ...bad } }),
        (err) => err instanceof WireError && err.code === 'WIRE_BAD_MESSAGE',
        JSON.stringify(bad),
      );
    }
    const welcome = {
      type: 'welcome',
      hostId: join.hostId,
      proxyName: 'p',
      reportIntervalMs: 0,
      evictAfterIntervals: 3,
    } as const;
    assert.throws(
      () => encodeFrame({ type: 'welcome', message: welcome }),
      (err) => err instanceof WireError && /reportIntervalMs/.test(err.message),
    );
  });
});
