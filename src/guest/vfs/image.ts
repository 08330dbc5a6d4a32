/**
 * The binary image of a guest's file system, carried inside its checkpoint image.
 *
 * Layout (little-endian):
 *
 *     u8  version (1)    u8[3] 'VFS'    u32 nextIno    u32 nextFd    u32 inode count
 *     node: the root directory, then its subtree in preorder (see below)
 *     u32 orphan count, then that many nodes: removed files/dirs still held by an open fd
 *     u32 fd count, then per fd: u32 fd, u32 ino, u8 flags (1 read, 2 write, 4 append), f64 position
 *     u32 CRC-32 of everything before it
 *
 *     node  = u8 kind (1 file, 2 dir), u32 ino, u16 mode, f64 atime, mtime, ctime, birthtime,
 *             then for a file: u32 size, bytes; for a dir: u32 entry count, then per entry:
 *             u8 name length, UTF-8 name, node
 *
 * The image comes from the network or disk, so decoding trusts nothing: every length is checked
 * against the bytes actually present before anything is allocated, and the tree is walked with an
 * explicit stack because a deep tree in a hostile image must not overflow the host's stack. The
 * CRC makes any damage to file contents (which no structural check can see) a refused image too.
 */
import { crc32 } from '../../common/crc32.js';
import { RoamError } from '../../errors.js';
import { FileContent, type MemoryPool } from './content.js';
import type { DirNode, FileNode, OpenFile, VfsState, VNode } from './nodes.js';
import { PERMISSION_BITS } from './nodes.js';
import { isPlainName } from './path.js';

export const IMAGE_VERSION = 1;
const MAGIC = [0x56, 0x46, 0x53]; // 'VFS'
const HEADER_SIZE = 16;
const CRC_SIZE = 4;
const KIND_FILE = 1;
const KIND_DIR = 2;
const FD_READ = 1;
const FD_WRITE = 2;
const FD_APPEND = 4;
export const FIRST_FD = 3;

export interface ImageLimits {
  maxBytes: number;
  maxInodes: number;
  maxFds: number;
}

function damaged(detail: string): RoamError {
  return new RoamError(
    'ROAM_ERR_VFS_IMAGE',
    `The guest's file system image is damaged or not a file system image (${detail}); ` +
      'restore the guest from another checkpoint.',
  );
}

// ---------------------------------------------------------------------------------------------
// Writing

/**
 * Collects small fields in a scratch buffer and large byte runs (file contents) by reference,
 * then copies everything once into an exactly sized result: no doubling of a multi-MiB buffer.
 */
class ByteWriter {
  private readonly parts: Uint8Array[] = [];
  private scratch = new Uint8Array(4096);
  private view = new DataView(this.scratch.buffer);
  private used = 0;
  private total = 0;

  // Each reserves its bytes before touching `view`: reserving may swap in a new scratch buffer.
  u8(value: number): void {
    const at = this.room(1);
    this.view.setUint8(at, value);
  }
  u16(value: number): void {
    const at = this.room(2);
    this.view.setUint16(at, value, true);
  }
  u32(value: number): void {
    const at = this.room(4);
    this.view.setUint32(at, value, true);
  }
  f64(value: number): void {
    const at = this.room(8);
    this.view.setFloat64(at, value, true);
  }
  bytes(data: Uint8Array): void {
    if (data.length < 1024) {
      const at = this.room(data.length);
      this.scratch.set(data, at);
      return;
    }
    this.flush();
    this.parts.push(data);
    this.total += data.length;
  }

  /** The image, with its CRC appended. Call before anything referenced can change. */
  finish(): Uint8Array {
    this.flush();
    const out = new Uint8Array(this.total + CRC_SIZE);
    let offset = 0;
    for (const part of this.parts) {
      out.set(part, offset);
      offset += part.length;
    }
    const body = out.subarray(0, this.total);
    new DataView(out.buffer).setUint32(this.total, crc32(body), true);
    return out;
  }

