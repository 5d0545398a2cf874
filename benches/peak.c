/* Single-core FP32 peak of this machine, measured: independent chains of vector FMAs
 * (as many as the register file holds, so neither latency nor spills limit them), the
 * best of several timed runs. Prints GFLOP/s. Built by benches/bench.py with
 * `clang-22 -O2 -march=native -ffp-contract=fast` (or cc); the vector width follows the target:
 * AVX-512, AVX/AVX2, otherwise 128-bit (SSE, NEON). */
#include <stdio.h>
#include <time.h>

#if defined(__AVX512F__)
#define BYTES 64
#define CHAINS 24
#elif defined(__AVX__)
#define BYTES 32
#define CHAINS 12
#else
#define BYTES 16
#define CHAINS 12
#endif
#define LANES (BYTES / 4)

typedef float vf __attribute__((vector_size(BYTES)));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* `n` rounds of CHAINS FMAs; returns a value so nothing is optimised away. */
__attribute__((noinline)) static float run(long n, float s) {
    vf acc[CHAINS];
    vf a, b;
    for (int l = 0; l < LANES; l++) {
        a[l] = 0.999999f;
        b[l] = s * 1e-7f;
    }
    for (int c = 0; c < CHAINS; c++) acc[c] = a * (float)c;
    for (long i = 0; i < n; i++) {
        /* Fully unrolled, so the accumulators live in registers (a rolled loop over an
         * array keeps them in memory, and loads and stores then bound the rate). */
#pragma GCC unroll 32
        for (int c = 0; c < CHAINS; c++) acc[c] = acc[c] * a + b; /* one FMA with -ffp-contract=fast */
        __asm__ volatile("" : "+x"(acc[0]));
    }
    vf t = acc[0];
    for (int c = 1; c < CHAINS; c++) t += acc[c];
    float r = 0;
    for (int l = 0; l < LANES; l++) r += t[l];
    return r;
}

int main(void) {
    const long n = 20 * 1000 * 1000;
    double best = 0;
    float sink = 0;
    for (int rep = 0; rep < 7; rep++) {
        double t0 = now();
        sink += run(n, 1.0f + rep);
        double dt = now() - t0;
        double gflops = 2.0 * LANES * CHAINS * (double)n / dt / 1e9;
        if (gflops > best) best = gflops;
    }
    printf("%.1f\n", best);
    fprintf(stderr, "peak: %d-bit vectors, %d chains, sink %g\n", BYTES * 8, CHAINS, (double)sink);
    return 0;
}
