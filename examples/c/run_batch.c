/* Runs a dlc-compiled model with a run-time batch dim through the C ABI.
 *
 * Build (after `dlc compile mlp.onnx -o ART --name mlp` of an MLP whose input is
 * f32[N,784] and whose outputs are f32[N,10], N a symbolic dim):
 *   cc -O2 -I ART run_batch.c ART/model.a -lm -o run_batch
 * Run:
 *   ./run_batch N input.f32 logits.f32 probs.f32
 * Files hold raw little-endian float32 values in row-major order. The program also
 * checks what the ABI promises for invalid dims: workspace_size_dims() is UINT64_MAX
 * for N = -1 (below the dim's minimum, 0: an empty batch is a valid run) and for an N
 * whose workspace does not fit in 64 bits, run_dims() returns 3 for N = -1, and run()
 * (which has no dims) returns 2.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

#if DLC_MLP_NUM_SYMBOLS != 1
#error "this example expects a model with one run-time dim (the batch)"
#endif

static int read_f32(const char *path, float *dst, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return -1; }
    size_t got = fread(dst, sizeof(float), n, f);
    fclose(f);
    if (got != n) { fprintf(stderr, "%s: expected %zu floats, got %zu\n", path, n, got); return -1; }
    return 0;
}

static int write_f32(const char *path, const float *src, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); return -1; }
    size_t put = fwrite(src, sizeof(float), n, f);
    fclose(f);
    return put == n ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s N INPUT.f32 LOGITS.f32 PROBS.f32\n", argv[0]);
        return 2;
    }
    if (dlc_mlp_abi_version() != DLC_MLP_ABI_VERSION) {
        fprintf(stderr, "ABI mismatch: library %u, header %u\n", dlc_mlp_abi_version(), DLC_MLP_ABI_VERSION);
        return 1;
    }
    int64_t n = atoll(argv[1]);
    if (n < 1) { fprintf(stderr, "N must be at least 1\n"); return 2; }

    /* What the ABI promises for invalid dims. */
    int64_t negative = -1, huge = INT64_MAX / 2;
    if (dlc_mlp_workspace_size_dims(&negative) != UINT64_MAX) { fprintf(stderr, "N=-1 has a workspace size\n"); return 1; }
    if (dlc_mlp_workspace_size_dims(&huge) != UINT64_MAX) { fprintf(stderr, "a huge N has a workspace size\n"); return 1; }
    if (dlc_mlp_run(NULL, NULL, NULL) != 2) { fprintf(stderr, "run() without dims did not return 2\n"); return 1; }
    if (dlc_mlp_run_dims(NULL, NULL, NULL, &negative, NULL, NULL) != 3) { fprintf(stderr, "N=-1 did not return 3\n"); return 1; }

    size_t in_n = (size_t)n * 784, out_n = (size_t)n * 10;
    uint64_t ws_bytes = dlc_mlp_workspace_size_dims(&n);
    if (ws_bytes == UINT64_MAX) { fprintf(stderr, "N=%lld is not a valid batch\n", (long long)n); return 1; }
    float *input = malloc(in_n * sizeof(float));
    float *logits = malloc(out_n * sizeof(float));
    float *probs = malloc(out_n * sizeof(float));
    void *workspace = aligned_alloc(64, (ws_bytes + 63) / 64 * 64 + 64);
    if (!input || !logits || !probs || !workspace) { fprintf(stderr, "out of memory\n"); return 1; }
    if (read_f32(argv[2], input, in_n)) return 1;

    const void *inputs[DLC_MLP_NUM_INPUTS] = {input};
    void *outputs[DLC_MLP_NUM_OUTPUTS] = {logits, probs};
    /* pfor NULL: every kernel on the calling thread. */
    int32_t status = dlc_mlp_run_dims(inputs, outputs, workspace, &n, NULL, NULL);
    if (status != 0) { fprintf(stderr, "run failed: %d\n", status); return 1; }

    if (write_f32(argv[3], logits, out_n) || write_f32(argv[4], probs, out_n)) return 1;
    printf("N=%lld, workspace %llu bytes, logits[0..3] = %g %g %g\n", (long long)n,
           (unsigned long long)ws_bytes, logits[0], logits[1], logits[2]);
    free(input); free(logits); free(probs); free(workspace);
    return 0;
}
