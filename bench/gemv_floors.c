/* Floors of the AVX512-VNNI int8 kernels' instruction mixes, one core, data in
 * L1/L2 so memory is not the limit.  Mirrors the mixes of
 * iqkt/_kernels/isa/avx512.h without their bookkeeping (block scales, reductions,
 * seeds of IQ4), so each number is a lower bound on that kernel's time.
 * Built and run by bench/gemv_floors.py; prints "name value" lines. */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MASK3F 0x3F3F3F3F
static const uint32_t MK[8] = {0xcbac1fedu, 0xc8734169u, 0xbd2b4535u, 0xe50c7d11u,
                               0x1220d7bdu, 0x94839cf9u, 0x58267985u, 0x60b19b21u};   /* mul^1..8 */

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e9 * t.tv_sec + t.tv_nsec;
}

static volatile int64_t sink;
static void keep(__m512i v) { sink += _mm512_reduce_add_epi32(v); }

#define NSB 16   /* super-blocks of 256 weights per 4096-long row */
#define NROW 64  /* distinct weight rows (64 KiB of indices: L2) */

static uint16_t *idx;     /* [NROW][NSB][32] group indices (IQ2: 16 bits, 8 weights each) */

/* Seeds (index + 4096) of one super-block's 32 groups, 16 per zmm. */
static inline void seeds32(const uint16_t *ib16, __m512i s[2]) {
    const __m512i OFF = _mm512_set1_epi32(4096);
    __m512i i16 = _mm512_loadu_si512((const void *)ib16);
    s[0] = _mm512_add_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(i16)), OFF);
    s[1] = _mm512_add_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(i16, 1)), OFF);
}
static uint8_t *x8;       /* B = 1 activations, lane layout of the kernel: [NSB][2][8][64] */

/* 1. B = 1, IQ2 form: per 16 weights one vpmulld, vpand, vpdpbusd against the
 * activation repeated in 4 bytes (iqkt_mm_row_g8_avx512 with act8). */
__attribute__((noinline)) static void b1_gen_dot(int64_t rows) {
    const __m512i MASK = _mm512_set1_epi32(MASK3F);
    __m512i acc0 = _mm512_setzero_si512(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *ir = idx + (r % NROW) * NSB * 32;
        for (int ib = 0; ib < NSB; ib++) {
            __m512i s[2];
            seeds32(ir + 32 * ib, s);
            const __m512i s0 = s[0], s1 = s[1];
            const uint8_t *xl = x8 + 1024 * ib;
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                __m512i m = _mm512_set1_epi32((int)MK[k]);
                __m512i t0 = _mm512_and_si512(_mm512_mullo_epi32(s0, m), MASK);
                __m512i t1 = _mm512_and_si512(_mm512_mullo_epi32(s1, m), MASK);
                if (k & 1) {
                    acc2 = _mm512_dpbusd_epi32(acc2, t0, _mm512_loadu_si512((const void *)(xl + 64 * k)));
                    acc3 = _mm512_dpbusd_epi32(acc3, t1, _mm512_loadu_si512((const void *)(xl + 512 + 64 * k)));
                } else {
                    acc0 = _mm512_dpbusd_epi32(acc0, t0, _mm512_loadu_si512((const void *)(xl + 64 * k)));
                    acc1 = _mm512_dpbusd_epi32(acc1, t1, _mm512_loadu_si512((const void *)(xl + 512 + 64 * k)));
                }
            }
        }
    }
    keep(_mm512_add_epi32(_mm512_add_epi32(acc0, acc1), _mm512_add_epi32(acc2, acc3)));
}

/* 1b. the same trellis generation without the product (vpaddd keeps it live). */
__attribute__((noinline)) static void b1_gen_only(int64_t rows) {
    const __m512i MASK = _mm512_set1_epi32(MASK3F);
    __m512i acc0 = _mm512_setzero_si512(), acc1 = acc0;
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *ir = idx + (r % NROW) * NSB * 32;
        for (int ib = 0; ib < NSB; ib++) {
            __m512i s[2];
            seeds32(ir + 32 * ib, s);
            const __m512i s0 = s[0], s1 = s[1];
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                __m512i m = _mm512_set1_epi32((int)MK[k]);
                acc0 = _mm512_add_epi32(acc0, _mm512_and_si512(_mm512_mullo_epi32(s0, m), MASK));
                acc1 = _mm512_add_epi32(acc1, _mm512_and_si512(_mm512_mullo_epi32(s1, m), MASK));
            }
        }
    }
    keep(_mm512_add_epi32(acc0, acc1));
}

