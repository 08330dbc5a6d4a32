/**
 * `node:fs` and `node:fs/promises` for guests, over the guest's own virtual file system (on the
 * host side, and in the image). The synchronous calls are the primitives; callback and promise
 * forms run them and answer on a later turn, as Node's thread pool would.
 */
import { Buffer } from 'buffer';
import path from 'path-browserify';
import { Readable, Writable } from 'readable-stream';
import { host, hostJson, toArrayBuffer } from './host.js';
import { process } from './process.js';
import { setImmediate } from './timers.js';

interface RawStat {
  type: 'file' | 'dir';
  size: number;
  mode: number;
  ino: number;
  nlink: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  birthtimeMs: number;
}

type Encoding = BufferEncoding | null | undefined;
type PathLike = string | URL | Uint8Array;

function resolve(p: PathLike): string {
  let s: string;
  if (typeof p === 'string') s = p;
  else if (p instanceof Uint8Array) s = Buffer.from(p).toString();
  else if (typeof p === 'object' && p !== null && 'pathname' in p) s = decodeURIComponent(p.pathname);
  else {
    throw Object.assign(new TypeError(`The "path" argument must be of type string. Received ${typeof p}`), {
      code: 'ERR_INVALID_ARG_TYPE',
    });
  }
  return path.resolve(process.cwd(), s);
}

function encodingOf(options: unknown): Encoding {
  if (typeof options === 'string') return options as BufferEncoding;
  if (options && typeof options === 'object' && 'encoding' in options)
    return (options as { encoding: Encoding }).encoding;
  return undefined;
}

function toBytes(data: unknown, options?: unknown): Uint8Array {
  if (typeof data === 'string') return Buffer.from(data, encodingOf(options) ?? 'utf8');
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw Object.assign(
    new TypeError('The "data" argument must be of type string or an instance of Buffer, TypedArray, or DataView'),
    {
      code: 'ERR_INVALID_ARG_TYPE',
    },
  );
}

const S_IFMT = 0o170000;

export class Stats {
  dev = 1;
  uid = 0;
  gid = 0;
  rdev = 0;
  blksize = 4096;
  mode: number;
  ino: number;
  nlink: number;
  size: number;
  blocks: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  birthtimeMs: number;
  atime: Date;
  mtime: Date;
  ctime: Date;
  birthtime: Date;
  constructor(raw: RawStat) {
    this.mode = raw.mode;
    this.ino = raw.ino;
    this.nlink = raw.nlink;
    this.size = raw.size;
    this.blocks = Math.ceil(raw.size / 512);
    this.atimeMs = raw.atimeMs;
    this.mtimeMs = raw.mtimeMs;
    this.ctimeMs = raw.ctimeMs;
    this.birthtimeMs = raw.birthtimeMs;
    this.atime = new Date(raw.atimeMs);
    this.mtime = new Date(raw.mtimeMs);
    this.ctime = new Date(raw.ctimeMs);
    this.birthtime = new Date(raw.birthtimeMs);
  }
  isFile(): boolean {
    return (this.mode & S_IFMT) === 0o100000;
  }
  isDirectory(): boolean {
    return (this.mode & S_IFMT) === 0o040000;
  }
  isSymbolicLink(): boolean {
    return false;
  }
  isBlockDevice(): boolean {
    return false;
  }
  isCharacterDevice(): boolean {
    return false;
  }
  isFIFO(): boolean {
    return false;
  }
  isSocket(): boolean {
    return false;
  }
}

export class Dirent {
  constructor(
    readonly name: string,
    private readonly type: 'file' | 'dir',
    readonly parentPath: string,
  ) {}
  get path(): string {
    return this.parentPath;
  }
  isFile(): boolean {
    return this.type === 'file';
  }
  isDirectory(): boolean {
    return this.type === 'dir';
  }
  isSymbolicLink(): boolean {
    return false;
  }
}

// --- the synchronous primitives ---

function readFileSync(file: PathLike | number, options?: unknown): Buffer | string {
  let bytes: Buffer;
  if (typeof file === 'number') {
    const chunks: Buffer[] = [];
    for (;;) {
      const chunk = Buffer.from(host('fs.read', file, 65536, null) as ArrayBuffer);
      if (chunk.length === 0) break;
      chunks.push(chunk);
    }
    bytes = Buffer.concat(chunks);
  } else bytes = Buffer.from(host('fs.readFile', resolve(file)) as ArrayBuffer);
  const enc = encodingOf(options);
  return enc ? bytes.toString(enc) : bytes;
}

