/**
 * The guest's virtual file system: an in-memory POSIX-like tree that belongs to one guest. It
 * lives on the host side, never touches the host's real file system, and is serialized into the
 * guest's checkpoint image, so the guest's files (and its open fds, with their positions) travel
 * with it when it migrates.
 *
 * Semantics follow Linux as seen through Node's `fs`: the same error codes, errno values and
 * message shape, O_APPEND, open-but-removed files that stay readable until closed. The guest is
 * the owner of every file, so the owner permission bits are enforced (EACCES), as for a non-root
 * process. There are no symlinks or hard links, so paths are normalized lexically.
 *
 * Everything a guest can make the host hold is bounded: file bytes by `maxBytes` (ENOSPC), inodes
 * by `maxInodes` (ENOSPC), open fds by `maxFds` (EMFILE), names and paths by NAME_MAX/PATH_MAX.
 */
import { RoamError } from '../errors.js';
import { FileContent, MemoryPool } from './vfs/content.js';
import { VfsError, type VfsErrorCode } from './vfs/errors.js';
import { decodeImage, encodeImage, FIRST_FD, type ImageLimits } from './vfs/image.js';
import {
  type DirNode,
  type FileNode,
  type OpenFile,
  PERMISSION_BITS,
  S_IFDIR,
  S_IFREG,
  type VNode,
} from './vfs/nodes.js';
import { joinPath, parsePath } from './vfs/path.js';

export { VfsError, type VfsErrorCode };

export interface VfsStat {
  type: 'file' | 'dir';
  size: number;
  /** Includes the type bits: S_IFREG (0o100000) or S_IFDIR (0o040000). */
  mode: number;
  ino: number;
  nlink: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  birthtimeMs: number;
}

export interface VfsOptions {
  /** Total file bytes allowed; exceeding it fails with ENOSPC. Default 64 MiB, at most 4 GiB - 1. */
  maxBytes?: number;
  /** The guest's virtual clock, in ms since the epoch. Default Date.now. */
  now?: () => number;
  /** Files plus directories allowed (ENOSPC beyond). Default 65536. */
  maxInodes?: number;
  /** Open fds allowed (EMFILE beyond). Default 1024, Linux's usual soft limit. */
  maxFds?: number;
}

export type OpenFlags = 'r' | 'r+' | 'w' | 'w+' | 'wx' | 'wx+' | 'a' | 'a+' | 'ax' | 'ax+';

interface FlagSpec {
  read: boolean;
  write: boolean;
  create: boolean;
  exclusive: boolean;
  truncate: boolean;
  append: boolean;
}

function flagSpec(read: boolean, write: boolean, extra: Partial<FlagSpec> = {}): FlagSpec {
  return { read, write, create: false, exclusive: false, truncate: false, append: false, ...extra };
}

const OPEN_FLAGS: Record<OpenFlags, FlagSpec> = {
  r: flagSpec(true, false),
  'r+': flagSpec(true, true),
  w: flagSpec(false, true, { create: true, truncate: true }),
  'w+': flagSpec(true, true, { create: true, truncate: true }),
  wx: flagSpec(false, true, { create: true, truncate: true, exclusive: true }),
  'wx+': flagSpec(true, true, { create: true, truncate: true, exclusive: true }),
  a: flagSpec(false, true, { create: true, append: true }),
  'a+': flagSpec(true, true, { create: true, append: true }),
  ax: flagSpec(false, true, { create: true, append: true, exclusive: true }),
  'ax+': flagSpec(true, true, { create: true, append: true, exclusive: true }),
};

const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_INODES = 65536;
const DEFAULT_MAX_FDS = 1024;
/** Sizes, inode and fd numbers are u32 in the image. */
const U32_MAX = 0xffffffff;
/** Node's default umask: new files are 0o644, new directories 0o755. */
const UMASK = 0o022;
const R_OK = 0o400;
const W_OK = 0o200;
const X_OK = 0o100;
/** What stat reports as a directory's size, as ext4 does. */
const DIR_SIZE = 4096;

