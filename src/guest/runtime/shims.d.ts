// Polyfill packages bundled into the guest runtime that ship no types of their own: only what the
// runtime uses is declared; guest programs get the modules whole.
declare module 'util' {
  export function format(...args: unknown[]): string;
  export function inspect(value: unknown, options?: object): string;
  export const types: Record<string, unknown>;
}
declare module 'events' {
  type Listener = (...args: never[]) => void;
  class EventEmitter {
    static defaultMaxListeners: number;
    on(event: string | symbol, listener: Listener): this;
    once(event: string | symbol, listener: Listener): this;
    off(event: string | symbol, listener: Listener): this;
    addListener(event: string | symbol, listener: Listener): this;
    removeListener(event: string | symbol, listener: Listener): this;
    removeAllListeners(event?: string | symbol): this;
    emit(event: string | symbol, ...args: unknown[]): boolean;
    listenerCount(event: string | symbol): number;
    setMaxListeners(n: number): this;
  }
  export = EventEmitter;
}
declare module 'path-browserify' {
  const path: {
    resolve(...segments: string[]): string;
    join(...segments: string[]): string;
    dirname(p: string): string;
    basename(p: string, ext?: string): string;
  };
  export default path;
}
declare module 'assert' {
  const assert: { strict: unknown };
  export default assert;
}
declare module 'url' {
  const url: Record<string, unknown>;
  export = url;
}
declare module 'string_decoder' {
  export const StringDecoder: unknown;
}
declare module 'querystring-es3' {
  const querystring: Record<string, unknown>;
  export default querystring;
}
declare module 'http-parser-js' {
  export const HTTPParser: unknown;
}
declare module 'abort-controller' {
  export const AbortController: unknown;
  export const AbortSignal: unknown;
}
declare module 'core-js-pure/actual/url/index.js' {
  const URL: unknown;
  export default URL;
}
declare module 'core-js-pure/actual/url-search-params/index.js' {
  const URLSearchParams: unknown;
  export default URLSearchParams;
}
declare module 'core-js-pure/actual/structured-clone.js' {
  const structuredClone: unknown;
  export default structuredClone;
}
declare module 'readable-stream/lib/stream/promises.js' {
  const promises: Record<string, unknown>;
  export default promises;
}
