/* Benchmark workload: count primes below N with a byte sieve, R times (integer, memory-bound). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000000, rounds = argc > 2 ? atoi(argv[2]) : 3;
  char *s = malloc(n + 1);
  long count = 0;
  for (int r = 0; r < rounds; r++) {
    memset(s, 0, n + 1);
    count = 0;
    for (int i = 2; i <= n; i++) {
      if (s[i]) continue;
      count++;
      for (long long j = (long long)i * i; j <= n; j += i) s[j] = 1;
    }
  }
  printf("%ld\n", count);
  return 0;
}
