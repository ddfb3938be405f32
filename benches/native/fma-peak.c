/*
 * The machine's f32 multiply-add throughput, for the benchmark's "share of the compute limit" columns:
 *   fma-peak <threads> <milliseconds per repetition> <repetitions>
 * Prefill multiplies every weight matrix by a block of prompt tokens, so its ceiling is arithmetic, not
 * memory. Each thread runs ACCUMULATORS independent chains of vector FMAs (enough to hide the FMA
 * latency on every current core: latency 4-5 cycles x 2 units), with nothing but registers involved.
 * Each repetition runs about <milliseconds> on every thread; prints one JSON line with the best and
 * median GFLOP/s over wall time (1 FMA = 2 FLOPs, 1 GFLOP = 1e9), and the best rate over the threads' own
 * CPU time (higher than the wall rate when other processes shared the cores: a busy-machine sign). Compiled by the bench at run time with `cc -O3 -march=native -ffp-contract=fast -pthread`,
 * so the chains use the widest vectors this CPU has, like the engines' own kernels.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* The widest f32 vector the compiler targets (GCC/Clang vector extensions). */
#if defined(__AVX512F__)
#define VECTOR_BYTES 64
#elif defined(__AVX__)
#define VECTOR_BYTES 32
#else
#define VECTOR_BYTES 16 /* SSE, NEON, or scalar code the compiler splits */
#endif
typedef float vec __attribute__((vector_size(VECTOR_BYTES)));
#define LANES (VECTOR_BYTES / (int)sizeof(float))
#define ACCUMULATORS 12

/* Iterations between two looks at the clock: ~50k cycles, so the clock read costs nothing measurable. */
#define BLOCK_ITERATIONS 2048

struct job {
    double deadline;  /* CLOCK_MONOTONIC seconds: stop at the first block boundary after it */
    float mul, add;   /* read at run time, so the compiler cannot fold the chains */
    uint64_t blocks;  /* blocks completed */
    double end;       /* when this thread stopped */
    double cpu;       /* CPU seconds this thread ran (less than its wall time when the cores were shared) */
    double checksum;  /* sum of the final accumulators */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The value lane `l` of accumulator `a` starts from (small integers: exact in f32). */
static float start_value(int a, int l) { return (float)(a * LANES + l); }

static double thread_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *fma_chains(void *arg) {
    struct job *j = arg;
    double cpu0 = thread_cpu_s();
    vec acc[ACCUMULATORS];
    for (int a = 0; a < ACCUMULATORS; a++)
        for (int l = 0; l < LANES; l++) acc[a][l] = start_value(a, l);
    const vec m = (vec){0} + j->mul, p = (vec){0} + j->add, n = (vec){0} - j->add;
    uint64_t blocks = 0;
    double t;
    do {
        for (int i = 0; i < BLOCK_ITERATIONS; i++) {
            /* Two dependent FMAs per chain (+add then -add): with mul = 1 every value returns to its
             * start, exactly, however long the run, so the checksum is known in advance. */
#pragma GCC unroll 12
            for (int a = 0; a < ACCUMULATORS; a++) acc[a] = acc[a] * m + p;
#pragma GCC unroll 12
            for (int a = 0; a < ACCUMULATORS; a++) acc[a] = acc[a] * m + n;
        }
        blocks++;
    } while ((t = now_s()) < j->deadline);
    double sum = 0;
    for (int a = 0; a < ACCUMULATORS; a++)
        for (int l = 0; l < LANES; l++) sum += acc[a][l];
    j->blocks = blocks;
    j->end = t;
    j->cpu = thread_cpu_s() - cpu0;
    j->checksum = sum;
    return NULL;
}

/* FLOPs in one block of one thread: 2 FMAs per accumulator and iteration, 2 FLOPs per lane and FMA. */
static const double BLOCK_FLOPS = (double)BLOCK_ITERATIONS * 2.0 * ACCUMULATORS * LANES * 2.0;

struct rates {
    double wall_gflops; /* work of all threads over the wall time until the last one stopped */
    double cpu_gflops;  /* sum of each thread's work over its own CPU time: what the cores did while ours ran */
};

/* Runs `threads` threads for about `seconds`; wall_gflops < 0: a thread failed to start. */
static struct rates run_threads(struct job *jobs, pthread_t *tids, int threads, double seconds, float mul, float add) {
    double t0 = now_s();
    for (int t = 0; t < threads; t++) {
        jobs[t] = (struct job){.deadline = t0 + seconds, .mul = mul, .add = add};
        if (pthread_create(&tids[t], NULL, fma_chains, &jobs[t]) != 0) return (struct rates){-1, -1};
    }
    double flops = 0, end = t0, cpu_rate = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(tids[t], NULL);
        flops += (double)jobs[t].blocks * BLOCK_FLOPS;
        if (jobs[t].end > end) end = jobs[t].end;
        if (jobs[t].cpu > 0) cpu_rate += (double)jobs[t].blocks * BLOCK_FLOPS / jobs[t].cpu;
    }
    return (struct rates){flops / (end - t0) / 1e9, cpu_rate / 1e9};
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: fma-peak <threads> <milliseconds per repetition> <repetitions>\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    long ms = atol(argv[2]);
    int reps = atoi(argv[3]);
    if (threads < 1 || threads > 1024 || ms < 1 || ms > 60000 || reps < 1 || reps > 1000) {
        fprintf(stderr, "fma-peak: threads 1..1024, milliseconds 1..60000, repetitions 1..1000\n");
        return 2;
    }
    /* From a volatile: the chains' multiplier and addend are unknown to the compiler. */
    volatile float mul_source = 1.0f, add_source = 1.0f;
    float mul = mul_source, add = add_source;

