/**
 * WASI preview1 (`wasi_snapshot_preview1`) for WebAssembly guests, written for Roam rather than
 * taken from a shim. Why: a guest's whole system state has to travel in its image and continue
 * elsewhere, so it must be plain data we own: files are the guest's VirtualFileSystem (the one
 * JavaScript guests have), time is the VirtualClock (never backwards, frozen time not counted),
 * randomness is seeded (exact replay), sockets are VirtualNetwork streams, and any call that waits
 * must be able to unwind the guest with asyncify and be made again after a restore. The shims we
 * looked at (node:wasi, @bjorn3/browser_wasi_shim, uvwasi-based ones) keep their state in host
 * objects or the host's real file system, and block synchronously; wrapping them would have meant
 * re-implementing most of them anyway.
 *
 * Calls that may wait (poll_oneoff, fd_read, fd_write, sock_accept, sock_recv, sock_send,
 * sched_yield) follow one rule: check first, and either complete without waiting or wait before
 * any side effect. A call that waits is made again with the same arguments when the wait is over
 * (that is how asyncify rewinds), possibly in another process after a restore; `ctl.enter()`
 * gives it back what it stored (e.g. a sleep's deadline) so that it does not start over.
 */
import type { VirtualFileSystem } from '../../guest/vfs.js';
import { VfsError, type VfsStat } from '../../guest/vfs.js';
import type { VirtualClock } from '../../guest/host/clock.js';
import type { GuestLog } from '../../guest/host/log.js';
import { ERRNO, ExitSignal, WasiError, errnoOf } from './errno.js';
import type { FdTable } from './fds.js';
import { FDFLAGS, type FdEntry } from './fds.js';
import type { SeededRandom } from './random.js';
import type { NetTable } from './sockets.js';

/** What a waiting call waits for; plain data, so it can be shown by `roam guest inspect`. */
export type Wait = { kind: 'yield' } | { kind: 'io'; read: number[]; write: number[]; until: number | null };

export interface SuspendControl {
  /** First thing in a call that may wait: finishes a rewind, and returns what the call stored when it waited (else undefined). */
  enter(): { data: unknown } | undefined;
  /** Makes the guest wait; the call then returns at once, and is made again when `wait` is over. */
  suspend(wait: Wait, data?: unknown): void;
}

export interface WasiOptions {
  args: string[];
  env: Record<string, string>;
  fds: FdTable;
  files: VirtualFileSystem;
  clock: VirtualClock;
  log: GuestLog;
  random: SeededRandom;
  net: NetTable;
  ctl: SuspendControl;
  memory: () => WebAssembly.Memory;
  /** CPU time the guest has used, ms. */
  cpuMs: () => number;
}

const FILETYPE = { UNKNOWN: 0, CHARACTER_DEVICE: 2, DIRECTORY: 3, REGULAR_FILE: 4, SOCKET_STREAM: 6 } as const;
const OFLAGS = { CREAT: 1, DIRECTORY: 2, EXCL: 4, TRUNC: 8 } as const;
const RIGHTS_ALL = 0x1fffffffn;
const RIGHT_FD_READ = 1n << 1n;
const RIGHT_FD_WRITE = 1n << 6n;
const EVENTTYPE = { CLOCK: 0, FD_READ: 1, FD_WRITE: 2 } as const;
const NS_PER_MS = 1_000_000;
/** Largest single read or write the host copies at once. */
const MAX_IO = 16 * 1024 * 1024;

type Fn = (...args: Array<number | bigint>) => number | void;

function toNs(ms: number): bigint {
  return BigInt(Math.round(ms * NS_PER_MS));
}

