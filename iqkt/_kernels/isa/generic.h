/* The portable implementation of the kt_isa.h contract: the whole of the
 * scalar variant, and the default for every contract function an ISA header
 * does not define (it says which with IQKT_ISA_HAS_<NAME>).  Included after
 * the ISA header, so these defaults call the ISA's own primitives (the NEON
 * scan_masked below runs NEON's iqkt_scan_codes). */
#ifndef IQKT_ISA_GENERIC_H
#define IQKT_ISA_GENERIC_H

#ifndef IQKT_ISA_NAME
#  define IQKT_ISA_NAME "scalar"
#endif

/* ---- nearest-codeword search ------------------------------------------- */

#if !defined(IQKT_ISA_HAS_SCAN_CODES) || !defined(IQKT_ISA_HAS_BLOCK_BOUNDS)
/* int8 -> float by table in the portable build: a plain conversion there is
 * a sign extension plus cvtsi2ss with a false dependency, and the scan and
 * the bounds convert 16 and 2 values per coordinate of a block. */
static const float iqkt_i8_f32[256] = {
    -128.f, -127.f, -126.f, -125.f, -124.f, -123.f, -122.f, -121.f, -120.f, -119.f, -118.f, -117.f, -116.f, -115.f, -114.f, -113.f,
    -112.f, -111.f, -110.f, -109.f, -108.f, -107.f, -106.f, -105.f, -104.f, -103.f, -102.f, -101.f, -100.f, -99.f, -98.f, -97.f,
    -96.f, -95.f, -94.f, -93.f, -92.f, -91.f, -90.f, -89.f, -88.f, -87.f, -86.f, -85.f, -84.f, -83.f, -82.f, -81.f,
    -80.f, -79.f, -78.f, -77.f, -76.f, -75.f, -74.f, -73.f, -72.f, -71.f, -70.f, -69.f, -68.f, -67.f, -66.f, -65.f,
    -64.f, -63.f, -62.f, -61.f, -60.f, -59.f, -58.f, -57.f, -56.f, -55.f, -54.f, -53.f, -52.f, -51.f, -50.f, -49.f,
    -48.f, -47.f, -46.f, -45.f, -44.f, -43.f, -42.f, -41.f, -40.f, -39.f, -38.f, -37.f, -36.f, -35.f, -34.f, -33.f,
    -32.f, -31.f, -30.f, -29.f, -28.f, -27.f, -26.f, -25.f, -24.f, -23.f, -22.f, -21.f, -20.f, -19.f, -18.f, -17.f,
    -16.f, -15.f, -14.f, -13.f, -12.f, -11.f, -10.f, -9.f, -8.f, -7.f, -6.f, -5.f, -4.f, -3.f, -2.f, -1.f,
    0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f, 8.f, 9.f, 10.f, 11.f, 12.f, 13.f, 14.f, 15.f,
    16.f, 17.f, 18.f, 19.f, 20.f, 21.f, 22.f, 23.f, 24.f, 25.f, 26.f, 27.f, 28.f, 29.f, 30.f, 31.f,
    32.f, 33.f, 34.f, 35.f, 36.f, 37.f, 38.f, 39.f, 40.f, 41.f, 42.f, 43.f, 44.f, 45.f, 46.f, 47.f,
    48.f, 49.f, 50.f, 51.f, 52.f, 53.f, 54.f, 55.f, 56.f, 57.f, 58.f, 59.f, 60.f, 61.f, 62.f, 63.f,
    64.f, 65.f, 66.f, 67.f, 68.f, 69.f, 70.f, 71.f, 72.f, 73.f, 74.f, 75.f, 76.f, 77.f, 78.f, 79.f,
    80.f, 81.f, 82.f, 83.f, 84.f, 85.f, 86.f, 87.f, 88.f, 89.f, 90.f, 91.f, 92.f, 93.f, 94.f, 95.f,
    96.f, 97.f, 98.f, 99.f, 100.f, 101.f, 102.f, 103.f, 104.f, 105.f, 106.f, 107.f, 108.f, 109.f, 110.f, 111.f,
    112.f, 113.f, 114.f, 115.f, 116.f, 117.f, 118.f, 119.f, 120.f, 121.f, 122.f, 123.f, 124.f, 125.f, 126.f, 127.f,
};
#endif

