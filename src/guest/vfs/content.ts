/**
 * File contents, stored as a list of chunks. Every chunk but the last is exactly CHUNK_SIZE bytes,
 * so byte `i` lives in chunk `i / CHUNK_SIZE`; the last chunk grows geometrically. An append
 * therefore copies at most one chunk, never the whole file, and stays amortized O(1) per byte.
 *
 * Invariant: allocated bytes past a file's size are zero, so extending a file (truncate up, or a
 * write past the end) reads back zeros without clearing anything.
 */
export const CHUNK_SIZE = 64 * 1024;

/** Smallest first chunk: tiny files would otherwise reallocate on each of their first appends. */
const MIN_CAPACITY = 64;

/**
 * The memory budget shared by all files of one guest. `used` counts file bytes (what ENOSPC and
 * usage() are about); `allocated` also counts spare capacity kept for appends. Spare capacity is
 * only a convenience: it never pushes `allocated` past `limit`, so the host memory a guest's files
 * hold is bounded by `limit` too.
 */
export class MemoryPool {
  used = 0;
  allocated = 0;
  /** Files holding memory, so spare capacity can be reclaimed from all of them. */
  private readonly holders = new Set<FileContent>();

  constructor(readonly limit: number) {}

  /** Whether `extra` more file bytes fit (the caller throws ENOSPC otherwise). */
  fits(extra: number): boolean {
    return this.used + extra <= this.limit;
  }

  /** Gives spare capacity back; only needed when the budget is nearly used up. */
  reclaim(): void {
    for (const content of this.holders) content.trim();
  }

  /**
   * Resizes an allocation from `current` to at least `needed` and, budget permitting, up to
   * `wanted` bytes. Returns the size granted.
   */
  grant(current: number, needed: number, wanted: number): number {
    const room = this.limit - this.allocated + current;
    const size = Math.max(needed, Math.min(wanted, room));
    this.allocated += size - current;
    return size;
  }

  hold(content: FileContent, holding: boolean): void {
    if (holding) this.holders.add(content);
    else this.holders.delete(content);
  }
}

export class FileContent {
  private chunks: Uint8Array[] = [];
  private length = 0;

  constructor(private readonly pool: MemoryPool) {}

  get size(): number {
    return this.length;
  }

  private get capacity(): number {
    const last = this.chunks.at(-1);
    return last === undefined ? 0 : (this.chunks.length - 1) * CHUNK_SIZE + last.length;
  }

  /** Copies out up to `count` bytes from `position`; shorter (or empty) at the end of the file. */
  read(position: number, count: number): Uint8Array {
    const end = Math.min(this.length, position + count);
    if (end <= position) return new Uint8Array(0);
    const out = new Uint8Array(end - position);
    let done = 0;
    while (done < out.length) {
      const at = position + done;
      const chunk = this.chunkAt(at);
      const offset = at % CHUNK_SIZE;
      const n = Math.min(out.length - done, chunk.length - offset);
      out.set(chunk.subarray(offset, offset + n), done);
      done += n;
    }
    return out;
  }

  /** Writes `data` at `position`, growing the file. The caller has checked the pool has room. */
  write(position: number, data: Uint8Array): void {
    if (data.length === 0) return; // like pwrite(2): writing nothing does not extend the file
    const end = position + data.length;
    if (end > this.length) this.grow(end);
    let done = 0;
    while (done < data.length) {
      const at = position + done;
      const chunk = this.chunkAt(at);
      const offset = at % CHUNK_SIZE;
      const n = Math.min(data.length - done, chunk.length - offset);
      chunk.set(data.subarray(done, done + n), offset);
      done += n;
    }
  }

  /** Sets the size; growing adds zeros. The caller has checked the pool has room. */
  truncate(size: number): void {
    if (size > this.length) {
      this.grow(size);
      return;
    }
    const keep = Math.ceil(size / CHUNK_SIZE);
    for (const dropped of this.chunks.splice(keep)) this.pool.allocated -= dropped.length;
    // Clear the cut-off tail of the last kept chunk to keep the zero invariant.
    this.chunks.at(-1)?.fill(0, size - (keep - 1) * CHUNK_SIZE);
    this.pool.used -= this.length - size;
    this.length = size;
    if (this.chunks.length === 0) this.pool.hold(this, false);
  }

  /** Replaces the contents with a copy of `source`'s. The caller has checked the pool has room. */
  copyFrom(source: FileContent): void {
    this.truncate(0);
    source.forEachChunk((bytes, offset) => this.write(offset, bytes));
  }

  /** Loads contents exactly sized, as when restoring an image. The caller checked the budget. */
  load(bytes: Uint8Array): void {
    this.truncate(0);
    for (let offset = 0; offset < bytes.length; offset += CHUNK_SIZE) {
      const chunk = bytes.slice(offset, offset + CHUNK_SIZE);
      this.chunks.push(chunk);
      this.pool.allocated += chunk.length;
    }
    this.length = bytes.length;
    this.pool.used += bytes.length;
    if (this.chunks.length > 0) this.pool.hold(this, true);
  }

  /** Calls `visit` with views of the contents in order, without copying them. */
  forEachChunk(visit: (bytes: Uint8Array, offset: number) => void): void {
    let offset = 0;
    for (const chunk of this.chunks) {
      const n = Math.min(CHUNK_SIZE, this.length - offset);
      visit(chunk.subarray(0, n), offset);
      offset += n;
    }
  }

  /** Frees everything (the file is gone). */
  release(): void {
    this.truncate(0);
  }

  /** Drops spare capacity in the last chunk. */
  trim(): void {
    const index = this.chunks.length - 1;
    const last = this.chunks[index];
    const used = this.length - index * CHUNK_SIZE;
    if (last === undefined || used >= last.length) return;
    this.chunks[index] = last.slice(0, used);
    this.pool.allocated -= last.length - used;
  }

  private chunkAt(position: number): Uint8Array {
    const chunk = this.chunks[Math.floor(position / CHUNK_SIZE)];
    if (chunk === undefined) throw new Error(`vfs: no chunk for byte ${position}`); // a bug, not input
    return chunk;
  }

  /** Makes the file `size` bytes long, allocating as the class comment describes. */
  private grow(size: number): void {
    // If spare capacity elsewhere is in the way, take it back. The caller checked that the file
    // bytes fit, and every allocation below is then exact except the last, so all of it fits.
    if (this.pool.allocated - this.capacity + size > this.pool.limit) this.pool.reclaim();
    while (this.capacity < size) {
      const index = this.chunks.length - 1;
      const last = this.chunks[index];
      if (last !== undefined && last.length < CHUNK_SIZE) {
        const needed = Math.min(CHUNK_SIZE, size - index * CHUNK_SIZE);
        const wanted = Math.min(CHUNK_SIZE, Math.max(needed, last.length * 2));
        const grown = new Uint8Array(this.pool.grant(last.length, needed, wanted));
        grown.set(last);
        this.chunks[index] = grown;
      } else {
        const needed = Math.min(CHUNK_SIZE, size - this.chunks.length * CHUNK_SIZE);
        // Only a file's first chunk starts small: a file past one chunk is already big.
        const wanted = this.chunks.length === 0 ? Math.max(needed, MIN_CAPACITY) : CHUNK_SIZE;
        this.chunks.push(new Uint8Array(this.pool.grant(0, needed, wanted)));
      }
    }
    this.pool.used += size - this.length;
    this.length = size;
    this.pool.hold(this, true);
  }
}
