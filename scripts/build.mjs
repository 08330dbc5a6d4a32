// Builds what the package runs: the guest runtime (evaluated inside every QuickJS sandbox), the
// `roam` command and the native image codec. Type checking is `npm run typecheck`; this step only
// bundles and compiles (a few seconds).
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { copyFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
rmSync(join(root, 'dist'), { recursive: true, force: true });

/** Options every guest-side bundle shares: see src/guest/runtime/promise.ts for the lowering. */
export const guestSupported = { 'async-await': false, 'async-generator': false, 'for-await': false };

/** The Node-side bundles (the CLI, the instrumenter's worker): ESM for Node 20, dependencies left to node_modules. */
const nodeBundle = {
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  sourcemap: true,
  logLevel: 'warning',
};

await Promise.all([
  build({
    entryPoints: [join(root, 'src/guest/runtime/index.ts')],
    outfile: join(root, 'dist/guest-runtime.js'),
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'es2022',
    supported: guestSupported,
    inject: [join(root, 'src/guest/runtime/inject.ts')],
    alias: {
      process: join(root, 'src/guest/runtime/process.ts'),
      // The package's browser entry only re-exports the browser's own; we need the polyfill.
      'abort-controller': join(root, 'node_modules/abort-controller/dist/abort-controller.mjs'),
    },
    minify: process.env.ROAM_RUNTIME_MINIFY !== '0',
    legalComments: 'none',
    logLevel: 'warning',
  }),
  build({
    entryPoints: [join(root, 'src/cli/main.ts')],
    outfile: join(root, 'dist/cli.js'),
    ...nodeBundle,
  }),
  // The WebAssembly instrumenter's worker thread (src/wasm/instrument-thread.ts).
  build({
    entryPoints: [join(root, 'src/wasm/instrument-worker.ts')],
    outfile: join(root, 'dist/wasm-instrument.js'),
    ...nodeBundle,
  }),
  // The dashboard the proxy serves at / (src/proxy/pages.ts): one script and one style sheet, uPlot
  // included, nothing loaded from elsewhere.
  build({
    entryPoints: { app: join(root, 'src/dashboard/app/main.ts') },
    outdir: join(root, 'dist/dashboard'),
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: ['chrome110', 'firefox110', 'safari16'],
    minify: true,
    legalComments: 'linked',
    logLevel: 'warning',
  }).then(() => copyFileSync(join(root, 'src/dashboard/app/index.html'), join(root, 'dist/dashboard/index.html'))),
]);

// The native image codec (optional: scripts/build-native.mjs says what is missing without it).
const native = spawnSync(process.execPath, [join(root, 'scripts/build-native.mjs')], { stdio: 'inherit' });
if (native.status !== 0) process.exit(native.status ?? 1);

// The runtime template: the sandbox memory right after the runtime loaded (src/guest/template.ts).
const made = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'scripts/make-template.ts')], {
  stdio: 'inherit',
});
if (made.status !== 0) process.exit(made.status ?? 1);
