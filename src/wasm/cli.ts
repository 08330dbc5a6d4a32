/**
 * The WebAssembly side of `roam guest run | resume | inspect` (src/cli/guest.ts hands over to it
 * for a `.wasm` program or a 'wasm' image).
 */
import { readFile } from 'node:fs/promises';
import { RoamError } from '../errors.js';
import type { LogSink } from '../guest/host/log.js';
import { decodeImage, type ImageInfo } from '../guest/image/index.js';
import { describeFormat } from '../guest/image/format.js';
import { VirtualFileSystem } from '../guest/vfs.js';
import { WasmGuest } from './guest.js';
import { decodeParts, parseWasmState } from './image.js';
import { readInfo } from './instrument.js';

export interface WasmRunOptions {
  name: string;
  argv: string[];
  env: Record<string, string>;
  listen: string[];
  memoryBytes?: number;
  onLog: LogSink;
}

/** `[HOST:]PORT` as given to --listen. */
export function parseListen(spec: string): { port: number; host: string | null } {
  const m = /^(?:(.+):)?(\d{1,5})$/.exec(spec);
  const port = Number(m?.[2]);
  if (!m || port > 65535) throw new RoamError('ROAM_ERR_USAGE', `invalid --listen "${spec}": use PORT or HOST:PORT`);
  return { port, host: m[1] ?? null };
}

/** Tells where the guest's pre-opened listeners are (on stderr: stdout is the guest's). */
export function announceListeners(guest: WasmGuest): void {
  for (let i = 0; ; i++) {
    const address = guest.listenerAddress(i);
    if (!address) return;
    process.stderr.write(`roam: ${guest.name} listens on ${address.address}:${address.port}\n`);
  }
}

export async function startWasm(file: string, options: WasmRunOptions): Promise<WasmGuest> {
  let source: Uint8Array;
  try {
    source = await readFile(file);
  } catch (err) {
    throw new RoamError('ROAM_ERR_IO', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  return WasmGuest.start(source, {
    name: options.name,
    argv: options.argv,
    env: options.env,
    listen: options.listen.map(parseListen),
    onLog: options.onLog,
    ...(options.memoryBytes === undefined ? {} : { memoryBytes: options.memoryBytes }),
  });
}

export function resumeWasm(bytes: Uint8Array, options: { onLog: LogSink; memoryBytes?: number }): Promise<WasmGuest> {
  return WasmGuest.restoreImage(bytes, {
    onLog: options.onLog,
    ...(options.memoryBytes === undefined ? {} : { memoryBytes: options.memoryBytes }),
  });
}

/** What `roam guest inspect` shows of a WebAssembly guest's image. */
export async function inspectWasm(
  imagePath: string,
  bytes: Uint8Array,
  info: ImageInfo,
  json: boolean,
): Promise<string> {
  const { contents } = await decodeImage(bytes);
  const state = parseWasmState(contents.state);
  const parts = decodeParts(contents.files);
  const module = readInfo(await WebAssembly.compile(parts.module));
  const files = VirtualFileSystem.deserialize(parts.files).usage();
  const fds = state.fds.map(([fd, e]) => ({ fd, ...e }));
  const summary = {
    ...info,
    module: {
      sha256: state.module.sha256,
      source: state.module.source,
      bytes: parts.module.length,
      sourceBytes: module.sourceBytes,
      fuelInterval: module.fuelInterval,
      loops: module.loops,
      globals: module.globals.length,
    },
    args: state.args,
    entry: { export: module.entries[state.entry.index], started: state.entry.started },
    suspended: state.suspended?.wait ?? null,
    unwoundStackBytes: parts.stack.length,
    clock: state.clock,
    fds,
    listeners: state.net.listeners,
    streams: state.net.streams,
    files,
    cpuMs: state.cpuMs,
    logTail: state.log.records.slice(-5).map((r) => r.text),
  };
  if (json) return `${JSON.stringify(summary, null, 2)}\n`;
  const mib = (n: number) => `${(n / 1048576).toFixed(2)} MiB`;
  const wait = state.suspended?.wait;
  const lines = [
    `image        ${imagePath}`,
    `format       ${describeFormat(info)}`,
    `guest        ${info.meta.name} (${info.meta.guestId}), wasm`,
    `size         ${mib(info.totalBytes)} on disk`,
    `memory       ${mib(info.memory.byteLength)} linear memory, ${info.memory.nonZeroPages} of ${info.memory.totalPages} pages non-zero`,
    ...info.sections.map(
      (s) =>
        `  section    ${s.name.padEnd(8)} ${String(s.rawBytes).padStart(10)} bytes raw, ${String(s.storedBytes).padStart(10)} stored (${s.encoding})`,
    ),
    `module       ${parts.module.length} bytes instrumented (${module.sourceBytes} original, sha256 ${state.module.source.slice(0, 16)}...), ${module.loops} loops polled every ${module.fuelInterval} iterations, ${module.globals.length} mutable globals`,
    `entry        ${summary.entry.export ?? '?'}${state.entry.started ? '' : ' (not started)'}`,
    `waiting      ${wait === undefined ? '-' : wait.kind === 'yield' ? 'nothing (between two slices)' : `for sockets${wait.until === null ? '' : ' or a timeout'}`}, unwound stack ${parts.stack.length} bytes`,
    `cpu          ${state.cpuMs.toFixed(0)} ms`,
    `fds          ${fds.map((f) => `${f.fd}:${f.kind}${'path' in f ? ` ${f.path}` : ''}`).join(', ')}`,
    `listeners    ${state.net.listeners.length}${state.net.listeners.map((l) => `\n  tcp        #${l.id} ${l.address ? `${l.address.address}:${l.address.port}` : '(binding)'}`).join('')}`,
    `streams      ${state.net.streams.length}${state.net.streams.map((s) => `\n  tcp        #${s.id} ${s.endpoints ? `${s.endpoints.remoteAddress}:${s.endpoints.remotePort}` : '?'} in ${s.bytesIn} B, out ${s.bytesOut} B`).join('')}`,
    `files        ${files.files} files, ${files.dirs} directories, ${files.bytes} bytes`,
  ];
  return `${lines.join('\n')}\n`;
}