  /** Reserves `n` bytes in the scratch buffer and returns their offset. */
  private room(n: number): number {
    if (this.used + n > this.scratch.length) this.flush();
    const at = this.used;
    this.used += n;
    this.total += n;
    return at;
  }

  private flush(): void {
    if (this.used === 0) return;
    this.parts.push(this.scratch.subarray(0, this.used));
    this.scratch = new Uint8Array(4096);
    this.view = new DataView(this.scratch.buffer);
    this.used = 0;
  }
}

const encoder = new TextEncoder();

function writeNode(w: ByteWriter, node: VNode): void {
  w.u8(node.kind === 'file' ? KIND_FILE : KIND_DIR);
  w.u32(node.ino);
  w.u16(node.mode);
  w.f64(node.atimeMs);
  w.f64(node.mtimeMs);
  w.f64(node.ctimeMs);
  w.f64(node.birthtimeMs);
  if (node.kind === 'file') {
    w.u32(node.content.size);
    node.content.forEachChunk((bytes) => w.bytes(bytes));
  } else {
    w.u32(node.entries.size);
  }
}

export function encodeImage(state: VfsState): Uint8Array {
  const w = new ByteWriter();
  w.u8(IMAGE_VERSION);
  for (const byte of MAGIC) w.u8(byte);
  w.u32(state.nextIno);
  w.u32(state.nextFd);
  w.u32(state.files + state.dirs);

  // Preorder walk; each directory's entry count was written with it, so no end markers needed.
  writeNode(w, state.root);
  const stack: Iterator<[string, VNode]>[] = [state.root.entries.entries()];
  for (let top = stack.at(-1); top !== undefined; top = stack.at(-1)) {
    const next = top.next();
    if (next.done === true) {
      stack.pop();
      continue;
    }
    const [name, node] = next.value;
    const encoded = encoder.encode(name);
    w.u8(encoded.length);
    w.bytes(encoded);
    writeNode(w, node);
    if (node.kind === 'dir') stack.push(node.entries.entries());
  }

  // Sorted by inode number so that the same state always gives the same bytes.
  const orphans = [...new Set([...state.fds.values()].map((f) => f.node))]
    .filter((node) => !node.linked)
    .sort((a, b) => a.ino - b.ino);
  w.u32(orphans.length);
  for (const node of orphans) writeNode(w, node);

  w.u32(state.fds.size);
  for (const [fd, file] of state.fds) {
    w.u32(fd);
    w.u32(file.node.ino);
    w.u8((file.readable ? FD_READ : 0) | (file.writable ? FD_WRITE : 0) | (file.append ? FD_APPEND : 0));
    w.f64(file.position);
  }
  return w.finish();
}

// ---------------------------------------------------------------------------------------------
// Reading

class ByteReader {
  private offset = 0;
  private readonly view: DataView;

  constructor(private readonly data: Uint8Array) {
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  }

  get atEnd(): boolean {
    return this.offset === this.data.length;
  }
  u8(): number {
    return this.view.getUint8(this.take(1));
  }
  u16(): number {
    return this.view.getUint16(this.take(2), true);
  }
  u32(): number {
    return this.view.getUint32(this.take(4), true);
  }
  f64(): number {
    return this.view.getFloat64(this.take(8), true);
  }
  /** A view (not a copy) of the next `n` bytes. */
  bytes(n: number): Uint8Array {
    const at = this.take(n);
    return this.data.subarray(at, at + n);
  }

  private take(n: number): number {
    if (n > this.data.length - this.offset) throw damaged(`truncated at byte ${this.offset}`);
    const at = this.offset;
    this.offset += n;
    return at;
  }
}

/** Fatal: invalid UTF-8 is damage. ignoreBOM: a leading U+FEFF is part of the name. */
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * A name of ASCII bytes, read without the decoder, or undefined if it has other bytes. Nearly
 * every name is ASCII, and a restore reads a few: a call into the decoder cost more than the rest
 * of reading a small file system.
 */
