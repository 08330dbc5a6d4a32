/**
 * Schemas of the JSON payloads: the control messages carried by HELLO, WELCOME and CONTROL frames,
 * and the small JSON bodies of OPEN, OPEN_FAIL, RST, GOAWAY and the ATTACH tail.
 *
 * Every payload from the network is validated against these before use. Every string, array and
 * record is bounded so that a hostile peer cannot make us hold more than the frame limit allows,
 * and so that every valid small message fits in MAX_SMALL_PAYLOAD once JSON-escaped. Unknown
 * object keys are dropped (a newer peer may add fields); unknown message types are refused.
 */
import { z } from 'zod';

/** Version of the control-message schemas, sent as `protocol` in the join message. */
export const CONTROL_PROTOCOL = 1;

/** Bounds on what a peer may send. */
export const MESSAGE_LIMITS = {
  /** Guest ids, stream error codes and similar identifiers. */
  id: 128,
  /** Guest, host and proxy names. */
  name: 128,
  /** The join token. */
  token: 1024,
  /** Host addresses (a host name or an IP literal, optionally with a port). */
  address: 255,
  /** Roam version strings. */
  version: 64,
  /** Error codes such as ECONNREFUSED. */
  code: 64,
  /** Human-readable messages in small frames (OPEN_FAIL, RST, GOAWAY). */
  shortText: 1024,
  /** Human-readable messages in control frames. */
  text: 16 * 1024,
  /** A deploy's bundle, in characters (the CONTROL frame limit also applies to its encoding). */
  bundle: 32 * 1024 * 1024,
  /** A deploy's WebAssembly module, in base64 characters (24 MiB of module). */
  wasm: 32 * 1024 * 1024,
  /** Entries in a deploy's env, and items in its argv. */
  envEntries: 1024,
  argvItems: 1024,
  /** One env key, one env value, one argv item. */
  envKey: 256,
  envValue: 32 * 1024,
  argvItem: 32 * 1024,
  /** Published ports per guest. */
  publish: 64,
  /** Guests listed in a report. */
  reportGuests: 4096,
  /** CPU model string. */
  cpuModel: 256,
  /** Log records in a logs request's tail and in its result, and one record's text. */
  logRecords: 10_000,
  logText: 64 * 1024,
  /** A checkpoint image on an image stream (a 4 GiB guest memory, compressed, and its state). */
  image: 5 * 1024 * 1024 * 1024,
} as const;

const id = z
  .string()
  .min(1)
  .max(MESSAGE_LIMITS.id)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]*$/, 'must be letters, digits and . _ : - (starting with a letter or digit)');
const name = z.string().min(1).max(MESSAGE_LIMITS.name);
const count = z.int().min(0).max(Number.MAX_SAFE_INTEGER);
const quantity = z.number().min(0);
const fraction = z.number().min(0).max(1);
const port = z.int().min(0).max(65535);
const publicPort = z.int().min(1).max(65535);
const u32 = z.int().min(0).max(0xffff_ffff);
const transport = z.enum(['tcp', 'udp']);

// ---- small JSON bodies of stream and connection frames ----

/** Body of OPEN_FAIL, RST and GOAWAY. */
export const errorInfoSchema = z.object({
  code: z
    .string()
    .min(1)
    .max(MESSAGE_LIMITS.code)
    .regex(/^[A-Za-z0-9_.-]+$/, 'must be letters, digits and . _ -'),
  message: z.string().max(MESSAGE_LIMITS.shortText),
});
export type ErrorInfo = z.infer<typeof errorInfoSchema>;

export const remoteAddressSchema = z.object({
  address: z.string().min(1).max(MESSAGE_LIMITS.address),
  port,
  family: z.enum(['IPv4', 'IPv6']),
});
export type RemoteAddress = z.infer<typeof remoteAddressSchema>;

/**
 * Body of OPEN. `inbound`: a remote client reached the guest's server through a published port;
 * `port` is the guest's port. `outbound`: the guest connects out through the proxy; `remote` is the
 * target and `port` the guest's local port (0 when it has none).
 */
