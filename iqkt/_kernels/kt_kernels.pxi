# Shared KT kernel source.  Each ISA variant is a one-line shim
# (_kt_<isa>.pyx) that includes this file and is compiled with its own flags.
#
# Layer 1: `cdef ... noexcept nogil` kernels on raw pointers, errors by
#          return code (KT_OK == 0, negative on error).  These are what the
#          embedding API exports.
# Layer 2: thin `def` wrappers over already-validated contiguous arrays; they
#          release the GIL.  Validation and allocation live in iqkt/_api.py.
#
# Bit-identity across variants: every floating-point expression here is
# evaluated in a fixed order (setup.py disables FP contraction), and the
# per-ISA helpers (kt_isa.h, isa/*.h) only ever work across independent lanes.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int8_t, int16_t, int32_t, int64_t, uintptr_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy
from cpython.exc cimport PyErr_Occurred
from libc.math cimport sqrtf, fabsf, floorf, floor, ldexpf, frexpf, isfinite, HUGE_VALF

cdef extern from "kt_isa.h" nogil:
    const char *iqkt_variant_name()
    const char *iqkt_simd_name()
    uint16_t iqkt_load_u16(const uint8_t *p)
    uint32_t iqkt_load_u32(const uint8_t *p)
    float iqkt_load_f32(const uint8_t *p)
    void iqkt_store_u16(uint8_t *p, uint16_t v)
    void iqkt_store_u32(uint8_t *p, uint32_t v)
    void iqkt_store_f32(uint8_t *p, float v)
    float iqkt_fma(float a, float b, float c)
    void iqkt_scan_codes(const int8_t *vals, const uint16_t *idx, int nblk, int dim,
                         const float *t, const float *w, float *best_e, int32_t *best_i)
    void iqkt_scan_masked(const int8_t *vals, const uint16_t *idx, uint32_t mask,
                          const float *lb, int dim, const float *t, const float *w,
                          float *best_e, int32_t *best_i)
    void iqkt_prefetch(const void *p)
    int iqkt_append_mask(int32_t *list, int n, int32_t base, uint32_t mask)
    uint32_t iqkt_le_mask16(const float *lb, float best)
    int iqkt_lowest_bit(uint32_t m)
    void iqkt_scan_list(const int8_t *vals, const uint16_t *idx, const int32_t *list, int n,
                        int dim, const float *t, const float *w, float *best_e, int32_t *best_i)
    void iqkt_prefetch_blocks(const int8_t *vals, const uint16_t *idx, uint32_t mask, int dim)
    uint32_t iqkt_block_bounds(const int8_t *box, int nb, int dim, const float *t,
                               const float *w, float best, float *lb)
    # mul_mat helpers (the ISA's, see kt_isa.h and kt_mm.h)
    int IQKT_MM_XMAX
    int IQKT_MM_NB
    int IQKT_MM_LANE_BYTES
    int IQKT_MM_TILE
    double iqkt_mm_dot32_f64(const double *w, const double *x)
    int iqkt_mm_plan(int type, int act8, int64_t nb)
    int iqkt_mm_plan_use_batch(int plan, int type, int64_t nb)
    int64_t iqkt_mm_plan_tile_scratch(int plan, int64_t nb, int64_t n)
    void iqkt_mm_plan_batch_begin(int plan, int64_t nb, int64_t n, const float *xs, int64_t xstride,
                                  uint8_t *scratch)
    void iqkt_mm_plan_prepare_rows(int plan, int type, int64_t nrows, const int16_t *x16, int64_t n,
                                   uint8_t *lanes, int32_t *bsum)
    void iqkt_mm_plan_tile(int plan, int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                           const uint8_t *lanes, int64_t lstride, const int32_t *bsum, int64_t bstride,
                           const float *xs, int64_t xstride, int64_t nb, uint8_t *scratch, float *out,
                           const int8_t *cb8, const int8_t *cb4)
    void iqkt_mm_row(int plan, int type, const uint8_t *sbs, int64_t nsb, const uint8_t *lanes, int64_t lstride,
                     const int32_t *bsum, int64_t bstride, const float *xs, int64_t xstride, int nb,
                     float *out, const int8_t *cb8, const int8_t *cb4)

cdef extern from "kt_pool.h" nogil:
    ctypedef void (*iqkt_pool_fn)(void *ctx, int part) noexcept nogil
    enum:
        IQKT_POOL_MAX           # most threads of one call (the pool's size limit)
    void iqkt_pool_prepare(int nworkers)
    void iqkt_pool_run(int nparts, iqkt_pool_fn fn, void *ctx)
    int64_t iqkt_atomic_fetch_add(int64_t *p, int64_t v)

cdef extern from "float.h":
    float FLT_MAX

# ---------------------------------------------------------------- constants

