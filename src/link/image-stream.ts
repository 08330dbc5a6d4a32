/**
 * A checkpoint image carried whole on one link stream (a backup image on its way to the proxy, or
 * to the host that resumes it): the opener announces its length in OPEN, writes it and ends; the
 * reader takes exactly that many bytes. Flow control is the stream's own, so an image never holds
 * up the connections that share the link.
 */
import { RoamError, type RoamErrorCode } from '../errors.js';
import type { LinkStream } from './stream.js';

/** How long an image transfer may take, either end, before it is given up (and when it may be asked again). */
export const IMAGE_TIMEOUT_MS = 120_000;
/** Slices written at a time: the stream keeps views of them, not copies. */
const WRITE_SLICE = 1024 * 1024;

/**
 * Writes `bytes` to the stream and ends it; resolves once the peer acknowledged all of them. A
 * stream whose link went away waits detached for a new one (streams outlive links), so the whole
 * transfer is bounded by `timeoutMs`: then the stream is destroyed.
 */
export async function writeImage(stream: LinkStream, bytes: Uint8Array, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const ended = new Promise<void>((resolve, reject) => {
    stream.once('finish', resolve);
    stream.once('error', reject);
    stream.once('close', () => reject(new RoamError('ROAM_ERR_IMAGE_TRANSFER', 'the image stream closed early')));
    timer = setTimeout(() => {
      reject(new RoamError('ROAM_ERR_TIMEOUT', `the image was not taken within ${timeoutMs / 1000} s`));
      stream.destroy();
    }, timeoutMs);
  }).finally(() => clearTimeout(timer));
  ended.catch(() => {}); // awaited below; an early error must not go unhandled meanwhile
  stream.resume(); // nothing comes this way, but the stream closes only once its reading side ended
  for (let at = 0; at < bytes.length; at += WRITE_SLICE) {
    if (stream.destroyed) break;
    const slice = bytes.subarray(at, Math.min(bytes.length, at + WRITE_SLICE));
    if (!stream.write(slice)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          stream.off('drain', done);
          stream.off('close', done);
          resolve();
        };
        stream.on('drain', done);
        stream.on('close', done);
      });
    }
  }
  stream.end();
  await ended;
}

/**
 * Reads an image of exactly `length` bytes from the stream (the length its OPEN announced). More,
 * or an end before all of it arrived, is an error: the stream is destroyed and nothing is kept.
 */
export function readImage(stream: LinkStream, length: number, timeoutMs: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    let image: Uint8Array;
    try {
      image = new Uint8Array(length);
    } catch (err) {
      stream.destroy();
      reject(new RoamError('ROAM_ERR_IMAGE_TOO_LARGE', `cannot hold an image of ${length} bytes`, { cause: err }));
      return;
    }
    let filled = 0;
    const fail = (code: RoamErrorCode, message: string): void => {
      clearTimeout(timer);
      stream.destroy();
      reject(new RoamError(code, message));
    };
    const timer = setTimeout(
      () =>
        fail(
          'ROAM_ERR_TIMEOUT',
          `the image did not arrive within ${timeoutMs / 1000} s (${filled} of ${length} bytes)`,
        ),
      timeoutMs,
    );
    stream.on('data', (chunk: Buffer) => {
      if (filled + chunk.length > length) {
        fail('ROAM_ERR_IMAGE_TRANSFER', `the image stream carried more than the ${length} bytes it announced`);
        return;
      }
      image.set(chunk, filled);
      filled += chunk.length;
    });
    stream.once('end', () => {
      clearTimeout(timer);
      if (filled !== length) {
        reject(new RoamError('ROAM_ERR_IMAGE_TRANSFER', `the image stream ended after ${filled} of ${length} bytes`));
        return;
      }
      stream.end(); // our direction carries nothing: close it so the stream finishes
      resolve(image);
    });
    stream.once('error', (err: Error) => {
      clearTimeout(timer);
      reject(new RoamError('ROAM_ERR_IMAGE_TRANSFER', `the image stream failed: ${err.message}`, { cause: err }));
    });
    stream.once('close', () => {
      clearTimeout(timer);
      // Settled already unless the stream was destroyed quietly (its link went away, say).
      reject(new RoamError('ROAM_ERR_IMAGE_TRANSFER', `the image stream closed after ${filled} of ${length} bytes`));
    });
  });
}