export const connectionOpenSchema = z.object({
  guest: id,
  protocol: transport,
  direction: z.enum(['inbound', 'outbound']),
  port,
  remote: remoteAddressSchema,
});
export type ConnectionOpenInfo = z.infer<typeof connectionOpenSchema>;

/**
 * Body of OPEN for a stream that carries one checkpoint image of `guest`, `bytes` long: a host
 * sends its guest's backup image to the proxy, the proxy sends it to the host that resumes it.
 */
export const imageOpenSchema = z.object({
  guest: id,
  direction: z.literal('image'),
  bytes: z.int().min(1).max(MESSAGE_LIMITS.image),
});
export type ImageOpenInfo = z.infer<typeof imageOpenSchema>;

export const streamOpenSchema = z.discriminatedUnion('direction', [connectionOpenSchema, imageOpenSchema]);
export type StreamOpenInfo = z.infer<typeof streamOpenSchema>;

/** Optional JSON tail of ATTACH: which guest placement is re-attaching, and why. */
export const attachInfoSchema = z.object({
  guestId: id.optional(),
  /** Placement generation of the guest; the proxy ignores attaches from an older one. */
  epoch: count.optional(),
  reason: z.string().max(MESSAGE_LIMITS.shortText).optional(),
});
export type AttachInfo = z.infer<typeof attachInfoSchema>;

// ---- handshake ----

/** HELLO: a controller joins the proxy. */
export const joinSchema = z.object({
  type: z.literal('join'),
  protocol: z.literal(CONTROL_PROTOCOL),
  token: z.string().min(1).max(MESSAGE_LIMITS.token),
  hostId: z.uuid(),
  name,
  /** Address other hosts reach this host's peer port at (for direct migration transfers). */
  advertise: z.string().min(1).max(MESSAGE_LIMITS.address).optional(),
  peerPort: publicPort.optional(),
  version: z.string().min(1).max(MESSAGE_LIMITS.version),
});
export type JoinMessage = z.infer<typeof joinSchema>;

/** WELCOME: the proxy accepted the join. */
export const welcomeSchema = z.object({
  type: z.literal('welcome'),
  hostId: z.uuid(),
  proxyName: name,
  reportIntervalMs: z.int().min(1).max(3_600_000),
  evictAfterIntervals: z.int().min(1).max(1000),
});
export type WelcomeMessage = z.infer<typeof welcomeSchema>;

// ---- CONTROL messages ----

export const guestStates = ['starting', 'running', 'frozen', 'migrating', 'exited'] as const;
export type GuestRunState = (typeof guestStates)[number];

/** Host metrics, sent every `reportIntervalMs`. */
export const reportSchema = z.object({
  type: z.literal('report'),
  /** The window, in ms, that usage and rates were measured over. */
  intervalMs: quantity,
  cpu: z.object({
    model: z.string().max(MESSAGE_LIMITS.cpuModel),
    /** Clock speed; null when the host does not know it (never invented). */
    mhz: quantity.nullable(),
    cores: z.int().min(1).max(65_536),
    /** Busy share of `capacity` over the last interval. */
    usage: fraction,
    /** Cores this controller may use: its cgroup quota, else all cores. */
    capacity: quantity,
    /** Under a quota: share of `capacity` its tasks spent ready but waiting for a CPU. */
    waiting: fraction.optional(),
  }),
  memory: z.object({
    totalBytes: count,
    freeBytes: count,
    limitBytes: count.nullable(),
  }),
  network: z.object({
    interfaces: z.array(z.string().max(64)).max(64),
    linkMbps: quantity.nullable(),
    rxBytesPerSec: quantity,
    txBytesPerSec: quantity,
    utilisation: fraction.nullable(),
  }),
  cgroup: z.object({
    version: z.union([z.literal(1), z.literal(2)]).nullable(),
    cpuQuotaCores: quantity.nullable(),
    memoryLimitBytes: count.nullable(),
  }),
  guests: z
    .array(
      z.object({
        id,
        name,
        memoryBytes: count,
        cpuMs: quantity,
        state: z.enum(guestStates),
      }),
    )
    .max(MESSAGE_LIMITS.reportGuests),
  benchmarkScore: quantity.optional(),
});
export type ReportMessage = z.infer<typeof reportSchema>;

