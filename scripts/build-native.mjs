// Builds Roam's native image codec (src/guest/image/native/codec.c) into dist/roam-image.node with
// the system C compiler and liblz4. Optional: without a compiler or liblz4's headers Roam still
// runs, its images decoded by the portable path (slower restores); this says so and exits 0.
// ROAM_NATIVE_REQUIRED=1 makes a failed build fail (CI, where the tools are installed).
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const headers = join(dirname(require.resolve('node-api-headers/package.json')), 'include');
const out = join(root, 'dist/roam-image.node');
mkdirSync(dirname(out), { recursive: true });
rmSync(out, { force: true }); // never a stale codec next to a failed build

const cc = process.env.CC || 'cc';
const args = [
  ...['-std=c11', '-O3', '-fPIC', '-shared', '-pthread', '-Wall', '-Wextra', '-fvisibility=hidden'],
  ...['-DNAPI_VERSION=8', `-I${headers}`, join(root, 'src/guest/image/native/codec.c')],
  ...['-o', out, '-llz4'],
];
const made = spawnSync(cc, args, { encoding: 'utf8' });
if (made.status !== 0) {
  const why = made.error
    ? `${cc}: ${made.error.message}`
    : (made.stderr || '').trim().split('\n').slice(0, 6).join('\n') || `${cc} exited with status ${made.status}`;
  console.warn(
    `roam: the native image codec was not built, so restores use the slower portable decoder.\n` +
      `  To build it, install a C compiler and liblz4's headers (Debian: apt-get install gcc liblz4-dev), then run npm run build.\n` +
      `  ${why.replace(/\n/g, '\n  ')}`,
  );
  if (process.env.ROAM_NATIVE_REQUIRED === '1') process.exit(1);
} else if (made.stderr.trim()) {
  console.warn(made.stderr.trim());
}
