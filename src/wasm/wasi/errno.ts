/** WASI preview1 errno values (wasi_snapshot_preview1 `errno`), and the mapping from our VFS errors. */
import { VfsError } from '../../guest/vfs.js';

export const ERRNO = {
  SUCCESS: 0,
  ACCES: 2,
  AGAIN: 6,
  BADF: 8,
  BUSY: 10,
  CONNRESET: 15,
  EXIST: 20,
  FAULT: 21,
  INVAL: 28,
  IO: 29,
  ISDIR: 31,
  MFILE: 33,
  NAMETOOLONG: 37,
  NOENT: 44,
  NOSPC: 51,
  NOSYS: 52,
  NOTCONN: 53,
  NOTDIR: 54,
  NOTEMPTY: 55,
  NOTSOCK: 57,
  NOTSUP: 58,
  OVERFLOW: 61,
  PIPE: 64,
  SPIPE: 70,
} as const;

const FROM_VFS: Record<string, number> = {
  ENOENT: ERRNO.NOENT,
  EBADF: ERRNO.BADF,
  EACCES: ERRNO.ACCES,
  EBUSY: ERRNO.BUSY,
  EEXIST: ERRNO.EXIST,
  ENOTDIR: ERRNO.NOTDIR,
  EISDIR: ERRNO.ISDIR,
  EINVAL: ERRNO.INVAL,
  EMFILE: ERRNO.MFILE,
  ENOSPC: ERRNO.NOSPC,
  ENAMETOOLONG: ERRNO.NAMETOOLONG,
  ENOTEMPTY: ERRNO.NOTEMPTY,
};

/** An errno the guest should see for a thrown error; anything that is not a guest-visible error is rethrown. */
export function errnoOf(err: unknown): number {
  if (err instanceof VfsError) return FROM_VFS[err.code] ?? ERRNO.IO;
  if (err instanceof WasiError) return err.errno;
  // A pointer or length from the guest that leads outside its memory.
  if (err instanceof RangeError) return ERRNO.FAULT;
  throw err;
}

/** Thrown inside the WASI layer to return an errno from deep in a call. */
export class WasiError extends Error {
  constructor(readonly errno: number) {
    super(`WASI errno ${errno}`);
  }
}

/** Thrown by proc_exit: unwinds out of the guest's code (the instance is finished after it). */
export class ExitSignal extends Error {
  constructor(readonly code: number) {
    super(`guest exited with ${code}`);
  }
}