/** Names an operation in errors: Node's syscall name and the paths involved. */
interface Op {
  syscall: string;
  path?: string;
  dest?: string;
}

/** Where a path leads: its parent directory (none for the root), last name, and node if any. */
interface Location {
  parts: readonly string[];
  parent: DirNode | undefined;
  name: string;
  node: VNode | undefined;
  mustBeDir: boolean;
}

function fail(code: VfsErrorCode, op: Op): never {
  throw new VfsError(code, op.syscall, op.path, op.dest);
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function checkMode(mode: unknown, op: Op): number {
  if (!Number.isInteger(mode) || (mode as number) < 0 || (mode as number) > PERMISSION_BITS) {
    fail('EINVAL', op);
  }
  return mode as number;
}

function checkData(data: unknown, op: Op): Uint8Array {
  if (!(data instanceof Uint8Array)) fail('EINVAL', op);
  return data;
}

function checkLength(length: unknown, op: Op): number {
  if (!isCount(length)) fail('EINVAL', op);
  return length;
}

/** A position argument: null/undefined means "the fd's own position". */
function checkPosition(position: unknown, op: Op): number | undefined {
  if (position === null || position === undefined) return undefined;
  if (!isCount(position)) fail('EINVAL', op);
  return position;
}

function resolveLimits(options: VfsOptions): ImageLimits {
  const limit = (name: keyof ImageLimits, value: number | undefined, fallback: number, min: number): number => {
    const chosen = value ?? fallback;
    if (!Number.isSafeInteger(chosen) || chosen < min || chosen > U32_MAX) {
      throw new RoamError('ROAM_ERR_USAGE', `VFS option ${name} must be an integer from ${min} to ${U32_MAX}.`);
    }
    return chosen;
  };
  return {
    maxBytes: limit('maxBytes', options.maxBytes, DEFAULT_MAX_BYTES, 0),
    // The root and /tmp always exist.
    maxInodes: limit('maxInodes', options.maxInodes, DEFAULT_MAX_INODES, 2),
    maxFds: limit('maxFds', options.maxFds, DEFAULT_MAX_FDS, 0),
  };
}

export class VirtualFileSystem {
  private readonly limits: ImageLimits;
  private readonly now: () => number;
  private readonly pool: MemoryPool;
  private root: DirNode;
  private fds = new Map<number, OpenFile>();
  private nextFd = FIRST_FD;
  private nextIno = 1;
  /** Live inodes, counting removed ones still held open. */
  private files = 0;
  private dirs = 0;

  /** An empty file system (the root and /tmp), or with `from` the one `serialize()` wrote (see deserialize). */
  constructor(options: VfsOptions = {}, from?: { image: Uint8Array }) {
    this.limits = resolveLimits(options);
    this.now = options.now ?? ((): number => Date.now());
    this.pool = new MemoryPool(this.limits.maxBytes);
    if (from === undefined) {
      const op = { syscall: 'mkdir' };
      this.root = this.newDir(0o755, op);
      this.root.entries.set('tmp', this.newDir(0o1777, op));
      return;
    }
    const state = decodeImage(from.image, this.limits, this.pool);
    this.root = state.root;
    this.fds = state.fds;
    this.nextIno = state.nextIno;
    this.nextFd = state.nextFd;
    this.files = state.files;
    this.dirs = state.dirs;
  }

  // -------------------------------------------------------------------------------------------
  // Whole files

  readFile(path: string): Uint8Array {
    const op = { syscall: 'open', path };
    const node = this.lookup(path, op);
    if (node.kind === 'dir') fail('EISDIR', { syscall: 'read' });
    this.requirePermission(node, R_OK, op);
    node.atimeMs = this.time();
    return node.content.read(0, node.content.size);
  }

  writeFile(path: string, data: Uint8Array, flag: 'w' | 'wx' | 'a' | 'ax' = 'w'): void {
    const op = { syscall: 'open', path };
    checkData(data, op);
    if (flag !== 'w' && flag !== 'wx' && flag !== 'a' && flag !== 'ax') fail('EINVAL', op);
    // Like Node: open (creating or truncating), then write. ENOSPC leaves the file opened so.
    const node = this.openNode(path, OPEN_FLAGS[flag], 0o666, op);
    if (node.kind !== 'file') fail('EISDIR', op); // unreachable: write flags refuse directories
    this.writeAt(node, node.content.size, data, { syscall: 'write', path });
  }

  appendFile(path: string, data: Uint8Array): void {
    this.writeFile(path, data, 'a');
  }

  truncate(path: string, length = 0): void {
    const op = { syscall: 'open', path };
    checkLength(length, op);
    const node = this.lookup(path, op);
    if (node.kind === 'dir') fail('EISDIR', op);
    this.requirePermission(node, W_OK, op);
    this.resize(node, length, { syscall: 'ftruncate', path });
  }

  copyFile(from: string, to: string): void {
    const op = { syscall: 'copyfile', path: from, dest: to };
    const source = this.lookup(from, op);
    if (source.kind === 'dir') fail('EISDIR', op);
    this.requirePermission(source, R_OK, op);
    const dest = this.locate(to, op);
    const target = this.existing(dest, op);
    if (target === source) return; // copying a file onto itself must not truncate it
    if (target?.kind === 'dir') fail('EISDIR', op);
    const growth = source.content.size - (target?.content.size ?? 0);
    if (!this.pool.fits(growth)) fail('ENOSPC', op);
    let copy = target;
    if (copy === undefined) {
      // Like cp: the copy starts with the source's permissions.
      copy = this.createFile(this.parentOf(dest, op), dest, source.mode, op);
    } else {
      this.requirePermission(copy, W_OK, op);
    }
    copy.content.copyFrom(source.content);
    this.modified(copy);
  }

  // -------------------------------------------------------------------------------------------
  // Metadata

  stat(path: string): VfsStat {
    return this.statOf(this.lookup(path, { syscall: 'stat', path }));
  }

  /** Same as stat: there are no symlinks. */
  lstat(path: string): VfsStat {
    return this.statOf(this.lookup(path, { syscall: 'lstat', path }));
  }

  exists(path: string): boolean {
    try {
      this.lookup(path, { syscall: 'access', path });
      return true;
    } catch (err) {
      if (err instanceof VfsError) return false;
      throw err;
    }
  }

  utimes(path: string, atimeMs: number, mtimeMs: number): void {
    const op = { syscall: 'utime', path };
    if (!Number.isFinite(atimeMs) || !Number.isFinite(mtimeMs)) fail('EINVAL', op);
    const node = this.lookup(path, op);
    node.atimeMs = atimeMs;
    node.mtimeMs = mtimeMs;
    node.ctimeMs = this.time();
  }

  chmod(path: string, mode: number): void {
    const op = { syscall: 'chmod', path };
    checkMode(mode, op);
    const node = this.lookup(path, op);
    node.mode = mode;
    node.ctimeMs = this.time();
  }

  usage(): { files: number; dirs: number; bytes: number } {
    return { files: this.files, dirs: this.dirs, bytes: this.pool.used };
  }

  // -------------------------------------------------------------------------------------------
  // Directories

  readdir(path: string): string[] {
    const op = { syscall: 'scandir', path };
    const node = this.lookup(path, op);
    if (node.kind !== 'dir') fail('ENOTDIR', op);
    this.requirePermission(node, R_OK, op);
    return [...node.entries.keys()].sort();
  }

  mkdir(path: string, options: { recursive?: boolean; mode?: number } = {}): string | undefined {
    const op = { syscall: 'mkdir', path };
    const mode = checkMode(options.mode ?? 0o777, op) & ~UMASK;
    if (options.recursive !== true) {
      const location = this.locate(path, op);
      if (location.node !== undefined) fail('EEXIST', op);
      this.makeDir(this.parentOf(location, op), location.name, mode, op);
      return undefined;
    }

    // Find the deepest existing ancestor, then create everything below it at once.
    const { parts } = parsePath(path, op.syscall);
    let node: VNode = this.root;
    let depth = 0;
    for (const part of parts) {
      if (node.kind !== 'dir') fail('ENOTDIR', op);
      this.requirePermission(node, X_OK, op);
      const child = node.entries.get(part);
      if (child === undefined) break;
      node = child;
      depth++;
    }
    if (depth === parts.length) {
      if (node.kind !== 'dir') fail('EEXIST', op);
      return undefined;
    }
    if (node.kind !== 'dir') fail('ENOTDIR', op);
    // Check the inode budget first, so that a failure leaves no half-made chain behind. Only the
    // existing parent's permissions matter: the directories below it are ours, just made.
    if (this.files + this.dirs + (parts.length - depth) > this.limits.maxInodes) fail('ENOSPC', op);
    this.requirePermission(node, W_OK | X_OK, op);
    const first = joinPath(parts.slice(0, depth + 1));
    for (const name of parts.slice(depth)) node = this.makeDir(node, name, mode, op);
    return first;
  }

  rmdir(path: string, options: { recursive?: boolean } = {}): void {
    const op = { syscall: 'rmdir', path };
    const location = this.locate(path, op);
    const node = location.node ?? fail('ENOENT', op);
    if (node.kind !== 'dir') fail('ENOTDIR', op);
    if (location.parent === undefined) fail('EBUSY', op);
    if (options.recursive !== true && node.entries.size > 0) fail('ENOTEMPTY', op);
    this.remove(location.parent, location.name, node, op);
  }

  /** Like fs.rmSync: `force` ignores a missing path, `recursive` is needed for directories. */
  rm(path: string, options: { recursive?: boolean; force?: boolean } = {}): void {
    const op = { syscall: 'rm', path };
    let location: Location;
    try {
      location = this.locate(path, op);
    } catch (err) {
      if (options.force === true && err instanceof VfsError && err.code === 'ENOENT') return;
      throw err;
    }
    const node = this.existing(location, op);
    if (node === undefined) {
      if (options.force === true) return;
      fail('ENOENT', op);
    }
    if (location.parent === undefined) fail('EBUSY', op);
    if (node.kind === 'dir' && options.recursive !== true) fail('EISDIR', op);
    this.remove(location.parent, location.name, node, op);
  }

  unlink(path: string): void {
    const op = { syscall: 'unlink', path };
    const location = this.locate(path, op);
    const node = this.existing(location, op) ?? fail('ENOENT', op);
    if (node.kind === 'dir' || location.parent === undefined) fail('EISDIR', op);
    this.remove(location.parent, location.name, node, op);
  }

  /** rename(2): replaces an existing file, or an empty directory with a directory. */
  rename(from: string, to: string): void {
    const op = { syscall: 'rename', path: from, dest: to };
    const source = this.locate(from, op);
    const node = this.existing(source, op) ?? fail('ENOENT', op);
    const dest = this.locate(to, op);
    if (dest.mustBeDir && node.kind !== 'dir') fail('ENOTDIR', op);
    const target = this.existing(dest, op);
    if (source.parent === undefined || dest.parent === undefined) fail('EBUSY', op);
    if (target === node) return; // POSIX: renaming a file to itself does nothing
    if (node.kind === 'dir' && isWithin(dest.parts, source.parts)) fail('EINVAL', op);
    if (target !== undefined) {
      if (node.kind === 'dir' && target.kind !== 'dir') fail('ENOTDIR', op);
      if (node.kind !== 'dir' && target.kind === 'dir') fail('EISDIR', op);
      if (target.kind === 'dir' && target.entries.size > 0) fail('ENOTEMPTY', op);
    }
    this.requirePermission(source.parent, W_OK | X_OK, op);
    this.requirePermission(dest.parent, W_OK | X_OK, op);

    if (target !== undefined) this.remove(dest.parent, dest.name, target, op);
    source.parent.entries.delete(source.name);
    dest.parent.entries.set(dest.name, node);
    this.modified(source.parent);
    this.modified(dest.parent);
    node.ctimeMs = this.time();
  }

  // -------------------------------------------------------------------------------------------
  // File descriptors

  open(path: string, flags: OpenFlags = 'r', mode = 0o666): number {
    const op = { syscall: 'open', path };
    if (!Object.hasOwn(OPEN_FLAGS, flags)) fail('EINVAL', op);
    const spec = OPEN_FLAGS[flags];
    checkMode(mode, op);
    // nextFd itself must stay a u32 for the image.
    if (this.fds.size >= this.limits.maxFds || this.nextFd >= U32_MAX) fail('EMFILE', op);
    const node = this.openNode(path, spec, mode, op);
    const fd = this.nextFd++;
    this.fds.set(fd, {
      node,
      readable: spec.read,
      writable: spec.write,
      append: spec.append,
      position: 0,
    });
    node.openCount++;
    return fd;
  }

  read(fd: number, length: number, position?: number | null): Uint8Array {
    const op = { syscall: 'read' };
    const file = this.fileOf(fd, op);
    if (!file.readable) fail('EBADF', op);
    checkLength(length, op);
    const at = checkPosition(position, op);
    const { node } = file;
    if (node.kind === 'dir') fail('EISDIR', op);
    const start = at ?? file.position;
    const data = node.content.read(start, length);
    if (at === undefined) file.position = start + data.length;
    node.atimeMs = this.time();
    return data;
  }

  write(fd: number, data: Uint8Array, position?: number | null): number {
    const op = { syscall: 'write' };
    const file = this.fileOf(fd, op);
    if (!file.writable) fail('EBADF', op);
    checkData(data, op);
    const at = checkPosition(position, op);
    const { node } = file;
    if (node.kind === 'dir') fail('EISDIR', op); // unreachable: directories open read-only
    // O_APPEND wins over an explicit position, as on Linux (see pwrite(2) BUGS).
    const start = file.append ? node.content.size : (at ?? file.position);
    this.writeAt(node, start, data, op);
    if (at === undefined) file.position = start + data.length;
    return data.length;
  }

  fstat(fd: number): VfsStat {
    return this.statOf(this.fileOf(fd, { syscall: 'fstat' }).node);
  }

  ftruncate(fd: number, length = 0): void {
    const op = { syscall: 'ftruncate' };
    const file = this.fileOf(fd, op);
    checkLength(length, op);
    // Linux answers EINVAL, not EBADF, for an fd that is not open for writing.
    if (!file.writable || file.node.kind !== 'file') fail('EINVAL', op);
    this.resize(file.node, length, op);
  }

  close(fd: number): void {
    const file = this.fileOf(fd, { syscall: 'close' });
    this.fds.delete(fd);
    file.node.openCount--;
    if (!file.node.linked && file.node.openCount === 0) this.dispose(file.node);
  }

  openFds(): number[] {
    return [...this.fds.keys()].sort((a, b) => a - b);
  }

  // -------------------------------------------------------------------------------------------
  // Images

  serialize(): Uint8Array {
    return encodeImage({
      root: this.root,
      fds: this.fds,
      nextIno: this.nextIno,
      nextFd: this.nextFd,
      files: this.files,
      dirs: this.dirs,
    });
  }

  /** Restores a file system from serialize()'s bytes; throws RoamError('ROAM_ERR_VFS_IMAGE'). */
  static deserialize(bytes: Uint8Array, options?: VfsOptions): VirtualFileSystem {
    return new VirtualFileSystem(options, { image: bytes });
  }

  // -------------------------------------------------------------------------------------------
  // Internals: lookup

  /** The node at `path`; search permission is needed on every directory passed through. */
  private lookup(path: string, op: Op): VNode {
    const { parts, mustBeDir } = parsePath(path, op.syscall);
    let node: VNode = this.root;
    for (const part of parts) {
      if (node.kind !== 'dir') fail('ENOTDIR', op);
      this.requirePermission(node, X_OK, op);
      node = node.entries.get(part) ?? fail('ENOENT', op);
    }
    if (mustBeDir && node.kind !== 'dir') fail('ENOTDIR', op);
    return node;
  }

  /** Resolves everything but the last component, which may or may not exist. */
  private locate(path: string, op: Op): Location {
    const { parts, mustBeDir } = parsePath(path, op.syscall);
    const name = parts.at(-1);
    if (name === undefined) return { parts, parent: undefined, name: '', node: this.root, mustBeDir };
    let parent: VNode = this.root;
    for (const part of parts.slice(0, -1)) {
      if (parent.kind !== 'dir') fail('ENOTDIR', op);
      this.requirePermission(parent, X_OK, op);
      parent = parent.entries.get(part) ?? fail('ENOENT', op);
    }
    if (parent.kind !== 'dir') fail('ENOTDIR', op);
    this.requirePermission(parent, X_OK, op);
    return { parts, parent, name, node: parent.entries.get(name), mustBeDir };
  }

  /** The node a location names, if any; 'file/' is ENOTDIR, as on Linux. */
  private existing(location: Location, op: Op): VNode | undefined {
    const { node } = location;
    if (node !== undefined && location.mustBeDir && node.kind !== 'dir') fail('ENOTDIR', op);
    return node;
  }

  /** The directory a new entry goes into, checking it may be written. */
  private parentOf(location: Location, op: Op): DirNode {
    const parent = location.parent ?? fail('EEXIST', op); // only the root has none, and it exists
    this.requirePermission(parent, W_OK | X_OK, op);
    return parent;
  }

  private requirePermission(node: VNode, bits: number, op: Op): void {
    if ((node.mode & bits) !== bits) fail('EACCES', op);
  }

  private fileOf(fd: number, op: Op): OpenFile {
    return this.fds.get(fd) ?? fail('EBADF', op);
  }

  // -------------------------------------------------------------------------------------------
  // Internals: changes

  private openNode(path: string, spec: FlagSpec, mode: number, op: Op): VNode {
    const location = this.locate(path, op);
    const node = this.existing(location, op);
    if (node === undefined) {
      if (!spec.create) fail('ENOENT', op);
      return this.createFile(this.parentOf(location, op), location, mode & ~UMASK, op);
    }
    if (spec.exclusive) fail('EEXIST', op);
    if (node.kind === 'dir') {
      if (spec.write) fail('EISDIR', op);
      this.requirePermission(node, R_OK, op);
      return node;
    }
    // Permissions are checked on existing files only: creating a read-only file may still write it.
    this.requirePermission(node, (spec.read ? R_OK : 0) | (spec.write ? W_OK : 0), op);
    if (spec.truncate) this.resize(node, 0, op);
    return node;
  }

  private allocateIno(op: Op): number {
    if (this.files + this.dirs >= this.limits.maxInodes || this.nextIno >= U32_MAX) fail('ENOSPC', op);
    return this.nextIno++;
  }

  private newDir(mode: number, op: Op): DirNode {
    const ino = this.allocateIno(op);
    const t = this.time();
    this.dirs++;
    const times = { atimeMs: t, mtimeMs: t, ctimeMs: t, birthtimeMs: t };
    return { kind: 'dir', ino, mode, ...times, linked: true, openCount: 0, entries: new Map() };
  }

  /** The caller has checked that `parent` may be written. */
  private makeDir(parent: DirNode, name: string, mode: number, op: Op): DirNode {
    const dir = this.newDir(mode, op);
    parent.entries.set(name, dir);
    this.modified(parent);
    return dir;
  }

  private createFile(parent: DirNode, location: Location, mode: number, op: Op): FileNode {
    if (location.mustBeDir) fail('EISDIR', op); // open("new/", O_CREAT) on Linux
    const ino = this.allocateIno(op);
    const t = this.time();
    this.files++;
    const times = { atimeMs: t, mtimeMs: t, ctimeMs: t, birthtimeMs: t };
    const content = new FileContent(this.pool);
    const file: FileNode = {
      kind: 'file',
      ino,
      mode,
      ...times,
      linked: true,
      openCount: 0,
      content,
    };
    parent.entries.set(location.name, file);
    this.modified(parent);
    return file;
  }

  private writeAt(node: FileNode, position: number, data: Uint8Array, op: Op): void {
    if (data.length === 0) return;
    const growth = Math.max(0, position + data.length - node.content.size);
    if (!this.pool.fits(growth)) fail('ENOSPC', op);
    node.content.write(position, data);
    this.modified(node);
  }

  private resize(node: FileNode, length: number, op: Op): void {
    if (!this.pool.fits(length - node.content.size)) fail('ENOSPC', op);
    node.content.truncate(length);
    this.modified(node);
  }

  /**
   * Takes `node` out of `parent` and unlinks it and everything below it. Permissions of the whole
   * subtree are checked before anything changes, so a refused rm -r removes nothing.
   */
  private remove(parent: DirNode, name: string, node: VNode, op: Op): void {
    this.requirePermission(parent, W_OK | X_OK, op);
    const subtree = collect(node);
    for (const dir of subtree) {
      if (dir.kind === 'dir' && dir.entries.size > 0) this.requirePermission(dir, W_OK | X_OK, op);
    }
    parent.entries.delete(name);
    this.modified(parent);
    const t = this.time();
    for (const gone of subtree) {
      gone.linked = false;
      gone.ctimeMs = t;
      if (gone.kind === 'dir') gone.entries.clear();
      // An open fd keeps the inode (and its bytes) until it is closed, as on Linux.
      if (gone.openCount === 0) this.dispose(gone);
    }
  }

  /** Frees an inode that is neither linked nor open. */
  private dispose(node: VNode): void {
    if (node.kind === 'file') {
      node.content.release();
      this.files--;
    } else {
      this.dirs--;
    }
  }

  /** The guest's clock; a broken clock must not put a time into the tree that no image can hold. */
  private time(): number {
    const t = this.now();
    return Number.isFinite(t) ? t : 0;
  }

  private modified(node: VNode): void {
    node.mtimeMs = node.ctimeMs = this.time();
  }

  private statOf(node: VNode): VfsStat {
    const times = {
      atimeMs: node.atimeMs,
      mtimeMs: node.mtimeMs,
      ctimeMs: node.ctimeMs,
      birthtimeMs: node.birthtimeMs,
    };
    if (node.kind === 'file') {
      const nlink = node.linked ? 1 : 0;
      const size = node.content.size;
      return { type: 'file', size, mode: S_IFREG | node.mode, ino: node.ino, nlink, ...times };
    }
    // A directory is linked from its parent and from its own '.', and from each subdirectory's '..'.
    let nlink = node.linked ? 2 : 0;
    if (node.linked) for (const child of node.entries.values()) if (child.kind === 'dir') nlink++;
    return {
      type: 'dir',
      size: DIR_SIZE,
      mode: S_IFDIR | node.mode,
      ino: node.ino,
      nlink,
      ...times,
    };
  }
}

/** `inner` lies strictly below `outer`. Paths are lexical, so comparing components suffices. */
function isWithin(inner: readonly string[], outer: readonly string[]): boolean {
  return inner.length > outer.length && outer.every((part, i) => inner[i] === part);
}

/** `node` and every node below it, without recursion (trees can be deeper than the stack). */
function collect(node: VNode): VNode[] {
  const all: VNode[] = [];
  const pending: VNode[] = [node];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    all.push(next);
    if (next.kind === 'dir') for (const child of next.entries.values()) pending.push(child);
  }
  return all;
}
