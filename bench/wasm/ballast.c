/* Benchmark guest: fills MIB mebibytes with non-zero data, says "ready", then spins until stopped. */
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
  size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 16;
  unsigned char *p = malloc(mib << 20);
  for (size_t i = 0; i < (mib << 20); i++) p[i] = (unsigned char)(i * 2654435761u >> 13) | 1;
  printf("ready\n");
  fflush(stdout);
  volatile unsigned long spin = 0;
  for (;;) spin += p[spin % (mib << 20)];
}
