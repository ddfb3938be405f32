/*
 * llama.cpp built from source, driven for the benchmark (benches/engines/llamacpp-native.ts):
 *   phoenix-llama-driver <model.gguf> <threads> <n_ctx>
 * Loads the model once, then answers one line per request on stdin, so the TypeScript side times every
 * request with the same loop it uses for the other engines (one line of pipe I/O per token: microseconds
 * against milliseconds of decode).
 *   prefill <n> <id...>   clear the state, evaluate the ids (last position's logits only)  -> "tok <argmax>"
 *   step <id>             evaluate one more token                                         -> "tok <argmax>"
 *   logits <file> <n> <id...>  clear, evaluate with every position's logits, write them as f32 -> "ok <n_vocab>"
 *   quit
 * On start it prints "ready <load_ms> <weight_bytes> <n_params> <n_vocab>" (weight bytes: llama_model_size,
 * the bytes of every tensor as loaded). Errors go to stderr with a non-zero exit.
 */
#define _GNU_SOURCE /* clock_gettime, syscall */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llama.h"

#if defined(__linux__) && defined(__x86_64__)
#include <errno.h>
#include <immintrin.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* Uses one AMX tile: the instructions llama.cpp's AMX kernels start with. */
__attribute__((target("amx-tile"))) static void touch_amx_tile(void) {
    unsigned char cfg[64] = {0};
    cfg[0] = 1;   /* palette 1 */
    cfg[16] = 64; /* tile 0: 64 bytes per row */
    cfg[48] = 16; /* tile 0: 16 rows */
    _tile_loadconfig(cfg);
    _tile_zero(0);
    _tile_release();
}

/* Whether AMX tiles run here: some virtual machines advertise AMX and grant the permission, yet fault on it. */
static int amx_tiles_run(void) {
    pid_t child = fork();
    if (child < 0) return 1; /* cannot tell: leave llama.cpp's own choice */
    if (child == 0) {
        if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) _exit(0); /* no AMX: nothing to guard */
        touch_amx_tile();
        _exit(0);
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child) return 1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/*
 * When CPUID says AMX but its instructions fault (llama.cpp's AMX buffer crashes the first batched product of a
 * Q4_0/Q4_1/Q8_0/K-quant file), make the kernel refuse the AMX permission request (arch_prctl
 * ARCH_REQ_XCOMP_PERM -> EPERM): llama.cpp's own probe then leaves its AMX buffer type out and runs its other
 * CPU paths (AVX-512/VNNI kernels, weight repacking) as on a CPU without AMX.
 */
static void guard_faulting_amx(void) {
    if (!__builtin_cpu_supports("avx512f") || amx_tiles_run()) return;
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_arch_prctl, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH_REQ_XCOMP_PERM, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = (unsigned short)(sizeof filter / sizeof filter[0]), .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        fprintf(stderr, "phoenix-llama-driver: AMX faults here and could not be turned off\n");
        exit(1);
    }
    fprintf(stderr, "phoenix-llama-driver: AMX tiles fault on this machine: llama.cpp's AMX path is off\n");
}
#else
static void guard_faulting_amx(void) {}
#endif

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static void die(const char *what) {
    fprintf(stderr, "phoenix-llama-driver: %s\n", what);
    exit(1);
}

