/**
 * `node:http` for guests, built on the guest's own `node:net` and the `http-parser-js` parser, so
 * an HTTP server or client in a guest is ordinary guest state: its sockets, parsers and pending
 * responses travel in the guest's memory like everything else.
 *
 * Server: one `ServerConnection` per accepted socket parses requests, queues their responses so
 * pipelined requests are answered in order, and applies Node's keep-alive rules. Client: a
 * `ClientRequest` takes a socket from an `Agent` (reusing an idle keep-alive one when it can) and
 * parses the response. Backpressure goes both ways: a body nobody reads pauses the socket, and a
 * response write the socket cannot take yet returns false until `'drain'`.
 */
import { Agent, ClientRequest, agents, get, request } from './client.js';
import { DEFAULT_MAX_HEADER_SIZE, METHODS, STATUS_CODES, validateHeaderName, validateHeaderValue } from './common.js';
import { IncomingMessage } from './incoming.js';
import { OutgoingMessage } from './outgoing.js';
import { Server, ServerResponse, createServer } from './server.js';

export const httpModule = {
  METHODS,
  STATUS_CODES,
  Agent,
  ClientRequest,
  IncomingMessage,
  OutgoingMessage,
  Server,
  ServerResponse,
  createServer,
  request,
  get,
  validateHeaderName,
  validateHeaderValue,
  maxHeaderSize: DEFAULT_MAX_HEADER_SIZE,
  setMaxIdleHTTPParsers(): void {},
  get globalAgent(): Agent {
    return agents.global;
  },
  set globalAgent(agent: Agent) {
    agents.global = agent;
  },
};