#ifndef IQKT_ISA_HAS_LE_MASK16
/* Mask of the lanes b < 16 of lb with lb[b] <= best. */
IQKT_INLINE uint32_t iqkt_le_mask16(const float *lb, float best) {
    uint32_t m = 0;
    for (int b = 0; b < 16; b++) m |= (uint32_t)(lb[b] <= best) << b;
    return m;
}
#endif

#ifndef IQKT_ISA_HAS_SCAN_CODES
IQKT_INLINE void iqkt_scan_codes(const int8_t *vals, const uint16_t *idx, int nblk, int dim,
                                   const float *t, const float *w, float *best_e, int32_t *best_i) {
    float be = *best_e;
    int32_t bi = *best_i;
    for (int b = 0; b < nblk; b++) {
        const int8_t *c = vals + (size_t)b * dim * 16;
        const uint16_t *ib = idx + 16 * b;
        /* Screen with unfused arithmetic (plain loops the compiler can
         * vectorise; fmaf may be a library call here), then take the exact
         * fused distance of the few lanes that could still win.  The two
         * differ by at most 24 roundings of 2^-24 relative (every term is
         * >= 0, so no partial sum exceeds the total), or 24 of 2^-150
         * absolute among subnormals: a lane whose fused distance is <= be
         * has an unfused one <= be * (1 + 2^-17) + 1e-42. */
        float e[16];
        for (int l = 0; l < 16; l++) e[l] = 0.0f;
        for (int k = 0; k < dim; k++)
            for (int l = 0; l < 16; l++) {
                float diff = t[k] - iqkt_i8_f32[c[16 * k + l] + 128];
                e[l] = e[l] + (w[k] * diff) * diff;
            }
        for (int l = 0; l < 16; l++) {
            if (!(e[l] <= be * (1.0f + 1.0f / 131072.0f) + 1e-42f))
                continue;
            float ex = 0.0f;
            for (int k = 0; k < dim; k++) {
                float diff = t[k] - iqkt_i8_f32[c[16 * k + l] + 128];
                ex = iqkt_fma(w[k] * diff, diff, ex);
            }
            if (iqkt_better(ex, ib[l], be, bi)) { be = ex; bi = ib[l]; }
        }
    }
    *best_e = be;
    *best_i = bi;
}
#endif

#ifndef IQKT_ISA_HAS_SCAN_MASKED
/* Scan the blocks b (0..15) of a chunk whose bit is set in mask and whose
 * bound lb[b] can still beat the best (re-checked as the best improves).
 * AVX512 scans two blocks at a time: one block's distance is a chain of dim
 * dependent adds, two chains keep the adder busy.  The result is the minimum
 * in (distance, index) order, so it does not depend on the visiting order. */
IQKT_INLINE void iqkt_scan_masked(const int8_t *vals, const uint16_t *idx, uint32_t mask,
                                    const float *lb, int dim, const float *t, const float *w,
                                    float *best_e, int32_t *best_i) {
    while (mask) {
        int a = iqkt_lowest_bit(mask);
        mask &= mask - 1;
        if (lb[a] <= *best_e)
            iqkt_scan_codes(vals + (size_t)a * dim * 16, idx + 16 * a, 1, dim, t, w, best_e, best_i);
    }
}
#endif

#ifndef IQKT_ISA_HAS_APPEND_MASK
/* Append base + b for every bit b set in mask to list[n..]; returns the new
 * count.  list must have room for n + 16 entries.  No branch per block: the
 * survivors of a chunk's bounds are collected, then scanned together. */