# The formats: one row per type (iqkt_types.h, docs/formats.md).
cdef extern from "iqkt_types.h" nogil:
    enum:
        IQKT_NTYPES
        IQKT_BLOCK
        IQKT_TRELLIS_OFFSET
        IQKT_INDEX_SPLIT13
    ctypedef struct iqkt_type_traits:
        const char *name
        int ggml_type
        int gguf_file_type
        int block_bytes
        int group_size
        int codebook_size
        int codebooks
        int index_layout
        int sign_plane
        int scale_layout
        int scale_bias
        int scale_code_min
        int scale_code_max
        const int16_t *scale_values
        int scale_abs_max
        float inference_factor
        int search_levels
    const iqkt_type_traits *iqkt_type_info(int type)
    int iqkt_scale_value(const iqkt_type_traits *t, int code)
    int iqkt_block_scale(const iqkt_type_traits *t, const uint8_t *sb, int b)
    int64_t iqkt_type_row_size(const iqkt_type_traits *t, int64_t n)
    uint32_t IQKT_TRELLIS_MUL

cdef extern from "kt_decode.h" nogil:
    uint32_t iqkt_group_index(const iqkt_type_traits *t, const uint8_t *sb, int b, int g)
    int iqkt_sign_bit(const uint8_t *sb, int b, int k)
    void iqkt_decode_values(const iqkt_type_traits *t, const uint8_t *sb, int b, const int8_t *cb,
                            int signed_, int8_t *vals)
    void iqkt_decode_superblocks(int type, const uint8_t *sbs, int64_t nsb, float d, const int8_t *cb,
                                 float *out)

# Type ids and return codes: the embedding API's (iqkt.h), so C callers and
# the kernels cannot disagree.
cdef extern from "iqkt.h" nogil:
    enum:
        KT_IQ2 "IQKT_IQ2_KT"
        KT_IQ3 "IQKT_IQ3_KT"
        KT_IQ4 "IQKT_IQ4_KT"
        KT_IQ1 "IQKT_IQ1_KT"
        KT_OK "IQKT_OK"
        KT_ERR_TYPE "IQKT_ERR_TYPE"
        KT_ERR_SIZE "IQKT_ERR_SIZE"
        KT_ERR_NONFINITE_INPUT "IQKT_ERR_NONFINITE_INPUT"
        KT_ERR_NONFINITE_SCALE "IQKT_ERR_NONFINITE_SCALE"
        KT_ERR_NOMEM "IQKT_ERR_NOMEM"
        KT_ERR_IMATRIX "IQKT_ERR_IMATRIX"
        KT_ERR_ARG "IQKT_ERR_ARG"
        KT_PRECISION_INT8 "IQKT_PRECISION_INT8"
        KT_PRECISION_FLOAT "IQKT_PRECISION_FLOAT"
        KT_PRECISION_INT16 "IQKT_PRECISION_INT16"

cdef enum:
    QK = IQKT_BLOCK             # weights per super-block
    KT_CODEBOOK_SIZE = 65536    # rows of each codebook table (CB8, CB4)

ERROR_MESSAGES = {
    KT_ERR_TYPE: "unknown KT type id",
    KT_ERR_SIZE: "row length must be a positive multiple of 256",
    KT_ERR_NONFINITE_INPUT: "input contains NaN or infinity",
    KT_ERR_NONFINITE_SCALE: "a row scale in the quantized data is NaN or infinity",
    KT_ERR_NOMEM: "out of memory",
    KT_ERR_IMATRIX: "imatrix must be finite and non-negative",
    KT_ERR_ARG: "invalid argument",
}

# ---------------------------------------------------------------- trellis

cdef inline int trellis_step(uint32_t *state) noexcept nogil:
    """Advance the trellis one step and return its value in [-126, 126]."""
    state[0] = state[0] * IQKT_TRELLIS_MUL
    cdef uint32_t s = state[0] & 0x3F3F3F3Fu
    # The four 6-bit bytes sum without carries, so one multiply adds them
    # up into the top byte.
    return <int>((s * 0x01010101u) >> 24) - 126

cdef int kt_trellis(const uint32_t *seeds, int64_t count, int64_t steps, int8_t *out) noexcept nogil:
    """out[i*steps + j] = value j of the trellis started at seeds[i]."""
    cdef int64_t i, j
    cdef uint32_t state
    if count < 0 or steps < 0:
        return KT_ERR_SIZE
    if (count > 0 and steps > 0) and (seeds == NULL or out == NULL):
        return KT_ERR_ARG
    for i in range(count):
        state = seeds[i]
        for j in range(steps):
            out[i * steps + j] = <int8_t>trellis_step(&state)
    return KT_OK

# Codebooks, built once at import (under the GIL, so no locking is needed):
#   CB8[i*8 + k]  : value k of the 8-step group with index i (IQ2/IQ3)
#   CB4[i*4 + k]  : value k of the 4-step group, i = flag*32768 + index (IQ4)
cdef int8_t *CB8 = NULL
cdef int8_t *CB4 = NULL

cdef int build_codebooks() except -1:
    global CB8, CB4
    cdef uint32_t i
    cdef uint32_t seed
    CB8 = <int8_t *>malloc(KT_CODEBOOK_SIZE * 8)
    CB4 = <int8_t *>malloc(KT_CODEBOOK_SIZE * 4)
    if CB8 == NULL or CB4 == NULL:
        raise MemoryError("iqkt: cannot allocate the trellis codebooks")
    for i in range(KT_CODEBOOK_SIZE):
        seed = i + IQKT_TRELLIS_OFFSET
        kt_trellis(&seed, 1, 8, CB8 + 8 * i)
        kt_trellis(&seed, 1, 4, CB4 + 4 * i)
    return 0

