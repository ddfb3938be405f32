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
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llama.h"

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
