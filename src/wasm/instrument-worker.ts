/**
 * The instrumenter's own thread (see instrument-thread.ts): binaryen's passes take seconds of
 * CPU on a real module, which on the calling thread would stall a host's every guest and its link
 * to the proxy. Gets the module and options as workerData, answers with the instrumented bytes or
 * the error's code and message.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { instrumentModule, type InstrumentOptions } from './instrument.js';

export type InstrumentReply =
  { ok: true; bytes: Uint8Array } | { ok: false; code: string | undefined; message: string };

const { source, options } = workerData as { source: Uint8Array; options: InstrumentOptions };
instrumentModule(source, options).then(
  (bytes) => parentPort?.postMessage({ ok: true, bytes } satisfies InstrumentReply),
  (err: unknown) => {
    const e = err as { code?: unknown; message?: unknown };
    parentPort?.postMessage({
      ok: false,
      code: typeof e.code === 'string' ? e.code : undefined,
      message: typeof e.message === 'string' ? e.message : String(err),
    } satisfies InstrumentReply);
  },
);
