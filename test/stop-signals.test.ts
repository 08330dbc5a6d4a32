/**
 * How a stopping process reads SIGINT and SIGTERM (src/common/stop-signals.ts): the first starts
 * the stop, the same interruption delivered again a moment later changes nothing, a later one forces.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SAME_SIGNAL_MS, onStopSignals } from '../src/common/stop-signals.js';

test('a signal repeated within SAME_SIGNAL_MS is the same interruption; a later one forces the stop', () => {
  let clock = 1000;
  const calls: string[] = [];
  const off = onStopSignals(
    () => calls.push('stop'),
    () => calls.push('force'),
    () => clock,
  );
  try {
    process.emit('SIGINT');
    clock += 10;
    process.emit('SIGTERM'); // `timeout` and a process group: the same one again
    assert.deepEqual(calls, ['stop']);
    clock += SAME_SIGNAL_MS;
    process.emit('SIGINT');
    assert.deepEqual(calls, ['stop', 'force']);
  } finally {
    off();
  }
  process.emit('SIGINT');
  assert.deepEqual(calls, ['stop', 'force'], 'unsubscribed');
});