/** The host is leaving the pool (evacuate its guests). */
export const leaveSchema = z.object({
  type: z.literal('leave'),
  reason: z.string().max(MESSAGE_LIMITS.text),
});
export type LeaveMessage = z.infer<typeof leaveSchema>;

const isObject = (value: unknown): value is object => typeof value === 'object' && value !== null;

/**
 * Environment variables. Checked before parsing: at most MESSAGE_LIMITS.envEntries names, and none called
 * `__proto__` (a record would drop it silently; refusing it says what happened).
 */
const envSchema = z
  .unknown()
  .refine((env) => !isObject(env) || !Object.hasOwn(env, '__proto__'), 'must not define __proto__')
  .refine(
    (env) => !isObject(env) || Object.keys(env).length <= MESSAGE_LIMITS.envEntries,
    `must have at most ${MESSAGE_LIMITS.envEntries} entries`,
  )
  .pipe(z.record(z.string().min(1).max(MESSAGE_LIMITS.envKey), z.string().max(MESSAGE_LIMITS.envValue)));

/** Proxy -> controller: start a guest from a bundle or a WebAssembly module (exactly one). */
export const deploySchema = z
  .object({
    type: z.literal('deploy'),
    guestId: id,
    name,
    /** The guest program: bundled JavaScript source. */
    bundle: z.string().max(MESSAGE_LIMITS.bundle).optional(),
    /** Or a WASI preview1 module, in base64 (a WebAssembly guest). */
    wasm: z.base64().max(MESSAGE_LIMITS.wasm).optional(),
    env: envSchema,
    argv: z.array(z.string().max(MESSAGE_LIMITS.argvItem)).max(MESSAGE_LIMITS.argvItems),
    publish: z
      .array(z.object({ public: publicPort, guest: publicPort, protocol: transport }))
      .max(MESSAGE_LIMITS.publish),
    /** Sandbox limits; the controller's defaults apply to what is left out. */
    limits: z
      .object({
        memoryBytes: z
          .int()
          .min(1024 * 1024)
          .max(4 * 1024 * 1024 * 1024),
        cpuBudgetMs: z.int().min(1).max(3_600_000),
        stackBytes: z
          .int()
          .min(64 * 1024)
          .max(256 * 1024 * 1024),
      })
      .partial()
      .optional(),
  })
  .refine((m) => (m.bundle === undefined) !== (m.wasm === undefined), {
    message: 'must have exactly one of bundle and wasm',
    path: ['bundle'],
  });
export type DeployMessage = z.infer<typeof deploySchema>;

export const deployedSchema = z.object({
  type: z.literal('deployed'),
  guestId: id,
});
export type DeployedMessage = z.infer<typeof deployedSchema>;

/** What a host says when it could not do something to a guest. */
const guestFailure = {
  guestId: id,
  code: z.string().min(1).max(MESSAGE_LIMITS.code),
  message: z.string().max(MESSAGE_LIMITS.text),
};

export const deployFailedSchema = z.object({ type: z.literal('deployFailed'), ...guestFailure });
export type DeployFailedMessage = z.infer<typeof deployFailedSchema>;

/** Proxy -> controller: stop a guest. */
export const stopSchema = z.object({
  type: z.literal('stop'),
  guestId: id,
});
export type StopMessage = z.infer<typeof stopSchema>;

/** Controller -> proxy: a guest ended. `reason` matches the guest's ExitReason. */
export const guestExitedSchema = z.object({
  type: z.literal('guestExited'),
  guestId: id,
  code: z.int().min(-2_147_483_648).max(2_147_483_647),
  reason: z.enum(['exit', 'uncaught', 'memory-limit', 'cpu-budget', 'killed', 'internal']),
  message: z.string().max(MESSAGE_LIMITS.text).optional(),
});
export type GuestExitedMessage = z.infer<typeof guestExitedSchema>;