build_codebooks()

# ---------------------------------------------------------------- row sizes

cdef int64_t kt_row_size(int type_id, int64_t n) noexcept nogil:
    """Bytes per row (row scale included), or a negative error code."""
    cdef const iqkt_type_traits *t = iqkt_type_info(type_id)
    if t == NULL:
        return KT_ERR_TYPE
    if n <= 0 or n % QK != 0:
        return KT_ERR_SIZE
    return iqkt_type_row_size(t, n)

# ---------------------------------------------------------------- block decode

cdef inline const int8_t *type_codebook(const iqkt_type_traits *t) noexcept nogil:
    """The codebook table of a type's group size (KT_CODEBOOK_SIZE rows)."""
    return CB8 if t.group_size == 8 else CB4

cdef inline float inference_scale(const iqkt_type_traits *t, float d) noexcept nogil:
    """The row scale the inference kernels multiply by (IQ2_KT: d * 1.05)."""
    return d * t.inference_factor if t.inference_factor != 1 else d

# ---------------------------------------------------------------- dequantize

cdef int kt_dequantize_rows(int type_id, const uint8_t *q, int64_t nrows, int64_t n,
                            float *y, int inference) noexcept nogil:
    """Decode nrows rows of n weights.  With inference != 0, rows use the
    type's inference factor (IQ2_KT: 1.05, as every reference inference
    kernel does)."""
    cdef int64_t rs = kt_row_size(type_id, n)
    cdef int64_t r, nsb = n // QK
    cdef float d
    cdef const uint8_t *row
    cdef const iqkt_type_traits *t = iqkt_type_info(type_id)
    cdef const int8_t *cb
    if rs < 0:
        return <int>rs
    if nrows < 0:
        return KT_ERR_SIZE
    if nrows > 0 and (q == NULL or y == NULL):
        return KT_ERR_ARG
    cb = type_codebook(t)
    for r in range(nrows):
        row = q + r * rs
        d = iqkt_load_f32(row)
        if not isfinite(d):
            return KT_ERR_NONFINITE_SCALE
        if inference:
            d = inference_scale(t, d)
        iqkt_decode_superblocks(type_id, row + 4, nsb, d, cb, y + r * n)
    return KT_OK

# ---------------------------------------------------------------- mul_mat
#
# Activations are quantized once per call per block of 32 values:
# xq = round(x / s) with s = amax / xmax, so x ~ s * xq to within s / 2 per
# value.  xmax is 127 for precision "int8" (the reference's own activation
# precision: int8 per 32 with a float scale) and IQKT_MM_XMAX (8000) for
# "int16" (~1e-4 relative).  Every multiply-add of a trellis value with xq is
# then exact in int32, whatever the precision (contract: kt_mm.h).
#
# The quantized values are then laid out once per call into "lanes" (4 bytes
# per value, layout chosen by the ISA's helper in kt_mm.h) and each weight row
# is dotted with up to IQKT_MM_NB activation rows per pass by iqkt_mm_row,
# which regenerates the trellis values (x86) or looks them up (scalar, NEON).

cdef enum:
    KT_XMAX_INT8 = 127          # |xq| bound of precision "int8" (d = amax / 127)
    KT_MM_OUT_ROWS = 64         # batch products: weight rows per write-out to y (a multiple of IQKT_MM_TILE)
    KT_MM_F32_ROWS = 16         # float path: activation rows widened to double per pass

cdef int kt_quantize_activations(const float *x, int64_t nrows, int64_t n,
                                 int16_t *qx, float *xs, int xmax) noexcept nogil:
    """x (nrows, n) -> qx (nrows, n) int16 with |qx| <= xmax, xs (nrows, n/32)
    block scales s = amax / xmax with x ~ s * qx."""
    cdef int64_t r, ib, nb = n // 32
    cdef int k, v
    cdef uint32_t u, ubits
    cdef float amax, inv
    cdef const float *xb
    cdef int16_t *qb
    if n <= 0 or n % 32 != 0 or nrows < 0:
        return KT_ERR_SIZE
    for r in range(nrows):
        for ib in range(nb):
            xb = x + r * n + 32 * ib
            qb = qx + r * n + 32 * ib
            # amax on the magnitudes' bit patterns: integer order is float
            # order for them, Inf and NaN compare above every finite value,
            # and the integer max reduction vectorizes (a float one does not)
            ubits = 0
            for k in range(32):
                memcpy(&u, &xb[k], 4)
                u &= 0x7FFFFFFF
                ubits = u if u > ubits else ubits
            if ubits >= 0x7F800000:
                return KT_ERR_NONFINITE_INPUT
            memcpy(&amax, &ubits, 4)
            xs[r * nb + ib] = amax / xmax
            if amax == 0:
                memset(qb, 0, 64)
                continue
            inv = xmax / amax
            for k in range(32):
                v = <int>floorf(xb[k] * inv + 0.5)
                qb[k] = <int16_t>(-xmax if v < -xmax else (xmax if v > xmax else v))
    return KT_OK