IQKT_INLINE int iqkt_append_mask(int32_t *list, int n, int32_t base, uint32_t mask) {
    for (int b = 0; b < 16; b++) {
        list[n] = base + b;
        n += (int)((mask >> b) & 1u);
    }
    return n;
}
#endif

#ifndef IQKT_ISA_HAS_SCAN_LIST
/* Scan the blocks list[0..n) (any order) into the (e, index) minimum.  The
 * blocks are independent, so on AVX512 they keep per-lane running minima
 * and reduce once: no branch per block, and the distance chains of many
 * blocks overlap.  Other ISAs scan block by block; the minimum is the same. */
IQKT_INLINE void iqkt_scan_list(const int8_t *vals, const uint16_t *idx, const int32_t *list, int n,
                                int dim, const float *t, const float *w, float *best_e, int32_t *best_i) {
    for (int j = 0; j < n; j++)
        iqkt_scan_codes(vals + (size_t)list[j] * dim * 16, idx + 16 * (size_t)list[j], 1, dim, t, w,
                        best_e, best_i);
}
#endif

#ifndef IQKT_ISA_HAS_BLOCK_BOUNDS
/* Lower bounds of the scan's distance for nb <= 16 blocks of codes from their
 * bounding boxes: lb[b] = fma(w[k] * g, g, lb[b]) over k, g = the gap
 * between t[k] and [lo, hi] = [box[32*k + b], box[32*k + 16 + b]] (0 inside).
 * Same operations in the same order as the scan with |diff| >= g, and float
 * rounding is monotone, so lb[b] <= every distance the scan computes in block
 * b (the portable build sums unfused and shrinks the result instead): a block
 * with lb[b] > best cannot hold the minimum.  Only which blocks get scanned
 * depends on lb, never the result.  The box of 16 blocks is one
 * contiguous run of dim * 32 int8 (a few cache lines; the values are integers,
 * exact in float); lanes >= nb are garbage.  Returns the mask of the blocks
 * b < nb with lb[b] <= best. */
IQKT_INLINE uint32_t iqkt_block_bounds(const int8_t *box, int nb, int dim, const float *t,
                                       const float *w, float best, float *lb) {
    uint32_t valid = (nb >= 16) ? 0xFFFFu : ((1u << nb) - 1u);
    uint32_t m = 0;
    for (int b = 0; b < nb; b++) lb[b] = 0.0f;
    for (int k = 0; k < dim; k++)
        for (int b = 0; b < nb; b++) {
            float g1 = iqkt_i8_f32[box[32 * k + b] + 128] - t[k];
            float g2 = t[k] - iqkt_i8_f32[box[32 * k + 16 + b] + 128];
            float g = g1 > g2 ? g1 : g2;
            if (!(g > 0.0f)) g = 0.0f;
            lb[b] = lb[b] + (w[k] * g) * g;
        }
    /* Unfused (see the portable scan): shrunk by 2^-18 and 1e-42, more
     * than it can exceed the fused sum by, it stays a lower bound of the
     * scan's distances. */
    for (int b = 0; b < nb; b++) {
        lb[b] = lb[b] * (1.0f - 1.0f / 262144.0f) - 1e-42f;
        m |= (uint32_t)(lb[b] <= best) << b;
    }
    (void)valid;
    return m;
}
#endif

/* ---- GEMV: codebook lookups, one weight row at a time ------------------- */

#ifndef IQKT_ISA_HAS_MM_USE_BATCH
static inline int iqkt_mm_use_batch(int64_t nb) { (void)nb; return 0; }
#endif

#ifndef IQKT_ISA_HAS_MM_BLOCK_LANES
/* Lanes of one 32-block: its 32 int16 x16 as they are. */
static inline void iqkt_mm_block_lanes(const int16_t *xb, uint8_t *lb) { memcpy(lb, xb, 64); }
#endif

