/**
 * Exit codes of `roam guest run/resume`. A guest that calls `process.exit(n)` exits with n; an
 * uncaught exception or unhandled rejection exits with 1, as in Node. Roam's own failures use
 * codes from the BSD sysexits range so they do not collide with what most programs return.
 */
export const EXIT = {
  OK: 0,
  GUEST_UNCAUGHT: 1,
  USAGE: 64,
  IMAGE_REFUSED: 65,
  NO_INPUT: 66,
  BUNDLE_FAILED: 67,
  MEMORY_LIMIT: 68,
  CPU_BUDGET: 69,
  INTERNAL: 70,
  IO: 74,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];
