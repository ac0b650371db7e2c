/* mul_mat helpers: KT weight rows dotted with integer-quantized activations
 * (int8 per 32 for precision "int8", int16 per 32 for "int16"; both held as
 * int16 x16 here, the int8 ones with |x16| <= 127).
 *
 * The GEMV contract every isa/<name>.h implements (kt_isa.h lists the
 * functions), and the per-row entry the mul_mat kernels in kt_kernels.pxi
 * call.  Included by kt_isa.h after the ISA headers.
 *
 * The arithmetic contract, identical on every ISA:
 *   - activations come quantized per block of 32 as x16 (|x16| <= IQKT_MM_XMAX)
 *     with a float scale s (kt_quantize_activations);
 *   - for each weight block, dot = sum_k value_k * x16_k is computed exactly in
 *     int32 (value_k is the signed trellis value, |value| <= 126, so
 *     |dot| <= 32 * 126 * 8000 < 2^31);
 *   - the row result is sum_blocks (float(block_scale) * s) * float(dot).
 * Only the order of that last float sum differs between ISAs (vector lanes),
 * which is why variants agree to ~1e-7 relative rather than bit for bit.
 * AVX512 fixes that order as: 8 partial sums, slot j = blocks j, j+8, j+16, ...
 * each FMA'd in block order, then added by iqkt_mm_sum8; its B = 1, "pairs"
 * batch and GEMM batch kernels all follow it, so they agree bit for bit.
 * AVX2's int8 kernels (row and GEMM) follow it too, so for precision "int8"
 * AVX2 and AVX512 give the same bits; AVX2's int16 kernels FMA per-lane
 * partials instead (their own order, the same for B = 1 and batch).
 *
 * Why the int16 path exists next to int8 (accuracy), and why the x86 kernels compute the
 * trellis while scalar, NEON and the AVX512 GEMM batch kernel look it up:
 * measurements in docs/perf-notes.md.
 *
 * Activation "lanes": each activation row is re-laid out once per call by
 * iqkt_mm_prepare into 4 bytes per element (block stride 128 bytes), in the
 * layout the ISA's inner loop wants:
 *   avx512: uint32 lane = (uint16)x16      (high half zero, for vpdpwssd), in the
 *           step-major order of the AVX512 kernels (depends on the weight type)
 *   avx2:   IQ1/IQ2/IQ4: uint32 lane = x16 in both 16-bit halves (for vpmaddwd on
 *           byte-pair sums), in the step-major order of the AVX2 kernel
 *           (iqkt_mm_lane_pos_avx2); IQ3: int16 pairs (below)
 * The batch kernels (AVX512 for 2 <= nb < IQKT_MM_GEMM_MIN, AVX2 for
 * nb > IQKT_MM_NB) and the AVX2 IQ3 kernels use int16 pairs instead (2 bytes
 * per element, see iqkt_mm_prepare, iqkt_mm_pair_pos_avx2); the AVX512 GEMM kernel (nb >= IQKT_MM_GEMM_MIN) interleaves
 * the activation rows (iqkt_mm_prepare_rows).
 *   neon:   per block 32 int8 "hi" then 32 int8 "lo" with x16 = 256*hi + lo
 *   scalar: per block 32 int16 x16
 * bsum[block] = sum of the block's x16 (used where the -126 bias of the
 * trellis values is applied after the product).
 * Precision "int8" (|x16| <= 127) runs the kernels above unchanged unless the
 * plan (iqkt_mm_plan) picks int8 kernels with lanes of their own:
 *   avx512 B = 1 (IQ1, IQ2, IQ4): uint32 lane = x * 0x01010101, step-major order;
 *   avx512 GEMM (B >= IQKT_MM_GEMM8_MIN): int8 quads of 16 rows per zmm,
 *           then 126 * block sums (iqkt_mm_act8_prepare_gemm);
 *   avx2 B = 1..4 (all types): IQ1/IQ2/IQ4 uint32 lane = x * 0x01010101 in the
 *           step-major order of iqkt_mm_lane_pos_avx2, IQ3 the int16 pair layout;
 *   avx2 GEMM (B >= IQKT_MM_GEMM8_MIN): int8 quads of 8 rows per ymm, zero past
 *           the last row (iqkt_mm_act8_prepare_rows; signed by the weights in
 *           the kernel, no bias; avx2_vnni: then -126 * block sums, bsv);
 *   lookup kernel on NEON: per block 32 int8 (iqkt_mm_prepare_lookup8).
 * Their block dots are the same exact integers, so results do not change
 * with the kernel (B = 1 vs batch: bit for bit on AVX512 and AVX2).
 */
