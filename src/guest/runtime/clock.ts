/**
 * Time as the guest sees it, from the host's virtual clock: `Date.now()`, `new Date()` and
 * `performance.now()` never go backwards, even after a restore on a machine whose clock is behind.
 */
import { hostNumber } from './host.js';

const NativeDate = Date;

export const now = (): number => hostNumber('clock.wall');

function RoamDate(this: unknown, ...args: unknown[]): Date | string {
  if (!new.target) return new NativeDate(now()).toString();
  const date = args.length === 0 ? new NativeDate(now()) : new NativeDate(...(args as [number]));
  Object.setPrototypeOf(date, new.target.prototype);
  return date;
}
RoamDate.prototype = NativeDate.prototype;
Object.defineProperty(NativeDate.prototype, 'constructor', { value: RoamDate, writable: true, configurable: true });
RoamDate.now = now;
RoamDate.parse = NativeDate.parse;
RoamDate.UTC = NativeDate.UTC;

export const DateClass = RoamDate as unknown as DateConstructor;

const origin = 0;
export const performance = {
  timeOrigin: origin,
  now: (): number => hostNumber('clock.mono'),
  mark: () => undefined,
  measure: () => undefined,
  toJSON: () => ({ timeOrigin: origin }),
};