function writeFileSync(file: PathLike | number, data: unknown, options?: unknown): void {
  const bytes = toBytes(data, options);
  if (typeof file === 'number') {
    host('fs.write', file, toArrayBuffer(bytes), null);
    return;
  }
  const flag = options && typeof options === 'object' ? (options as { flag?: string }).flag : undefined;
  host('fs.writeFile', resolve(file), toArrayBuffer(bytes), flag ?? 'w');
}

function appendFileSync(file: PathLike | number, data: unknown, options?: unknown): void {
  const bytes = toBytes(data, options);
  if (typeof file === 'number') host('fs.write', file, toArrayBuffer(bytes), null);
  else host('fs.appendFile', resolve(file), toArrayBuffer(bytes));
}

function statSync(p: PathLike, options?: { throwIfNoEntry?: boolean }): Stats | undefined {
  try {
    return new Stats(hostJson<RawStat>('fs.stat', resolve(p)));
  } catch (err) {
    if (options?.throwIfNoEntry === false && (err as { code?: string }).code === 'ENOENT') return undefined;
    throw err;
  }
}

function readdirSync(p: PathLike, options?: unknown): Array<string | Dirent> {
  const dir = resolve(p);
  const entries = hostJson<Array<[string, 'file' | 'dir']>>('fs.readdir', dir);
  if (options && typeof options === 'object' && (options as { withFileTypes?: boolean }).withFileTypes) {
    return entries.map(([name, type]) => new Dirent(name, type, dir));
  }
  return entries.map(([name]) => name);
}

function mkdirSync(p: PathLike, options?: unknown): string | undefined {
  const o =
    typeof options === 'number' ? { mode: options } : ((options ?? {}) as { recursive?: boolean; mode?: number });
  const first = host('fs.mkdir', resolve(p), o.recursive === true, o.mode ?? 0o777);
  return typeof first === 'string' ? first : undefined;
}

function openSync(p: PathLike, flags: string | number = 'r', mode?: number): number {
  const f = typeof flags === 'number' ? numericFlags(flags) : flags;
  return Number(host('fs.open', resolve(p), f, mode ?? 0o666));
}

function numericFlags(n: number): string {
  const acc = n & 3;
  const creat = (n & 0o100) !== 0;
  const excl = (n & 0o200) !== 0;
  const trunc = (n & 0o1000) !== 0;
  const append = (n & 0o2000) !== 0;
  if (append) return (excl ? 'ax' : 'a') + (acc === 2 ? '+' : '');
  if (creat || trunc) return (excl ? 'wx' : 'w') + (acc === 2 ? '+' : '');
  return acc === 0 ? 'r' : 'r+';
}

function readSync(fd: number, buffer: Uint8Array, ...rest: unknown[]): number {
  let offset = 0;
  let length = buffer.length;
  let position: number | null = null;
  if (rest[0] !== null && typeof rest[0] === 'object') {
    const o = rest[0] as { offset?: number; length?: number; position?: number | null };
    offset = o.offset ?? 0;
    length = o.length ?? buffer.length - offset;
    position = o.position ?? null;
  } else if (rest.length > 0) {
    offset = Number(rest[0] ?? 0);
    length = Number(rest[1] ?? buffer.length - offset);
    position = typeof rest[2] === 'number' ? rest[2] : null;
  }
  const bytes = new Uint8Array(host('fs.read', fd, length, position) as ArrayBuffer);
  buffer.set(bytes, offset);
  return bytes.length;
}

function writeSync(fd: number, data: unknown, ...rest: unknown[]): number {
  if (typeof data === 'string') {
    const position = typeof rest[0] === 'number' ? rest[0] : null;
    return Number(
      host('fs.write', fd, toArrayBuffer(Buffer.from(data, (rest[1] as BufferEncoding) ?? 'utf8')), position),
    );
  }
  const buf = toBytes(data);
  const offset = typeof rest[0] === 'number' ? rest[0] : 0;
  const length = typeof rest[1] === 'number' ? rest[1] : buf.length - offset;
  const position = typeof rest[2] === 'number' ? rest[2] : null;
  return Number(host('fs.write', fd, toArrayBuffer(buf.subarray(offset, offset + length)), position));
}