cdef int kt_prepare_activations(int plan, int type_id, const int16_t *qx, int64_t nrows, int64_t n,
                                uint8_t *lanes, int32_t *bsum) noexcept nogil:
    """qx (nrows, n) -> lanes (nrows, IQKT_MM_LANE_BYTES * n), bsum (nrows, n/32),
    laid out for products with weights of type type_id by the kernels of
    plan (iqkt_mm_plan, kt_mm.h)."""
    cdef int64_t r
    if iqkt_type_info(type_id) == NULL:
        return KT_ERR_TYPE
    if n <= 0 or n % QK != 0 or nrows < 0:
        return KT_ERR_SIZE
    iqkt_mm_plan_prepare_rows(plan, type_id, nrows, qx, n, lanes, bsum)
    return KT_OK

cdef int kt_mul_mat_q8(int plan, int type_id, const uint8_t *q, int64_t n,
                       const uint8_t *lanes, const int32_t *bsum, const float *xs, int64_t nb_rows,
                       float *y, int64_t ldy, int64_t row0, int64_t row1) noexcept nogil:
    """y[b*ldy + r] = dot(W[r], x[b]) for weight rows r in [row0, row1) and
    activation rows b < nb_rows, x given as (lanes, bsum, xs) made by
    kt_quantize_activations + kt_prepare_activations.  Each output depends
    only on its own weight row, so any split of rows gives identical bits."""
    cdef int64_t rs = kt_row_size(type_id, n)
    cdef int64_t r, b0, nsb = n // QK, nblk = n // 32, lstride = IQKT_MM_LANE_BYTES * n
    cdef int bi, nbc, nr, t, gr
    cdef int64_t g0
    cdef float d
    cdef float dt[KT_MM_OUT_ROWS]
    cdef const uint8_t *row
    cdef float out[4]
    cdef uint8_t *scratch
    cdef float *tout
    cdef const iqkt_type_traits *tt = iqkt_type_info(type_id)
    if rs < 0:
        return <int>rs
    if row0 < 0 or row1 < row0 or nb_rows < 0:
        return KT_ERR_ARG
    if nb_rows == 0 or row1 == row0:
        return KT_OK
    if iqkt_mm_plan_use_batch(plan, type_id, nb_rows):
        # Batch kernel: tiles of IQKT_MM_TILE rows, each row's result computed
        # the same way whatever its tile holds.
        scratch = <uint8_t *>malloc(iqkt_mm_plan_tile_scratch(plan, nb_rows, n))
        tout = <float *>malloc(KT_MM_OUT_ROWS * nb_rows * sizeof(float))
        if scratch == NULL or tout == NULL:
            free(scratch)
            free(tout)
            return KT_ERR_NOMEM
        iqkt_mm_plan_batch_begin(plan, nb_rows, n, xs, nblk, scratch)
        # tiles of IQKT_MM_TILE rows into tout, written to y KT_MM_OUT_ROWS
        # rows at a time: each output row of y then gets whole cache lines
        # rather than 4 floats per tile (measured ~10% of B = 64)
        g0 = row0
        while g0 < row1:
            gr = <int>(row1 - g0) if row1 - g0 < KT_MM_OUT_ROWS else KT_MM_OUT_ROWS
            for t in range(gr):
                dt[t] = iqkt_load_f32(q + (g0 + t) * rs)
                if not isfinite(dt[t]):
                    free(scratch)
                    free(tout)
                    return KT_ERR_NONFINITE_SCALE
                dt[t] = inference_scale(tt, dt[t])
            r = 0
            while r < gr:
                nr = <int>(gr - r) if gr - r < IQKT_MM_TILE else IQKT_MM_TILE
                iqkt_mm_plan_tile(plan, type_id, q + (g0 + r) * rs, rs, nr, nsb, lanes, lstride, bsum, nblk, xs,
                                  nblk, nb_rows, scratch, tout + r * nb_rows, CB8, CB4)
                r += nr
            for b0 in range(nb_rows):
                for t in range(gr):
                    y[b0 * ldy + g0 + t] = dt[t] * tout[t * nb_rows + b0]
            g0 += gr
        free(scratch)
        free(tout)
        return KT_OK
    for r in range(row0, row1):
        row = q + r * rs
        d = iqkt_load_f32(row)
        if not isfinite(d):
            return KT_ERR_NONFINITE_SCALE
        d = inference_scale(tt, d)
        b0 = 0
        while b0 < nb_rows:
            nbc = <int>(nb_rows - b0) if nb_rows - b0 < IQKT_MM_NB else IQKT_MM_NB
            iqkt_mm_row(plan, type_id, row + 4, nsb, lanes + b0 * lstride, lstride,
                        bsum + b0 * nblk, nblk, xs + b0 * nblk, nblk, nbc, out, CB8, CB4)
            for bi in range(nbc):
                y[(b0 + bi) * ldy + r] = d * out[bi]
            b0 += nbc
    return KT_OK

