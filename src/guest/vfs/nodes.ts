import type { FileContent } from './content.js';

export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
/** Permission bits a node's `mode` may hold (rwx for user/group/other plus setuid/setgid/sticky). */
export const PERMISSION_BITS = 0o7777;

interface NodeMeta {
  readonly ino: number;
  /** Permission bits only; the type bits are added by stat. */
  mode: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  birthtimeMs: number;
  /** False once removed from the tree; an open fd keeps the node alive until it is closed. */
  linked: boolean;
  openCount: number;
}

export interface FileNode extends NodeMeta {
  readonly kind: 'file';
  readonly content: FileContent;
}

export interface DirNode extends NodeMeta {
  readonly kind: 'dir';
  /** Insertion order is kept so that serializing is deterministic. */
  readonly entries: Map<string, VNode>;
}

export type VNode = FileNode | DirNode;

export interface OpenFile {
  readonly node: VNode;
  readonly readable: boolean;
  readonly writable: boolean;
  /** O_APPEND: every write goes to the end of the file, whatever the position. */
  readonly append: boolean;
  position: number;
}

/** Everything a file system is made of; what an image holds. */
export interface VfsState {
  root: DirNode;
  fds: Map<number, OpenFile>;
  nextIno: number;
  nextFd: number;
  /** Live inodes, including removed ones kept alive by an open fd. */
  files: number;
  dirs: number;
}
