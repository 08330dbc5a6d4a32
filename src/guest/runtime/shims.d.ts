// Polyfill packages bundled into the guest runtime that ship no types of their own.
declare module 'util' {
  export function format(...args: unknown[]): string;
  export function inspect(value: unknown, options?: object): string;
  export function inherits(ctor: unknown, superCtor: unknown): void;
  export function deprecate<T>(fn: T, msg: string): T;
  export function promisify(fn: unknown): (...args: unknown[]) => Promise<unknown>;
  const util: Record<string, unknown>;
  export default util;
}
declare module 'events' {
  class EventEmitter {
    static defaultMaxListeners: number;
    on(event: string | symbol, listener: (...args: any[]) => void): this;
    once(event: string | symbol, listener: (...args: any[]) => void): this;
    off(event: string | symbol, listener: (...args: any[]) => void): this;
    addListener(event: string | symbol, listener: (...args: any[]) => void): this;
    removeListener(event: string | symbol, listener: (...args: any[]) => void): this;
    removeAllListeners(event?: string | symbol): this;
    emit(event: string | symbol, ...args: unknown[]): boolean;
    listenerCount(event: string | symbol): number;
    listeners(event: string | symbol): Function[];
    setMaxListeners(n: number): this;
  }
  export = EventEmitter;
}
declare module 'path-browserify';
declare module 'assert';
declare module 'url';
declare module 'string_decoder';
declare module 'querystring-es3';
declare module 'readable-stream';
declare module 'http-parser-js';
declare module 'abort-controller';
declare module 'core-js-pure/actual/url/index.js';
declare module 'core-js-pure/actual/url-search-params/index.js';
declare module 'core-js-pure/actual/structured-clone.js';