cdef int kt_mul_mat_f32(int type_id, const uint8_t *q, int64_t n,
                        const double *x, int64_t nb_rows,
                        float *y, int64_t ldy, int64_t row0, int64_t row1) noexcept nogil:
    """Float path: the dequantized inference weights dotted in double with x
    (the activations already widened to double: exact, done once per call
    rather than once per weight row)."""
    cdef int64_t rs = kt_row_size(type_id, n)
    cdef int64_t r, ib, bi, nsb = n // QK
    cdef int b, k
    cdef float d
    cdef double *acc
    cdef const uint8_t *row
    cdef const double *xb
    cdef float w[QK]
    cdef double wd[QK]
    cdef const iqkt_type_traits *t = iqkt_type_info(type_id)
    cdef const int8_t *cb
    if rs < 0:
        return <int>rs
    if row0 < 0 or row1 < row0 or nb_rows < 0:
        return KT_ERR_ARG
    if nb_rows == 0 or row1 == row0:
        return KT_OK
    acc = <double *>malloc(nb_rows * sizeof(double))
    if acc == NULL:
        return KT_ERR_NOMEM
    cb = type_codebook(t)
    for r in range(row0, row1):
        row = q + r * rs
        d = iqkt_load_f32(row)
        if not isfinite(d):
            free(acc)
            return KT_ERR_NONFINITE_SCALE
        d = inference_scale(t, d)
        for bi in range(nb_rows):
            acc[bi] = 0
        for ib in range(nsb):
            iqkt_decode_superblocks(type_id, row + 4 + ib * t.block_bytes, 1, d, cb, w)
            for k in range(QK):
                wd[k] = w[k]
            for b in range(8):
                for bi in range(nb_rows):
                    # one 32-block in a fixed pairwise order every ISA computes
                    # alike (iqkt_mm_dot32_f64), then added in block order
                    xb = x + bi * n + ib * QK + 32 * b
                    acc[bi] = acc[bi] + iqkt_mm_dot32_f64(wd + 32 * b, xb)
        for bi in range(nb_rows):
            y[bi * ldy + r] = <float>acc[bi]
    free(acc)
    return KT_OK

include "kt_quantize.pxi"

# ---------------------------------------------------------------- threads
#
# Every multi-threaded call runs on the one native pool (kt_pool.h): parts
# take chunks of rows from a shared counter until none are left, so a part
# on a slower or busier core simply takes fewer (hybrid cores, shared vCPUs).
# Rows are independent, so results never depend on the thread count or on
# which part ran which chunk.  Part 0 runs on the calling thread; when asked
# it checks for Python signals between chunks (Ctrl-C), and a failing or
# interrupted part stops the others after their current chunk.

cdef extern from "Python.h":
    # Declared without "except": the exception stays pending for the caller.
    int PyErr_CheckSignals_pending "PyErr_CheckSignals"() noexcept

cdef enum:
    KT_INTERRUPTED = -50        # internal: a Python signal handler raised

ctypedef int (*rows_fn)(void *ctx, int64_t row0, int64_t row1) noexcept nogil

ctypedef struct RowsJob:
    rows_fn fn
    void *ctx
    int64_t nrows
    int64_t chunk
    int64_t next_row            # shared counter
    int64_t stop                # nonzero: take no more chunks (read/written atomically)
    int check_signals
    int rc[IQKT_POOL_MAX]

cdef void rows_part(void *vjob, int part) noexcept nogil:
    cdef RowsJob *j = <RowsJob *>vjob
    cdef int64_t r0, r1
    cdef int rc = KT_OK
    while iqkt_atomic_fetch_add(&j.stop, 0) == 0:
        r0 = iqkt_atomic_fetch_add(&j.next_row, j.chunk)
        if r0 >= j.nrows:
            break
        r1 = r0 + j.chunk if r0 + j.chunk < j.nrows else j.nrows
        rc = j.fn(j.ctx, r0, r1)
        if rc == KT_OK and part == 0 and j.check_signals:
            with gil:
                if PyErr_CheckSignals_pending() != 0:
                    rc = KT_INTERRUPTED
        if rc != KT_OK:
            iqkt_atomic_fetch_add(&j.stop, 1)
            break
    j.rc[part] = rc

