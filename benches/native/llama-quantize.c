/*
 * llama.cpp's own quantizer (llama_model_quantize, the code behind its `llama-quantize` tool), for the
 * quantized benchmark files (benches/lib/quantized-models.ts):
 *   phoenix-llama-quantize <in.gguf> <out.gguf> <Q8_0|Q4_K_M|Q4_K_S|Q4_1> <threads>
 * The libraries scripts/build-llama-native.sh builds do not include llama.cpp's `tools/` (which take far
 * longer to build), so this calls the same library function with llama-quantize's default parameters:
 * llama.cpp itself picks each tensor's type (K-quants fall back for rows not a multiple of 256, Q4_K_M
 * keeps some tensors in Q6_K, 1-d tensors stay F32). Errors go to stderr with a non-zero exit.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static const struct {
    const char *name;
    enum llama_ftype ftype;
} FTYPES[] = {
    {"Q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},
    {"Q4_K_M", LLAMA_FTYPE_MOSTLY_Q4_K_M},
    {"Q4_K_S", LLAMA_FTYPE_MOSTLY_Q4_K_S},
    {"Q4_1", LLAMA_FTYPE_MOSTLY_Q4_1},
};

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: phoenix-llama-quantize <in.gguf> <out.gguf> <Q8_0|Q4_K_M|Q4_K_S|Q4_1> <threads>\n");
        return 2;
    }
    llama_log_set(quiet_log, NULL);
    llama_model_quantize_params params = llama_model_quantize_default_params();
    int found = 0;
    for (size_t i = 0; i < sizeof FTYPES / sizeof FTYPES[0]; i++) {
        if (strcmp(argv[3], FTYPES[i].name) == 0) {
            params.ftype = FTYPES[i].ftype;
            found = 1;
        }
    }
    if (!found) {
        fprintf(stderr, "phoenix-llama-quantize: unknown type %s\n", argv[3]);
        return 2;
    }
    params.nthread = atoi(argv[4]);
    llama_backend_init();
    uint32_t rc = llama_model_quantize(argv[1], argv[2], &params);
    llama_backend_free();
    if (rc != 0) {
        fprintf(stderr, "phoenix-llama-quantize: llama_model_quantize failed (%u)\n", rc);
        return 1;
    }
    return 0;
}