const F_OK = 0;
const sync = {
  readFileSync,
  writeFileSync,
  appendFileSync,
  existsSync: (p: PathLike) => {
    try {
      return host('fs.exists', resolve(p)) === true;
    } catch {
      return false;
    }
  },
  accessSync: (p: PathLike) => {
    host('fs.stat', resolve(p));
  },
  statSync,
  lstatSync: (p: PathLike, options?: { throwIfNoEntry?: boolean }) => statSync(p, options),
  fstatSync: (fd: number) => new Stats(hostJson<RawStat>('fs.fstat', fd)),
  readdirSync,
  mkdirSync,
  mkdtempSync: (prefix: string) => {
    const dir = `${prefix}${Math.random().toString(36).slice(2, 8)}`;
    mkdirSync(dir);
    return dir;
  },
  rmdirSync: (p: PathLike, options?: { recursive?: boolean }) => {
    host('fs.rmdir', resolve(p), options?.recursive === true);
  },
  rmSync: (p: PathLike, options?: { recursive?: boolean; force?: boolean }) => {
    host('fs.rm', resolve(p), options?.recursive === true, options?.force === true);
  },
  unlinkSync: (p: PathLike) => {
    host('fs.unlink', resolve(p));
  },
  renameSync: (from: PathLike, to: PathLike) => {
    host('fs.rename', resolve(from), resolve(to));
  },
  copyFileSync: (from: PathLike, to: PathLike) => {
    host('fs.copyFile', resolve(from), resolve(to));
  },
  truncateSync: (p: PathLike, len = 0) => {
    host('fs.truncate', resolve(p), len);
  },
  ftruncateSync: (fd: number, len = 0) => {
    host('fs.ftruncate', fd, len);
  },
  utimesSync: (p: PathLike, atime: number | Date, mtime: number | Date) => {
    const ms = (t: number | Date) => (typeof t === 'number' ? t * 1000 : t.getTime());
    host('fs.utimes', resolve(p), ms(atime), ms(mtime));
  },
  chmodSync: (p: PathLike, mode: number) => {
    host('fs.chmod', resolve(p), mode);
  },
  realpathSync: (p: PathLike) => {
    const r = resolve(p);
    host('fs.stat', r);
    return r;
  },
  openSync,
  readSync,
  writeSync,
  closeSync: (fd: number) => {
    host('fs.close', fd);
  },
  fsyncSync: () => undefined,
};

type SyncName = keyof typeof sync;
type AnyFn = (...args: unknown[]) => unknown;

/** The callback form of a synchronous call: Node answers on a later turn, never synchronously. */
function callbackify(fn: AnyFn): AnyFn {
  return (...args: unknown[]) => {
    const cb = args.pop();
    if (typeof cb !== 'function') {
      throw Object.assign(new TypeError('The "cb" argument must be of type function'), {
        code: 'ERR_INVALID_ARG_TYPE',
      });
    }
    let result: unknown;
    let error: unknown = null;
    try {
      result = fn(...args);
    } catch (err) {
      error = err;
    }
    const done = cb as (err: unknown, result?: unknown) => void;
    setImmediate(() => (error ? done(error) : done(null, result)));
  };
}

function promisify(fn: AnyFn): (...args: unknown[]) => Promise<unknown> {
  return (...args: unknown[]) =>
    new Promise((resolve, reject) => {
      setImmediate(() => {
        try {
          resolve(fn(...args));
        } catch (err) {
          reject(err);
        }
      });
    });
}

const asyncNames: Array<[string, SyncName]> = [
  ['readFile', 'readFileSync'],
  ['writeFile', 'writeFileSync'],
  ['appendFile', 'appendFileSync'],
  ['access', 'accessSync'],
  ['stat', 'statSync'],
  ['lstat', 'lstatSync'],
  ['fstat', 'fstatSync'],
  ['readdir', 'readdirSync'],
  ['mkdir', 'mkdirSync'],
  ['mkdtemp', 'mkdtempSync'],
  ['rmdir', 'rmdirSync'],
  ['rm', 'rmSync'],
  ['unlink', 'unlinkSync'],
  ['rename', 'renameSync'],
  ['copyFile', 'copyFileSync'],
  ['truncate', 'truncateSync'],
  ['ftruncate', 'ftruncateSync'],
  ['utimes', 'utimesSync'],
  ['chmod', 'chmodSync'],
  ['realpath', 'realpathSync'],
  ['open', 'openSync'],
  ['close', 'closeSync'],
  ['fsync', 'fsyncSync'],
];

