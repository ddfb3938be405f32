/*
 * Drops files from the kernel's page cache, so the engines that map them next read them cold:
 *   evict-page-cache <file>...
 * Why: a file whose cached pages were written (by the weight converter, a download, a copy) sits in
 * 4 KiB pages; read back cold, Linux caches it in large folios and maps them as 2 MiB pages. Decode
 * streams every weight per token, and 4 KiB pages cost it up to a third of its speed (a TLB walk and
 * a hardware-prefetch restart every 4 KiB) — for whichever engine happened to get them. Evicting
 * every weight file first puts all engines on the same footing.
 * Prints one JSON line per file, in argument order: its size and how many of its bytes were cached
 * before and after.
 * Linux (posix_fadvise, mincore); exits 1 if any file could not be evicted.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bytes of the file's pages resident in the page cache, or -1. */
static long long cached_bytes(int fd, size_t size) {
    if (size == 0) return 0;
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) return -1;
    long page = sysconf(_SC_PAGESIZE);
    size_t pages = (size + page - 1) / page;
    unsigned char *vec = malloc(pages);
    long long resident = -1;
    if (vec && mincore(map, size, vec) == 0) {
        resident = 0;
        for (size_t i = 0; i < pages; i++) resident += (vec[i] & 1) ? page : 0;
    }
    free(vec);
    munmap(map, size);
    return resident;
}

int main(int argc, char **argv) {
    int failed = 0;
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
            fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
            failed = 1;
            if (fd >= 0) close(fd);
            continue;
        }
        long long before = cached_bytes(fd, (size_t)st.st_size);
        /* Written pages must reach the disk before they can be dropped. */
        int err = fdatasync(fd) != 0 ? 1 : posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        long long after = cached_bytes(fd, (size_t)st.st_size);
        /* No file name in the line: one line per argument, in order (a name is not JSON-escaped here). */
        printf("{\"bytes\":%lld,\"cached_before\":%lld,\"cached_after\":%lld,\"ok\":%s}\n", (long long)st.st_size,
               before, after, err == 0 ? "true" : "false");
        failed |= err != 0;
        close(fd);
    }
    return failed;
}
