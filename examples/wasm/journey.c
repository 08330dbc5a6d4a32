/*
 * A long computation for Roam's WebAssembly guests: a tight loop that calls nothing (Roam's fuel
 * polls make it interruptible anyway), a file written before it and read after it, and the clocks
 * read on both sides. Checkpoint it at any moment and resume it elsewhere: the result is the same
 * as an uninterrupted run's.
 *
 *   roam guest run journey.wasm --checkpoint-after 500ms --out j.img -- 400000000
 *   roam guest resume j.img
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

static int64_t ns(clockid_t clock) {
  struct timespec t;
  clock_gettime(clock, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int main(int argc, char **argv) {
  uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 400000000ULL;
  int64_t mono0 = ns(CLOCK_MONOTONIC), real0 = ns(CLOCK_REALTIME);
  mkdir("/data", 0755);
  FILE *f = fopen("/data/note.txt", "w");
  if (!f) return 2;
  fprintf(f, "written before the loop, n=%" PRIu64 "\n", n);
  fclose(f);
  printf("started n=%" PRIu64 "\n", n);
  fflush(stdout);

  uint64_t x = 88172645463325252ULL;
  for (uint64_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x += i;
  }

  int64_t mono1 = ns(CLOCK_MONOTONIC), real1 = ns(CLOCK_REALTIME);
  char line[128] = {0};
  f = fopen("/data/note.txt", "r");
  if (!f || !fgets(line, sizeof line, f)) return 3;
  fclose(f);
  printf("result %016" PRIx64 "\n", x);
  printf("file %s", line);
  printf("clocks forward %d %d\n", mono1 >= mono0, real1 >= real0);
  return 0;
}