const callbacks: Record<string, AnyFn> = {};
const promises: Record<string, unknown> = {};
for (const [name, syncName] of asyncNames) {
  const fn = sync[syncName] as AnyFn;
  callbacks[name] = callbackify(fn);
  promises[name] = promisify(fn);
}
callbacks.exists = (p: unknown, cb: unknown) => {
  const r = sync.existsSync(p as PathLike);
  setImmediate(() => (cb as (b: boolean) => void)(r));
};
callbacks.read = (fd: unknown, buffer: unknown, ...rest: unknown[]) => {
  const cb = rest.pop() as (err: unknown, n?: number, b?: unknown) => void;
  let n = 0;
  let error: unknown = null;
  try {
    n = readSync(fd as number, buffer as Uint8Array, ...rest);
  } catch (err) {
    error = err;
  }
  setImmediate(() => (error ? cb(error) : cb(null, n, buffer)));
};
callbacks.write = (fd: unknown, data: unknown, ...rest: unknown[]) => {
  const cb = rest.pop() as (err: unknown, n?: number, b?: unknown) => void;
  let n = 0;
  let error: unknown = null;
  try {
    n = writeSync(fd as number, data, ...rest);
  } catch (err) {
    error = err;
  }
  setImmediate(() => (error ? cb(error) : cb(null, n, data)));
};

class FileHandle {
  constructor(readonly fd: number) {}
  readFile(options?: unknown): Promise<unknown> {
    return promisify(() => readFileSync(this.fd, options))();
  }
  writeFile(data: unknown, options?: unknown): Promise<unknown> {
    return promisify(() => writeFileSync(this.fd, data, options))();
  }
  appendFile(data: unknown, options?: unknown): Promise<unknown> {
    return promisify(() => appendFileSync(this.fd, data, options))();
  }
  read(buffer: Uint8Array, offset?: number, length?: number, position?: number | null): Promise<unknown> {
    return promisify(() => ({ bytesRead: readSync(this.fd, buffer, offset, length, position), buffer }))();
  }
  write(data: unknown, ...rest: unknown[]): Promise<unknown> {
    return promisify(() => ({ bytesWritten: writeSync(this.fd, data, ...rest), buffer: data }))();
  }
  stat(): Promise<unknown> {
    return promisify(() => sync.fstatSync(this.fd))();
  }
  truncate(len = 0): Promise<unknown> {
    return promisify(() => sync.ftruncateSync(this.fd, len))();
  }
  sync(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<unknown> {
    return promisify(() => sync.closeSync(this.fd))();
  }
}
promises.open = (p: unknown, flags?: unknown, mode?: unknown) =>
  promisify(() => new FileHandle(openSync(p as PathLike, flags as string, mode as number)))();

function createReadStream(p: PathLike, options?: unknown): Readable {
  const o = (typeof options === 'string' ? { encoding: options } : (options ?? {})) as {
    encoding?: BufferEncoding;
    start?: number;
    end?: number;
    highWaterMark?: number;
  };
  let fd = -1;
  let pos = o.start ?? 0;
  const end = o.end ?? Infinity;
  const chunkSize = o.highWaterMark ?? 65536;
  const stream = new Readable({
    highWaterMark: chunkSize,
    read() {
      try {
        if (fd < 0) fd = openSync(p, 'r');
        const want = Math.min(chunkSize, end - pos + 1);
        const bytes = want > 0 ? Buffer.from(host('fs.read', fd, want, pos) as ArrayBuffer) : Buffer.alloc(0);
        pos += bytes.length;
        if (bytes.length === 0) {
          sync.closeSync(fd);
          fd = -1;
          this.push(null);
        } else this.push(bytes);
      } catch (err) {
        this.destroy(err as Error);
      }
    },
  });
  if (o.encoding) stream.setEncoding(o.encoding);
  return Object.assign(stream, { path: typeof p === 'string' ? p : resolve(p) });
}

function createWriteStream(p: PathLike, options?: unknown): Writable {
  const o = (typeof options === 'string' ? { encoding: options } : (options ?? {})) as { flags?: string };
  let fd = -1;
  const stream = new Writable({
    write(chunk: Uint8Array, _enc: string, cb: (err?: Error) => void) {
      try {
        if (fd < 0) fd = openSync(p, o.flags ?? 'w');
        writeSync(fd, chunk);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    final(cb: (err?: Error) => void) {
      try {
        if (fd < 0) fd = openSync(p, o.flags ?? 'w');
        sync.closeSync(fd);
        fd = -1;
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
  return Object.assign(stream, { path: typeof p === 'string' ? p : resolve(p) });
}

const constants = {
  F_OK,
  R_OK: 4,
  W_OK: 2,
  X_OK: 1,
  O_RDONLY: 0,
  O_WRONLY: 1,
  O_RDWR: 2,
  O_CREAT: 0o100,
  O_EXCL: 0o200,
  O_TRUNC: 0o1000,
  O_APPEND: 0o2000,
};

export const fsPromises = { ...promises, constants };
export const fsModule = {
  ...sync,
  ...callbacks,
  createReadStream,
  createWriteStream,
  Stats,
  Dirent,
  constants,
  ...constants,
  promises: fsPromises,
};
