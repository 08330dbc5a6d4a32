/**
 * Runs the instrumenter on a worker thread (instrument-worker.ts), so that the calling thread (a
 * host's controller: its guests, its link to the proxy) keeps running meanwhile. From the built
 * package the worker is dist/wasm-instrument.js; from the sources (tsx) it is the .ts file, loaded
 * with tsx.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { RoamError, type RoamErrorCode } from '../errors.js';
import type { InstrumentOptions } from './instrument.js';
import type { InstrumentReply } from './instrument-worker.js';

/** The worker: the built script, or (from the sources) a bootstrap that registers tsx first. */
function workerScript(): { script: URL | string; eval: boolean } | undefined {
  const fromSource = import.meta.url.endsWith('.ts');
  const url = new URL(fromSource ? './instrument-worker.ts' : './wasm-instrument.js', import.meta.url);
  if (!existsSync(fileURLToPath(url))) return undefined;
  if (!fromSource) return { script: url, eval: false };
  // `--import tsx` in a worker's execArgv does not apply to its entry on Node 20: register by hand.
  const tsx = import.meta.resolve('tsx/esm/api');
  return {
    script: `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(url.href)}); });`,
    eval: true,
  };
}

/**
 * The instrumented module, made on a worker thread; undefined when no worker script is at hand.
 * `signal` ends the worker at once (a host that shuts down does not wait for binaryen).
 */
export function instrumentOffThread(
  source: Uint8Array,
  options: InstrumentOptions,
  signal?: AbortSignal,
): Promise<Uint8Array> | undefined {
  const script = workerScript();
  if (!script) return undefined;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new RoamError('ROAM_ERR_ABORTED', 'instrumenting the module was called off'));
      return;
    }
    const worker = new Worker(script.script, {
      eval: script.eval,
      // Only the instrumenter's own options: callers pass larger objects (with functions) as these.
      workerData: {
        source,
        options: {
          ...(options.fuelInterval === undefined ? {} : { fuelInterval: options.fuelInterval }),
          ...(options.optimizeLevel === undefined ? {} : { optimizeLevel: options.optimizeLevel }),
        },
      },
    });
    let settled = false;
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      void worker.terminate();
      reject(new RoamError('ROAM_ERR_ABORTED', 'instrumenting the module was called off'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.once('exit', () => signal?.removeEventListener('abort', onAbort));
    worker.once('message', (reply: InstrumentReply) => {
      settled = true;
      void worker.terminate();
      if (reply.ok) resolve(new Uint8Array(reply.bytes));
      else {
        const code = (reply.code?.startsWith('ROAM_ERR_') ? reply.code : 'ROAM_ERR_WASM_MODULE') as RoamErrorCode;
        reject(new RoamError(code, reply.message));
      }
    });
    worker.once('error', (err) => {
      if (settled) return;
      settled = true;
      reject(new RoamError('ROAM_ERR_WASM_MODULE', `the instrumenter failed: ${err.message}`, { cause: err }));
    });
    worker.once('exit', (code) => {
      if (settled) return;
      settled = true;
      reject(new RoamError('ROAM_ERR_WASM_MODULE', `the instrumenter stopped (exit code ${code}) before it answered`));
    });
  });
}
