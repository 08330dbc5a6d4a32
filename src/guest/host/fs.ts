/**
 * The host half of the guest's `node:fs`: synchronous operations on the guest's own
 * VirtualFileSystem (which travels in its image). Errors reach the guest with Node's codes.
 */
import { GuestVisibleError, type HostValue } from '../sandbox/sandbox.js';
import { VfsError, type OpenFlags, type VfsStat, type VirtualFileSystem } from '../vfs.js';
import type { HostBinding, HostOp } from './binding.js';
import type { Deliver } from './net.js';

const OPEN_FLAGS = new Set(['r', 'r+', 'w', 'w+', 'wx', 'wx+', 'a', 'a+', 'ax', 'ax+']);

function flagOf(v: HostValue, fallback: OpenFlags): OpenFlags {
  const s = typeof v === 'string' ? v.replace('s', '') : fallback;
  return (OPEN_FLAGS.has(s) ? s : fallback) as OpenFlags;
}

function stat(s: VfsStat): string {
  return JSON.stringify(s);
}

export class FsHost implements HostBinding {
  constructor(
    private readonly vfs: VirtualFileSystem,
    _deliver: Deliver,
  ) {}

  ops(): Record<string, HostOp> {
    const v = this.vfs;
    const p = (x: HostValue): string => String(x);
    const table: Record<string, HostOp> = {
      'fs.readFile': ([path]) => v.readFile(p(path)),
      'fs.writeFile': ([path, data, flag]) => {
        const f = flag === 'a' || flag === 'ax' || flag === 'wx' ? flag : 'w';
        v.writeFile(p(path), data as Uint8Array, f);
      },
      'fs.appendFile': ([path, data]) => v.appendFile(p(path), data as Uint8Array),
      'fs.stat': ([path]) => stat(v.stat(p(path))),
      'fs.lstat': ([path]) => stat(v.lstat(p(path))),
      'fs.exists': ([path]) => v.exists(p(path)),
      'fs.readdir': ([path]) =>
        JSON.stringify(v.readdir(p(path)).map((name) => [name, v.lstat(`${p(path)}/${name}`).type])),
      'fs.mkdir': ([path, recursive, mode]) =>
        v.mkdir(p(path), { recursive: recursive === true, mode: typeof mode === 'number' ? mode : 0o777 }) ?? null,
      'fs.rmdir': ([path, recursive]) => v.rmdir(p(path), { recursive: recursive === true }),
      'fs.rm': ([path, recursive, force]) => v.rm(p(path), { recursive: recursive === true, force: force === true }),
      'fs.unlink': ([path]) => v.unlink(p(path)),
      'fs.rename': ([from, to]) => v.rename(p(from), p(to)),
      'fs.truncate': ([path, len]) => v.truncate(p(path), Number(len ?? 0)),
      'fs.copyFile': ([from, to]) => v.copyFile(p(from), p(to)),
      'fs.utimes': ([path, atime, mtime]) => v.utimes(p(path), Number(atime), Number(mtime)),
      'fs.chmod': ([path, mode]) => v.chmod(p(path), Number(mode)),
      'fs.open': ([path, flags, mode]) => v.open(p(path), flagOf(flags, 'r'), typeof mode === 'number' ? mode : 0o666),
      'fs.read': ([fd, length, position]) =>
        v.read(Number(fd), Number(length), typeof position === 'number' ? position : null),
      'fs.write': ([fd, data, position]) =>
        v.write(Number(fd), data as Uint8Array, typeof position === 'number' ? position : null),
      'fs.fstat': ([fd]) => stat(v.fstat(Number(fd))),
      'fs.ftruncate': ([fd, len]) => v.ftruncate(Number(fd), Number(len ?? 0)),
      'fs.close': ([fd]) => v.close(Number(fd)),
    };
    // Every VFS error becomes a guest-visible error with Node's shape (code, errno, syscall, path).
    for (const [name, op] of Object.entries(table)) {
      table[name] = (args) => {
        try {
          return op(args);
        } catch (err) {
          if (err instanceof VfsError) {
            throw new GuestVisibleError(err.message, {
              code: err.code,
              errno: err.errno,
              syscall: err.syscall,
              path: err.path,
              dest: err.dest,
            });
          }
          throw err;
        }
      };
    }
    return table;
  }
}