/* 1c. IQ3 form (sign plane; iqkt_mm_row_g8_avx512 without act8): byte sum by
 * vpdpbusd with ones, |v|, masked negate by the sign bits, vpdpwssd against
 * (x, 0) word pairs. */
static uint16_t *sgn;   /* [NROW][NSB][16] sign masks per (half, step) */
__attribute__((noinline)) static void b1_iq3_form(int64_t rows) {
    const __m512i MASK = _mm512_set1_epi32(MASK3F);
    const __m512i ONES = _mm512_set1_epi32(0x01010101), BIAS = _mm512_set1_epi32(-126), Z = _mm512_setzero_si512();
    __m512i acc0 = Z, acc1 = Z;
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *ir = idx + (r % NROW) * NSB * 32;
        const uint16_t *sr = sgn + (r % NROW) * NSB * 16;
        for (int ib = 0; ib < NSB; ib++) {
            __m512i s[2];
            seeds32(ir + 32 * ib, s);
            const uint8_t *xl = x8 + 1024 * ib;
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++)
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    __m512i st = _mm512_and_si512(_mm512_mullo_epi32(s[h], _mm512_set1_epi32((int)MK[k])), MASK);
                    __m512i v = _mm512_abs_epi32(_mm512_dpbusd_epi32(BIAS, st, ONES));
                    v = _mm512_mask_sub_epi32(v, (__mmask16)sr[16 * ib + 2 * k + h], Z, v);
                    __m512i xv = _mm512_loadu_si512((const void *)(xl + 512 * h + 64 * k));
                    if (h) acc1 = _mm512_dpwssd_epi32(acc1, v, xv);
                    else acc0 = _mm512_dpwssd_epi32(acc0, v, xv);
                }
        }
    }
    keep(_mm512_add_epi32(acc0, acc1));
}

/* 1d. IQ4 form (iqkt_mm_row_g4_avx512 with act8): 4 steps per seed, and the
 * seeds (12-bit index split over ql / qh nibble / block word, + offset) put
 * together per 16 groups as iqkt_mm_iq4_seeds does. */
__attribute__((noinline)) static void b1_iq4_form(int64_t rows) {
    const __m512i MASK = _mm512_set1_epi32(MASK3F);
    const __m512i ROT = _mm512_setr_epi32(4, 1, 30, 27, 24, 21, 18, 15, 4, 1, 30, 27, 24, 21, 18, 15);
    __m512i acc0 = _mm512_setzero_si512(), acc1 = acc0;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *qr = (const uint8_t *)(idx + (r % (NROW / 2)) * NSB * 64);   /* 128-byte super-blocks */
        for (int ib = 0; ib < NSB; ib++) {
            const uint8_t *sb = qr + 128 * ib;
            __m256i w8 = _mm256_loadu_si256((const __m256i *)sb);
            __m512i words = _mm512_castsi256_si512(w8);
            __m512i off = _mm512_castsi256_si512(_mm256_add_epi32(_mm256_slli_epi32(_mm256_and_si256(w8, _mm256_set1_epi32(1)), 15),
                                                                  _mm256_set1_epi32(4096)));
            const uint8_t *xl = x8 + 1024 * ib;
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++) {
                const __m512i SEL = _mm512_add_epi32(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                                     _mm512_set1_epi32(2 * q));
                __m128i ql = _mm_loadu_si128((const __m128i *)(sb + 32 + 16 * q));
                __m128i qh = _mm_loadu_si128((const __m128i *)(sb + 96 + 16 * (q & 1)));
                if (q >= 2) qh = _mm_srli_epi16(qh, 4);
                qh = _mm_and_si128(qh, _mm_set1_epi8(15));
                __m512i lomid = _mm512_cvtepu16_epi32(_mm256_set_m128i(_mm_unpackhi_epi8(ql, qh), _mm_unpacklo_epi8(ql, qh)));
                __m512i rot = _mm512_rolv_epi32(_mm512_permutexvar_epi32(SEL, words), ROT);
                __m512i id = _mm512_ternarylogic_epi32(_mm512_set1_epi32(0x7000), rot, lomid, 0xCA);
                __m512i seeds = _mm512_add_epi32(id, _mm512_permutexvar_epi32(SEL, off));
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    __m512i st = _mm512_and_si512(_mm512_mullo_epi32(seeds, _mm512_set1_epi32((int)MK[k])), MASK);
                    __m512i xv = _mm512_loadu_si512((const void *)(xl + 256 * q + 64 * k));
                    if (k & 1) acc1 = _mm512_dpbusd_epi32(acc1, st, xv);
                    else acc0 = _mm512_dpbusd_epi32(acc0, st, xv);
                }
            }
        }
    }
    keep(_mm512_add_epi32(acc0, acc1));
}

