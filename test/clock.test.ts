/** The guest's virtual clock never goes backwards, whatever the clock of the host it lands on. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtualClock } from '../src/guest/host/clock.js';

test('wall time continues from the image on a host whose clock is behind', () => {
  let hostNow = 1_000_000;
  const source = new VirtualClock(undefined, () => hostNow);
  hostNow += 5_000;
  const captured = source.capture();
  assert.equal(captured.wall, 1_005_000);

  let targetNow = 900_000; // this host's clock is 105 s behind
  const target = new VirtualClock(captured, () => targetNow);
  assert.equal(target.wall(), 1_005_000, 'not earlier than the captured time');
  targetNow += 250;
  assert.equal(target.wall(), 1_005_250, 'and it moves on at real speed');
});

test('wall time follows the host when the host is ahead, and never steps back', () => {
  let hostNow = 2_000_000;
  const clock = new VirtualClock({ wall: 1_000_000, mono: 0 }, () => hostNow);
  assert.equal(clock.wall(), 2_000_000);
  hostNow -= 10_000; // the host's clock is set back (NTP step)
  assert.equal(clock.wall(), 2_000_000);
  hostNow += 10_001;
  assert.equal(clock.wall(), 2_000_001);
});

test('monotonic time continues from the captured value', () => {
  const clock = new VirtualClock({ wall: 0, mono: 12_345 });
  const t = clock.mono();
  assert.ok(t >= 12_345 && t < 12_345 + 1_000, `mono ${t}`);
  assert.ok(clock.mono() >= t);
});