function asciiName(encoded: Uint8Array): string | undefined {
  let name = '';
  for (const byte of encoded) {
    if (byte >= 0x80) return undefined;
    name += String.fromCharCode(byte);
  }
  return name;
}

function utf8Name(encoded: Uint8Array): string {
  try {
    return decoder.decode(encoded);
  } catch {
    throw damaged('a name is not UTF-8');
  }
}

class ImageDecoder {
  private readonly r: ByteReader;
  private readonly inodes = new Map<number, VNode>();
  private nextIno = 0;
  private declaredInodes = 0;
  private files = 0;
  private dirs = 0;
  private bytes = 0;

  constructor(
    body: Uint8Array,
    private readonly limits: ImageLimits,
    private readonly pool: MemoryPool,
  ) {
    this.r = new ByteReader(body);
  }

  decode(): VfsState {
    const { r } = this;
    r.u8(); // the version, checked by the caller
    for (const byte of MAGIC) if (r.u8() !== byte) throw damaged('bad magic');
    this.nextIno = r.u32();
    const nextFd = r.u32();
    this.declaredInodes = r.u32();
    if (nextFd < FIRST_FD) throw damaged(`next fd ${nextFd} is below ${FIRST_FD}`);
    if (this.declaredInodes > this.limits.maxInodes) {
      throw damaged(`${this.declaredInodes} inodes, more than the limit of ${this.limits.maxInodes}`);
    }

    const root = this.node();
    if (root.node.kind !== 'dir') throw damaged('the root is not a directory');
    this.subtree(root.node, root.entries);

    const orphans = new Set<VNode>();
    const orphanCount = r.u32();
    for (let i = 0; i < orphanCount; i++) {
      const { node, entries } = this.node();
      if (entries !== 0) throw damaged(`removed directory ${node.ino} has entries`);
      node.linked = false;
      orphans.add(node);
    }
    if (this.files + this.dirs !== this.declaredInodes) throw damaged('wrong inode count');

    const fds = this.fds(nextFd);
    for (const node of orphans) {
      if (node.openCount === 0) throw damaged(`removed inode ${node.ino} has no open fd`);
    }
    if (!r.atEnd) throw damaged('trailing bytes');
    return {
      root: root.node,
      fds,
      nextIno: this.nextIno,
      nextFd,
      files: this.files,
      dirs: this.dirs,
    };
  }

  /** Reads a directory's entries and all below them, in preorder, without recursion. */
  private subtree(dir: DirNode, entries: number): void {
    const stack = [{ dir, remaining: entries }];
    for (let top = stack.at(-1); top !== undefined; top = stack.at(-1)) {
      if (top.remaining === 0) {
        stack.pop();
        continue;
      }
      top.remaining--;
      const name = this.name();
      if (top.dir.entries.has(name)) throw damaged(`duplicate name '${name}'`);
      const child = this.node();
      top.dir.entries.set(name, child.node);
      if (child.node.kind === 'dir') stack.push({ dir: child.node, remaining: child.entries });
    }
  }

  private name(): string {
    const encoded = this.r.bytes(this.r.u8());
    const name = asciiName(encoded) ?? utf8Name(encoded);
    // Strict UTF-8 of at most 255 bytes holds no lone surrogate and is within NAME_MAX: of
    // isValidName (path.ts), the rest is left to check.
    if (!isPlainName(name)) throw damaged(`invalid name '${name}'`);
    return name;
  }

