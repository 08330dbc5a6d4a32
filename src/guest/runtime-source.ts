/** The built guest runtime (dist/guest-runtime.js), read once per process. */
import { readFile } from 'node:fs/promises';
import { packageRoot } from '../package-root.js';
import { join } from 'node:path';
import { RoamError } from '../errors.js';

let source: Promise<string> | undefined;

export function guestRuntimeSource(): Promise<string> {
  source ??= readFile(join(packageRoot(), 'dist', 'guest-runtime.js'), 'utf8').catch((err: unknown) => {
    source = undefined;
    throw new RoamError(
      'ROAM_ERR_SANDBOX',
      'the guest runtime is not built (dist/guest-runtime.js is missing): run `npm run build`',
      { cause: err },
    );
  });
  return source;
}
