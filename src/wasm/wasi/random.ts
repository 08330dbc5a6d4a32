/**
 * The guest's random bytes: SHA-256 in counter mode over a seed drawn once from the host's CSPRNG.
 * Its whole state is the seed and a counter, so it travels in the image and a restored guest goes
 * on with the same sequence it would have drawn: restore and replay stay exact (STYLE.md, point 7).
 */
import { createHash, randomBytes } from 'node:crypto';

export interface RandomState {
  /** 32 bytes, hex. */
  seed: string;
  /** Blocks drawn so far. */
  counter: number;
  /** Unused bytes of the last block, hex. */
  spare: string;
}

export class SeededRandom {
  private readonly seed: Buffer;
  private counter: number;
  private spare: Buffer;

  constructor(state?: RandomState) {
    this.seed = state ? Buffer.from(state.seed, 'hex') : randomBytes(32);
    this.counter = state?.counter ?? 0;
    this.spare = state ? Buffer.from(state.spare, 'hex') : Buffer.alloc(0);
  }

  fill(target: Uint8Array): void {
    let done = 0;
    while (done < target.length) {
      if (this.spare.length === 0) {
        const block = Buffer.alloc(8);
        block.writeBigUInt64LE(BigInt(this.counter++));
        this.spare = createHash('sha256').update(this.seed).update(block).digest();
      }
      const n = Math.min(this.spare.length, target.length - done);
      target.set(this.spare.subarray(0, n), done);
      this.spare = this.spare.subarray(n);
      done += n;
    }
  }

  /** A float in [0, 1), for AssemblyScript's env.seed. */
  float(): number {
    const b = new Uint8Array(8);
    this.fill(b);
    return Number(new DataView(b.buffer).getBigUint64(0, true) >> 11n) / 2 ** 53;
  }

  capture(): RandomState {
    return { seed: this.seed.toString('hex'), counter: this.counter, spare: this.spare.toString('hex') };
  }
}