static llama_token argmax(const float *logits, int n_vocab) {
    int best = 0;
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

/* Reads "<n> <id...>" from the rest of a request line into ids (capacity cap). */
static int parse_ids(char *rest, llama_token *ids, int cap) {
    char *end;
    long n = strtol(rest, &end, 10);
    if (end == rest || n < 1 || n > cap) die("bad token count");
    for (long i = 0; i < n; i++) {
        rest = end;
        long id = strtol(rest, &end, 10);
        if (end == rest || id < 0) die("bad token id");
        ids[i] = (llama_token)id;
    }
    return (int)n;
}

/* Evaluates ids from the current state in n_batch chunks; outputs = logits for every position or the last. */
static void eval(struct llama_context *ctx, struct llama_batch *batch, const llama_token *ids, int n, int n_batch,
                 int *pos, int all_logits) {
    for (int start = 0; start < n; start += n_batch) {
        int len = n - start < n_batch ? n - start : n_batch;
        batch->n_tokens = len;
        for (int i = 0; i < len; i++) {
            batch->token[i] = ids[start + i];
            batch->pos[i] = *pos + i;
            batch->n_seq_id[i] = 1;
            batch->seq_id[i][0] = 0;
            batch->logits[i] = all_logits || start + i == n - 1;
        }
        if (llama_decode(ctx, *batch) != 0) die("llama_decode failed");
        *pos += len;
    }
}

int main(int argc, char **argv) {
    if (argc != 4) die("usage: phoenix-llama-driver <model.gguf> <threads> <n_ctx>");
    const int threads = atoi(argv[2]);
    const int n_ctx = atoi(argv[3]);
    if (threads < 1 || n_ctx < 1) die("threads and n_ctx must be positive");
    const int n_batch = 512;

    guard_faulting_amx(); /* before llama.cpp probes the CPU */
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    const double t0 = now_ms();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) die("could not load the model");
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = n_batch;
    cp.n_ubatch = n_batch;
    cp.n_seq_max = 1;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) die("could not create a context");
    const double load_ms = now_ms() - t0;
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    printf("ready %.3f %llu %llu %d\n", load_ms, (unsigned long long)llama_model_size(model),
           (unsigned long long)llama_model_n_params(model), n_vocab);
    fflush(stdout);

    const int cap = n_ctx;
    llama_token *ids = malloc(sizeof(llama_token) * (size_t)cap);
    size_t line_cap = (size_t)cap * 12 + 4096;
    char *line = malloc(line_cap);
    struct llama_batch batch = llama_batch_init(n_batch, 0, 1);
    if (!ids || !line) die("out of memory");
    int pos = 0;

    while (fgets(line, (int)line_cap, stdin)) {
        if (!strncmp(line, "quit", 4)) break;
        if (!strncmp(line, "prefill ", 8)) {
            int n = parse_ids(line + 8, ids, cap);
            llama_memory_clear(llama_get_memory(ctx), true);
            pos = 0;
            eval(ctx, &batch, ids, n, n_batch, &pos, 0);
            printf("tok %d\n", argmax(llama_get_logits_ith(ctx, -1), n_vocab));
        } else if (!strncmp(line, "step ", 5)) {
            if (pos >= n_ctx) die("context full");
            ids[0] = (llama_token)atoi(line + 5);
            eval(ctx, &batch, ids, 1, n_batch, &pos, 0);
            printf("tok %d\n", argmax(llama_get_logits_ith(ctx, -1), n_vocab));
        } else if (!strncmp(line, "logits ", 7)) {
            char *path = line + 7;
            char *space = strchr(path, ' ');
            if (!space) die("logits: missing ids");
            *space = '\0';
            int n = parse_ids(space + 1, ids, cap);
            llama_memory_clear(llama_get_memory(ctx), true);
            pos = 0;
            FILE *out = fopen(path, "wb");
            if (!out) die("logits: cannot open the output file");
            /* One position per batch entry, every position's logits kept. */
            for (int start = 0; start < n; start += n_batch) {
                int len = n - start < n_batch ? n - start : n_batch;
                eval(ctx, &batch, ids + start, len, n_batch, &pos, 1);
                for (int i = 0; i < len; i++)
                    if (fwrite(llama_get_logits_ith(ctx, i), sizeof(float), (size_t)n_vocab, out) != (size_t)n_vocab)
                        die("logits: write failed");
            }
            if (fclose(out) != 0) die("logits: write failed");
            printf("ok %d\n", n_vocab);
        } else {
            die("unknown request");
        }
        fflush(stdout);
    }
    llama_batch_free(batch);
    free(line);
    free(ids);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