#ifndef IQKT_ISA_HAS_MM_DOT32_F64
/* The float path's dot of 32 weights with 32 activations (both widened to
 * double, so every product is exact), summed in one fixed order that the
 * vector versions reproduce: s8[j] = (p[j] + p[j+8]) + (p[j+16] + p[j+24]),
 * then ((s8[0] + s8[4]) + (s8[1] + s8[5])) + ((s8[2] + s8[6]) + (s8[3] + s8[7])). */
static inline double iqkt_mm_dot32_f64(const double *w, const double *x) {
    double s8[8];
    for (int j = 0; j < 8; j++)
        s8[j] = (w[j] * x[j] + w[j + 8] * x[j + 8]) + (w[j + 16] * x[j + 16] + w[j + 24] * x[j + 24]);
    return ((s8[0] + s8[4]) + (s8[1] + s8[5])) + ((s8[2] + s8[6]) + (s8[3] + s8[7]));
}
#endif

#ifndef IQKT_ISA_HAS_MM_BLOCK_DOT
/* Exact dot of 32 trellis values with one block of lanes. */
static inline int32_t iqkt_mm_block_dot(const int8_t *vals, const uint8_t *lb) {
    int16_t x[32];
    memcpy(x, lb, 64);
    int32_t s = 0;
    for (int k = 0; k < 32; k++) s += (int32_t)vals[k] * x[k];
    return s;
}
#endif

/* Whether the lookup kernel runs precision "int8" on int8 lanes
 * (iqkt_mm_block_dot8) rather than on the int16 lanes (exact for |x| <= 127
 * as well).  Only NEON says yes (two vdotq_s32 per block instead of four);
 * on x86 the int8 lanes measured slower (IQ1_KT 4096 x 4096 B = 1: scalar
 * build x0.80, AVX512 x0.70: sign extensions and a reduction per block). */
#ifndef IQKT_ISA_MM_LOOKUP8
#  define IQKT_ISA_MM_LOOKUP8 0
#endif

#ifndef IQKT_ISA_HAS_MM_BLOCK_DOT8
/* Exact dot of 32 trellis values with one block of int8 lanes (precision
 * "int8": the block's 32 int8 activations, iqkt_mm_prepare_lookup8).
 * Beware: GCC 12 -O3 -mavx512vnni turns this signed x signed loop into a
 * wrong vpdpbusd (unsigned x signed); compile it without VNNI flags. */
static inline int32_t iqkt_mm_block_dot8(const int8_t *vals, const uint8_t *lb) {
    int32_t s = 0;
    for (int k = 0; k < 32; k++) s += (int32_t)vals[k] * (int8_t)lb[k];
    return s;
}
#endif

/* The lookup kernel below is compiled on every ISA: it is the GEMV of the
 * types an ISA has no kernel of its own for (IQKT_ISA_MM_KERNEL_TYPES). */
#ifndef IQKT_ISA_MM_KERNEL_TYPES
#  define IQKT_ISA_MM_KERNEL_TYPES 0u
#endif

/* Lanes of one activation row for the lookup kernel: 128 bytes per 32-block
 * (iqkt_mm_block_lanes). */
static void iqkt_mm_prepare_lookup(const int16_t *x16, int64_t n, uint8_t *lanes, int32_t *bsum) {
    iqkt_mm_bsums(x16, n, bsum);
    for (int64_t blk = 0; blk < n / 32; blk++) iqkt_mm_block_lanes(x16 + 32 * blk, lanes + 128 * blk);
}

/* Lanes of one int8 activation row (|x16| <= 127) for the lookup kernel:
 * the block's 32 int8 at the start of its 128 bytes (iqkt_mm_block_dot8). */
static void iqkt_mm_prepare_lookup8(const int16_t *x16, int64_t n, uint8_t *lanes, int32_t *bsum) {
    iqkt_mm_bsums(x16, n, bsum);
    for (int64_t blk = 0; blk < n / 32; blk++)
        for (int k = 0; k < 32; k++) lanes[128 * blk + k] = (uint8_t)(int8_t)x16[32 * blk + k];
}