#ifndef IQKT_KT_MM_H
#define IQKT_KT_MM_H

/* Whether this ISA has its own GEMV kernels for the type; the others (a type
 * added to the table before any ISA kernel reads its layout) go through the
 * lookup kernel of isa/generic.h, lanes included. */
static inline int iqkt_mm_isa_has_type(int type) {
    return (int)((IQKT_ISA_MM_KERNEL_TYPES >> type) & 1u);
}

/* Which kernel family one product uses, chosen once per call (iqkt_mm_plan)
 * and passed to every function below: */
enum {
    IQKT_MM_PLAN_LOOKUP = 0,   /* generic.h's lookup kernel (types without ISA kernels) */
    IQKT_MM_PLAN_ISA = 1,      /* the ISA's kernels, activations held as int16 lanes */
    IQKT_MM_PLAN_ACT8 = 2,     /* the ISA's int8-activation kernels (precision "int8", |x16| <= 127):
                                  byte lanes, vpdpbusd / vpmaddubsw (iqkt_mm_act8_*) */
    IQKT_MM_PLAN_LOOKUP8 = 3   /* the lookup kernel on int8 lanes (precision "int8", where the ISA
                                  says it pays: IQKT_ISA_MM_LOOKUP8, NEON's vdotq_s32) */
};

/* act8: the activations are int8 (|x16| <= 127); nb activation rows. */
static inline int iqkt_mm_plan(int type, int act8, int64_t nb) {
    if (!iqkt_mm_isa_has_type(type))
        return act8 && IQKT_ISA_MM_LOOKUP8 ? IQKT_MM_PLAN_LOOKUP8 : IQKT_MM_PLAN_LOOKUP;
    return act8 && iqkt_mm_act8_use(type, nb) ? IQKT_MM_PLAN_ACT8 : IQKT_MM_PLAN_ISA;
}

/* Whether the product goes to the batch kernel (iqkt_mm_plan_tile) rather
 * than iqkt_mm_row. */
static inline int iqkt_mm_plan_use_batch(int plan, int type, int64_t nb) {
    if (plan == IQKT_MM_PLAN_ACT8)
        return iqkt_mm_act8_use_batch(type, nb);
    return plan == IQKT_MM_PLAN_ISA && iqkt_mm_use_batch(nb);
}

/* All activation rows' lanes for products with the type's rows. */
static void iqkt_mm_plan_prepare_rows(int plan, int type, int64_t nrows, const int16_t *x16, int64_t n,
                                      uint8_t *lanes, int32_t *bsum) {
    if (plan == IQKT_MM_PLAN_ACT8) {
        iqkt_mm_act8_prepare_rows(type, nrows, x16, n, lanes, bsum);
        return;
    }
    if (plan == IQKT_MM_PLAN_ISA) {
        iqkt_mm_prepare_rows(type, nrows, x16, n, lanes, bsum);
        return;
    }
    for (int64_t r = 0; r < nrows; r++) {
        if (plan == IQKT_MM_PLAN_LOOKUP8)
            iqkt_mm_prepare_lookup8(x16 + r * n, n, lanes + r * IQKT_MM_LANE_BYTES * n, bsum + r * (n / 32));
        else
            iqkt_mm_prepare_lookup(x16 + r * n, n, lanes + r * IQKT_MM_LANE_BYTES * n, bsum + r * (n / 32));
    }
}

/* Batch kernel: scratch bytes, per-call setup, one tile of IQKT_MM_TILE rows. */
static inline int64_t iqkt_mm_plan_tile_scratch(int plan, int64_t nb, int64_t n) {
    return plan == IQKT_MM_PLAN_ACT8 ? iqkt_mm_act8_tile_scratch(nb, n) : iqkt_mm_tile_scratch(nb, n);
}