/* Instruction throughputs: 8 independent chains, registers only. */
#define CHAINS8(OP)                                                                              \
    __m512i a0 = _mm512_set1_epi32(1), a1 = _mm512_set1_epi32(2), a2 = _mm512_set1_epi32(3),    \
            a3 = _mm512_set1_epi32(4), a4 = _mm512_set1_epi32(5), a5 = _mm512_set1_epi32(6),    \
            a6 = _mm512_set1_epi32(7), a7 = _mm512_set1_epi32(8);                               \
    for (int64_t i = 0; i < n; i++) {                                                            \
        __asm__ volatile("" : "+v"(b), "+v"(c));                                                 \
        a0 = OP(a0); a1 = OP(a1); a2 = OP(a2); a3 = OP(a3);                                      \
        a4 = OP(a4); a5 = OP(a5); a6 = OP(a6); a7 = OP(a7);                                      \
    }                                                                                            \
    keep(_mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),  \
                          _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7))));

__attribute__((noinline)) static void peak_mullo(int64_t n) {   /* 8 vpmulld per iteration */
    __m512i b = _mm512_set1_epi32((int)MK[0]), c = b;
#define MUL(a) _mm512_mullo_epi32(a, b)
    CHAINS8(MUL)
    (void)c;
}

__attribute__((noinline)) static void peak_dpbusd(int64_t n) {   /* 8 vpdpbusd per iteration */
    __m512i b = _mm512_set1_epi32(0x01020304), c = _mm512_set1_epi32(0x05060708);
#define DP(a) _mm512_dpbusd_epi32(a, b, c)
    CHAINS8(DP)
}

/* 2. Decoding weights to value + 126 bytes (the GEMM's tile), per 64 weights:
 * computed (iqkt_mm_decode_tile's IQ4 form, applied to IQ2 groups: 4 steps per
 * zmm, byte sums by vpdpbusd with ones, packed by shifts/ors) ... */
__attribute__((noinline)) static void decode_computed(int64_t rows, uint8_t *dst /* 8 KiB */) {
    const __m512i MASK = _mm512_set1_epi32(MASK3F);
    const __m512i ONES = _mm512_set1_epi32(0x01010101), Z = _mm512_setzero_si512();
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *ir = idx + (r % NROW) * NSB * 32;
        uint8_t *d = dst + 256 * 8 * (r & 3);
        for (int ib = 0; ib < NSB; ib++) {
            __m512i s[2];
            seeds32(ir + 32 * ib, s);
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++) {   /* (half, steps 0-3 / 4-7) */
                __m512i sum[4];
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++)
                    sum[k] = _mm512_dpbusd_epi32(Z, _mm512_and_si512(
                        _mm512_mullo_epi32(s[q >> 1], _mm512_set1_epi32((int)MK[4 * (q & 1) + k])), MASK), ONES);
                __m512i lo = _mm512_or_si512(sum[0], _mm512_slli_epi32(sum[1], 8));
                __m512i hi = _mm512_or_si512(_mm512_slli_epi32(sum[2], 16), _mm512_slli_epi32(sum[3], 24));
                _mm512_storeu_si512((void *)(d + 256 * (ib & 7) + 64 * q), _mm512_or_si512(lo, hi));
            }
        }
    }
    sink += dst[5];
}

/* ... and looked up (the IQ2 GEMM's form: one 8-byte codebook row per group
 * from a 512 KiB table, L2-resident, + 126). */
static int8_t *cb8;
__attribute__((noinline)) static void decode_lookup(int64_t rows, uint8_t *dst) {
    const __m256i B126 = _mm256_set1_epi8(126);
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *ir = idx + (r % NROW) * NSB * 32;
        uint8_t *d = dst + 256 * 8 * (r & 3);
        for (int ib = 0; ib < NSB; ib++) {
#pragma GCC unroll 8
            for (int b = 0; b < 8; b++) {
                int64_t g[4];
                for (int j = 0; j < 4; j++) memcpy(&g[j], cb8 + 8 * (uint32_t)ir[32 * ib + 4 * b + j], 8);
                __m256i v = _mm256_setr_epi64x(g[0], g[1], g[2], g[3]);
                _mm256_storeu_si256((__m256i *)(d + 256 * (ib & 7) + 32 * b), _mm256_add_epi8(v, B126));
            }
        }
    }
    sink += dst[7];
}

