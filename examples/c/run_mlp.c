/* Links a dlc-compiled model statically and runs it.
 *
 * Build (after `dlc compile mlp.onnx -o ART --name mlp`):
 *   cc -O2 -I ART run_mlp.c ART/model.a -lm -o run_mlp
 * Run:
 *   ./run_mlp input.f32 logits.f32 probs.f32
 * Files hold raw little-endian float32 values in row-major order.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

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
    if (argc != 4) {
        fprintf(stderr, "usage: %s INPUT.f32 LOGITS.f32 PROBS.f32\n", argv[0]);
        return 2;
    }
    if (dlc_mlp_abi_version() != DLC_MLP_ABI_VERSION) {
        fprintf(stderr, "ABI mismatch: library %u, header %u\n", dlc_mlp_abi_version(), DLC_MLP_ABI_VERSION);
        return 1;
    }
    float *input = malloc(DLC_MLP_INPUT0_NUMEL * sizeof(float));
    float *logits = malloc(DLC_MLP_OUTPUT0_NUMEL * sizeof(float));
    float *probs = malloc(DLC_MLP_OUTPUT1_NUMEL * sizeof(float));
    void *workspace = aligned_alloc(64, (dlc_mlp_workspace_size() + 63) / 64 * 64 + 64);
    if (!input || !logits || !probs || !workspace) { fprintf(stderr, "out of memory\n"); return 1; }
    if (read_f32(argv[1], input, DLC_MLP_INPUT0_NUMEL)) return 1;

    const void *inputs[DLC_MLP_NUM_INPUTS] = {input};
    void *outputs[DLC_MLP_NUM_OUTPUTS] = {logits, probs};
    int32_t status = dlc_mlp_run(inputs, outputs, workspace);
    if (status != 0) { fprintf(stderr, "run failed: %d\n", status); return 1; }

    if (write_f32(argv[2], logits, DLC_MLP_OUTPUT0_NUMEL) || write_f32(argv[3], probs, DLC_MLP_OUTPUT1_NUMEL)) return 1;
    printf("logits[0..3] = %g %g %g\n", logits[0], logits[1], logits[2]);
    free(input); free(logits); free(probs); free(workspace);
    return 0;
}
