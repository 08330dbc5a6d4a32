// Injected by esbuild into every polyfill module that refers to these free names.
export { process } from './process.js';
export { Buffer } from 'buffer';
export const global = globalThis;