/* 3. GEMM inner loops on a decoded tile (4 weight rows x 8 super-blocks, L1)
 * against activation quads: B = 8 quad-paired (iqkt_mm_gemm8_avx512: a
 * broadcast 8-byte quad pair x 16 lanes, 4 vpdpbusd per block and weight row)
 * and B = 64 (iqkt_mm_gemm_avx512, nvv = 4: a broadcast quad x 4 zmm of 16 rows,
 * 8 quads per block), each with or without the per-block float epilogue. */
#define TILE 4
#define KBLK 64   /* 8 super-blocks of 8 blocks */
static uint8_t *wdec;       /* [TILE][KBLK * 32] */
static uint8_t *lanes;      /* activations, up to 64 rows x KBLK * 32 bytes (128 KiB, L2) */
static float *bsf, *xsc;    /* block scales [TILE][KBLK], activation scales [4][KBLK][16] */

__attribute__((noinline)) static void gemm8(int64_t reps, int epi, __m256 *facc /* [TILE][8] */) {
    for (int64_t it = 0; it < reps; it++)
        for (int blk = 0; blk < KBLK; blk++) {
            __m512i acc[2][TILE];
            for (int r = 0; r < TILE; r++) acc[0][r] = acc[1][r] = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {
                __m512i X = _mm512_loadu_si512((const void *)(lanes + 64 * (4 * blk + p)));
#pragma GCC unroll 4
                for (int r = 0; r < TILE; r++) {
                    int64_t wq;
                    memcpy(&wq, wdec + r * KBLK * 32 + 32 * blk + 8 * p, 8);
                    acc[p & 1][r] = _mm512_dpbusd_epi32(acc[p & 1][r], _mm512_set1_epi64(wq), X);
                }
            }
            if (epi) {
                __m256 xs8 = _mm256_loadu_ps(xsc + 16 * blk);
                for (int r = 0; r < TILE; r++) {
                    __m512i a = _mm512_add_epi32(acc[0][r], acc[1][r]);
                    __m256i d = _mm512_cvtepi64_epi32(_mm512_add_epi32(a, _mm512_srli_epi64(a, 32)));
                    __m256 *F = facc + r * 8 + (blk & 7);
                    *F = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(_mm256_set1_ps(bsf[r * KBLK + blk]), xs8), *F);
                }
            } else {
                for (int r = 0; r < TILE; r++) {
                    __m512i a = _mm512_add_epi32(acc[0][r], acc[1][r]);
                    facc[r * 8 + (blk & 7)] = _mm256_add_ps(facc[r * 8 + (blk & 7)], _mm256_castsi256_ps(_mm512_castsi512_si256(a)));
                }
            }
        }
}

__attribute__((noinline)) static void gemm64(int64_t reps, int epi, __m512 *facc /* [TILE][4][8] */) {
    for (int64_t it = 0; it < reps; it++)
        for (int blk = 0; blk < KBLK; blk++) {
            __m512i acc[TILE][4];
            for (int r = 0; r < TILE; r++)
                for (int v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int p = 0; p < 8; p++) {
                __m512i X[4];
                for (int v = 0; v < 4; v++) X[v] = _mm512_loadu_si512((const void *)(lanes + v * 64 * KBLK * 32 + 64 * (8 * blk + p)));
#pragma GCC unroll 4
                for (int r = 0; r < TILE; r++) {
                    int32_t w;
                    memcpy(&w, wdec + r * KBLK * 32 + 32 * blk + 4 * p, 4);
                    __m512i wb = _mm512_set1_epi32(w);
                    for (int v = 0; v < 4; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], wb, X[v]);
                }
            }
            for (int r = 0; r < TILE; r++) {
                __m512 bs = _mm512_set1_ps(bsf[r * KBLK + blk]);
                for (int v = 0; v < 4; v++) {
                    __m512 *F = facc + (r * 4 + v) * 8 + (blk & 7);
                    if (epi)
                        *F = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][v]), _mm512_mul_ps(bs, _mm512_loadu_ps(xsc + 16 * (v * KBLK + blk))), *F);
                    else
                        *F = _mm512_add_ps(*F, _mm512_castsi512_ps(acc[r][v]));
                }
            }
        }
}

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define REP 9
#define TIME(label, units, unit_name, CALL)                                                       \
    do {                                                                                          \
        double t[REP];                                                                            \
        CALL;                                                                                     \
        for (int i_ = 0; i_ < REP; i_++) {                                                        \
            double t0 = now_ns();                                                                 \
            CALL;                                                                                 \
            t[i_] = (now_ns() - t0) / (double)(units);                                            \
        }                                                                                         \
        qsort(t, REP, sizeof t[0], cmpd);                                                         \
        printf("%s %s %.6g %.6g\n", label, unit_name, t[0], t[REP / 2]);                          \
    } while (0)

