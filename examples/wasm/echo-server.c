/*
 * A TCP server compiled to WebAssembly: WASI preview1 cannot listen, so Roam pre-opens the
 * listener (`--listen PORT`) and names its fd in ROAM_LISTEN_FDS. Each line a client sends comes
 * back numbered; the count lives in the guest's memory, so it goes on after a checkpoint and a
 * resume in another process.
 *
 *   roam guest run echo-server.wasm --listen 7070
 */
#include <stdio.h>
#include <stdlib.h>
#include <wasi/api.h>

int main(void) {
  const char *fds = getenv("ROAM_LISTEN_FDS");
  if (!fds) {
    fprintf(stderr, "no listener: run with --listen PORT\n");
    return 2;
  }
  __wasi_fd_t listener = (__wasi_fd_t)atoi(fds);
  unsigned served = 0;
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    __wasi_fd_t conn;
    if (__wasi_sock_accept(listener, 0, &conn) != 0) continue;
    char in[1024];
    for (;;) {
      __wasi_iovec_t iov = {(uint8_t *)in, sizeof in};
      __wasi_size_t got;
      __wasi_roflags_t flags;
      if (__wasi_sock_recv(conn, &iov, 1, 0, &got, &flags) != 0 || got == 0) break;
      char out[1100];
      int len = snprintf(out, sizeof out, "#%u %.*s", ++served, (int)got, in);
      __wasi_ciovec_t ov = {(const uint8_t *)out, (size_t)len};
      __wasi_size_t sent;
      if (__wasi_sock_send(conn, &ov, 1, 0, &sent) != 0) break;
      printf("served %u\n", served);
      fflush(stdout);
    }
    (void)__wasi_fd_close(conn);
  }
}
