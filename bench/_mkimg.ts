import { writeFileSync } from 'node:fs';
import { Guest } from '../src/guest/guest.js';
import { encodeImage } from '../src/guest/image/index.js';
import { BENCH_LIMITS, BYTES_PER_UNIT, heapProgram, sleep } from './checkpoint-lib.js';
for (const mib of [1, 16]) {
  const units = Math.round((mib * 2 ** 20) / BYTES_PER_UNIT);
  const guest = await Guest.start(heapProgram(units), { limits: BENCH_LIMITS });
  await sleep(50);
  const cap = guest.checkpoint();
  guest.resume();
  const img = await encodeImage(cap.contents);
  writeFileSync(`/tmp/exp/g${mib}.img`, img);
  writeFileSync(`/tmp/exp/g${mib}.raw`, cap.contents.memory.data);
  guest.stop();
}
process.exit(0);