static void iqkt_mm_plan_batch_begin(int plan, int64_t nb, int64_t n, const float *xs, int64_t xstride,
                                     uint8_t *scratch) {
    if (plan == IQKT_MM_PLAN_ACT8)
        iqkt_mm_act8_batch_begin(nb, n, xs, xstride, scratch);
    else
        iqkt_mm_batch_begin(nb, n, xs, xstride, scratch);
}

static void iqkt_mm_plan_tile(int plan, int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                              const uint8_t *lanes, int64_t lstride, const int32_t *bsum, int64_t bstride,
                              const float *xs, int64_t xstride, int64_t nb, uint8_t *scratch, float *out,
                              const int8_t *cb8, const int8_t *cb4) {
    if (plan == IQKT_MM_PLAN_ACT8)
        iqkt_mm_act8_tile(type, q, rs, nr, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, scratch, out,
                          cb8, cb4);
    else
        iqkt_mm_tile(type, q, rs, nr, nsb, lanes, lstride, bsum, bstride, xs, xstride, nb, scratch, out, cb8, cb4);
}

/* out[bi] = sum over blocks of (block_scale * xs) * dot, for bi < nb (1..4).
 * The switch gives each activation-row count its own fully unrolled copy. */
static void iqkt_mm_row(int plan, int type, const uint8_t *sbs, int64_t nsb,
                        const uint8_t *lanes, int64_t lstride, const int32_t *bsum, int64_t bstride,
                        const float *xs, int64_t xstride, int nb, float *out,
                        const int8_t *cb8, const int8_t *cb4) {
    if (IQKT_ISA_MM_LOOKUP8 && plan == IQKT_MM_PLAN_LOOKUP8) {   /* (no int8-lane copies where unused) */
        switch (nb) {
        case 1: iqkt_mm_row_nb_lookup(1, type, sbs, nsb, lanes, lstride, xs, xstride, 1, out, cb8, cb4); break;
        case 2: iqkt_mm_row_nb_lookup(1, type, sbs, nsb, lanes, lstride, xs, xstride, 2, out, cb8, cb4); break;
        case 3: iqkt_mm_row_nb_lookup(1, type, sbs, nsb, lanes, lstride, xs, xstride, 3, out, cb8, cb4); break;
        default: iqkt_mm_row_nb_lookup(1, type, sbs, nsb, lanes, lstride, xs, xstride, 4, out, cb8, cb4); break;
        }
        return;
    }
    if (plan == IQKT_MM_PLAN_LOOKUP) {
        switch (nb) {
        case 1: iqkt_mm_row_nb_lookup(0, type, sbs, nsb, lanes, lstride, xs, xstride, 1, out, cb8, cb4); break;
        case 2: iqkt_mm_row_nb_lookup(0, type, sbs, nsb, lanes, lstride, xs, xstride, 2, out, cb8, cb4); break;
        case 3: iqkt_mm_row_nb_lookup(0, type, sbs, nsb, lanes, lstride, xs, xstride, 3, out, cb8, cb4); break;
        default: iqkt_mm_row_nb_lookup(0, type, sbs, nsb, lanes, lstride, xs, xstride, 4, out, cb8, cb4); break;
        }
        return;
    }
    if (plan == IQKT_MM_PLAN_ACT8) {
        switch (nb) {
        case 1: iqkt_mm_act8_row_nb(type, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, 1, out, cb8, cb4); break;
        case 2: iqkt_mm_act8_row_nb(type, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, 2, out, cb8, cb4); break;
        case 3: iqkt_mm_act8_row_nb(type, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, 3, out, cb8, cb4); break;
        default: iqkt_mm_act8_row_nb(type, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, 4, out, cb8, cb4); break;
        }
        return;
    }
    switch (nb) {
    case 1: iqkt_mm_row_nb(type, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, 1, out, cb8, cb4); break;
    case 2: iqkt_mm_row_nb(type, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, 2, out, cb8, cb4); break;
    case 3: iqkt_mm_row_nb(type, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, 3, out, cb8, cb4); break;
    default: iqkt_mm_row_nb(type, sbs, nsb, lanes, lstride, bsum, bstride, xs, xstride, 4, out, cb8, cb4); break;
    }
}


#endif /* IQKT_KT_MM_H */