#ifndef IQKT_ISA_HAS_MM_PREPARE
static void iqkt_mm_prepare(int type, int64_t nb, const int16_t *x16, int64_t n, uint8_t *lanes, int32_t *bsum) {
    (void)type; (void)nb;
    iqkt_mm_prepare_lookup(x16, n, lanes, bsum);
}
#endif

#ifndef IQKT_ISA_HAS_MM_PREPARE_ROWS
static void iqkt_mm_prepare_rows(int type, int64_t nrows, const int16_t *x16, int64_t n, uint8_t *lanes,
                                 int32_t *bsum) {
    for (int64_t r = 0; r < nrows; r++)
        iqkt_mm_prepare(type, nrows, x16 + r * n, n, lanes + r * IQKT_MM_LANE_BYTES * n, bsum + r * (n / 32));
}
#endif

/* The decoded block dotted with each activation row's block (act8: int8 lanes). */
IQKT_ALWAYS_INLINE void iqkt_mm_row_lookup(const int act8, int type, const uint8_t *sbs, int64_t nsb,
                                           const uint8_t *lanes, int64_t lstride,
                                           const float *xs, int64_t xstride, int nb, float *out,
                                           const int8_t *cb8, const int8_t *cb4) {
    float acc[IQKT_MM_NB] = {0, 0, 0, 0};
    int8_t vals[32];
    const int sbb = iqkt_mm_sb_bytes(type);
    for (int64_t ib = 0; ib < nsb; ib++) {
        const uint8_t *sb = sbs + ib * sbb;
        for (int b = 0; b < 8; b++) {
            int64_t blk = 8 * ib + b;
            {   /* constant type (see iqkt_mm_row_nb_lookup): the decode specialises */
                const iqkt_type_traits *t = iqkt_type_info(type);
                iqkt_decode_values(t, sb, b, t->group_size == 8 ? cb8 : cb4, 1, vals);
            }
            float bs = (float)iqkt_mm_block_scale(type, sb, b);
            for (int bi = 0; bi < nb; bi++) {
                const uint8_t *lb = lanes + bi * lstride + 128 * blk;
                int32_t dot = act8 ? iqkt_mm_block_dot8(vals, lb) : iqkt_mm_block_dot(vals, lb);
                acc[bi] = acc[bi] + (bs * xs[bi * xstride + blk]) * (float)dot;
            }
        }
    }
    for (int bi = 0; bi < nb; bi++) out[bi] = acc[bi];
}

IQKT_ALWAYS_INLINE void iqkt_mm_row_nb_lookup(const int act8, int type, const uint8_t *sbs, int64_t nsb,
                                              const uint8_t *lanes, int64_t lstride,
                                              const float *xs, int64_t xstride, const int nb, float *out,
                                              const int8_t *cb8, const int8_t *cb4) {
    /* a constant type per copy: the decode specialises (kt_decode.h) */
    switch (type) {
    case IQKT_IQ2_KT: iqkt_mm_row_lookup(act8, IQKT_IQ2_KT, sbs, nsb, lanes, lstride, xs, xstride, nb, out, cb8, cb4); break;
    case IQKT_IQ3_KT: iqkt_mm_row_lookup(act8, IQKT_IQ3_KT, sbs, nsb, lanes, lstride, xs, xstride, nb, out, cb8, cb4); break;
    case IQKT_IQ1_KT: iqkt_mm_row_lookup(act8, IQKT_IQ1_KT, sbs, nsb, lanes, lstride, xs, xstride, nb, out, cb8, cb4); break;
    default: iqkt_mm_row_lookup(act8, IQKT_IQ4_KT, sbs, nsb, lanes, lstride, xs, xstride, nb, out, cb8, cb4); break;
    }
}

