/*
 * The machine's read bandwidth, STREAM-style, for the benchmark's "share of the memory limit" columns:
 *   read-bandwidth <threads> <MiB> <repetitions>
 * Sums a buffer far larger than the caches (each thread its own contiguous slice, as a mat-vec streams
 * its rows) and prints one JSON line with the best and median GB/s (1 GB = 1e9 bytes) over the repetitions.
 * Compiled by the bench at run time with `cc -O3 -march=native -pthread`, so the sum uses the widest loads
 * this CPU has, like the engines' own kernels.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct slice {
    const uint64_t *data;
    size_t words;
    uint64_t sum;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *sum_slice(void *arg) {
    struct slice *s = arg;
    uint64_t acc = 0;
    for (size_t i = 0; i < s->words; i++) acc += s->data[i];
    s->sum = acc;
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: read-bandwidth <threads> <MiB> <repetitions>\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    long mib = atol(argv[2]);
    int reps = atoi(argv[3]);
    if (threads < 1 || threads > 1024 || mib < 1 || mib > (1L << 20) || reps < 1 || reps > 1000) {
        fprintf(stderr, "read-bandwidth: threads 1..1024, MiB 1..2^20, repetitions 1..1000\n");
        return 2;
    }
    size_t bytes = (size_t)mib << 20;
    size_t words = bytes / sizeof(uint64_t);
    uint64_t *buf = aligned_alloc(4096, bytes);
    if (!buf) {
        fprintf(stderr, "read-bandwidth: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    memset(buf, 1, bytes); /* every page resident before timing */

    struct slice *slices = calloc((size_t)threads, sizeof *slices);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    double *gbps = calloc((size_t)reps + 1, sizeof *gbps);
    if (!slices || !tids || !gbps) return 1;
    size_t per = words / (size_t)threads;
    uint64_t check = 0;
    /* Repetition 0 warms up (thread start, TLB); the rest are measured. */
    for (int r = 0; r <= reps; r++) {
        double t0 = now_s();
        for (int t = 0; t < threads; t++) {
            slices[t].data = buf + per * (size_t)t;
            slices[t].words = t == threads - 1 ? words - per * (size_t)t : per;
            if (pthread_create(&tids[t], NULL, sum_slice, &slices[t]) != 0) {
                fprintf(stderr, "read-bandwidth: pthread_create failed\n");
                return 1;
            }
        }
        for (int t = 0; t < threads; t++) {
            pthread_join(tids[t], NULL);
            check += slices[t].sum;
        }
        gbps[r] = (double)bytes / (now_s() - t0) / 1e9;
    }
    qsort(gbps + 1, (size_t)reps, sizeof(double), cmp_double);
    double median = reps % 2 ? gbps[1 + reps / 2] : (gbps[reps / 2] + gbps[1 + reps / 2]) / 2;
    /* check keeps the sums live; every byte is 1, so it is known. */
    int ok = check == (uint64_t)(reps + 1) * (uint64_t)words * 0x0101010101010101ULL;
    printf("{\"threads\":%d,\"bytes\":%zu,\"repetitions\":%d,\"best_gbps\":%.3f,\"median_gbps\":%.3f,\"checksum_ok\":%s}\n",
           threads, bytes, reps, gbps[reps], median, ok ? "true" : "false");
    free(gbps);
    free(tids);
    free(slices);
    free(buf);
    return ok ? 0 : 1;
}
