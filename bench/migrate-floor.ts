/**
 * The floor of the migration benchmark (bench/migrate.ts), run inside the hosts' namespaces:
 *
 *   node --import tsx bench/migrate-floor.ts serve PORT
 *   node --import tsx bench/migrate-floor.ts send HOST PORT BYTES REPS PINGS
 *
 * `serve` is a sink: each transfer on a connection starts with an 8-byte big-endian length; once
 * that many bytes have arrived it answers with one byte. `send` connects once, then times PINGS
 * round trips of a 1-byte transfer (the round-trip time) and REPS transfers of BYTES bytes, each
 * from its first write until the sink's answer (1 MiB writes of one preallocated buffer, as fast
 * as the socket takes them). It prints one JSON line: `{ "rtts": [ms...], "times": [ms...] }`.
 * Plain Node to Node over the same veth link a migration uses: what the bytes cost by themselves.
 */
import net from 'node:net';
import { adoptWithOwnReads } from '../src/common/own-reads.js';

const [mode, ...args] = process.argv.slice(2);

function serve(port: number): void {
  net
    .createServer((accepted) => {
      const header = Buffer.alloc(8);
      let headerFill = 0;
      let left = -1; // bytes still due in the current transfer; -1 while reading its header
      const into = Buffer.alloc(256 * 1024);
      const onBytes = (chunk: Buffer): void => {
        let at = 0;
        while (at < chunk.length) {
          if (left < 0) {
            const n = Math.min(8 - headerFill, chunk.length - at);
            chunk.copy(header, headerFill, at, at + n);
            headerFill += n;
            at += n;
            if (headerFill < 8) return;
            headerFill = 0;
            left = Number(header.readBigUInt64BE(0));
          }
          const n = Math.min(left, chunk.length - at);
          left -= n;
          at += n;
          if (left === 0) {
            left = -1;
            socket.write(Buffer.of(1));
          }
        }
      };
      // Reads go into one buffer, used again for every read, as the migration target's do: a new
      // 64 KiB buffer per read made the sink collect garbage in the middle of a transfer.
      const socket =
        adoptWithOwnReads(accepted, {
          buffer: () => into,
          callback: (bytes) => {
            onBytes(into.subarray(0, bytes));
            return true;
          },
        }) ?? accepted.on('data', onBytes);
      socket.setNoDelay(true);
      socket.on('error', () => {});
    })
    .listen(port, () => process.stdout.write(`floor sink on ${port}\n`));
}

async function send(host: string, port: number, bytes: number, reps: number, pings: number): Promise<void> {
  const socket = net.connect({ host, port });
  socket.setNoDelay(true);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let answered: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    for (let i = 0; i < chunk.length; i++) answered?.();
  });
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  const transfer = async (n: number): Promise<number> => {
    const done = new Promise<void>((resolve) => (answered = resolve));
    const t0 = performance.now();
    const header = Buffer.alloc(8);
    header.writeBigUInt64BE(BigInt(n));
    socket.write(header);
    let left = n;
    while (left > 0) {
      const part = left >= chunk.length ? chunk : chunk.subarray(0, left);
      left -= part.length;
      if (!socket.write(part)) await new Promise((resolve) => socket.once('drain', resolve));
    }
    await done;
    return performance.now() - t0;
  };
  const rtts: number[] = [];
  for (let i = 0; i < pings; i++) rtts.push(await transfer(1));
  const times: number[] = [];
  await transfer(bytes); // warm-up: the connection's window opens, buffers are faulted in
  for (let i = 0; i < reps; i++) times.push(await transfer(bytes));
  socket.destroy();
  process.stdout.write(`${JSON.stringify({ rtts, times })}\n`);
}

if (mode === 'serve') serve(Number(args[0]));
else if (mode === 'send') {
  const [host = '', port, bytes, reps, pings] = args;
  await send(host, Number(port), Number(bytes), Number(reps), Number(pings));
} else {
  process.stderr.write('usage: migrate-floor.ts serve PORT | send HOST PORT BYTES REPS PINGS\n');
  process.exit(2);
}
