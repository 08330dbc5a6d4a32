/** `roam guest run | resume | inspect`: one guest in the foreground, on this machine. */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { basename, extname } from 'node:path';
import { Command, Option } from 'commander';
import { RoamError, isRoamError } from '../errors.js';
import { bundleGuest } from '../guest/bundle.js';
import { EXIT } from '../guest/exit-codes.js';
import { Guest, type GuestExit, type GuestOptions } from '../guest/guest.js';
import { parseGuestState } from '../guest/state-schema.js';
import type { LogRecord } from '../guest/host/log.js';
import { decodeImageState, inspectImage } from '../guest/image/index.js';
import { describeFormat } from '../guest/image/format.js';
import { encodeGuestImage } from '../guest/template.js';
import type { SandboxLimits } from '../guest/sandbox/sandbox.js';
import { parseBytes, parseDuration } from './duration.js';
import { announceListeners, inspectWasm, resumeWasm, startWasm } from '../wasm/cli.js';

interface CommonOptions {
  checkpointAfter?: string;
  out?: string;
  memoryLimit?: string;
  cpuBudget?: string;
}

function printLog(record: LogRecord): void {
  (record.stream === 'err' ? process.stderr : process.stdout).write(record.text);
}

function limitsFrom(opts: CommonOptions): Partial<SandboxLimits> {
  const limits: Partial<SandboxLimits> = {};
  if (opts.memoryLimit) limits.memoryBytes = parseBytes(opts.memoryLimit);
  if (opts.cpuBudget) limits.cpuBudgetMs = parseDuration(opts.cpuBudget, '--cpu-budget');
  return limits;
}

function checkpointPlan(opts: CommonOptions): { afterMs: number; out: string } | undefined {
  if (opts.checkpointAfter === undefined) {
    if (opts.out) throw new RoamError('ROAM_ERR_USAGE', '--out needs --checkpoint-after DURATION');
    return undefined;
  }
  if (!opts.out) throw new RoamError('ROAM_ERR_USAGE', '--checkpoint-after needs --out IMAGE');
  return { afterMs: parseDuration(opts.checkpointAfter, '--checkpoint-after'), out: opts.out };
}

/** Writes the file whole or not at all (a reader never sees half an image). */
async function writeAtomically(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, bytes, { mode: 0o600 });
  await rename(tmp, path);
}

/** What supervise needs of a guest: JavaScript (Guest) and WebAssembly (WasmGuest) guests both have it. */
type Supervised = Pick<Guest, 'exited' | 'state' | 'checkpoint' | 'log' | 'stop'>;

/** Runs the guest until it exits, or until the planned checkpoint, and sets the exit code. */
async function supervise(guest: Supervised, plan: { afterMs: number; out: string } | undefined): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const checkpointed = new Promise<'checkpoint'>((resolve) => {
    if (!plan) return;
    timer = setTimeout(() => resolve('checkpoint'), plan.afterMs);
  });
  const outcome = await Promise.race([guest.exited, checkpointed]);
  if (timer) clearTimeout(timer);
  if (outcome === 'checkpoint' && plan && guest.state === 'running') {
    const capture = guest.checkpoint();
    guest.log.setSink(undefined);
    const bytes = await encodeGuestImage(capture.contents);
    await writeAtomically(plan.out, bytes);
    guest.stop('killed', 0);
    process.exitCode = EXIT.OK;
    return;
  }
  const exit = outcome === 'checkpoint' ? await guest.exited : outcome;
  reportExit(exit);
}

function reportExit(exit: GuestExit): void {
  process.exitCode = exit.code;
}

