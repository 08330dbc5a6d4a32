/**
 * Errors the guest sees from its file system. They mimic Node's `fs` errors (code, negative errno,
 * syscall, path, and the same message shape) so the guest runtime can hand them to guest code
 * unchanged and guest programs written for Node keep working.
 */

/** Linux errno values (negated, as libuv reports them) and libuv's descriptions. */
const ERRORS = {
  ENOENT: [-2, 'no such file or directory'],
  EBADF: [-9, 'bad file descriptor'],
  EACCES: [-13, 'permission denied'],
  EBUSY: [-16, 'resource busy or locked'],
  EEXIST: [-17, 'file already exists'],
  ENOTDIR: [-20, 'not a directory'],
  EISDIR: [-21, 'illegal operation on a directory'],
  EINVAL: [-22, 'invalid argument'],
  EMFILE: [-24, 'too many open files'],
  ENOSPC: [-28, 'no space left on device'],
  ENAMETOOLONG: [-36, 'name too long'],
  ENOTEMPTY: [-39, 'directory not empty'],
} as const satisfies Record<string, readonly [number, string]>;

export type VfsErrorCode = keyof typeof ERRORS;

export class VfsError extends Error {
  override readonly name = 'VfsError';
  readonly code: VfsErrorCode;
  readonly errno: number;
  readonly syscall: string;
  readonly path?: string;
  readonly dest?: string;

  constructor(code: VfsErrorCode, syscall: string, path?: string, dest?: string) {
    const [errno, description] = ERRORS[code];
    let message = `${code}: ${description}, ${syscall}`;
    if (path !== undefined) message += ` '${path}'`;
    if (dest !== undefined) message += ` -> '${dest}'`;
    super(message);
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
    if (path !== undefined) this.path = path;
    if (dest !== undefined) this.dest = dest;
  }
}
