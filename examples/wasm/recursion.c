/*
 * A long computation with no loop in it: a doubly recursive function (the shape of naive
 * Fibonacci, with a combination that is not associative, so the compiler cannot turn half of the
 * calls into a loop) and a pair of mutually recursive functions under it. Roam polls at the entry
 * of recursive functions, so it can be checkpointed mid-recursion like a loop can:
 *
 *   roam guest run recursion.wasm --checkpoint-after 300ms --out r.img -- 40
 *   roam guest resume r.img
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t down(uint32_t n, uint64_t x);

/* Mutual recursion: up and down call each other (not inlined, so each stays a function). */
__attribute__((noinline)) static uint64_t up(uint32_t n, uint64_t x) {
  if (n == 0) return x;
  return down(n - 1, x * 31 + n) ^ 0x5bd1e995;
}
__attribute__((noinline)) static uint64_t down(uint32_t n, uint64_t x) {
  if (n == 0) return x;
  return up(n - 1, x ^ (x >> 3)) + 7;
}

__attribute__((noinline)) static uint64_t tree(uint32_t n) {
  if (n < 2) return up(3, n);
  uint64_t a = tree(n - 1);
  uint64_t b = tree(n - 2);
  return (a ^ (b << 1)) + (a >> 5);
}

int main(int argc, char **argv) {
  uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 40;
  printf("started n=%" PRIu32 "\n", n);
  fflush(stdout);
  printf("result %016" PRIx64 "\n", tree(n));
  return 0;
}