/** Ask for a guest's recent log records; the answer carries the same `requestId`. */
export const logsSchema = z.object({
  type: z.literal('logs'),
  requestId: u32,
  guestId: id,
  tail: z.int().min(1).max(MESSAGE_LIMITS.logRecords).optional(),
});
export type LogsMessage = z.infer<typeof logsSchema>;

export const logRecordSchema = z.object({
  /** Guest wall-clock time of the write, ms since the epoch. */
  t: z.number(),
  stream: z.enum(['out', 'err']),
  text: z.string().max(MESSAGE_LIMITS.logText),
});
export type LogRecordMessage = z.infer<typeof logRecordSchema>;

export const logsResultSchema = z.object({
  type: z.literal('logsResult'),
  requestId: u32,
  guestId: id,
  records: z.array(logRecordSchema).max(MESSAGE_LIMITS.logRecords),
});
export type LogsResultMessage = z.infer<typeof logsResultSchema>;

// ---- live migration (paper section IV-D) ----
//
// The proxy asks the source to move a guest (`migrate`, acknowledged by `migrateAck`) and tells the
// target to expect it (`migrateIn`, with the same one-time token the source presents on the peer
// connection). The target asks the proxy to commit (`migrateCommit`); the proxy's answer
// (`migrateCommitted`, to both) is the commit point. A source that cannot finish asks the proxy to
// abort (`migrateAbort`); the proxy answers `migrateAborted` (roll back) unless it already
// committed, in which case it answers `migrateCommitted` (drop the copy).

const migrationId = id;
const token = z
  .string()
  .min(32)
  .max(128)
  .regex(/^[0-9a-f]+$/, 'must be lower-case hex');
export const migrationSteps = [
  'ack',
  'connect',
  'offer',
  'precopy',
  'freeze',
  'transfer',
  'restore',
  'commit',
  'resume',
] as const;
export type MigrationStep = (typeof migrationSteps)[number];
const step = z.enum(migrationSteps);
const errorCode = z.string().min(1).max(MESSAGE_LIMITS.code);

/** Proxy -> source controller: move a guest to the target. */
export const migrateSchema = z.object({
  type: z.literal('migrate'),
  migrationId,
  guestId: id,
  token,
  target: z.object({
    hostId: z.uuid(),
    name,
    address: z.string().min(1).max(MESSAGE_LIMITS.address),
    peerPort: publicPort,
  }),
  /** Send memory while the guest runs, round by round, before freezing it. */
  precopy: z.boolean(),
  /** Each step's deadline (an ack, a peer answer), in ms. */
  stepTimeoutMs: z.int().min(10).max(600_000),
});
export type MigrateMessage = z.infer<typeof migrateSchema>;

export const migrateAckSchema = z.object({ type: z.literal('migrateAck'), migrationId });
export type MigrateAckMessage = z.infer<typeof migrateAckSchema>;

/** Proxy -> target controller: a source will offer this guest on the peer port with this token. */
export const migrateInSchema = z.object({
  type: z.literal('migrateIn'),
  migrationId,
  guestId: id,
  name,
  token,
  sourceHostId: z.uuid(),
  stepTimeoutMs: z.int().min(10).max(600_000),
});
export type MigrateInMessage = z.infer<typeof migrateInSchema>;

/** Source -> proxy: where the move is (for `roam migrate`'s progress and the event log). */
export const migrateProgressSchema = z.object({
  type: z.literal('migrateProgress'),
  migrationId,
  step,
  round: z.int().min(0).max(1000).optional(),
  bytes: count.optional(),
  pages: count.optional(),
  ms: quantity.optional(),
});
export type MigrateProgressMessage = z.infer<typeof migrateProgressSchema>;

/** Target -> proxy: it holds the complete guest, frozen; these are the streams it carries on. */
export const migrateCommitSchema = z.object({
  type: z.literal('migrateCommit'),
  migrationId,
  streams: z.array(u32).max(100_000),
});
export type MigrateCommitMessage = z.infer<typeof migrateCommitSchema>;

/** Proxy -> target and source: the switch is recorded; the target owns the guest now. */
export const migrateCommittedSchema = z.object({ type: z.literal('migrateCommitted'), migrationId });
export type MigrateCommittedMessage = z.infer<typeof migrateCommittedSchema>;

