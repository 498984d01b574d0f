/*
 * eio_shim: an LD_PRELOAD library that makes fsync or write fail on demand, for the storage
 * failure test (tests/faults/test_storage_failed.py, issue 17).
 *
 * Disarmed unless WSQ_EIO_TRIGGER names a path: then it is armed while that file exists (an
 * access() per matching call, so the test arms and disarms it by creating and deleting the file).
 * The environment is read once, at the first wrapped call.
 *   WSQ_EIO_OP=fsync   fdatasync, fsync and msync fail (on any descriptor);
 *   WSQ_EIO_OP=write   pwrite, pwrite64, write, writev and pwritev fail, but only on descriptors
 *                      of a file named data.mdb (LMDB's data file and its O_DSYNC meta page
 *                      descriptor), so that logs and sockets go on working;
 *   WSQ_EIO_ERRNO=EIO|ENOSPC   the errno of a failed call (default EIO).
 * A failed call does nothing and returns -1.
 *
 * LMDB 0.9 without MDB_WRITEMAP (as wsq opens it) writes dirty pages with pwrite and writev on
 * the data descriptor, syncs them with fdatasync, then writes the meta page with pwrite on a
 * second descriptor of data.mdb opened O_DSYNC (strace of wsqd, liblmdb0 0.9.24).
 */
#ifndef _GNU_SOURCE /* RTLD_NEXT, off64_t (the build defines it for every file) */
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum op_class { OP_NONE, OP_FSYNC, OP_WRITE };

typedef int (*fsync_fn)(int);
typedef int (*msync_fn)(void *, size_t, int);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwrite64_fn)(int, const void *, size_t, off64_t);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const char *trigger;  /* WSQ_EIO_TRIGGER; NULL: never armed */
static enum op_class which;  /* WSQ_EIO_OP */
static int fail_errno = EIO; /* WSQ_EIO_ERRNO */
static fsync_fn real_fdatasync, real_fsync;
static msync_fn real_msync;
static pwrite_fn real_pwrite;
static pwrite64_fn real_pwrite64;
static write_fn real_write;
static writev_fn real_writev;
static pwritev_fn real_pwritev;

/* Which descriptors are data.mdb, by descriptor number; an entry holds only while the file at
 * that number is the same (device and inode), so a closed and reused number is looked up
 * again. */
#define NCACHE 4096
static struct fd_kind {
    bool known; /* looked up */
    bool data;  /* the file is named data.mdb */
    dev_t dev;  /* the file it was looked up for */
    ino_t ino;
} cache[NCACHE];
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static void init(void)
{
    real_fdatasync = (fsync_fn)dlsym(RTLD_NEXT, "fdatasync");
    real_fsync = (fsync_fn)dlsym(RTLD_NEXT, "fsync");
    real_msync = (msync_fn)dlsym(RTLD_NEXT, "msync");
    real_pwrite = (pwrite_fn)dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = (pwrite64_fn)dlsym(RTLD_NEXT, "pwrite64");
    real_write = (write_fn)dlsym(RTLD_NEXT, "write");
    real_writev = (writev_fn)dlsym(RTLD_NEXT, "writev");
    real_pwritev = (pwritev_fn)dlsym(RTLD_NEXT, "pwritev");

    const char *t = getenv("WSQ_EIO_TRIGGER");
    const char *op = getenv("WSQ_EIO_OP");
    const char *e = getenv("WSQ_EIO_ERRNO");
    if (op && strcmp(op, "fsync") == 0)
        which = OP_FSYNC;
    else if (op && strcmp(op, "write") == 0)
        which = OP_WRITE;
    if (e && strcmp(e, "ENOSPC") == 0)
        fail_errno = ENOSPC;
    if (t && t[0] && which != OP_NONE)
        trigger = t;
}

static bool armed(enum op_class c)
{
    pthread_once(&once, init);
    return trigger != NULL && which == c && access(trigger, F_OK) == 0;
}

/* Is fd open on a file named data.mdb? */
static bool is_data_mdb(int fd)
{
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return false;
    bool hit = false, data = false;
    pthread_mutex_lock(&cache_lock);
    if (fd < NCACHE && cache[fd].known && cache[fd].dev == st.st_dev &&
        cache[fd].ino == st.st_ino) {
        hit = true;
        data = cache[fd].data;
    }
    pthread_mutex_unlock(&cache_lock);
    if (hit)
        return data;

    char link[64], path[4096];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n < 0)
        return false;
    path[n] = '\0';
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    data = strcmp(base, "data.mdb") == 0 || strcmp(base, "data.mdb (deleted)") == 0;
    if (fd < NCACHE) {
        pthread_mutex_lock(&cache_lock);
        cache[fd] =
            (struct fd_kind){.known = true, .data = data, .dev = st.st_dev, .ino = st.st_ino};
        pthread_mutex_unlock(&cache_lock);
    }
    return data;
}

static bool fail_write(int fd)
{
    if (armed(OP_WRITE) && is_data_mdb(fd)) {
        errno = fail_errno;
        return true;
    }
    return false;
}

static bool fail_sync(void)
{
    if (armed(OP_FSYNC)) {
        errno = fail_errno;
        return true;
    }
    return false;
}

int fdatasync(int fd)
{
    return fail_sync() ? -1 : real_fdatasync(fd);
}

int fsync(int fd)
{
    return fail_sync() ? -1 : real_fsync(fd);
}

int msync(void *addr, size_t len, int flags)
{
    return fail_sync() ? -1 : real_msync(addr, len, flags);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return fail_write(fd) ? -1 : real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    return fail_write(fd) ? -1 : real_pwrite64(fd, buf, n, off);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    return fail_write(fd) ? -1 : real_write(fd, buf, n);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    return fail_write(fd) ? -1 : real_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return fail_write(fd) ? -1 : real_pwritev(fd, iov, cnt, off);
}