async function run(
  file: string,
  args: string[],
  opts: CommonOptions & { name?: string; env?: string[]; listen?: string[] },
): Promise<void> {
  const plan = checkpointPlan(opts);
  const limits = limitsFrom(opts);
  const env: Record<string, string> = {};
  for (const kv of opts.env ?? []) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new RoamError('ROAM_ERR_USAGE', `invalid --env "${kv}": use KEY=VALUE`);
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  // WebAssembly guests (src/wasm): a WASI program instead of a bundle.
  if (extname(file) === '.wasm') {
    const guest = await startWasm(file, {
      name: opts.name ?? basename(file, extname(file)),
      argv: args,
      env,
      listen: opts.listen ?? [],
      onLog: printLog,
      ...(limits.memoryBytes === undefined ? {} : { memoryBytes: limits.memoryBytes }),
    });
    announceListeners(guest);
    await supervise(guest, plan);
    return;
  }
  if (opts.listen?.length) throw new RoamError('ROAM_ERR_USAGE', '--listen is for WebAssembly guests (.wasm)');
  try {
    await readFile(file);
  } catch (err) {
    throw new RoamError('ROAM_ERR_IO', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  const { code } = await bundleGuest(file);
  const options: GuestOptions = {
    name: opts.name ?? basename(file, extname(file)),
    argv: args,
    env,
    limits,
    onLog: printLog,
  };
  const guest = await Guest.start(code, options);
  await supervise(guest, plan);
}

async function resume(imagePath: string, opts: CommonOptions): Promise<void> {
  const plan = checkpointPlan(opts);
  const bytes = await readImageFile(imagePath);
  if (inspectImage(bytes).meta.kind === 'wasm') {
    const memoryBytes = limitsFrom(opts).memoryBytes;
    const guest = await resumeWasm(bytes, { onLog: printLog, ...(memoryBytes === undefined ? {} : { memoryBytes }) });
    announceListeners(guest);
    await supervise(guest, plan);
    return;
  }
  const guest = await Guest.restoreImage(bytes, { limits: limitsFrom(opts), onLog: printLog });
  await supervise(guest, plan);
}

async function readImageFile(path: string): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new RoamError('ROAM_ERR_IO', `cannot read image ${path}: ${(err as Error).message}`, { cause: err });
  }
}