  /** Reads one node; for a directory also returns how many entries follow it. */
  private node(): { node: VNode; entries: number } {
    const { r, limits } = this;
    // Counting against the header bounds the work a hostile image can ask for.
    if (this.files + this.dirs >= this.declaredInodes) throw damaged('more inodes than declared');
    const kind = r.u8();
    const ino = r.u32();
    const mode = r.u16();
    const times = [r.f64(), r.f64(), r.f64(), r.f64()] as const;
    if (ino === 0 || ino >= this.nextIno || this.inodes.has(ino)) {
      throw damaged(`bad inode number ${ino}`);
    }
    if (mode > PERMISSION_BITS) throw damaged(`bad mode ${mode} on inode ${ino}`);
    if (!times.every(Number.isFinite)) throw damaged(`bad time on inode ${ino}`);
    const meta = {
      ino,
      mode,
      atimeMs: times[0],
      mtimeMs: times[1],
      ctimeMs: times[2],
      birthtimeMs: times[3],
      linked: true,
      openCount: 0,
    };

    let node: VNode;
    let entries = 0;
    if (kind === KIND_FILE) {
      const size = r.u32();
      if (this.bytes + size > limits.maxBytes) {
        throw damaged(`file contents exceed the limit of ${limits.maxBytes} bytes`);
      }
      const data = r.bytes(size); // checks the bytes are there before load() allocates
      const content = new FileContent(this.pool);
      content.load(data);
      this.bytes += size;
      this.files++;
      node = { kind: 'file', ...meta, content } satisfies FileNode;
    } else if (kind === KIND_DIR) {
      entries = r.u32();
      this.dirs++;
      node = { kind: 'dir', ...meta, entries: new Map() } satisfies DirNode;
    } else {
      throw damaged(`unknown inode kind ${kind}`);
    }
    this.inodes.set(ino, node);
    return { node, entries };
  }

  private fds(nextFd: number): Map<number, OpenFile> {
    const { r } = this;
    const fds = new Map<number, OpenFile>();
    const count = r.u32();
    if (count > this.limits.maxFds) throw damaged(`${count} open fds, more than the limit`);
    for (let i = 0; i < count; i++) {
      const fd = r.u32();
      const node = this.inodes.get(r.u32());
      const flags = r.u8();
      const position = r.f64();
      if (fd < FIRST_FD || fd >= nextFd || fds.has(fd)) throw damaged(`bad fd ${fd}`);
      if (node === undefined) throw damaged(`fd ${fd} refers to a missing inode`);
      const valid = node.kind === 'dir' ? [FD_READ] : [FD_READ, FD_WRITE, FD_READ | FD_WRITE];
      const append = (flags & FD_APPEND) !== 0;
      if (!valid.includes(flags & ~FD_APPEND) || (append && (flags & FD_WRITE) === 0)) {
        throw damaged(`bad flags ${flags} on fd ${fd}`);
      }
      if (!Number.isSafeInteger(position) || position < 0) throw damaged(`bad position on fd ${fd}`);
      node.openCount++;
      fds.set(fd, {
        node,
        readable: (flags & FD_READ) !== 0,
        writable: (flags & FD_WRITE) !== 0,
        append,
        position,
      });
    }
    return fds;
  }
}

/** Decodes and validates an image; throws RoamError('ROAM_ERR_VFS_IMAGE') on anything wrong. */
export function decodeImage(bytes: unknown, limits: ImageLimits, pool: MemoryPool): VfsState {
  if (!(bytes instanceof Uint8Array)) throw damaged('expected bytes');
  if (bytes.length === 0) throw damaged('it is empty');
  if (bytes[0] !== IMAGE_VERSION) {
    throw new RoamError(
      'ROAM_ERR_VFS_IMAGE',
      `The guest's file system image has version ${bytes[0]}, but this Roam reads version ` +
        `${IMAGE_VERSION}; restore it with the Roam version that wrote it.`,
    );
  }
  if (bytes.length < HEADER_SIZE + CRC_SIZE) throw damaged('truncated header');
  const body = bytes.subarray(0, bytes.length - CRC_SIZE);
  const stored = new DataView(bytes.buffer, bytes.byteOffset + body.length, CRC_SIZE).getUint32(0, true);
  if (crc32(body) !== stored) throw damaged('checksum mismatch');
  return new ImageDecoder(body, limits, pool).decode();
}
