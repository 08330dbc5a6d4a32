/**
 * A reference relay for the relay benchmark (bench/relay.ts), in its own process: the plainest
 * Node TCP relay there is (`socket.pipe(upstream); upstream.pipe(socket)`), one port per service,
 * to the plain server's ports given on the command line. It shows what one Node hop costs by
 * itself, next to HAProxy's one hop and Roam's two.
 *
 *   node bench/relay-pipe.js '{"echo":PORT,...}'
 */
import net from 'node:net';
import { announce, serveRequests, type Service } from './relay-lib.js';

const backends = JSON.parse(process.argv[2] ?? '{}') as Record<Service, number>;

async function listen(backend: number): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    const upstream = net.connect({ host: '127.0.0.1', port: backend, allowHalfOpen: true, noDelay: true });
    socket.pipe(upstream);
    upstream.pipe(socket);
    socket.on('error', () => upstream.destroy());
    upstream.on('error', () => socket.destroy());
    socket.on('close', () => upstream.destroy());
    upstream.on('close', () => socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', 1024, resolve));
  return (server.address() as net.AddressInfo).port;
}

const ports: Record<string, number> = {};
for (const [service, backend] of Object.entries(backends)) ports[service] = await listen(backend);
serveRequests({});
announce(ports);
