/* Calls a dlc artifact's generated entry point in a loop: the baseline of
 * benches/python_overhead.py (what a C program linking model.so pays per call).
 *
 *   call_loop MODEL.so PREFIX CALLS IN_BYTES,... OUT_BYTES,...
 *
 * Buffers are 64-byte aligned and allocated once; prints the mean nanoseconds per
 * call over CALLS calls. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int32_t (*run_fn)(const void *const *, void *const *, void *);
typedef uint64_t (*ws_fn)(void);

static int sizes(const char *list, size_t *out, int max) {
    int n = 0;
    char *copy = strdup(list), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save)) out[n++] = strtoull(t, NULL, 10);
    free(copy);
    return n;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: call_loop MODEL.so PREFIX CALLS IN_BYTES,... OUT_BYTES,...\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    char name[256];
    snprintf(name, sizeof name, "%srun", argv[2]);
    run_fn run = (run_fn)dlsym(lib, name);
    snprintf(name, sizeof name, "%sworkspace_size", argv[2]);
    ws_fn ws = (ws_fn)dlsym(lib, name);
    if (!run || !ws) {
        fprintf(stderr, "entry points not found\n");
        return 1;
    }
    long calls = atol(argv[3]);
    size_t in[16], out[16];
    int ni = sizes(argv[4], in, 16), no = sizes(argv[5], out, 16);
    void *ins[16], *outs[16], *w = aligned_alloc(64, (ws() + 64) / 64 * 64);
    for (int i = 0; i < ni; i++) ins[i] = memset(aligned_alloc(64, (in[i] + 64) / 64 * 64), 0, in[i]);
    for (int i = 0; i < no; i++) outs[i] = aligned_alloc(64, (out[i] + 64) / 64 * 64);
    for (int i = 0; i < 100; i++) run((const void *const *)ins, outs, w);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < calls; i++)
        if (run((const void *const *)ins, outs, w) != 0) return 1;
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / calls);
    return 0;
}
