/* LD_PRELOAD shim for the benchmark only: gives pg_recvlogical's TCP
 * sockets the receive buffer that `projector run` asks for on loopback
 * (BENCH_RCVBUF bytes, set before connect), so the two can also be
 * compared with the same window (bench.py --recvlogical-rcvbuf). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/socket.h>

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_connect)(int, const struct sockaddr *, socklen_t);
    if (!real_connect)
        real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    const char *v = getenv("BENCH_RCVBUF");
    if (v && addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
        int n = atoi(v);
        if (n > 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &n, sizeof n);
    }
    return real_connect(fd, addr, len);
}
