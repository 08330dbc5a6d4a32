/**
 * What the Interface Controller measures about its host (paper section IV-B): CPU, memory,
 * network, the cgroup limits it runs under, and a benchmark score taken once at join.
 * Parsers are pure (text in, numbers out); `HostSampler` reads the host through them.
 */
export * from './benchmark.js';
export * from './cgroup.js';
export * from './cpu.js';
export * from './memory.js';
export * from './network.js';
export * from './read.js';
export * from './sampler.js';
