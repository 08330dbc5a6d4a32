import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { RoamError } from '../src/errors.js';
import { VirtualFileSystem, VfsError, type VfsErrorCode, type VfsOptions } from '../src/guest/vfs.js';
import { CHUNK_SIZE, FileContent, MemoryPool } from '../src/guest/vfs/content.js';
import { crc32 } from '../src/common/crc32.js';

const enc = (text: string): Uint8Array => new TextEncoder().encode(text);
const dec = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

/** A file system on a manual clock, so timestamps can be asserted exactly. */
function setup(options: VfsOptions = {}): { vfs: VirtualFileSystem; clock: { ms: number } } {
  const clock = { ms: 1_000 };
  return { vfs: new VirtualFileSystem({ now: () => clock.ms, ...options }), clock };
}

const ERRNO: Partial<Record<VfsErrorCode, number>> = {
  ENOENT: -2,
  EBADF: -9,
  EACCES: -13,
  EEXIST: -17,
  ENOTDIR: -20,
  EISDIR: -21,
  EINVAL: -22,
  ENOSPC: -28,
  ENOTEMPTY: -39,
};

function throwsVfs(fn: () => unknown, code: VfsErrorCode, props: Partial<VfsError> = {}): VfsError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof VfsError, `expected VfsError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.ok(caught.errno < 0);
  const errno = ERRNO[code];
  if (errno !== undefined) assert.equal(caught.errno, errno);
  assert.ok(caught.message.startsWith(`${code}: `), caught.message);
  for (const [key, value] of Object.entries(props)) {
    assert.equal((caught as unknown as Record<string, unknown>)[key], value, key);
  }
  return caught;
}

function throwsImage(fn: () => unknown): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof RoamError, `expected RoamError, got ${String(err)}`);
    assert.equal(err.code, 'ROAM_ERR_VFS_IMAGE');
    return true;
  });
}

/** Everything observable about a tree, for comparing two file systems. */
/**
 * Every path, stat and content, walked as a guest would. With `denied: 'record'`, a path the file
 * system's own permissions close (EACCES, as a directory without search permission does) is
 * recorded as such instead of failing the walk.
 */
function snapshot(vfs: VirtualFileSystem, options: { denied?: 'throw' | 'record' } = {}): unknown[] {
  const out: unknown[] = [];
  const pending = ['/'];
  for (let path = pending.pop(); path !== undefined; path = pending.pop()) {
    try {
      const stat = vfs.stat(path);
      if (stat.type === 'dir') {
        out.push([path, stat, vfs.readdir(path)]);
        for (const name of vfs.readdir(path)) pending.push(path === '/' ? `/${name}` : `${path}/${name}`);
      } else {
        out.push([path, stat, Array.from(readAll(vfs, path))]);
      }
    } catch (err) {
      if (options.denied !== 'record' || !(err instanceof VfsError) || err.code !== 'EACCES') throw err;
      out.push([path, 'EACCES']);
    }
  }
  return out;
}

/** Reads a whole file through an fd (which, like readFile, sets its atime). */
function readAll(vfs: VirtualFileSystem, path: string): Uint8Array {
  const fd = vfs.open(path, 'r');
  const data = vfs.read(fd, Number.MAX_SAFE_INTEGER, 0);
  vfs.close(fd);
  return data;
}

describe('paths', () => {
  it('starts with / and /tmp', () => {
    const { vfs } = setup();
    assert.deepEqual(vfs.readdir('/'), ['tmp']);
    assert.deepEqual(vfs.readdir('/tmp'), []);
    assert.equal(vfs.stat('/').type, 'dir');
    assert.deepEqual(vfs.usage(), { files: 0, dirs: 2, bytes: 0 });
  });

  it('normalizes ., .. and duplicate slashes', () => {
    const { vfs } = setup();
    vfs.writeFile('//tmp///./x', enc('1'));
    assert.equal(dec(vfs.readFile('/tmp/../tmp/x')), '1');
    assert.equal(dec(vfs.readFile('/../../tmp/x')), '1');
    assert.deepEqual(vfs.readdir('/tmp/.'), ['x']);
    assert.equal(vfs.stat('/tmp/..').ino, vfs.stat('/').ino);
  });

  it('rejects relative paths, NUL bytes and lone surrogates with EINVAL', () => {
    const { vfs } = setup();
    throwsVfs(() => vfs.readFile('tmp/x'), 'EINVAL', { path: 'tmp/x' });
    throwsVfs(() => vfs.stat(''), 'EINVAL');
    throwsVfs(() => vfs.writeFile('/tmp/a\0b', enc('')), 'EINVAL');
    throwsVfs(() => vfs.mkdir('/tmp/\ud800'), 'EINVAL');
    assert.equal(vfs.exists('relative'), false);
  });

  it('limits names to 255 bytes and paths to 4095 bytes', () => {
    const { vfs } = setup();
    vfs.writeFile(`/tmp/${'n'.repeat(255)}`, enc(''));
    throwsVfs(() => vfs.writeFile(`/tmp/${'n'.repeat(256)}`, enc('')), 'ENAMETOOLONG');
    // 86 three-byte characters are 258 UTF-8 bytes although only 86 UTF-16 units.
    throwsVfs(() => vfs.mkdir(`/tmp/${'€'.repeat(86)}`), 'ENAMETOOLONG');
    throwsVfs(() => vfs.stat('/' + 'a/'.repeat(2048)), 'ENAMETOOLONG');
  });

  it('treats a trailing slash as "must be a directory"', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/f', enc('x'));
    throwsVfs(() => vfs.stat('/tmp/f/'), 'ENOTDIR');
    throwsVfs(() => vfs.readFile('/tmp/f/'), 'ENOTDIR');
    throwsVfs(() => vfs.writeFile('/tmp/new/', enc('x')), 'EISDIR');
    assert.equal(vfs.stat('/tmp/').type, 'dir');
  });
});

describe('whole-file operations', () => {
  it('writes, reads, overwrites and appends', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/f', enc('hello'));
    assert.equal(dec(vfs.readFile('/tmp/f')), 'hello');
    vfs.writeFile('/tmp/f', enc('bye'));
    assert.equal(dec(vfs.readFile('/tmp/f')), 'bye');
    vfs.appendFile('/tmp/f', enc('!'));
    vfs.writeFile('/tmp/f', enc('?'), 'a');
    assert.equal(dec(vfs.readFile('/tmp/f')), 'bye!?');
    vfs.appendFile('/tmp/new', enc('created'));
    assert.equal(dec(vfs.readFile('/tmp/new')), 'created');
    vfs.writeFile('/tmp/empty', new Uint8Array(0));
    assert.equal(vfs.readFile('/tmp/empty').length, 0);
  });

  it('copies data in and out, so callers cannot alias the stored bytes', () => {
    const { vfs } = setup();
    const data = enc('abc');
    vfs.writeFile('/tmp/f', data);
    data[0] = 0x7a;
    const read = vfs.readFile('/tmp/f');
    read[1] = 0x7a;
    assert.equal(dec(vfs.readFile('/tmp/f')), 'abc');
  });

  it('reports errors like Node', () => {
    const { vfs } = setup();
    const err = throwsVfs(() => vfs.writeFile('/a/b', enc('x')), 'ENOENT', {
      syscall: 'open',
      path: '/a/b',
    });
    assert.equal(err.message, "ENOENT: no such file or directory, open '/a/b'");
    throwsVfs(() => vfs.readFile('/tmp/missing'), 'ENOENT');
    vfs.writeFile('/tmp/f', enc('x'));
    throwsVfs(() => vfs.writeFile('/tmp/f/g', enc('x')), 'ENOTDIR');
    throwsVfs(() => vfs.writeFile('/tmp', enc('x')), 'EISDIR');
    throwsVfs(() => vfs.writeFile('/', enc('x')), 'EISDIR');
    throwsVfs(() => vfs.readFile('/tmp'), 'EISDIR');
    throwsVfs(() => vfs.writeFile('/tmp/f', enc('y'), 'wx'), 'EEXIST');
    throwsVfs(() => vfs.writeFile('/tmp/f', enc('y'), 'ax'), 'EEXIST');
    vfs.writeFile('/tmp/g', enc('y'), 'wx');
    assert.equal(dec(vfs.readFile('/tmp/g')), 'y');
    throwsVfs(() => vfs.writeFile('/tmp/f', 'text' as unknown as Uint8Array), 'EINVAL');
    throwsVfs(() => vfs.writeFile('/tmp/f', enc('y'), 'r' as unknown as 'w'), 'EINVAL');
  });

  it('truncates and extends with zeros, also after a shrink', () => {
    const { vfs } = setup();
    const data = new Uint8Array(CHUNK_SIZE + 100).fill(7);
    vfs.writeFile('/tmp/f', data);
    vfs.truncate('/tmp/f', 10);
    assert.deepEqual(vfs.readFile('/tmp/f'), new Uint8Array(10).fill(7));
    // Bytes that were cut off must not come back when the file grows again.
    vfs.truncate('/tmp/f', CHUNK_SIZE + 50);
    const grown = vfs.readFile('/tmp/f');
    assert.equal(grown.length, CHUNK_SIZE + 50);
    assert.deepEqual(grown.subarray(0, 10), new Uint8Array(10).fill(7));
    assert.ok(grown.subarray(10).every((b) => b === 0));
    vfs.truncate('/tmp/f');
    assert.equal(vfs.stat('/tmp/f').size, 0);
    throwsVfs(() => vfs.truncate('/tmp'), 'EISDIR');
    throwsVfs(() => vfs.truncate('/tmp/none'), 'ENOENT');
    throwsVfs(() => vfs.truncate('/tmp/f', -1), 'EINVAL');
  });

  it('copies files', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/a', enc('source'));
    vfs.chmod('/tmp/a', 0o600);
    vfs.copyFile('/tmp/a', '/tmp/b');
    assert.equal(dec(vfs.readFile('/tmp/b')), 'source');
    assert.equal(vfs.stat('/tmp/b').mode, 0o100600);
    assert.notEqual(vfs.stat('/tmp/b').ino, vfs.stat('/tmp/a').ino);
    vfs.appendFile('/tmp/b', enc('+'));
    assert.equal(dec(vfs.readFile('/tmp/a')), 'source');
    vfs.writeFile('/tmp/c', enc('a much longer old content'));
    vfs.copyFile('/tmp/a', '/tmp/c');
    assert.equal(dec(vfs.readFile('/tmp/c')), 'source');
    vfs.copyFile('/tmp/a', '/tmp/a');
    assert.equal(dec(vfs.readFile('/tmp/a')), 'source');
    throwsVfs(() => vfs.copyFile('/tmp/none', '/tmp/d'), 'ENOENT', {
      path: '/tmp/none',
      dest: '/tmp/d',
    });
    throwsVfs(() => vfs.copyFile('/tmp', '/tmp/d'), 'EISDIR');
    throwsVfs(() => vfs.copyFile('/tmp/a', '/tmp'), 'EISDIR');
    throwsVfs(() => vfs.copyFile('/tmp/a', '/none/d'), 'ENOENT');
  });
});

describe('metadata', () => {
  it('stats files and directories', () => {
    const { vfs, clock } = setup();
    clock.ms = 5_000;
    vfs.writeFile('/tmp/f', enc('12345'));
    const stat = vfs.stat('/tmp/f');
    assert.equal(stat.type, 'file');
    assert.equal(stat.size, 5);
    assert.equal(stat.mode, 0o100644);
    assert.equal(stat.nlink, 1);
    assert.equal(stat.birthtimeMs, 5_000);
    assert.equal(stat.mtimeMs, 5_000);
    assert.deepEqual(vfs.lstat('/tmp/f'), stat);
    const tmp = vfs.stat('/tmp');
    assert.equal(tmp.type, 'dir');
    assert.equal(tmp.mode, 0o041777);
    assert.equal(tmp.mtimeMs, 5_000, 'creating an entry changes the directory');
    vfs.mkdir('/tmp/sub');
    assert.equal(vfs.stat('/tmp').nlink, 3);
    assert.notEqual(vfs.stat('/tmp/sub').ino, stat.ino);
    assert.equal(vfs.stat('/').mode, 0o040755);
    assert.equal(vfs.exists('/tmp/f'), true);
    assert.equal(vfs.exists('/tmp/g'), false);
    assert.equal(vfs.exists('/tmp/f/x'), false);
    throwsVfs(() => vfs.stat('/tmp/g'), 'ENOENT', { syscall: 'stat' });
  });

  it('follows the virtual clock for mtime, atime and ctime', () => {
    const { vfs, clock } = setup();
    vfs.writeFile('/tmp/f', enc('x'));
    clock.ms = 2_000;
    vfs.readFile('/tmp/f');
    assert.equal(vfs.stat('/tmp/f').atimeMs, 2_000);
    assert.equal(vfs.stat('/tmp/f').mtimeMs, 1_000);
    clock.ms = 3_000;
    vfs.appendFile('/tmp/f', enc('y'));
    assert.equal(vfs.stat('/tmp/f').mtimeMs, 3_000);
    clock.ms = 4_000;
    vfs.utimes('/tmp/f', 10, 20);
    const stat = vfs.stat('/tmp/f');
    assert.deepEqual([stat.atimeMs, stat.mtimeMs, stat.ctimeMs, stat.birthtimeMs], [10, 20, 4_000, 1_000]);
    throwsVfs(() => vfs.utimes('/tmp/f', Number.NaN, 0), 'EINVAL');
    throwsVfs(() => vfs.utimes('/tmp/none', 0, 0), 'ENOENT');
  });

  it('changes permissions and enforces the owner bits', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/f', enc('x'));
    vfs.chmod('/tmp/f', 0o444);
    assert.equal(vfs.stat('/tmp/f').mode, 0o100444);
    throwsVfs(() => vfs.writeFile('/tmp/f', enc('y')), 'EACCES');
    throwsVfs(() => vfs.open('/tmp/f', 'r+'), 'EACCES');
    throwsVfs(() => vfs.truncate('/tmp/f'), 'EACCES');
    vfs.chmod('/tmp/f', 0o200);
    throwsVfs(() => vfs.readFile('/tmp/f'), 'EACCES');
    vfs.chmod('/tmp/f', 0o644);
    vfs.mkdir('/tmp/d');
    vfs.writeFile('/tmp/d/inner', enc('z'));
    vfs.chmod('/tmp/d', 0o500); // readable and searchable, not writable
    assert.equal(dec(vfs.readFile('/tmp/d/inner')), 'z');
    throwsVfs(() => vfs.writeFile('/tmp/d/new', enc('')), 'EACCES');
    throwsVfs(() => vfs.unlink('/tmp/d/inner'), 'EACCES');
    throwsVfs(() => vfs.rm('/tmp/d', { recursive: true }), 'EACCES');
    assert.equal(vfs.exists('/tmp/d/inner'), true, 'a refused rm -r removes nothing');
    vfs.chmod('/tmp/d', 0o600); // not searchable
    throwsVfs(() => vfs.stat('/tmp/d/inner'), 'EACCES');
    vfs.chmod('/tmp/d', 0o300); // not readable
    throwsVfs(() => vfs.readdir('/tmp/d'), 'EACCES');
    throwsVfs(() => vfs.chmod('/tmp/f', 0o10000), 'EINVAL');
    throwsVfs(() => vfs.chmod('/tmp/f', 1.5), 'EINVAL');
    throwsVfs(() => vfs.chmod('/tmp/none', 0o644), 'ENOENT');
  });
});

describe('directories', () => {
  it('lists entries sorted', () => {
    const { vfs } = setup();
    for (const name of ['b', 'a', 'C', 'aa']) vfs.writeFile(`/tmp/${name}`, enc(''));
    assert.deepEqual(vfs.readdir('/tmp'), ['C', 'a', 'aa', 'b']);
    throwsVfs(() => vfs.readdir('/tmp/a'), 'ENOTDIR');
    throwsVfs(() => vfs.readdir('/none'), 'ENOENT');
  });

  it('makes directories', () => {
    const { vfs } = setup();
    assert.equal(vfs.mkdir('/d'), undefined);
    assert.equal(vfs.stat('/d').mode, 0o040755);
    throwsVfs(() => vfs.mkdir('/d'), 'EEXIST', { syscall: 'mkdir', path: '/d' });
    throwsVfs(() => vfs.mkdir('/'), 'EEXIST');
    throwsVfs(() => vfs.mkdir('/x/y'), 'ENOENT');
    vfs.mkdir('/m', { mode: 0o700 });
    assert.equal(vfs.stat('/m').mode, 0o040700);
    vfs.writeFile('/f', enc(''));
    throwsVfs(() => vfs.mkdir('/f/g'), 'ENOTDIR');
    throwsVfs(() => vfs.mkdir('/f'), 'EEXIST');
  });

  it('makes directories recursively and returns the first one made', () => {
    const { vfs } = setup();
    assert.equal(vfs.mkdir('/a/b/c', { recursive: true }), '/a');
    assert.equal(vfs.mkdir('/a/b/c/d/e', { recursive: true }), '/a/b/c/d');
    assert.equal(vfs.mkdir('/a/b', { recursive: true }), undefined);
    assert.equal(vfs.mkdir('/', { recursive: true }), undefined);
    assert.deepEqual(vfs.readdir('/a/b/c/d'), ['e']);
    vfs.writeFile('/a/f', enc(''));
    throwsVfs(() => vfs.mkdir('/a/f', { recursive: true }), 'EEXIST');
    throwsVfs(() => vfs.mkdir('/a/f/g/h', { recursive: true }), 'ENOTDIR');
    assert.equal(vfs.usage().dirs, 7);
  });

  it('removes empty directories with rmdir', () => {
    const { vfs } = setup();
    vfs.mkdir('/d/e', { recursive: true });
    throwsVfs(() => vfs.rmdir('/d'), 'ENOTEMPTY');
    vfs.rmdir('/d/e');
    vfs.rmdir('/d');
    assert.equal(vfs.exists('/d'), false);
    vfs.writeFile('/f', enc(''));
    throwsVfs(() => vfs.rmdir('/f'), 'ENOTDIR');
    throwsVfs(() => vfs.rmdir('/none'), 'ENOENT');
    throwsVfs(() => vfs.rmdir('/'), 'EBUSY');
    vfs.mkdir('/r/s/t', { recursive: true });
    vfs.writeFile('/r/s/t/file', enc('x'));
    vfs.rmdir('/r', { recursive: true });
    assert.equal(vfs.exists('/r'), false);
    assert.deepEqual(vfs.usage(), { files: 1, dirs: 2, bytes: 0 });
  });

  it('removes files and trees with rm', () => {
    const { vfs } = setup();
    vfs.mkdir('/a/b', { recursive: true });
    vfs.writeFile('/a/b/f', enc('12345'));
    vfs.writeFile('/a/g', enc('678'));
    throwsVfs(() => vfs.rm('/a'), 'EISDIR');
    vfs.rm('/a/g');
    assert.equal(vfs.usage().bytes, 5);
    vfs.rm('/a', { recursive: true });
    assert.deepEqual(vfs.usage(), { files: 0, dirs: 2, bytes: 0 });
    throwsVfs(() => vfs.rm('/a'), 'ENOENT', { syscall: 'rm' });
    vfs.rm('/a', { force: true });
    vfs.rm('/a/b/c', { force: true, recursive: true });
    throwsVfs(() => vfs.rm('/', { recursive: true, force: true }), 'EBUSY');
  });

  it('unlinks files only', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/f', enc('x'));
    vfs.unlink('/tmp/f');
    assert.equal(vfs.exists('/tmp/f'), false);
    throwsVfs(() => vfs.unlink('/tmp/f'), 'ENOENT', { syscall: 'unlink' });
    throwsVfs(() => vfs.unlink('/tmp'), 'EISDIR');
    throwsVfs(() => vfs.unlink('/'), 'EISDIR');
  });

  it('removes deep trees without recursion', () => {
    const { vfs } = setup({ maxInodes: 40_000 });
    // Build depth by moving a chain into itself repeatedly: paths stay short.
    vfs.mkdir('/deep');
    for (let i = 0; i < 30_000; i++) {
      vfs.mkdir('/x');
      vfs.rename('/deep', '/x/deep');
      vfs.rename('/x', '/deep');
    }
    assert.equal(vfs.usage().dirs, 30_003);
    const image = vfs.serialize();
    const copy = VirtualFileSystem.deserialize(image, { maxInodes: 40_000 });
    assert.deepEqual(copy.serialize(), image);
    vfs.rm('/deep', { recursive: true });
    assert.deepEqual(vfs.usage(), { files: 0, dirs: 2, bytes: 0 });
  });
});

describe('rename', () => {
  it('moves files and directories', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/a', enc('A'));
    const ino = vfs.stat('/tmp/a').ino;
    vfs.rename('/tmp/a', '/tmp/b');
    assert.equal(vfs.exists('/tmp/a'), false);
    assert.equal(vfs.stat('/tmp/b').ino, ino);
    vfs.mkdir('/d');
    vfs.rename('/tmp/b', '/d/c');
    assert.equal(dec(vfs.readFile('/d/c')), 'A');
    vfs.rename('/d', '/e');
    assert.equal(dec(vfs.readFile('/e/c')), 'A');
    vfs.rename('/e/c', '/e/c'); // to itself: nothing happens
    vfs.rename('/e/c', '/e/./c');
    assert.equal(dec(vfs.readFile('/e/c')), 'A');
  });

  it('replaces an existing file and frees its bytes', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/a', enc('new'));
    vfs.writeFile('/tmp/b', enc('old contents'));
    vfs.rename('/tmp/a', '/tmp/b');
    assert.equal(dec(vfs.readFile('/tmp/b')), 'new');
    assert.deepEqual(vfs.readdir('/tmp'), ['b']);
    assert.deepEqual(vfs.usage(), { files: 1, dirs: 2, bytes: 3 });
  });

  it('keeps a replaced file alive for its open fds', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/a', enc('new'));
    vfs.writeFile('/tmp/b', enc('old'));
    const fd = vfs.open('/tmp/b');
    vfs.rename('/tmp/a', '/tmp/b');
    assert.equal(dec(vfs.read(fd, 10)), 'old');
    assert.equal(dec(vfs.readFile('/tmp/b')), 'new');
    const image = vfs.serialize();
    assert.deepEqual(VirtualFileSystem.deserialize(image).serialize(), image);
    vfs.close(fd);
    assert.deepEqual(vfs.usage(), { files: 1, dirs: 2, bytes: 3 });
  });

  it('replaces an empty directory, but not a full one', () => {
    const { vfs } = setup();
    vfs.mkdir('/a');
    vfs.writeFile('/a/f', enc('1'));
    vfs.mkdir('/empty');
    vfs.mkdir('/full');
    vfs.writeFile('/full/g', enc('2'));
    throwsVfs(() => vfs.rename('/a', '/full'), 'ENOTEMPTY');
    vfs.rename('/a', '/empty');
    assert.deepEqual(vfs.readdir('/empty'), ['f']);
    assert.equal(vfs.usage().dirs, 4);
  });

  it('refuses impossible moves', () => {
    const { vfs } = setup();
    vfs.mkdir('/a/b', { recursive: true });
    vfs.writeFile('/f', enc(''));
    throwsVfs(() => vfs.rename('/a', '/a/b/c'), 'EINVAL', { path: '/a', dest: '/a/b/c' });
    throwsVfs(() => vfs.rename('/a', '/a/c'), 'EINVAL');
    throwsVfs(() => vfs.rename('/none', '/x'), 'ENOENT', {
      message: "ENOENT: no such file or directory, rename '/none' -> '/x'",
    });
    throwsVfs(() => vfs.rename('/f', '/none/x'), 'ENOENT');
    throwsVfs(() => vfs.rename('/a', '/f'), 'ENOTDIR');
    throwsVfs(() => vfs.rename('/f', '/a'), 'EISDIR');
    throwsVfs(() => vfs.rename('/f', '/g/'), 'ENOTDIR');
    throwsVfs(() => vfs.rename('/', '/z'), 'EBUSY');
    throwsVfs(() => vfs.rename('/a', '/'), 'EBUSY');
    // '/ab' is not inside '/a': the check compares components, not string prefixes.
    vfs.rename('/a', '/ab');
    assert.deepEqual(vfs.readdir('/ab'), ['b']);
  });
});

describe('file descriptors', () => {
  it('numbers fds from 3 and reads with a position', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/f', enc('abcdefgh'));
    const fd = vfs.open('/tmp/f');
    assert.equal(fd, 3);
    assert.equal(dec(vfs.read(fd, 3)), 'abc');
    assert.equal(dec(vfs.read(fd, 3, null)), 'def');
    assert.equal(dec(vfs.read(fd, 2, 0)), 'ab', 'an explicit position does not move the fd');
    assert.equal(dec(vfs.read(fd, 10)), 'gh', 'short read at the end');
    assert.equal(vfs.read(fd, 10).length, 0);
    assert.equal(vfs.read(fd, 5, 100).length, 0);
    const fd2 = vfs.open('/tmp/f', 'r');
    assert.equal(fd2, 4);
    assert.equal(dec(vfs.read(fd2, 1)), 'a', 'each fd has its own position');
    assert.deepEqual(vfs.openFds(), [3, 4]);
    vfs.close(fd);
    assert.deepEqual(vfs.openFds(), [4]);
    assert.equal(vfs.open('/tmp/f'), 5, 'fd numbers are not reused');
  });

  it('writes at the fd position or a given one, leaving holes as zeros', () => {
    const { vfs } = setup();
    const fd = vfs.open('/tmp/f', 'w+');
    assert.equal(vfs.write(fd, enc('hello')), 5);
    assert.equal(vfs.write(fd, enc(' you')), 4);
    assert.equal(vfs.write(fd, enc('J'), 0), 1);
    assert.equal(dec(vfs.read(fd, 100, 0)), 'Jello you');
    vfs.write(fd, enc('!'));
    assert.equal(dec(vfs.readFile('/tmp/f')), 'Jello you!', 'the positional write did not move the fd');
    vfs.write(fd, enc('Z'), 12);
    assert.deepEqual(vfs.readFile('/tmp/f'), new Uint8Array([...enc('Jello you!'), 0, 0, 0x5a]));
    assert.equal(vfs.write(fd, new Uint8Array(0), 1000), 0);
    assert.equal(vfs.fstat(fd).size, 13, 'an empty write does not extend the file');
  });

  it('opens with the documented flags', () => {
    const { vfs } = setup();
    throwsVfs(() => vfs.open('/tmp/f'), 'ENOENT', { syscall: 'open' });
    throwsVfs(() => vfs.open('/tmp/f', 'r+'), 'ENOENT');
    const w = vfs.open('/tmp/f', 'w');
    throwsVfs(() => vfs.read(w, 1), 'EBADF', { syscall: 'read' });
    vfs.write(w, enc('data'));
    throwsVfs(() => vfs.open('/tmp/f', 'wx'), 'EEXIST');
    throwsVfs(() => vfs.open('/tmp/f', 'ax+'), 'EEXIST');
    const r = vfs.open('/tmp/f', 'r');
    throwsVfs(() => vfs.write(r, enc('x')), 'EBADF', { syscall: 'write' });
    const rw = vfs.open('/tmp/f', 'r+');
    vfs.write(rw, enc('D'));
    assert.equal(dec(vfs.read(rw, 10)), 'ata');
    vfs.open('/tmp/f', 'w'); // truncates
    assert.equal(vfs.stat('/tmp/f').size, 0);
    const x = vfs.open('/tmp/g', 'wx+', 0o600);
    assert.equal(vfs.fstat(x).mode, 0o100600);
    throwsVfs(() => vfs.open('/tmp/f', 'rw' as unknown as 'r'), 'EINVAL');
    throwsVfs(() => vfs.open('/tmp/f', 'toString' as unknown as 'r'), 'EINVAL');
  });

  it('opens directories read-only', () => {
    const { vfs } = setup();
    const fd = vfs.open('/tmp');
    assert.equal(vfs.fstat(fd).type, 'dir');
    throwsVfs(() => vfs.read(fd, 1), 'EISDIR');
    throwsVfs(() => vfs.open('/tmp', 'r+'), 'EISDIR');
    throwsVfs(() => vfs.open('/tmp', 'a'), 'EISDIR');
  });

  it('refuses closed and unknown fds', () => {
    const { vfs } = setup();
    const fd = vfs.open('/tmp/f', 'w');
    vfs.close(fd);
    throwsVfs(() => vfs.close(fd), 'EBADF', { syscall: 'close' });
    throwsVfs(() => vfs.read(fd, 1), 'EBADF');
    throwsVfs(() => vfs.write(fd, enc('x')), 'EBADF');
    throwsVfs(() => vfs.fstat(99), 'EBADF');
    throwsVfs(() => vfs.ftruncate(0), 'EBADF');
  });

  it('validates lengths and positions', () => {
    const { vfs } = setup();
    const fd = vfs.open('/tmp/f', 'w+');
    throwsVfs(() => vfs.read(fd, -1), 'EINVAL');
    throwsVfs(() => vfs.read(fd, 1.5), 'EINVAL');
    throwsVfs(() => vfs.read(fd, 1, -1), 'EINVAL');
    throwsVfs(() => vfs.write(fd, enc('x'), Number.NaN), 'EINVAL');
    throwsVfs(() => vfs.ftruncate(fd, -1), 'EINVAL');
  });

  it('truncates and stats through an fd', () => {
    const { vfs } = setup();
    const fd = vfs.open('/tmp/f', 'w+');
    vfs.write(fd, enc('123456'));
    vfs.ftruncate(fd, 2);
    assert.equal(vfs.fstat(fd).size, 2);
    vfs.ftruncate(fd);
    assert.equal(vfs.fstat(fd).size, 0);
    vfs.ftruncate(fd, 3);
    assert.deepEqual(vfs.readFile('/tmp/f'), new Uint8Array(3));
    const r = vfs.open('/tmp/f');
    throwsVfs(() => vfs.ftruncate(r, 0), 'EINVAL');
  });

  it('keeps a removed file readable until its last fd closes', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/f', enc('still here'));
    const fd = vfs.open('/tmp/f', 'r+');
    vfs.unlink('/tmp/f');
    assert.equal(vfs.exists('/tmp/f'), false);
    assert.equal(vfs.fstat(fd).nlink, 0);
    assert.equal(dec(vfs.read(fd, 100)), 'still here');
    vfs.write(fd, enc('!'));
    assert.deepEqual(vfs.usage(), { files: 1, dirs: 2, bytes: 11 });
    vfs.close(fd);
    assert.deepEqual(vfs.usage(), { files: 0, dirs: 2, bytes: 0 });
  });

  it('limits the number of open fds', () => {
    const { vfs } = setup({ maxFds: 3 });
    for (let i = 0; i < 3; i++) vfs.open('/tmp', 'r');
    throwsVfs(() => vfs.open('/tmp', 'r'), 'EMFILE');
    vfs.close(3);
    assert.equal(vfs.open('/tmp', 'r'), 6);
  });
});

describe('append mode', () => {
  it('writes at the end whatever the position', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/log', enc('one'));
    const fd = vfs.open('/tmp/log', 'a');
    vfs.write(fd, enc(' two'));
    vfs.write(fd, enc(' three'), 0); // Linux ignores the position with O_APPEND
    assert.equal(dec(vfs.readFile('/tmp/log')), 'one two three');
    throwsVfs(() => vfs.read(fd, 1), 'EBADF');
  });

  it('reads from the start with a+ and appends between two fds', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/log', enc('ab'));
    const a = vfs.open('/tmp/log', 'a+');
    const b = vfs.open('/tmp/log', 'a');
    assert.equal(dec(vfs.read(a, 1)), 'a');
    vfs.write(b, enc('1'));
    vfs.write(a, enc('2'));
    vfs.write(b, enc('3'));
    assert.equal(dec(vfs.readFile('/tmp/log')), 'ab123');
    assert.equal(dec(vfs.read(a, 10)), '3', 'after an append the fd is at the old end');
  });

  it('appends in amortized O(1): allocations grow geometrically', () => {
    let grants = 0;
    class CountingPool extends MemoryPool {
      override grant(current: number, needed: number, wanted: number): number {
        grants++;
        return super.grant(current, needed, wanted);
      }
    }
    const pool = new CountingPool(1 << 30);
    const content = new FileContent(pool);
    const byte = new Uint8Array([1]);
    const total = 3 * CHUNK_SIZE + 17;
    for (let i = 0; i < total; i++) content.write(content.size, byte);
    assert.equal(content.size, total);
    // log2(64 KiB / 64) doublings for the first chunk, then one allocation per chunk.
    assert.ok(grants <= 16, `${grants} allocations for ${total} one-byte appends`);
    assert.ok(pool.allocated <= total + CHUNK_SIZE);
  });
});

describe('space limits', () => {
  it('fails with ENOSPC before exceeding maxBytes', () => {
    const { vfs } = setup({ maxBytes: 100 });
    vfs.writeFile('/tmp/a', new Uint8Array(60));
    throwsVfs(() => vfs.writeFile('/tmp/b', new Uint8Array(41)), 'ENOSPC');
    vfs.writeFile('/tmp/b', new Uint8Array(40)); // exactly full
    assert.equal(vfs.usage().bytes, 100);
    throwsVfs(() => vfs.appendFile('/tmp/a', new Uint8Array(1)), 'ENOSPC');
    throwsVfs(() => vfs.truncate('/tmp/a', 61), 'ENOSPC');
    throwsVfs(() => vfs.copyFile('/tmp/a', '/tmp/c'), 'ENOSPC');
    const fd = vfs.open('/tmp/a', 'r+');
    throwsVfs(() => vfs.write(fd, new Uint8Array(2), 59), 'ENOSPC');
    assert.equal(vfs.write(fd, new Uint8Array(2).fill(9), 58), 2, 'overwriting needs no space');
    assert.equal(vfs.stat('/tmp/a').size, 60);
    vfs.unlink('/tmp/b');
    vfs.appendFile('/tmp/a', new Uint8Array(40));
    assert.equal(vfs.usage().bytes, 100);
  });

  it('uses the whole budget however files are interleaved, and never allocates past it', () => {
    const pool = new MemoryPool(256 * 1024);
    const files = Array.from({ length: 7 }, () => new FileContent(pool));
    const piece = new Uint8Array(333).fill(1);
    for (let i = 0; pool.fits(piece.length); i++) {
      const file = files[i % files.length];
      assert.ok(file !== undefined);
      file.write(file.size, piece);
      assert.ok(pool.allocated <= pool.limit, `allocated ${pool.allocated} > ${pool.limit}`);
    }
    const first = files[0];
    assert.ok(first !== undefined);
    first.write(first.size, new Uint8Array(pool.limit - pool.used));
    assert.equal(pool.used, pool.limit);
    assert.equal(pool.allocated, pool.limit);
  });

  it('limits the number of inodes', () => {
    const { vfs } = setup({ maxInodes: 4 });
    vfs.writeFile('/tmp/a', enc(''));
    vfs.mkdir('/b');
    throwsVfs(() => vfs.writeFile('/tmp/c', enc('')), 'ENOSPC');
    throwsVfs(() => vfs.mkdir('/c'), 'ENOSPC');
    vfs.rmdir('/b');
    throwsVfs(() => vfs.mkdir('/x/y', { recursive: true }), 'ENOSPC');
    assert.equal(vfs.exists('/x'), false, 'a failed recursive mkdir leaves nothing behind');
  });

  it('refuses bad options', () => {
    assert.throws(() => new VirtualFileSystem({ maxBytes: -1 }), RoamError);
    assert.throws(() => new VirtualFileSystem({ maxBytes: 2 ** 32 }), RoamError);
    assert.throws(() => new VirtualFileSystem({ maxInodes: 1 }), RoamError);
  });
});

/** A file system with something of everything an image holds. */
function populated(): VirtualFileSystem {
  const { vfs, clock } = setup();
  vfs.mkdir('/home/user/docs', { recursive: true, mode: 0o750 });
  clock.ms = 2_500.5;
  vfs.writeFile('/home/user/docs/a.txt', enc('alpha'));
  const big = new Uint8Array(CHUNK_SIZE * 2 + 123);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
  vfs.writeFile('/home/user/big.bin', big);
  vfs.writeFile('/tmp/empty', new Uint8Array(0));
  vfs.writeFile('/tmp/\ufeffbom-ünïcødé €', enc('names in UTF-8'));
  vfs.chmod('/tmp/empty', 0o400);
  vfs.utimes('/home/user/docs/a.txt', -1_000, 1e12);
  const reader = vfs.open('/home/user/big.bin', 'r');
  vfs.read(reader, 1000);
  const appender = vfs.open('/home/user/docs/a.txt', 'a+');
  vfs.read(appender, 2);
  const gone = vfs.open('/tmp/gone', 'w+');
  vfs.write(gone, enc('unlinked but open'));
  vfs.unlink('/tmp/gone');
  vfs.mkdir('/tmp/dir-gone');
  vfs.open('/tmp/dir-gone');
  vfs.rmdir('/tmp/dir-gone');
  vfs.close(vfs.open('/tmp/empty'));
  return vfs;
}

describe('serialize and deserialize', () => {
  it('round-trips the tree, contents, metadata, fds and counters', () => {
    const vfs = populated();
    const image = vfs.serialize();
    assert.equal(image[0], 1, 'the first byte is the format version');
    const copy = VirtualFileSystem.deserialize(image);
    assert.deepEqual(copy.serialize(), image);
    assert.deepEqual(copy.usage(), vfs.usage());
    assert.deepEqual(copy.openFds(), vfs.openFds());
    for (const fd of vfs.openFds()) assert.deepEqual(copy.fstat(fd), vfs.fstat(fd));
    // Compare the trees before reading through fds, which changes atimes.
    assert.deepEqual(snapshot(copy), snapshot(vfs));
  });

  it('continues open fds where they were', () => {
    const vfs = populated();
    const copy = VirtualFileSystem.deserialize(vfs.serialize());
    const [reader, appender, gone, dirFd] = copy.openFds();
    assert.ok(reader !== undefined && appender !== undefined && gone !== undefined && dirFd !== undefined);
    const expected = vfs.read(reader, 10);
    assert.deepEqual(copy.read(reader, 10), expected);
    assert.equal(dec(copy.read(appender, 10)), 'pha');
    copy.write(appender, enc('bet'), 0);
    assert.equal(dec(copy.readFile('/home/user/docs/a.txt')), 'alphabet');
    throwsVfs(() => copy.write(reader, enc('x')), 'EBADF');
    assert.equal(dec(copy.read(gone, 100, 0)), 'unlinked but open');
    assert.equal(copy.fstat(gone).nlink, 0);
    assert.equal(copy.fstat(dirFd).type, 'dir');
    const bytesBefore = copy.usage().bytes;
    copy.close(gone);
    assert.equal(copy.usage().bytes, bytesBefore - 17);
    // New fds and inodes follow on from the restored counters.
    assert.equal(copy.open('/tmp/new', 'w'), vfs.open('/tmp/new', 'w'));
    assert.equal(copy.stat('/tmp/new').ino, vfs.stat('/tmp/new').ino);
  });

  it('stays serializable when the guest clock misbehaves', () => {
    const vfs = new VirtualFileSystem({ now: () => Number.NaN });
    vfs.writeFile('/tmp/f', enc('x'));
    assert.equal(vfs.stat('/tmp/f').mtimeMs, 0);
    const copy = VirtualFileSystem.deserialize(vfs.serialize());
    assert.equal(dec(copy.readFile('/tmp/f')), 'x');
  });

  it('does not keep a reference to the input bytes', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/f', enc('abc'));
    const image = vfs.serialize();
    const copy = VirtualFileSystem.deserialize(image);
    image.fill(0);
    assert.equal(dec(copy.readFile('/tmp/f')), 'abc');
  });

  it('round-trips an empty file system and accepts a subarray', () => {
    const image = new VirtualFileSystem().serialize();
    const padded = new Uint8Array(image.length + 10);
    padded.set(image, 5);
    const copy = VirtualFileSystem.deserialize(padded.subarray(5, 5 + image.length));
    assert.deepEqual(copy.readdir('/'), ['tmp']);
    assert.deepEqual(copy.serialize(), image);
  });

  it('applies the limits of the restoring host', () => {
    const { vfs } = setup();
    vfs.writeFile('/tmp/f', new Uint8Array(1000));
    vfs.open('/tmp/f');
    vfs.open('/tmp/f');
    const image = vfs.serialize();
    VirtualFileSystem.deserialize(image, { maxBytes: 1000, maxInodes: 3, maxFds: 2 });
    throwsImage(() => VirtualFileSystem.deserialize(image, { maxBytes: 999 }));
    throwsImage(() => VirtualFileSystem.deserialize(image, { maxInodes: 2 }));
    throwsImage(() => VirtualFileSystem.deserialize(image, { maxFds: 1 }));
    const restored = VirtualFileSystem.deserialize(image, { maxBytes: 1000 });
    throwsVfs(() => restored.appendFile('/tmp/f', enc('x')), 'ENOSPC');
  });

  it('refuses another version with a clear error', () => {
    const image = new VirtualFileSystem().serialize();
    image[0] = 2;
    assert.throws(() => VirtualFileSystem.deserialize(image), /version 2/);
    throwsImage(() => VirtualFileSystem.deserialize(image));
  });

  it('round-trips after any sequence of operations', () => {
    const name = fc.constantFrom('a', 'b', 'c');
    const path = fc.array(name, { minLength: 1, maxLength: 3 }).map((parts) => '/' + parts.join('/'));
    const data = fc.uint8Array({ maxLength: 40 });
    const op = fc.oneof(
      fc.tuple(fc.constant('mkdir' as const), path),
      fc.tuple(fc.constant('write' as const), path, data),
      fc.tuple(fc.constant('append' as const), path, data),
      fc.tuple(fc.constant('open' as const), path, fc.constantFrom<'r' | 'w+' | 'a'>('r', 'w+', 'a')),
      fc.tuple(fc.constant('fdwrite' as const), fc.nat(10), data),
      fc.tuple(fc.constant('close' as const), fc.nat(10)),
      fc.tuple(fc.constant('rename' as const), path, path),
      fc.tuple(fc.constant('rm' as const), path),
      fc.tuple(fc.constant('truncate' as const), path, fc.nat(50)),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
        const { vfs } = setup({ maxBytes: 200 });
        for (const [kind, a, b] of ops) {
          try {
            if (kind === 'mkdir') vfs.mkdir(a, { recursive: true });
            else if (kind === 'write') vfs.writeFile(a, b);
            else if (kind === 'append') vfs.appendFile(a, b);
            else if (kind === 'open') vfs.open(a, b);
            else if (kind === 'fdwrite') vfs.write(a, b);
            else if (kind === 'close') vfs.close(a);
            else if (kind === 'rename') vfs.rename(a, b);
            else if (kind === 'rm') vfs.rm(a, { recursive: true });
            else vfs.truncate(a, b);
          } catch (err) {
            if (!(err instanceof VfsError)) throw err;
          }
        }
        assert.ok(vfs.usage().bytes <= 200);
        const image = vfs.serialize();
        const copy = VirtualFileSystem.deserialize(image, { maxBytes: 200 });
        assert.deepEqual(copy.serialize(), image);
        assert.deepEqual(copy.usage(), vfs.usage());
        assert.deepEqual(snapshot(copy), snapshot(vfs));
      }),
      { numRuns: 200 },
    );
  });
});

/** Writes images by hand, to build the malformed ones a hostile peer could send. */
class ImageBuilder {
  private readonly out: number[] = [];

  u8(value: number): this {
    this.out.push(value & 0xff);
    return this;
  }
  u16(value: number): this {
    return this.u8(value).u8(value >>> 8);
  }
  u32(value: number): this {
    return this.u16(value & 0xffff).u16(value >>> 16);
  }
  f64(value: number): this {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setFloat64(0, value, true);
    for (const byte of bytes) this.u8(byte);
    return this;
  }
  raw(bytes: Iterable<number>): this {
    for (const byte of bytes) this.u8(byte);
    return this;
  }
  header(nextIno: number, nextFd: number, inodes: number): this {
    return this.u8(1).raw(enc('VFS')).u32(nextIno).u32(nextFd).u32(inodes);
  }
  meta(kind: number, ino: number, mode: number, time = 0): this {
    return this.u8(kind).u32(ino).u16(mode).f64(time).f64(time).f64(time).f64(time);
  }
  dir(ino: number, entries: number, mode = 0o755): this {
    return this.meta(2, ino, mode).u32(entries);
  }
  file(ino: number, contents: Uint8Array, mode = 0o644): this {
    return this.meta(1, ino, mode).u32(contents.length).raw(contents);
  }
  name(text: string | Uint8Array): this {
    const bytes = typeof text === 'string' ? enc(text) : text;
    return this.u8(bytes.length).raw(bytes);
  }
  /** No orphans and no fds. */
  end(): this {
    return this.u32(0).u32(0);
  }
  build(): Uint8Array {
    const body = Uint8Array.from(this.out);
    const image = new Uint8Array(body.length + 4);
    image.set(body);
    new DataView(image.buffer).setUint32(body.length, crc32(body), true);
    return image;
  }
}

/** Re-seals a body with a valid CRC, so the structural checks (not the CRC) must catch damage. */
function seal(body: Uint8Array): Uint8Array {
  const image = new Uint8Array(body.length + 4);
  image.set(body);
  new DataView(image.buffer).setUint32(body.length, crc32(body), true);
  return image;
}

describe('malformed images', () => {
  const good = (): ImageBuilder => new ImageBuilder().header(3, 3, 2).dir(1, 1).name('f');

  it('accepts a hand-built image', () => {
    const vfs = VirtualFileSystem.deserialize(good().file(2, enc('hi')).end().build());
    assert.equal(dec(vfs.readFile('/f')), 'hi');
    assert.deepEqual(vfs.readdir('/'), ['f']);
  });

  it('does not trust a length field larger than the input', () => {
    const image = good().meta(1, 2, 0o644).u32(0xffffffff).raw([1, 2, 3]).end().build();
    throwsImage(() => VirtualFileSystem.deserialize(image)); // over maxBytes
    throwsImage(() => VirtualFileSystem.deserialize(image, { maxBytes: 2 ** 32 - 1 })); // truncated
  });

  it('refuses each kind of structural damage', () => {
    const cases: Record<string, Uint8Array> = {
      'bad magic': new ImageBuilder().u8(1).raw(enc('XYZ')).u32(2).u32(3).u32(1).dir(1, 0).end().build(),
      'root is a file': new ImageBuilder().header(2, 3, 1).file(1, enc('x')).end().build(),
      'huge file size': good().meta(1, 2, 0o644).u32(0xffffffff).end().build(),
      'huge entry count': new ImageBuilder().header(2, 3, 1).dir(1, 0xffffffff).end().build(),
      'huge inode count': new ImageBuilder().header(2, 3, 0xffffffff).dir(1, 0).end().build(),
      'more inodes than declared': new ImageBuilder()
        .header(3, 3, 1)
        .dir(1, 1)
        .name('f')
        .file(2, enc(''))
        .end()
        .build(),
      'fewer inodes than declared': new ImageBuilder()
        .header(3, 3, 3)
        .dir(1, 1)
        .name('f')
        .file(2, enc(''))
        .end()
        .build(),
      'duplicate name': new ImageBuilder()
        .header(4, 3, 3)
        .dir(1, 2)
        .name('f')
        .file(2, enc(''))
        .name('f')
        .file(3, enc(''))
        .end()
        .build(),
      'duplicate inode': new ImageBuilder()
        .header(4, 3, 3)
        .dir(1, 2)
        .name('f')
        .file(2, enc(''))
        .name('g')
        .file(2, enc(''))
        .end()
        .build(),
      'name with a slash': new ImageBuilder().header(3, 3, 2).dir(1, 1).name('a/b').file(2, enc('')).end().build(),
      'name is ..': new ImageBuilder().header(3, 3, 2).dir(1, 1).name('..').file(2, enc('')).end().build(),
      'empty name': new ImageBuilder().header(3, 3, 2).dir(1, 1).name('').file(2, enc('')).end().build(),
      'name is .': new ImageBuilder().header(3, 3, 2).dir(1, 1).name('.').file(2, enc('')).end().build(),
      'name with NUL': new ImageBuilder().header(3, 3, 2).dir(1, 1).name('a\0b').file(2, enc('')).end().build(),
      // A lone surrogate (U+D800) written as UTF-8 would be: no strict decoder takes it.
      'name with an encoded surrogate': new ImageBuilder()
        .header(3, 3, 2)
        .dir(1, 1)
        .name(new Uint8Array([0x61, 0xed, 0xa0, 0x80]))
        .file(2, enc(''))
        .end()
        .build(),
      'name not UTF-8': new ImageBuilder()
        .header(3, 3, 2)
        .dir(1, 1)
        .name(new Uint8Array([0xc3, 0x28]))
        .file(2, enc(''))
        .end()
        .build(),
      'inode 0': new ImageBuilder().header(2, 3, 1).dir(0, 0).end().build(),
      'inode past nextIno': good().file(3, enc('')).end().build(),
      'unknown kind': good().meta(9, 2, 0).end().build(),
      'bad mode': good().file(2, enc(''), 0o10000).end().build(),
      'NaN time': good().meta(1, 2, 0o644, Number.NaN).u32(0).end().build(),
      'nextFd below 3': new ImageBuilder().header(2, 2, 1).dir(1, 0).end().build(),
      'fd below 3': good().file(2, enc('')).u32(0).u32(1).u32(2).u32(2).u8(1).f64(0).build(),
      'fd not below nextFd': good().file(2, enc('')).u32(0).u32(1).u32(3).u32(2).u8(1).f64(0).build(),
      'fd to a missing inode': new ImageBuilder()
        .header(3, 4, 2)
        .dir(1, 1)
        .name('f')
        .file(2, enc(''))
        .u32(0)
        .u32(1)
        .u32(3)
        .u32(7)
        .u8(1)
        .f64(0)
        .build(),
      'fd with no access': new ImageBuilder()
        .header(3, 4, 2)
        .dir(1, 1)
        .name('f')
        .file(2, enc(''))
        .u32(0)
        .u32(1)
        .u32(3)
        .u32(2)
        .u8(0)
        .f64(0)
        .build(),
      'fd append without write': new ImageBuilder()
        .header(3, 4, 2)
        .dir(1, 1)
        .name('f')
        .file(2, enc(''))
        .u32(0)
        .u32(1)
        .u32(3)
        .u32(2)
        .u8(5)
        .f64(0)
        .build(),
      'writable dir fd': new ImageBuilder().header(2, 4, 1).dir(1, 0).u32(0).u32(1).u32(3).u32(1).u8(3).f64(0).build(),
      'negative position': new ImageBuilder()
        .header(3, 4, 2)
        .dir(1, 1)
        .name('f')
        .file(2, enc(''))
        .u32(0)
        .u32(1)
        .u32(3)
        .u32(2)
        .u8(1)
        .f64(-1)
        .build(),
      'fractional position': new ImageBuilder()
        .header(3, 4, 2)
        .dir(1, 1)
        .name('f')
        .file(2, enc(''))
        .u32(0)
        .u32(1)
        .u32(3)
        .u32(2)
        .u8(1)
        .f64(0.5)
        .build(),
      'duplicate fd': new ImageBuilder()
        .header(3, 5, 2)
        .dir(1, 1)
        .name('f')
        .file(2, enc(''))
        .u32(0)
        .u32(2)
        .u32(3)
        .u32(2)
        .u8(1)
        .f64(0)
        .u32(3)
        .u32(2)
        .u8(1)
        .f64(0)
        .build(),
      'orphan without fd': new ImageBuilder().header(3, 3, 2).dir(1, 0).u32(1).file(2, enc('x')).u32(0).build(),
      'orphan dir with entries': new ImageBuilder()
        .header(3, 4, 2)
        .dir(1, 0)
        .u32(1)
        .dir(2, 1)
        .u32(1)
        .u32(3)
        .u32(2)
        .u8(1)
        .f64(0)
        .build(),
      'huge fd count': good().file(2, enc('')).u32(0).u32(0xffffffff).build(),
      'trailing bytes': good().file(2, enc('')).end().u8(0).build(),
      'missing fd section': good().file(2, enc('')).u32(0).build(),
      empty: new Uint8Array(0),
      'version only': new Uint8Array([1]),
    };
    for (const [label, image] of Object.entries(cases)) {
      assert.throws(
        () => VirtualFileSystem.deserialize(image),
        (err: unknown) => err instanceof RoamError && err.code === 'ROAM_ERR_VFS_IMAGE',
        label,
      );
    }
  });

  it('refuses what is not bytes', () => {
    for (const value of [undefined, null, 'VFS', [1, 2, 3], new ArrayBuffer(8), { length: 3 }]) {
      throwsImage(() => VirtualFileSystem.deserialize(value as unknown as Uint8Array));
    }
  });

  it('reads a very deep tree without recursion', () => {
    const depth = 50_000;
    const builder = new ImageBuilder().header(depth + 2, 3, depth + 1).dir(1, 1);
    for (let ino = 2; ino <= depth; ino++) builder.name('d').dir(ino, 1);
    builder
      .name('d')
      .dir(depth + 1, 0)
      .end();
    const image = builder.build();
    const vfs = VirtualFileSystem.deserialize(image, { maxInodes: depth + 1 });
    assert.equal(vfs.usage().dirs, depth + 1);
    assert.deepEqual(vfs.serialize(), image);
    throwsImage(() => VirtualFileSystem.deserialize(image, { maxInodes: depth }));
  });

  it('refuses every truncation of a real image', () => {
    const image = populated().serialize();
    for (let length = 0; length < image.length; length += length < 400 ? 1 : 997) {
      throwsImage(() => VirtualFileSystem.deserialize(image.subarray(0, length)));
    }
  });

  it('refuses any corrupted byte (fast-check)', () => {
    const image = populated().serialize();
    fc.assert(
      fc.property(fc.nat(image.length - 1), fc.integer({ min: 1, max: 255 }), (index, flip) => {
        const bad = image.slice();
        bad[index] = (bad[index] ?? 0) ^ flip;
        throwsImage(() => VirtualFileSystem.deserialize(bad));
      }),
      { numRuns: 200 },
    );
  });

  it('refuses random bytes (fast-check)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        throwsImage(() => VirtualFileSystem.deserialize(bytes));
      }),
      { numRuns: 200 },
    );
  });

  it('refuses random bytes that carry a valid version and CRC (fast-check)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        throwsImage(() => VirtualFileSystem.deserialize(seal(Uint8Array.from([1, ...enc('VFS'), ...bytes]))));
      }),
      { numRuns: 200 },
    );
  });

  it('either refuses or fully restores a re-sealed mutated image (fast-check)', () => {
    const image = new ImageBuilder()
      .header(6, 5, 5)
      .dir(1, 2)
      .name('d')
      .dir(2, 1)
      .name('f')
      .file(3, enc('hello'))
      .name('g')
      .file(4, enc('world'))
      .u32(1)
      .file(5, enc('orphan'))
      .u32(1)
      .u32(4)
      .u32(5)
      .u8(3)
      .f64(2)
      .build();
    VirtualFileSystem.deserialize(image); // the unmutated image is valid
    const body = image.subarray(0, image.length - 4);
    const mutation = fc.array(fc.tuple(fc.nat(body.length - 1), fc.nat(255)), {
      minLength: 1,
      maxLength: 4,
    });
    const cut = fc.nat(body.length);
    fc.assert(
      fc.property(mutation, cut, (changes, length) => {
        const bad = body.slice(0, Math.max(length, 1));
        for (const [index, value] of changes) if (index < bad.length) bad[index] = value;
        let restored: VirtualFileSystem;
        try {
          restored = VirtualFileSystem.deserialize(seal(bad));
        } catch (err) {
          assert.ok(err instanceof RoamError, `not a RoamError: ${String(err)}`);
          assert.equal(err.code, 'ROAM_ERR_VFS_IMAGE');
          return;
        }
        // Anything accepted must be a consistent file system that round-trips exactly. (A mutated
        // mode may close a directory: a walk then meets EACCES there, as it would on any file system.)
        const again = restored.serialize();
        assert.deepEqual(VirtualFileSystem.deserialize(again).serialize(), again);
        snapshot(restored, { denied: 'record' });
      }),
      { numRuns: 200 },
    );
  });
});
