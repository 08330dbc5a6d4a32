/** TextEncoder and TextDecoder backed by the host's UTF-8 codec (fast, and exact as Node's). */
import { host, hostBytes, toArrayBuffer } from './host.js';

export class TextEncoder {
  readonly encoding = 'utf-8';
  encode(input = ''): Uint8Array {
    return hostBytes('utf8.encode', String(input));
  }
  encodeInto(input: string, dest: Uint8Array): { read: number; written: number } {
    const bytes = this.encode(input);
    if (bytes.length <= dest.length) {
      dest.set(bytes);
      return { read: input.length, written: bytes.length };
    }
    // Fall back to encoding whole code points until the next one would not fit.
    let read = 0;
    let written = 0;
    for (const ch of input) {
      const b = this.encode(ch);
      if (written + b.length > dest.length) break;
      dest.set(b, written);
      written += b.length;
      read += ch.length;
    }
    return { read, written };
  }
}

type BufferSourceLike = ArrayBuffer | ArrayBufferView;

export class TextDecoder {
  readonly encoding: string;
  readonly fatal: boolean;
  readonly ignoreBOM: boolean;
  #pending: Uint8Array | undefined;
  constructor(label = 'utf-8', options: { fatal?: boolean; ignoreBOM?: boolean } = {}) {
    const l = String(label).toLowerCase();
    if (l !== 'utf-8' && l !== 'utf8' && l !== 'unicode-1-1-utf-8') {
      throw new RangeError(`The "${label}" encoding is not supported`);
    }
    this.encoding = 'utf-8';
    this.fatal = options.fatal === true;
    this.ignoreBOM = options.ignoreBOM === true;
  }
  decode(input?: BufferSourceLike, options: { stream?: boolean } = {}): string {
    let bytes =
      input === undefined
        ? new Uint8Array(0)
        : input instanceof ArrayBuffer
          ? new Uint8Array(input)
          : new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
    if (this.#pending) {
      const joined = new Uint8Array(this.#pending.length + bytes.length);
      joined.set(this.#pending);
      joined.set(bytes, this.#pending.length);
      bytes = joined;
      this.#pending = undefined;
    }
    if (options.stream) {
      // Hold back an incomplete trailing sequence for the next call.
      let cut = bytes.length;
      for (let i = bytes.length - 1, n = 0; i >= 0 && n < 4; i--, n++) {
        const b = bytes[i] ?? 0;
        if ((b & 0xc0) === 0x80) continue;
        const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
        if (bytes.length - i < need) cut = i;
        break;
      }
      if (cut < bytes.length) {
        this.#pending = bytes.slice(cut);
        bytes = bytes.subarray(0, cut);
      }
    }
    const out = String(host('utf8.decode', toArrayBuffer(bytes), this.fatal, this.ignoreBOM));
    return out;
  }
}