/** Source -> proxy: the move failed at `step`; may the source resume the guest? */
export const migrateAbortSchema = z.object({
  type: z.literal('migrateAbort'),
  migrationId,
  step,
  code: errorCode,
  message: z.string().max(MESSAGE_LIMITS.text),
});
export type MigrateAbortMessage = z.infer<typeof migrateAbortSchema>;

/** Proxy -> source and target: the move will never commit; the source resumes the guest. */
export const migrateAbortedSchema = z.object({
  type: z.literal('migrateAborted'),
  migrationId,
  reason: z.string().max(MESSAGE_LIMITS.text),
});
export type MigrateAbortedMessage = z.infer<typeof migrateAbortedSchema>;

/** Target -> proxy: the target gave up (image refused, sandbox failed); the source will abort. */
export const migrateFailedSchema = z.object({
  type: z.literal('migrateFailed'),
  migrationId,
  step,
  code: errorCode,
  message: z.string().max(MESSAGE_LIMITS.text),
});
export type MigrateFailedMessage = z.infer<typeof migrateFailedSchema>;

/** Source -> proxy: the move is over and the source dropped its copy; what it cost. */
export const migrateDoneSchema = z.object({
  type: z.literal('migrateDone'),
  migrationId,
  /** Freeze on the source until the target said the guest runs (an upper bound: one trip more). */
  pauseMs: quantity.nullable(),
  totalMs: quantity,
  bytesSent: count,
  precopyRounds: z.int().min(0).max(1000),
  precopyBytes: count,
  finalBytes: count,
});
export type MigrateDoneMessage = z.infer<typeof migrateDoneSchema>;

/** Controller -> proxy: this host is leaving; move its guests away first. */
export const drainSchema = z.object({
  type: z.literal('drain'),
  reason: z.string().max(MESSAGE_LIMITS.text),
});
export type DrainMessage = z.infer<typeof drainSchema>;

/** Proxy -> controller: the drain is over (guests moved, or could not be). */
export const drainedSchema = z.object({
  type: z.literal('drained'),
  moved: z.int().min(0),
  failed: z.int().min(0),
});
export type DrainedMessage = z.infer<typeof drainedSchema>;

// ---- backup images ----

/** Proxy -> controller: send an image of the guest now, on an image stream. */
export const backupSchema = z.object({ type: z.literal('backup'), guestId: id });
export type BackupMessage = z.infer<typeof backupSchema>;

/** Controller -> proxy: no image of the guest this time, and why. */
export const backupFailedSchema = z.object({ type: z.literal('backupFailed'), ...guestFailure });
export type BackupFailedMessage = z.infer<typeof backupFailedSchema>;

/**
 * Proxy -> controller: resume a guest from its backup image, which follows on an image stream (its
 * host was lost). Answered like a deploy, with `deployed` or `deployFailed`.
 */
export const restoreSchema = z.object({
  type: z.literal('restore'),
  guestId: id,
  name,
  /** When the image was taken (ms since the epoch), for the host's log. */
  takenAt: count,
});
export type RestoreMessage = z.infer<typeof restoreSchema>;

/** Everything a CONTROL frame may carry, discriminated by `type`. */
export const controlMessageSchema = z.discriminatedUnion('type', [
  reportSchema,
  leaveSchema,
  deploySchema,
  deployedSchema,
  deployFailedSchema,
  stopSchema,
  guestExitedSchema,
  logsSchema,
  logsResultSchema,
  migrateSchema,
  migrateAckSchema,
  migrateInSchema,
  migrateProgressSchema,
  migrateCommitSchema,
  migrateCommittedSchema,
  migrateAbortSchema,
  migrateAbortedSchema,
  migrateFailedSchema,
  migrateDoneSchema,
  drainSchema,
  drainedSchema,
  backupSchema,
  backupFailedSchema,
  restoreSchema,
]);
export type ControlMessage = z.infer<typeof controlMessageSchema>;
export type ControlMessageType = ControlMessage['type'];
