/**
 * The plain TCP server of the relay benchmark (bench/relay.ts), in its own process: one port per
 * service (echo, sink, source, stall; see relay-lib.ts) on 127.0.0.1. Case (a) reaches it directly,
 * case (b) through HAProxy.
 *
 *   node --import tsx bench/relay-server.ts
 */
import net from 'node:net';
import { SERVICES, announce, serve, serveRequests, type Service } from './relay-lib.js';

async function listen(service: Service): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => serve(service, socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', 1024, resolve));
  return (server.address() as net.AddressInfo).port;
}

const ports: Record<string, number> = {};
for (const service of Object.keys(SERVICES) as Service[]) ports[service] = await listen(service);
serveRequests({});
announce(ports);