#ifndef IQKT_ISA_HAS_MM_ROW_NB
IQKT_ALWAYS_INLINE void iqkt_mm_row_nb(int type, const uint8_t *sbs, int64_t nsb,
                                       const uint8_t *lanes, int64_t lstride,
                                       const int32_t *bsum, int64_t bstride,
                                       const float *xs, int64_t xstride, const int nb, float *out,
                                       const int8_t *cb8, const int8_t *cb4) {
    (void)bsum; (void)bstride;
    iqkt_mm_row_nb_lookup(0, type, sbs, nsb, lanes, lstride, xs, xstride, nb, out, cb8, cb4);
}
#endif

#ifndef IQKT_ISA_HAS_MM_TILE_SCRATCH
static inline int64_t iqkt_mm_tile_scratch(int64_t nb, int64_t n) { (void)nb; (void)n; return 0; }
#endif

#ifndef IQKT_ISA_HAS_MM_BATCH_BEGIN
static void iqkt_mm_batch_begin(int64_t nb, int64_t n, const float *xs, int64_t xstride, uint8_t *scratch) {
    (void)nb; (void)n; (void)xs; (void)xstride; (void)scratch;
}
#endif

#ifndef IQKT_ISA_HAS_MM_TILE
static void iqkt_mm_tile(int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                         const uint8_t *lanes, int64_t lstride, const int32_t *bsum, int64_t bstride,
                         const float *xs, int64_t xstride, int64_t nb, uint8_t *scratch, float *out,
                         const int8_t *cb8, const int8_t *cb4) {
    (void)type; (void)bsum; (void)bstride; (void)q; (void)rs; (void)nr; (void)nsb; (void)lanes; (void)lstride;
    (void)xs; (void)xstride; (void)nb; (void)scratch; (void)out; (void)cb8; (void)cb4;
}
#endif

/* ---- int8-activation kernels (precision "int8", kt_mm.h IQKT_MM_PLAN_ACT8) --
 * An ISA with kernels of its own for int8 activations defines
 * IQKT_ISA_HAS_MM_ACT8 and every iqkt_mm_act8_* function; elsewhere int8
 * activations run the kernels above (exact for |x16| <= 127 as for int16). */
#ifndef IQKT_ISA_HAS_MM_ACT8
static inline int iqkt_mm_act8_use(int type, int64_t nb) { (void)type; (void)nb; return 0; }
static inline int iqkt_mm_act8_use_batch(int type, int64_t nb) { (void)type; (void)nb; return 0; }
static void iqkt_mm_act8_prepare_rows(int type, int64_t nrows, const int16_t *x16, int64_t n, uint8_t *lanes,
                                      int32_t *bsum) {
    iqkt_mm_prepare_rows(type, nrows, x16, n, lanes, bsum);
}
static inline int64_t iqkt_mm_act8_tile_scratch(int64_t nb, int64_t n) { return iqkt_mm_tile_scratch(nb, n); }
static void iqkt_mm_act8_batch_begin(int64_t nb, int64_t n, const float *xs, int64_t xstride, uint8_t *scratch) {
    iqkt_mm_batch_begin(nb, n, xs, xstride, scratch);
}
static void iqkt_mm_act8_tile(int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                              const uint8_t *lanes, int64_t lstride, const int32_t *bsum, int64_t bstride,
                              const float *xs, int64_t xstride, int64_t nb, uint8_t *scratch, float *out,
                              const int8_t *cb8, const int8_t *cb4) {
    iqkt_mm_tile(type, q, rs, nr, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, scratch, out, cb8, cb4);
}
IQKT_ALWAYS_INLINE void iqkt_mm_act8_row_nb(int type, const uint8_t *sbs, int64_t nsb,
                                            const uint8_t *lanes, int64_t lstride,
                                            const int32_t *bsum, int64_t bstride,
                                            const float *xs, int64_t xstride, const int nb, float *out,
                                            const int8_t *cb8, const int8_t *cb4) {
    iqkt_mm_row_nb(type, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, out, cb8, cb4);
}
#endif

#endif /* IQKT_ISA_GENERIC_H */
