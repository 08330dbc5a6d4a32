/**
 * In-process sandbox or worker thread? Measures what a guest pays per host call in-process (a
 * guest loop of Date.now(), each one a call through the sandbox's host function) against the
 * floor of a worker design: one postMessage round trip between threads.
 *
 *   node --import tsx bench/host-call.ts
 */
import { Worker } from 'node:worker_threads';
import { Guest } from '../src/guest/guest.js';

const CALLS = 100_000;

async function inProcess(): Promise<number> {
  let report = '';
  const guest = await Guest.start(
    `const t0 = performance.now(); let x = 0; for (let i = 0; i < ${CALLS}; i++) x += Date.now() & 1;
     console.log(String((performance.now() - t0) * 1000 / ${CALLS}));`,
    { onLog: (r) => (report += r.text) },
  );
  await guest.exited;
  return Number(report.trim());
}

async function workerRoundTrip(): Promise<number> {
  const worker = new Worker(
    `const { parentPort } = require('node:worker_threads'); parentPort.on('message', (m) => parentPort.postMessage(m));`,
    {
      eval: true,
    },
  );
  const rounds = 20_000;
  await new Promise<void>((resolve) => {
    worker.once('message', () => resolve());
    worker.postMessage(0);
  });
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) {
    await new Promise<void>((resolve) => {
      worker.once('message', () => resolve());
      worker.postMessage(i);
    });
  }
  const us = ((performance.now() - t0) * 1000) / rounds;
  await worker.terminate();
  return us;
}

const a = await inProcess();
const b = await workerRoundTrip();
console.log(`host call in-process (guest Date.now, incl. QuickJS call overhead): ${a.toFixed(2)} µs`);
console.log(`postMessage round trip to a worker thread (floor of a worker design): ${b.toFixed(2)} µs`);
console.log(`ratio worker/in-process: ${(b / a).toFixed(1)}x`);