    struct job *jobs = calloc((size_t)threads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    double *gflops = calloc((size_t)reps, sizeof *gflops);
    double *cpu_gflops = calloc((size_t)reps, sizeof *cpu_gflops);
    if (!jobs || !tids || !gflops || !cpu_gflops) return 1;

    double expected = 0;
    for (int a = 0; a < ACCUMULATORS; a++)
        for (int l = 0; l < LANES; l++) expected += start_value(a, l);
    int ok = 1;
    /* Repetition 0 warms up (thread start, the cores' wide-vector clock state); the rest are measured. */
    for (int r = 0; r <= reps; r++) {
        struct rates g = run_threads(jobs, tids, threads, (double)ms / 1000.0, mul, add);
        if (g.wall_gflops < 0) {
            fprintf(stderr, "fma-peak: pthread_create failed\n");
            return 1;
        }
        if (r > 0) {
            gflops[r - 1] = g.wall_gflops;
            cpu_gflops[r - 1] = g.cpu_gflops;
        }
        for (int t = 0; t < threads; t++) ok &= jobs[t].checksum == expected;
    }
    qsort(gflops, (size_t)reps, sizeof(double), cmp_double);
    qsort(cpu_gflops, (size_t)reps, sizeof(double), cmp_double);
    double median = reps % 2 ? gflops[reps / 2] : (gflops[reps / 2 - 1] + gflops[reps / 2]) / 2;
    printf("{\"threads\":%d,\"vector_bits\":%d,\"accumulators\":%d,\"milliseconds\":%ld,\"repetitions\":%d,"
           "\"best_gflops\":%.3f,\"median_gflops\":%.3f,\"best_cpu_time_gflops\":%.3f,\"checksum\":%.1f,"
           "\"checksum_ok\":%s}\n",
           threads, VECTOR_BYTES * 8, ACCUMULATORS, ms, reps, gflops[reps - 1], median, cpu_gflops[reps - 1],
           jobs[0].checksum, ok ? "true" : "false");
    free(cpu_gflops);
    free(gflops);
    free(tids);
    free(jobs);
    return ok ? 0 : 1;
}