cdef int run_rows(rows_fn fn, void *ctx, int64_t nrows, int64_t chunk, int nthreads,
                  int check_signals) noexcept nogil:
    """fn(ctx, r0, r1) over [0, nrows) in chunks of chunk rows on up to
    nthreads threads of the pool (iqkt_pool_prepare(nthreads - 1) first, with
    the GIL).  check_signals: the calling thread holds a Python thread state
    and polls signals between its chunks."""
    cdef RowsJob job
    cdef int i, rc = KT_OK
    if nrows <= 0:
        return KT_OK
    if chunk < 1:
        chunk = 1
    if nthreads > (nrows + chunk - 1) // chunk:
        nthreads = <int>((nrows + chunk - 1) // chunk)
    nthreads = 1 if nthreads < 1 else (IQKT_POOL_MAX if nthreads > IQKT_POOL_MAX else nthreads)
    job.fn = fn
    job.ctx = ctx
    job.nrows = nrows
    job.chunk = chunk
    job.next_row = 0
    job.stop = 0
    job.check_signals = check_signals
    if nthreads == 1:
        rows_part(&job, 0)
    else:
        iqkt_pool_run(nthreads, rows_part, &job)
    for i in range(nthreads):
        if job.rc[i] != KT_OK and (rc == KT_OK or rc == KT_INTERRUPTED):
            rc = job.rc[i]          # a kernel error wins over an interrupt
    return rc

cdef inline int64_t chunk_rows(int64_t nrows, int nthreads, int64_t work_per_row, int64_t max_work,
                               int64_t multiple) noexcept nogil:
    """Rows per chunk: about 8 chunks per thread (uneven cores), at most
    max_work per chunk (Ctrl-C stays responsive), a multiple of multiple."""
    cdef int64_t c = (nrows + 8 * nthreads - 1) // (8 * nthreads) if nthreads > 1 else nrows
    cdef int64_t cap = max_work // (work_per_row if work_per_row > 0 else 1)
    if c > cap:
        c = cap
    c = (c + multiple - 1) // multiple * multiple
    return c if c >= multiple else multiple

# ---------------------------------------------------------------- mul_mat driver

ctypedef struct MulMatCtx:
    int type_id
    int plan                    # integer paths: the kernel family (iqkt_mm_plan)
    const uint8_t *q
    int64_t n
    const double *xd            # float path: activations widened to double
    const uint8_t *lanes        # int8 path: prepared activations
    const int32_t *bsum
    const float *xs
    int64_t nb
    float *y
    int64_t ldy

cdef int mul_mat_q8_rows(void *vctx, int64_t r0, int64_t r1) noexcept nogil:
    cdef MulMatCtx *c = <MulMatCtx *>vctx
    return kt_mul_mat_q8(c.plan, c.type_id, c.q, c.n, c.lanes, c.bsum, c.xs, c.nb, c.y, c.ldy, r0, r1)

cdef int mul_mat_f32_rows(void *vctx, int64_t r0, int64_t r1) noexcept nogil:
    cdef MulMatCtx *c = <MulMatCtx *>vctx
    return kt_mul_mat_f32(c.type_id, c.q, c.n, c.xd, c.nb, c.y, c.ldy, r0, r1)

cdef int kt_mul_mat_threads(int type_id, const uint8_t *q, int64_t nrows, int64_t n,
                            const float *x, int64_t nb, float *y, int precision,
                            int nthreads, int check_signals) noexcept nogil:
    """The whole product: y (nb, nrows) = x (nb, n) @ W(nrows, n).T with W's
    inference values.  precision (iqkt.h): IQKT_PRECISION_INT8 (int8
    activations per 32), IQKT_PRECISION_INT16 (int16 per 32), anything else
    the exact float path.  The integer paths: the activations are quantized and laid out once (kt_quantize_activations,
    kt_prepare_activations) and the weight rows split over nthreads pool
    threads (iqkt_pool_prepare(nthreads - 1) first, with the GIL)."""
    cdef int64_t rs = kt_row_size(type_id, n)
    cdef int rc
    cdef MulMatCtx c
    cdef int16_t *qx = NULL
    cdef uint8_t *lanes = NULL
    cdef uint8_t *lanes_mem = NULL
    cdef int32_t *bsum = NULL
    cdef float *xs = NULL
    cdef double *xd = NULL
    cdef int64_t g0, gn, i
    if rs < 0:
        return <int>rs
    if nrows < 0 or nb < 0:
        return KT_ERR_SIZE
    if nrows == 0 or nb == 0:
        return KT_OK
    if q == NULL or x == NULL or y == NULL:
        return KT_ERR_ARG
    c.type_id = type_id
    c.q = q
    c.n = n
    c.nb = nb
    c.y = y
    c.ldy = nrows
    if precision != KT_PRECISION_INT8 and precision != KT_PRECISION_INT16:
        # KT_MM_F32_ROWS activation rows at a time, widened to double once
        # (exact) for all weight rows: B = 64 was ~6x slower converting
        # them again for every weight row
        gn = nb if nb < KT_MM_F32_ROWS else KT_MM_F32_ROWS
        xd = <double *>malloc(<size_t>gn * n * sizeof(double))
        if xd == NULL:
            return KT_ERR_NOMEM
        rc = KT_OK
        g0 = 0
        while g0 < nb and rc == KT_OK:
            gn = nb - g0 if nb - g0 < KT_MM_F32_ROWS else KT_MM_F32_ROWS
            for i in range(gn * n):
                xd[i] = x[g0 * n + i]
            c.xd = xd
            c.nb = gn
            c.y = y + g0 * nrows
            rc = run_rows(mul_mat_f32_rows, &c, nrows, chunk_rows(nrows, nthreads, n * gn, 1 << 22, 16),
                          nthreads, check_signals)
            g0 += gn
        free(xd)
        return rc
    c.plan = iqkt_mm_plan(type_id, precision == KT_PRECISION_INT8, nb)
    qx = <int16_t *>malloc(<size_t>nb * n * sizeof(int16_t))
    # 64-byte aligned: the kernels' zmm loads of the lanes would otherwise
    # straddle cache lines (malloc gives 16), ~9% of the AVX512 GEMM at B = 64
    lanes_mem = <uint8_t *>malloc(<size_t>nb * n * IQKT_MM_LANE_BYTES + 64)
    if lanes_mem != NULL:
        lanes = lanes_mem + (64 - <uintptr_t>lanes_mem % 64)
    bsum = <int32_t *>malloc(<size_t>nb * (n // 32) * sizeof(int32_t))
    xs = <float *>malloc(<size_t>nb * (n // 32) * sizeof(float))
    rc = KT_ERR_NOMEM
    if qx != NULL and lanes != NULL and bsum != NULL and xs != NULL:
        rc = kt_quantize_activations(x, nb, n, qx, xs,
                                     KT_XMAX_INT8 if precision == KT_PRECISION_INT8 else IQKT_MM_XMAX)
        if rc == KT_OK:
            rc = kt_prepare_activations(c.plan, type_id, qx, nb, n, lanes, bsum)
        if rc == KT_OK:
            c.lanes = lanes
            c.bsum = bsum
            c.xs = xs
            # multiples of 16 rows keep the batch kernels' 4-row tiles whole
            rc = run_rows(mul_mat_q8_rows, &c, nrows, chunk_rows(nrows, nthreads, n * nb, 1 << 24, 16),
                          nthreads, check_signals)
    free(qx)
    free(lanes_mem)
    free(bsum)
    free(xs)
    return rc

cdef int kt_mul_mat(int type_id, const uint8_t *q, int64_t nrows, int64_t n,
                    const float *x, int64_t nb, float *y, int precision) noexcept nogil:
    """The embedding API's product (iqkt.h): kt_mul_mat_threads on the
    calling thread only."""
    return kt_mul_mat_threads(type_id, q, nrows, n, x, nb, y, precision, 1, 0)

# ---------------------------------------------------------------- quantize / dequantize drivers

ctypedef struct QuantCtx:
    int type_id
    const float *x
    int64_t n
    int64_t rs
    const float *imatrix
    const float *row_scale
    uint8_t *out
    double *row_err
    const QuantParams *params
    const uint8_t *q
    float *y
    int inference

cdef int quantize_rows_part(void *vctx, int64_t r0, int64_t r1) noexcept nogil:
    cdef QuantCtx *c = <QuantCtx *>vctx
    return kt_quantize_rows_p(c.type_id, c.x + r0 * c.n, r1 - r0, c.n, c.imatrix,
                              c.row_scale + r0 if c.row_scale != NULL else NULL, c.out + r0 * c.rs,
                              c.row_err + r0 if c.row_err != NULL else NULL, c.params)

cdef int dequantize_rows_part(void *vctx, int64_t r0, int64_t r1) noexcept nogil:
    cdef QuantCtx *c = <QuantCtx *>vctx
    return kt_dequantize_rows(c.type_id, c.q + r0 * c.rs, r1 - r0, c.n, c.y + r0 * c.n, c.inference)


# ---------------------------------------------------------------- Python wrappers
#
# Arrays arrive validated, C-contiguous and of the right dtype (iqkt/_api.py);
# each wrapper is one kernel call that allocates, lays out and threads itself.

VARIANT = iqkt_variant_name().decode()
SIMD = iqkt_simd_name().decode()


cdef inline void check(int rc) except *:
    if rc != KT_OK:
        if rc == KT_ERR_NOMEM:
            raise MemoryError(ERROR_MESSAGES[rc])
        raise ValueError(ERROR_MESSAGES.get(rc, f"kernel error {rc}"))


def row_size(int type_id, int64_t n):
    cdef int64_t rs = kt_row_size(type_id, n)
    check(<int>rs if rs < 0 else KT_OK)
    return rs


def trellis(const uint32_t[::1] seeds, int64_t steps, int8_t[:, ::1] out):
    cdef int rc
    cdef int64_t count = seeds.shape[0]
    if out.shape[0] != count or out.shape[1] != steps:
        raise ValueError("trellis: output shape mismatch")
    with nogil:
        rc = kt_trellis(&seeds[0] if count > 0 else NULL, count, steps,
                        &out[0, 0] if count > 0 and steps > 0 else NULL)
    check(rc)


def _threads(int nthreads):
    """Pool threads for a call (clamped to 1..MAX_THREADS); starts workers."""
    nthreads = 1 if nthreads < 1 else (IQKT_POOL_MAX if nthreads > IQKT_POOL_MAX else nthreads)
    if nthreads > 1:
        iqkt_pool_prepare(nthreads - 1)
    return nthreads


cdef int check_threads_rc(int rc) except -1:
    """Raise for a return code of a run_rows call: a pending Python exception
    (a signal handler raised, e.g. KeyboardInterrupt), or a kernel error."""
    if rc == KT_INTERRUPTED:
        if PyErr_Occurred() != NULL:
            return -1           # propagate the pending exception
        raise KeyboardInterrupt
    check(rc)
    return 0


#: Most threads one call uses (the pool's size limit, kt_pool.h).
MAX_THREADS = IQKT_POOL_MAX

#: mul_mat's precision names -> the kernel's (and the C API's) values.
PRECISIONS = {"int8": KT_PRECISION_INT8, "int16": KT_PRECISION_INT16, "float": KT_PRECISION_FLOAT}


def dequantize_rows(int type_id, const uint8_t[:, ::1] q, int64_t n, float[:, ::1] out,
                    int inference, int nthreads):
    cdef int rc
    cdef QuantCtx c
    cdef int64_t nrows = q.shape[0]
    if out.shape[0] != nrows or out.shape[1] != n:
        raise ValueError("dequantize_rows: output shape mismatch")
    if nrows == 0:
        return
    nthreads = _threads(nthreads)
    c.type_id = type_id
    c.q = &q[0, 0]
    c.n = n
    c.rs = q.shape[1]
    c.y = &out[0, 0]
    c.inference = inference
    check(<int>kt_row_size(type_id, n) if kt_row_size(type_id, n) < 0 else KT_OK)
    if kt_row_size(type_id, n) != c.rs:
        raise ValueError("dequantize_rows: row size mismatch")
    with nogil:
        rc = run_rows(dequantize_rows_part, &c, nrows, chunk_rows(nrows, nthreads, n, 1 << 20, 1),
                      nthreads, 1)
    check_threads_rc(rc)


def mul_mat(int type_id, const uint8_t[:, ::1] q, int64_t n, const float[:, ::1] x, float[:, ::1] y,
            int precision, int nthreads):
    """y (B, N) = x (B, n) @ W(N, n).T, the whole product in one kernel call
    (kt_mul_mat_threads) on nthreads pool threads; precision: an
    IQKT_PRECISION_* value (PRECISIONS)."""
    cdef int rc
    cdef int64_t nrows = q.shape[0], nb = x.shape[0]
    if x.shape[1] != n or y.shape[0] != nb or y.shape[1] != nrows:
        raise ValueError("mul_mat: shape mismatch")
    if kt_row_size(type_id, n) >= 0 and kt_row_size(type_id, n) != q.shape[1]:
        raise ValueError("mul_mat: row size mismatch")
    if nrows == 0 or nb == 0:
        return
    nthreads = _threads(nthreads)
    with nogil:
        rc = kt_mul_mat_threads(type_id, &q[0, 0], nrows, n, &x[0, 0], nb, &y[0, 0], precision,
                                nthreads, 1)
    check_threads_rc(rc)


def quantize_rows(int type_id, const float[:, ::1] x, imatrix, uint8_t[:, ::1] out,
                  row_err, params, int nthreads, row_scale=None, effort="default"):
    """All rows of x into out on nthreads pool threads; row_err: None or a
    float64 array receiving each row's relative error; params: None
    (the effort level's preset) or a mapping of quantizer parameters that
    differ from it (quantizer_params); effort: "fast", "default" or "best";
    row_scale: None or one float32 row scale per row to store the rows with."""
    cdef int rc
    cdef QuantParams p
    cdef QuantCtx c
    cdef const float[::1] im
    cdef const float[::1] rsc
    cdef double[::1] err
    cdef int64_t nrows = x.shape[0], n = x.shape[1]
    if out.shape[0] != nrows:
        raise ValueError("quantize_rows: output shape mismatch")
    c.type_id = type_id
    c.x = &x[0, 0] if nrows > 0 else NULL
    c.n = n
    c.rs = kt_row_size(type_id, n)
    check(<int>c.rs if c.rs < 0 else KT_OK)
    if out.shape[1] != c.rs:
        raise ValueError("quantize_rows: output row size mismatch")
    c.out = &out[0, 0] if nrows > 0 else NULL
    c.imatrix = NULL
    c.row_scale = NULL
    c.row_err = NULL
    if row_scale is not None:
        rsc = row_scale
        if rsc.shape[0] != nrows:
            raise ValueError("quantize_rows: row_scale length mismatch")
        c.row_scale = &rsc[0] if nrows > 0 else NULL
    if imatrix is not None:
        im = imatrix
        if im.shape[0] != n:
            raise ValueError("quantize_rows: imatrix length mismatch")
        c.imatrix = &im[0]
    if row_err is not None:
        err = row_err
        if err.shape[0] != nrows:
            raise ValueError("quantize_rows: row_err length mismatch")
        c.row_err = &err[0] if nrows > 0 else NULL
    params_from_changes(params, &p, effort_level(effort), type_id)
    c.params = &p
    if nrows == 0:
        return
    nthreads = _threads(nthreads)
    with nogil:
        rc = run_rows(quantize_rows_part, &c, nrows, chunk_rows(nrows, nthreads, n, 8192, 1), nthreads, 1)
    check_threads_rc(rc)

include "kt_capi.pxi"