/** Normalizes `rel` against the directory `base` (both absolute inside the guest's VFS). */
function joinGuestPath(base: string, rel: string): string {
  const parts = rel.startsWith('/') ? [] : base.split('/').filter(Boolean);
  for (const part of rel.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  return `/${parts.join('/')}`;
}

export class Wasi {
  private readonly o: WasiOptions;
  private readonly decoders = [new TextDecoder(), new TextDecoder()];

  constructor(options: WasiOptions) {
    this.o = options;
  }

  private view(): DataView {
    return new DataView(this.o.memory().buffer);
  }

  private bytes(): Uint8Array {
    return new Uint8Array(this.o.memory().buffer);
  }

  private string(ptr: number, len: number): string {
    return new TextDecoder('utf-8', { fatal: true }).decode(this.bytes().subarray(ptr, ptr + len));
  }

  private iovecs(iovs: number, count: number): Array<[number, number]> {
    const v = this.view();
    const out: Array<[number, number]> = [];
    for (let i = 0; i < count; i++) out.push([v.getUint32(iovs + i * 8, true), v.getUint32(iovs + i * 8 + 4, true)]);
    return out;
  }

  private gather(iovs: number, count: number): Uint8Array {
    const list = this.iovecs(iovs, count);
    const total = Math.min(
      MAX_IO,
      list.reduce((n, [, len]) => n + len, 0),
    );
    const out = new Uint8Array(total);
    const mem = this.bytes();
    let at = 0;
    for (const [ptr, len] of list) {
      const n = Math.min(len, total - at);
      if (ptr + n > mem.length) throw new RangeError('iovec outside memory');
      out.set(mem.subarray(ptr, ptr + n), at);
      at += n;
    }
    return out;
  }

  private scatter(iovs: number, count: number, data: Uint8Array): number {
    const mem = this.bytes();
    let at = 0;
    for (const [ptr, len] of this.iovecs(iovs, count)) {
      const n = Math.min(len, data.length - at);
      if (n <= 0) break;
      if (ptr + n > mem.length) throw new RangeError('iovec outside memory');
      mem.set(data.subarray(at, at + n), ptr);
      at += n;
    }
    return at;
  }

  private capacity(iovs: number, count: number): number {
    return Math.min(
      MAX_IO,
      this.iovecs(iovs, count).reduce((n, [, len]) => n + len, 0),
    );
  }

  /** Runs a call, turning guest-visible errors into errnos. */
  private call(fn: () => number | void): number {
    try {
      return fn() ?? ERRNO.SUCCESS;
    } catch (err) {
      return errnoOf(err);
    }
  }

  private writeStat(
    ptr: number,
    stat: {
      filetype: number;
      ino: number;
      nlink: number;
      size: number;
      atimeMs: number;
      mtimeMs: number;
      ctimeMs: number;
    },
  ): void {
    const v = this.view();
    v.setBigUint64(ptr, 0n, true);
    v.setBigUint64(ptr + 8, BigInt(stat.ino), true);
    v.setUint8(ptr + 16, stat.filetype);
    v.setBigUint64(ptr + 24, BigInt(stat.nlink), true);
    v.setBigUint64(ptr + 32, BigInt(stat.size), true);
    v.setBigUint64(ptr + 40, toNs(stat.atimeMs), true);
    v.setBigUint64(ptr + 48, toNs(stat.mtimeMs), true);
    v.setBigUint64(ptr + 56, toNs(stat.ctimeMs), true);
  }

  private vfsStat(stat: VfsStat): Parameters<Wasi['writeStat']>[1] {
    return { ...stat, filetype: stat.type === 'dir' ? FILETYPE.DIRECTORY : FILETYPE.REGULAR_FILE };
  }

  private dirPath(fd: number): string {
    const e = this.o.fds.get(fd);
    if (e.kind !== 'dir') throw new WasiError(ERRNO.NOTDIR);
    return e.path;
  }

  private out(stream: 0 | 1, bytes: Uint8Array): void {
    const text = this.decoders[stream]?.decode(bytes, { stream: true }) ?? '';
    if (text !== '') this.o.log.write({ t: this.o.clock.wall(), stream: stream === 0 ? 'out' : 'err', text });
  }

  // --- reads and writes, which may wait on sockets ---

  private read(fd: number, iovs: number, count: number, nread: number): number {
    const resumed = this.o.ctl.enter();
    return this.call(() => {
      const e = this.o.fds.get(fd);
      if (e.kind === 'stdio') {
        if (fd !== 0) throw new WasiError(ERRNO.BADF);
        this.view().setUint32(nread, 0, true);
        return;
      }
      if (e.kind === 'stream') {
        const data = this.o.net.recv(e.id, this.capacity(iovs, count));
        if (data === undefined) return this.waitIo(e, [e.id], [], resumed);
        this.view().setUint32(nread, this.scatter(iovs, count, data), true);
        return;
      }
      if (e.kind !== 'file') throw new WasiError(e.kind === 'dir' ? ERRNO.ISDIR : ERRNO.NOTCONN);
      if (!e.read) throw new WasiError(ERRNO.BADF);
      const data = this.o.files.read(e.vfsFd, this.capacity(iovs, count), e.pos);
      e.pos += data.length;
      this.view().setUint32(nread, this.scatter(iovs, count, data), true);
    });
  }

  private write(fd: number, iovs: number, count: number, nwritten: number): number {
    const resumed = this.o.ctl.enter();
    return this.call(() => {
      const e = this.o.fds.get(fd);
      const data = this.gather(iovs, count);
      if (e.kind === 'stdio') {
        if (fd === 0) throw new WasiError(ERRNO.BADF);
        this.out(fd === 1 ? 0 : 1, data);
      } else if (e.kind === 'stream') {
        const n = this.o.net.send(e.id, data);
        if (n === undefined) return this.waitIo(e, [], [e.id], resumed);
      } else if (e.kind === 'file') {
        if (!e.write) throw new WasiError(ERRNO.BADF);
        if (e.append) e.pos = this.o.files.fstat(e.vfsFd).size;
        this.o.files.write(e.vfsFd, data, e.pos);
        e.pos += data.length;
      } else {
        throw new WasiError(e.kind === 'dir' ? ERRNO.ISDIR : ERRNO.NOTCONN);
      }
      this.view().setUint32(nwritten, data.length, true);
    });
  }

  /** Waits for a socket (or returns EAGAIN on a non-blocking fd). */
  private waitIo(e: FdEntry, read: number[], write: number[], _resumed: { data: unknown } | undefined): number {
    if (e.flags & FDFLAGS.NONBLOCK) return ERRNO.AGAIN;
    this.o.ctl.suspend({ kind: 'io', read, write, until: null });
    return ERRNO.SUCCESS;
  }

  /** poll_oneoff: clocks (sleeps) and socket or file readiness. */
  private pollOneoff(inPtr: number, outPtr: number, nsubs: number, neventsPtr: number): number {
    const resumed = this.o.ctl.enter();
    return this.call(() => {
      if (nsubs === 0) throw new WasiError(ERRNO.INVAL);
      const v = this.view();
      const now = this.o.clock.mono();
      const stored = resumed?.data as { deadlines?: Array<number | null> } | undefined;
      const deadlines: Array<number | null> = [];
      const events: Array<{ userdata: bigint; error: number; type: number; nbytes: bigint }> = [];
      const read: number[] = [];
      const write: number[] = [];
      for (let i = 0; i < nsubs; i++) {
        const s = inPtr + i * 48;
        const userdata = v.getBigUint64(s, true);
        const tag = v.getUint8(s + 8);
        if (tag === EVENTTYPE.CLOCK) {
          const id = v.getUint32(s + 16, true);
          const timeout = v.getBigUint64(s + 24, true);
          const absolute = (v.getUint16(s + 40, true) & 1) === 1;
          let deadline = stored?.deadlines?.[i] ?? null;
          if (deadline === null) {
            const ms = Number(timeout) / NS_PER_MS;
            if (!absolute) deadline = now + ms;
            else deadline = id === 0 ? now + (ms - this.o.clock.wall()) : ms;
          }
          deadlines.push(deadline);
          if (now >= deadline) events.push({ userdata, error: 0, type: EVENTTYPE.CLOCK, nbytes: 0n });
          continue;
        }
        deadlines.push(null);
        const fd = v.getUint32(s + 16, true);
        const type = tag === EVENTTYPE.FD_READ ? EVENTTYPE.FD_READ : EVENTTYPE.FD_WRITE;
        let e: FdEntry;
        try {
          e = this.o.fds.get(fd);
        } catch {
          events.push({ userdata, error: ERRNO.BADF, type, nbytes: 0n });
          continue;
        }
        if (e.kind === 'stream' || e.kind === 'listener') {
          const ready = type === EVENTTYPE.FD_READ ? this.o.net.readable(e.id) : this.o.net.writable(e.id);
          if (ready) events.push({ userdata, error: 0, type, nbytes: 1n });
          else (type === EVENTTYPE.FD_READ ? read : write).push(e.id);
        } else {
          events.push({ userdata, error: 0, type, nbytes: 0n });
        }
      }
      if (events.length === 0) {
        const finite = deadlines.filter((d): d is number => d !== null);
        const until = finite.length ? Math.min(...finite) : null;
        this.o.ctl.suspend({ kind: 'io', read, write, until }, { deadlines });
        return;
      }
      events.forEach((ev, i) => {
        const p = outPtr + i * 32;
        v.setBigUint64(p, ev.userdata, true);
        v.setUint16(p + 8, ev.error, true);
        v.setUint8(p + 10, ev.type);
        v.setBigUint64(p + 16, ev.nbytes, true);
        v.setUint16(p + 24, 0, true);
      });
      v.setUint32(neventsPtr, events.length, true);
    });
  }

  private pathOpen(dirFd: number, path: string, oflags: number, rightsBase: bigint, fdflags: number): number {
    const full = joinGuestPath(this.dirPath(dirFd), path);
    const files = this.o.files;
    const exists = files.exists(full);
    if (exists && oflags & OFLAGS.CREAT && oflags & OFLAGS.EXCL) throw new WasiError(ERRNO.EXIST);
    if (exists && files.stat(full).type === 'dir') {
      if (oflags & OFLAGS.TRUNC) throw new WasiError(ERRNO.ISDIR);
      return this.o.fds.add({ kind: 'dir', path: full, preopen: null, flags: fdflags });
    }
    if (oflags & OFLAGS.DIRECTORY) throw new WasiError(exists ? ERRNO.NOTDIR : ERRNO.NOENT);
    if (!exists) {
      if (!(oflags & OFLAGS.CREAT)) throw new WasiError(ERRNO.NOENT);
      files.writeFile(full, new Uint8Array(0), 'wx');
    }
    const write = (rightsBase & RIGHT_FD_WRITE) !== 0n || (oflags & OFLAGS.TRUNC) !== 0;
    const read = (rightsBase & RIGHT_FD_READ) !== 0n || !write;
    const vfsFd = files.open(full, write ? 'r+' : 'r');
    try {
      if (oflags & OFLAGS.TRUNC) files.ftruncate(vfsFd, 0);
      return this.o.fds.add({
        kind: 'file',
        path: full,
        vfsFd,
        pos: 0,
        read,
        write,
        append: (fdflags & FDFLAGS.APPEND) !== 0,
        flags: fdflags,
      });
    } catch (err) {
      files.close(vfsFd);
      throw err;
    }
  }

  private closeFd(fd: number): void {
    const e = this.o.fds.get(fd);
    if (e.kind === 'stdio' || (e.kind === 'dir' && e.preopen !== null)) {
      // Closing stdio or a pre-open is allowed, and takes it away.
      this.o.fds.delete(fd);
      return;
    }
    this.o.fds.delete(fd);
    if (e.kind === 'file') this.o.files.close(e.vfsFd);
    else if (e.kind === 'stream' || e.kind === 'listener') this.o.net.close(e.id);
  }

  private readdir(fd: number, buf: number, len: number, cookie: bigint, usedPtr: number): void {
    const path = this.dirPath(fd);
    const names = ['.', '..', ...this.o.files.readdir(path)];
    const v = this.view();
    const mem = this.bytes();
    const enc = new TextEncoder();
    let used = 0;
    for (let i = Number(cookie); i < names.length && used < len; i++) {
      const name = names[i] ?? '';
      const full = name === '.' ? path : name === '..' ? joinGuestPath(path, '..') : joinGuestPath(path, name);
      let type: number = FILETYPE.UNKNOWN;
      let ino = 0;
      try {
        const st = this.o.files.stat(full);
        type = st.type === 'dir' ? FILETYPE.DIRECTORY : FILETYPE.REGULAR_FILE;
        ino = st.ino;
      } catch (err) {
        if (!(err instanceof VfsError)) throw err;
      }
      const nameBytes = enc.encode(name);
      const header = new Uint8Array(24);
      const hv = new DataView(header.buffer);
      hv.setBigUint64(0, BigInt(i + 1), true);
      hv.setBigUint64(8, BigInt(ino), true);
      hv.setUint32(16, nameBytes.length, true);
      hv.setUint8(20, type);
      const entry = new Uint8Array(24 + nameBytes.length);
      entry.set(header, 0);
      entry.set(nameBytes, 24);
      // A truncated last entry tells the caller to grow its buffer, as WASI specifies.
      const n = Math.min(entry.length, len - used);
      mem.set(entry.subarray(0, n), buf + used);
      used += n;
    }
    v.setUint32(usedPtr, used, true);
  }

  /** The import object for `wasi_snapshot_preview1`. Unknown calls answer ENOSYS. */
  imports(): Record<string, Fn> {
    const n = (x: number | bigint): number => Number(x);
    const fns: Record<string, Fn> = {
      args_sizes_get: (countPtr, sizePtr) => this.call(() => this.sizes(this.o.args, n(countPtr), n(sizePtr))),
      args_get: (argv, buf) => this.call(() => this.strings(this.o.args, n(argv), n(buf))),
      environ_sizes_get: (countPtr, sizePtr) => this.call(() => this.sizes(this.envList(), n(countPtr), n(sizePtr))),
      environ_get: (envp, buf) => this.call(() => this.strings(this.envList(), n(envp), n(buf))),
      clock_res_get: (_id, ptr) => this.call(() => this.view().setBigUint64(n(ptr), 1000n, true)),
      clock_time_get: (id, _precision, ptr) =>
        this.call(() => {
          const clock = n(id);
          const ms =
            clock === 0 ? this.o.clock.wall() : clock === 1 ? this.o.clock.mono() : clock <= 3 ? this.o.cpuMs() : NaN;
          if (Number.isNaN(ms)) throw new WasiError(ERRNO.INVAL);
          this.view().setBigUint64(n(ptr), toNs(ms), true);
        }),
      random_get: (ptr, len) => this.call(() => this.o.random.fill(this.bytes().subarray(n(ptr), n(ptr) + n(len)))),
      proc_exit: (code) => {
        throw new ExitSignal(n(code) >>> 0);
      },
      proc_raise: () => ERRNO.NOSYS,
      sched_yield: () => {
        if (this.o.ctl.enter() === undefined) this.o.ctl.suspend({ kind: 'yield' });
        return ERRNO.SUCCESS;
      },
      poll_oneoff: (i, o, count, nev) => this.pollOneoff(n(i), n(o), n(count), n(nev)),
      fd_read: (fd, iovs, count, nread) => this.read(n(fd), n(iovs), n(count), n(nread)),
      fd_write: (fd, iovs, count, nw) => this.write(n(fd), n(iovs), n(count), n(nw)),
      fd_pread: (fd, iovs, count, offset, nread) =>
        this.call(() => {
          const e = this.fileEntry(n(fd));
          if (!e.read) throw new WasiError(ERRNO.BADF);
          const data = this.o.files.read(e.vfsFd, this.capacity(n(iovs), n(count)), n(offset));
          this.view().setUint32(n(nread), this.scatter(n(iovs), n(count), data), true);
        }),
      fd_pwrite: (fd, iovs, count, offset, nw) =>
        this.call(() => {
          const e = this.fileEntry(n(fd));
          if (!e.write) throw new WasiError(ERRNO.BADF);
          const data = this.gather(n(iovs), n(count));
          this.o.files.write(e.vfsFd, data, n(offset));
          this.view().setUint32(n(nw), data.length, true);
        }),
      fd_seek: (fd, offset, whence, ptr) =>
        this.call(() => {
          const e = this.o.fds.get(n(fd));
          if (e.kind !== 'file') throw new WasiError(e.kind === 'dir' ? ERRNO.ISDIR : ERRNO.SPIPE);
          const base =
            n(whence) === 0 ? 0 : n(whence) === 1 ? e.pos : n(whence) === 2 ? this.o.files.fstat(e.vfsFd).size : NaN;
          const pos = base + Number(BigInt.asIntN(64, BigInt(offset)));
          if (!Number.isSafeInteger(pos) || pos < 0) throw new WasiError(ERRNO.INVAL);
          e.pos = pos;
          this.view().setBigUint64(n(ptr), BigInt(pos), true);
        }),
      fd_tell: (fd, ptr) =>
        this.call(() => {
          this.view().setBigUint64(n(ptr), BigInt(this.fileEntry(n(fd)).pos), true);
        }),
      fd_close: (fd) => this.call(() => this.closeFd(n(fd))),
      fd_sync: (fd) => this.call(() => void this.o.fds.get(n(fd))),
      fd_datasync: (fd) => this.call(() => void this.o.fds.get(n(fd))),
      fd_advise: (fd) => this.call(() => void this.o.fds.get(n(fd))),
      fd_allocate: (fd, offset, len) =>
        this.call(() => {
          const e = this.fileEntry(n(fd));
          const end = n(offset) + n(len);
          if (this.o.files.fstat(e.vfsFd).size < end) this.o.files.ftruncate(e.vfsFd, end);
        }),
      fd_fdstat_get: (fd, ptr) =>
        this.call(() => {
          const e = this.o.fds.get(n(fd));
          const v = this.view();
          const type =
            e.kind === 'stdio'
              ? FILETYPE.CHARACTER_DEVICE
              : e.kind === 'dir'
                ? FILETYPE.DIRECTORY
                : e.kind === 'file'
                  ? FILETYPE.REGULAR_FILE
                  : FILETYPE.SOCKET_STREAM;
          v.setUint8(n(ptr), type);
          v.setUint16(n(ptr) + 2, e.flags, true);
          v.setBigUint64(n(ptr) + 8, RIGHTS_ALL, true);
          v.setBigUint64(n(ptr) + 16, RIGHTS_ALL, true);
        }),
      fd_fdstat_set_flags: (fd, flags) =>
        this.call(() => {
          const e = this.o.fds.get(n(fd));
          e.flags = n(flags);
          if (e.kind === 'file') e.append = (e.flags & FDFLAGS.APPEND) !== 0;
        }),
      fd_fdstat_set_rights: (fd) => this.call(() => void this.o.fds.get(n(fd))),
      fd_filestat_get: (fd, ptr) =>
        this.call(() => {
          const e = this.o.fds.get(n(fd));
          if (e.kind === 'file') return this.writeStat(n(ptr), this.vfsStat(this.o.files.fstat(e.vfsFd)));
          if (e.kind === 'dir') return this.writeStat(n(ptr), this.vfsStat(this.o.files.stat(e.path)));
          const t = this.o.clock.wall();
          this.writeStat(n(ptr), {
            filetype: e.kind === 'stdio' ? FILETYPE.CHARACTER_DEVICE : FILETYPE.SOCKET_STREAM,
            ino: 0,
            nlink: 1,
            size: 0,
            atimeMs: t,
            mtimeMs: t,
            ctimeMs: t,
          });
        }),
      fd_filestat_set_size: (fd, size) => this.call(() => this.o.files.ftruncate(this.fileEntry(n(fd)).vfsFd, n(size))),
      fd_filestat_set_times: (fd, atim, mtim, flags) =>
        this.call(() => {
          const e = this.o.fds.get(n(fd));
          const path = e.kind === 'file' || e.kind === 'dir' ? e.path : undefined;
          if (path === undefined) throw new WasiError(ERRNO.BADF);
          this.setTimes(path, atim, mtim, n(flags));
        }),
      fd_prestat_get: (fd, ptr) =>
        this.call(() => {
          const e = this.o.fds.get(n(fd));
          if (e.kind !== 'dir' || e.preopen === null) throw new WasiError(ERRNO.BADF);
          const v = this.view();
          v.setUint8(n(ptr), 0);
          v.setUint32(n(ptr) + 4, new TextEncoder().encode(e.preopen).length, true);
        }),
      fd_prestat_dir_name: (fd, ptr, len) =>
        this.call(() => {
          const e = this.o.fds.get(n(fd));
          if (e.kind !== 'dir' || e.preopen === null) throw new WasiError(ERRNO.BADF);
          const name = new TextEncoder().encode(e.preopen);
          if (name.length > n(len)) throw new WasiError(ERRNO.NAMETOOLONG);
          this.bytes().set(name, n(ptr));
        }),
      fd_readdir: (fd, buf, len, cookie, used) =>
        this.call(() => this.readdir(n(fd), n(buf), n(len), BigInt(cookie), n(used))),
      fd_renumber: (from, to) =>
        this.call(() => {
          const entry = this.o.fds.get(n(from));
          if (this.o.fds.has(n(to))) this.closeFd(n(to));
          this.o.fds.delete(n(from));
          this.o.fds.set(n(to), entry);
        }),
      path_open: (dirFd, _dirflags, path, len, oflags, rightsBase, _rightsInh, fdflags, fdPtr) =>
        this.call(() => {
          const fd = this.pathOpen(n(dirFd), this.string(n(path), n(len)), n(oflags), BigInt(rightsBase), n(fdflags));
          this.view().setUint32(n(fdPtr), fd, true);
        }),
      path_create_directory: (fd, path, len) => this.call(() => void this.o.files.mkdir(this.path(fd, path, len))),
      path_remove_directory: (fd, path, len) => this.call(() => this.o.files.rmdir(this.path(fd, path, len))),
      path_unlink_file: (fd, path, len) =>
        this.call(() => {
          const full = this.path(fd, path, len);
          if (this.o.files.stat(full).type === 'dir') throw new WasiError(ERRNO.ISDIR);
          this.o.files.unlink(full);
        }),
      path_rename: (fd, path, len, fd2, path2, len2) =>
        this.call(() => this.o.files.rename(this.path(fd, path, len), this.path(fd2, path2, len2))),
      path_filestat_get: (fd, _flags, path, len, ptr) =>
        this.call(() => this.writeStat(n(ptr), this.vfsStat(this.o.files.stat(this.path(fd, path, len))))),
      path_filestat_set_times: (fd, _flags, path, len, atim, mtim, flags) =>
        this.call(() => this.setTimes(this.path(fd, path, len), atim, mtim, n(flags))),
      path_readlink: () => ERRNO.INVAL,
      path_symlink: () => ERRNO.NOTSUP,
      path_link: () => ERRNO.NOTSUP,
      sock_accept: (fd, flags, fdPtr) => {
        const resumed = this.o.ctl.enter();
        return this.call(() => {
          const e = this.o.fds.get(n(fd));
          if (e.kind !== 'listener') throw new WasiError(ERRNO.NOTSOCK);
          const id = this.o.net.accept(e.id);
          if (id === undefined) return this.waitIo(e, [e.id], [], resumed);
          this.view().setUint32(
            n(fdPtr),
            this.o.fds.add({ kind: 'stream', id, flags: n(flags) & FDFLAGS.NONBLOCK }),
            true,
          );
        });
      },
      sock_recv: (fd, iovs, count, _riFlags, nread, roFlags) => {
        const resumed = this.o.ctl.enter();
        return this.call(() => {
          const e = this.o.fds.get(n(fd));
          if (e.kind !== 'stream') throw new WasiError(ERRNO.NOTSOCK);
          const data = this.o.net.recv(e.id, this.capacity(n(iovs), n(count)));
          if (data === undefined) return this.waitIo(e, [e.id], [], resumed);
          this.view().setUint32(n(nread), this.scatter(n(iovs), n(count), data), true);
          this.view().setUint16(n(roFlags), 0, true);
        });
      },
      sock_send: (fd, iovs, count, _siFlags, nw) => {
        const resumed = this.o.ctl.enter();
        return this.call(() => {
          const e = this.o.fds.get(n(fd));
          if (e.kind !== 'stream') throw new WasiError(ERRNO.NOTSOCK);
          const sent = this.o.net.send(e.id, this.gather(n(iovs), n(count)));
          if (sent === undefined) return this.waitIo(e, [], [e.id], resumed);
          this.view().setUint32(n(nw), sent, true);
        });
      },
      sock_shutdown: (fd, how) =>
        this.call(() => {
          const e = this.o.fds.get(n(fd));
          if (e.kind !== 'stream') throw new WasiError(ERRNO.NOTSOCK);
          this.o.net.shutdown(e.id, n(how));
        }),
    };
    return new Proxy(fns, {
      get: (target, key) => (typeof key === 'string' && key in target ? target[key] : () => ERRNO.NOSYS),
    });
  }

  private path(fd: number | bigint, ptr: number | bigint, len: number | bigint): string {
    return joinGuestPath(this.dirPath(Number(fd)), this.string(Number(ptr), Number(len)));
  }

  private fileEntry(fd: number): Extract<FdEntry, { kind: 'file' }> {
    const e = this.o.fds.get(fd);
    if (e.kind !== 'file') throw new WasiError(e.kind === 'dir' ? ERRNO.ISDIR : ERRNO.SPIPE);
    return e;
  }

  private setTimes(path: string, atim: number | bigint, mtim: number | bigint, flags: number): void {
    const st = this.o.files.stat(path);
    const now = this.o.clock.wall();
    // fstflags: 1 atim, 2 atim_now, 4 mtim, 8 mtim_now.
    const a = flags & 2 ? now : flags & 1 ? Number(atim) / NS_PER_MS : st.atimeMs;
    const m = flags & 8 ? now : flags & 4 ? Number(mtim) / NS_PER_MS : st.mtimeMs;
    this.o.files.utimes(path, a, m);
  }

  private envList(): string[] {
    return Object.entries(this.o.env).map(([k, v]) => `${k}=${v}`);
  }

  private sizes(list: string[], countPtr: number, sizePtr: number): void {
    const v = this.view();
    const enc = new TextEncoder();
    v.setUint32(countPtr, list.length, true);
    v.setUint32(
      sizePtr,
      list.reduce((total, s) => total + enc.encode(s).length + 1, 0),
      true,
    );
  }

  private strings(list: string[], ptrs: number, buf: number): void {
    const v = this.view();
    const mem = this.bytes();
    const enc = new TextEncoder();
    let at = buf;
    list.forEach((s, i) => {
      v.setUint32(ptrs + i * 4, at, true);
      const b = enc.encode(s);
      mem.set(b, at);
      mem[at + b.length] = 0;
      at += b.length + 1;
    });
  }
}
