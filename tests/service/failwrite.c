/* A failing card for tests, as an LD_PRELOAD shim: write(2) (and pwrite, writev) on a file whose
 * path contains a given string fails with a given errno while a control file says so.
 *
 *   gcc -shared -fPIC -O1 -o failwrite.so failwrite.c -ldl
 *   EDGEBUS_FAILWRITE=/tmp/ctl LD_PRELOAD=./failwrite.so edgebus serve ...
 *   echo "5 1 /data/t-0/" > /tmp/ctl   # the next write to a file under /data/t-0/: EIO, once
 *   echo "30 -1 /data/" > /tmp/ctl     # every write under /data/: EROFS
 *   rm /tmp/ctl                        # writes succeed again
 *
 * The control file holds "ERRNO COUNT SUBSTRING": COUNT writes fail (-1: every one) from the
 * moment the file was last written (its mtime and size re-arm the count), then writes succeed
 * again: a transient error. Only for tests (tests/service/test_write_errors.py): it reads the
 * control file and the fd's path at every write. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static struct timespec armed_mtime;
static off_t armed_size = -1;
static long failed;

/* -1: let the write through; else the errno it fails with. */
static int should_fail(int fd) {
    const char *ctl = getenv("EDGEBUS_FAILWRITE");
    struct stat st;
    if (ctl == NULL || stat(ctl, &st) != 0) return -1;
    if (st.st_mtim.tv_sec != armed_mtime.tv_sec || st.st_mtim.tv_nsec != armed_mtime.tv_nsec
        || st.st_size != armed_size) {
        armed_mtime = st.st_mtim;
        armed_size = st.st_size;
        failed = 0;
    }
    char spec[512];
    int cfd = open(ctl, O_RDONLY | O_CLOEXEC);
    if (cfd < 0) return -1;
    ssize_t n = read(cfd, spec, sizeof spec - 1);
    close(cfd);
    if (n <= 0) return -1;
    spec[n] = 0;
    int err = 0;
    long count = 0;
    char sub[400];
    if (sscanf(spec, "%d %ld %399s", &err, &count, sub) != 3 || err <= 0) return -1;
    if (count >= 0 && failed >= count) return -1;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t k = readlink(link, path, sizeof path - 1);
    if (k <= 0) return -1;
    path[k] = 0;
    if (strstr(path, sub) == NULL) return -1;
    failed++;
    return err;
}

ssize_t write(int fd, const void *buf, size_t count) {
    static ssize_t (*real)(int, const void *, size_t);
    if (real == NULL) real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    int e = should_fail(fd);
    if (e >= 0) { errno = e; return -1; }
    return real(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t off) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (real == NULL) real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    int e = should_fail(fd);
    if (e >= 0) { errno = e; return -1; }
    return real(fd, buf, count, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t off) {
    return pwrite(fd, buf, count, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    static ssize_t (*real)(int, const struct iovec *, int);
    if (real == NULL) real = (ssize_t (*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
    int e = should_fail(fd);
    if (e >= 0) { errno = e; return -1; }
    return real(fd, iov, cnt);
}