int main(int argc, char **argv) {
    double scale = argc > 1 ? atof(argv[1]) : 1.0;   /* work per timing */
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512vnni")) {
        printf("skip no-avx512-vnni\n");
        return 0;
    }
    idx = aligned_alloc(64, NROW * NSB * 32 * 2);
    x8 = aligned_alloc(64, NSB * 1024);
    sgn = aligned_alloc(64, NROW * NSB * 16 * 2);
    cb8 = aligned_alloc(64, 65536 * 8);
    wdec = aligned_alloc(64, TILE * KBLK * 32);
    lanes = aligned_alloc(64, 64 * KBLK * 32);
    bsf = aligned_alloc(64, TILE * KBLK * 4);
    xsc = aligned_alloc(64, 4 * KBLK * 16 * 4);
    uint8_t *dst = aligned_alloc(64, 4 * 8 * 256);
    void *facc = aligned_alloc(64, TILE * 4 * 8 * 64);
    memset(facc, 0, TILE * 4 * 8 * 64);
    uint32_t s = 12345;
    for (int i = 0; i < NROW * NSB * 32; i++) idx[i] = (uint16_t)((s = s * 1664525u + 1013904223u) >> 16);
    for (int i = 0; i < NROW * NSB * 16; i++) sgn[i] = (uint16_t)((s = s * 1664525u + 1013904223u) >> 16);
    for (int i = 0; i < NSB * 1024; i++) x8[i] = (uint8_t)((s = s * 1664525u + 1013904223u) >> 24);
    for (int i = 0; i < 65536 * 8; i++) cb8[i] = (int8_t)((int)((s = s * 1664525u + 1013904223u) >> 25) - 64);
    for (int i = 0; i < TILE * KBLK * 32; i++) wdec[i] = (uint8_t)((s = s * 1664525u + 1013904223u) >> 24);
    for (int i = 0; i < 64 * KBLK * 32; i++) lanes[i] = (uint8_t)((s = s * 1664525u + 1013904223u) >> 24);
    for (int i = 0; i < TILE * KBLK; i++) bsf[i] = 0.5f + (float)(i % 7);
    for (int i = 0; i < 4 * KBLK * 16; i++) xsc[i] = 1e-3f * (float)(i % 13);

    int64_t rows = (int64_t)(1024 * scale) + 1;   /* 4096-long rows per timing */
    double w = (double)rows * 4096;
    TIME("b1_gen_dot", w, "ns_per_weight", b1_gen_dot(rows));
    TIME("b1_gen_only", w, "ns_per_weight", b1_gen_only(rows));
    TIME("b1_iq3_form", w, "ns_per_weight", b1_iq3_form(rows));
    TIME("b1_iq4_form", w, "ns_per_weight", b1_iq4_form(rows));
    int64_t n = (int64_t)(1 << 20) * scale + 1;
    TIME("peak_vpmulld", 8.0 * n, "ns_per_instr", peak_mullo(n));
    TIME("peak_vpdpbusd", 8.0 * n, "ns_per_instr", peak_dpbusd(n));
    TIME("decode_computed", w, "ns_per_weight", decode_computed(rows, dst));
    TIME("decode_lookup", w, "ns_per_weight", decode_lookup(rows, dst));
    int64_t reps = (int64_t)(256 * scale) + 1;
    double mac8 = (double)reps * KBLK * 32 * TILE * 8, mac64 = (double)reps * KBLK * 32 * TILE * 64;
    TIME("gemm8_mac", mac8, "ns_per_mac", gemm8(reps, 0, facc));
    TIME("gemm8_mac_epilogue", mac8, "ns_per_mac", gemm8(reps, 1, facc));
    reps = (int64_t)(64 * scale) + 1;
    mac64 = (double)reps * KBLK * 32 * TILE * 64;
    TIME("gemm64_mac", mac64, "ns_per_mac", gemm64(reps, 0, facc));
    TIME("gemm64_mac_epilogue", mac64, "ns_per_mac", gemm64(reps, 1, facc));
    return 0;
}