async function inspect(imagePath: string, opts: { json?: boolean }): Promise<void> {
  const bytes = await readImageFile(imagePath);
  const info = inspectImage(bytes);
  if (info.meta.kind === 'wasm') {
    process.stdout.write(await inspectWasm(imagePath, bytes, info, opts.json === true));
    return;
  }
  const contents = await decodeImageState(bytes);
  const state = parseGuestState(contents.state);
  const files = (await import('../guest/vfs.js')).VirtualFileSystem.deserialize(contents.files).usage();
  const summary = {
    ...info,
    limits: state.limits,
    clock: state.clock,
    timers: state.timers,
    sockets: state.net.sockets,
    servers: state.net.servers,
    datagramSockets: state.dgram.sockets,
    files,
    logTail: state.log.records.slice(-5).map((r) => r.text),
  };
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    return;
  }
  const mib = (n: number) => `${(n / 1048576).toFixed(2)} MiB`;
  const lines = [
    `image        ${imagePath}`,
    `format       ${describeFormat(info)}`,
    `guest        ${info.meta.name} (${info.meta.guestId}), ${info.meta.kind}`,
    `size         ${mib(info.totalBytes)} on disk`,
    info.meta.base
      ? `memory       ${mib(info.memory.byteLength)} linear memory, ${info.memory.nonZeroPages + info.memory.diffPages} of ${info.memory.totalPages} pages stored, ${info.memory.diffPages} of them as differences (the others are the runtime's, ${info.meta.base})`
      : `memory       ${mib(info.memory.byteLength)} linear memory, ${info.memory.nonZeroPages} of ${info.memory.totalPages} pages non-zero`,
    ...info.sections.map(
      (s) =>
        `  section    ${s.name.padEnd(8)} ${String(s.rawBytes).padStart(10)} bytes raw, ${String(s.storedBytes).padStart(10)} stored (${s.encoding})`,
    ),
    `limits       memory ${mib(state.limits.memoryBytes)}, CPU budget ${state.limits.cpuBudgetMs} ms per turn`,
    `timers       ${state.timers.length}${state.timers.length ? ': ' + state.timers.map((t) => `#${t.id} in ${Math.round(t.remaining)} ms${t.ref ? '' : ' (unref)'}`).join(', ') : ''}`,
    `servers      ${state.net.servers.length}${state.net.servers.map((s) => `\n  tcp        #${s.id} ${s.address ? `${s.address.address}:${s.address.port}` : '(binding)'}`).join('')}`,
    `sockets      ${state.net.sockets.length}${state.net.sockets.map((s) => `\n  tcp        #${s.id} ${s.endpoints ? `${s.endpoints.remoteAddress}:${s.endpoints.remotePort}` : '(connecting)'} in ${s.bytesIn} B, out ${s.bytesOut} B`).join('')}`,
    `udp          ${state.dgram.sockets.length}`,
    `files        ${files.files} files, ${files.dirs} directories, ${files.bytes} bytes`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

function commonOptions(cmd: Command): Command {
  return cmd
    .option('--checkpoint-after <duration>', 'checkpoint after this long (e.g. 500ms, 2s), write --out, and exit 0')
    .option('--out <image>', 'where to write the checkpoint image')
    .addOption(new Option('--memory-limit <size>', 'guest memory limit (default 256MiB)'))
    .addOption(new Option('--cpu-budget <duration>', 'longest a single guest turn may run (default 5s)'));
}

export function guestCommand(): Command {
  const guest = new Command('guest').description('run one guest on this machine, checkpoint it, resume it');
  commonOptions(
    guest
      .command('run')
      .description('bundle and run a .ts/.js/.mjs program, or run a WASI .wasm program, as a guest in the foreground')
      .argument('<file>', 'the program')
      .argument('[args...]', 'arguments for the program (after --)')
      .option('--name <name>', 'guest name (default: the file name)')
      .option(
        '--env <KEY=VALUE>',
        'an environment variable for the guest; repeat for more (it sees no others)',
        (value: string, previous: string[]) => [...previous, value],
        [] as string[],
      )
      .option(
        '--listen <[host:]port>',
        'WebAssembly guests: a pre-opened listening socket (fds from 4, listed in ROAM_LISTEN_FDS); repeat for more',
        (value: string, previous: string[]) => [...previous, value],
        [] as string[],
      ),
  ).action(
    async (file: string, args: string[], opts: CommonOptions & { name?: string; env?: string[]; listen?: string[] }) =>
      run(file, args, opts),
  );
  commonOptions(
    guest
      .command('resume')
      .description('continue a guest from a checkpoint image, exactly where it stopped')
      .argument('<image>', 'the checkpoint image'),
  ).action(async (image: string, opts: CommonOptions) => resume(image, opts));
  guest
    .command('inspect')
    .description('show what is inside a checkpoint image')
    .argument('<image>', 'the checkpoint image')
    .option('--json', 'print JSON')
    .action(async (image: string, opts: { json?: boolean }) => inspect(image, opts));
  return guest;
}

export function exitCodeFor(err: unknown): number {
  if (!isRoamError(err)) return EXIT.INTERNAL;
  switch (err.code) {
    case 'ROAM_ERR_USAGE':
      return EXIT.USAGE;
    case 'ROAM_ERR_IMAGE_TRUNCATED':
    case 'ROAM_ERR_IMAGE_CHECKSUM':
    case 'ROAM_ERR_IMAGE_VERSION':
    case 'ROAM_ERR_IMAGE_TOO_LARGE':
    case 'ROAM_ERR_IMAGE_MALFORMED':
    case 'ROAM_ERR_VFS_IMAGE':
      return EXIT.IMAGE_REFUSED;
    case 'ROAM_ERR_IO':
      return EXIT.NO_INPUT;
    case 'ROAM_ERR_BUNDLE':
    case 'ROAM_ERR_UNSUPPORTED_BUILTIN':
    case 'ROAM_ERR_WASM_MODULE':
    case 'ROAM_ERR_WASM_FEATURE':
      return EXIT.BUNDLE_FAILED;
    case 'ROAM_ERR_GUEST_MEMORY_LIMIT':
      return EXIT.MEMORY_LIMIT;
    default:
      return EXIT.INTERNAL;
  }
}
