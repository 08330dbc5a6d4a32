/**
 * The WASI file descriptor table of a WebAssembly guest. Every entry is plain data, so the table
 * travels in the image as it is: stdio, pre-opened directories, files (each backed by an fd of
 * the guest's virtual file system, which travels with it, and a position kept here so fd_seek
 * works), and sockets (ids in the NetTable).
 *
 * Layout at start: 0-2 stdio, 3 the pre-opened root directory "/", then one fd per pre-opened
 * listener (their numbers are in the environment variable ROAM_LISTEN_FDS). The root comes first
 * because wasi-libc stops looking for pre-opened directories at the first fd that is not one.
 */
import { ERRNO, WasiError } from './errno.js';

export type FdEntry =
  | { kind: 'stdio'; flags: number }
  | { kind: 'dir'; path: string; preopen: string | null; flags: number }
  | {
      kind: 'file';
      path: string;
      vfsFd: number;
      pos: number;
      read: boolean;
      write: boolean;
      append: boolean;
      flags: number;
    }
  | { kind: 'listener'; id: number; flags: number }
  | { kind: 'stream'; id: number; flags: number };

export type FdTableState = Array<[number, FdEntry]>;

export const FDFLAGS = { APPEND: 1, DSYNC: 2, NONBLOCK: 4, RSYNC: 8, SYNC: 16 } as const;
/** Most fds a guest may hold (EMFILE beyond). */
export const MAX_FDS = 1024;

export class FdTable {
  private readonly entries = new Map<number, FdEntry>();

  constructor(state?: FdTableState) {
    if (state) for (const [fd, entry] of state) this.entries.set(fd, entry);
  }

  get(fd: number): FdEntry {
    const e = this.entries.get(fd);
    if (!e) throw new WasiError(ERRNO.BADF);
    return e;
  }

  has(fd: number): boolean {
    return this.entries.has(fd);
  }

  /** The lowest free fd, as POSIX open() picks. */
  add(entry: FdEntry): number {
    if (this.entries.size >= MAX_FDS) throw new WasiError(ERRNO.MFILE);
    let fd = 0;
    while (this.entries.has(fd)) fd++;
    this.entries.set(fd, entry);
    return fd;
  }

  set(fd: number, entry: FdEntry): void {
    this.entries.set(fd, entry);
  }

  delete(fd: number): FdEntry {
    const e = this.get(fd);
    this.entries.delete(fd);
    return e;
  }

  all(): Array<[number, FdEntry]> {
    return [...this.entries.entries()].sort((a, b) => a[0] - b[0]);
  }

  capture(): FdTableState {
    return this.all().map(([fd, e]) => [fd, { ...e }]);
  }
}
