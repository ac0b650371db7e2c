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

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int8_t, int16_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset, memcpy
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
    int iqkt_mm_use_batch(int64_t nb)
    int IQKT_MM_TILE
    int64_t iqkt_mm_tile_scratch(int64_t nb, int64_t n)
    void iqkt_mm_batch_begin(int64_t nb, int64_t n, const float *xs, int64_t xstride, uint8_t *scratch)
    void iqkt_mm_prepare_rows(int type, int64_t nrows, const int16_t *x16, int64_t n, uint8_t *lanes,
                              int32_t *bsum)
    void iqkt_mm_tile(int type, const uint8_t *q, int64_t rs, int nr, int64_t nsb,
                      const uint8_t *lanes, int64_t lstride, const int32_t *bsum, int64_t bstride,
                      const float *xs, int64_t xstride, int64_t nb, uint8_t *scratch, float *out,
                      const int8_t *cb8, const int8_t *cb4)
    void iqkt_mm_row(int type, const uint8_t *sbs, int64_t nsb, const uint8_t *lanes, int64_t lstride,
                     const int32_t *bsum, int64_t bstride, const float *xs, int64_t xstride, int nb,
                     float *out, const int8_t *cb8, const int8_t *cb4)

cdef extern from "kt_pool.h" nogil:
    ctypedef void (*iqkt_pool_fn)(void *ctx, int part) noexcept nogil
    int IQKT_POOL_MAX
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
        KT_OK "IQKT_OK"
        KT_ERR_TYPE "IQKT_ERR_TYPE"
        KT_ERR_SIZE "IQKT_ERR_SIZE"
        KT_ERR_NONFINITE_INPUT "IQKT_ERR_NONFINITE_INPUT"
        KT_ERR_NONFINITE_SCALE "IQKT_ERR_NONFINITE_SCALE"
        KT_ERR_NOMEM "IQKT_ERR_NOMEM"
        KT_ERR_IMATRIX "IQKT_ERR_IMATRIX"
        KT_ERR_ARG "IQKT_ERR_ARG"

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
# Activations are quantized once per call to int16 per block of 32 values:
# x16 = round(x / s) with s = amax / IQKT_MM_XMAX (8000), so x ~ s * x16 to
# within s / 2 per value (1/16000 of the block's largest value).  Every
# multiply-add of a trellis value with x16 is then exact in int32, and the
# product is accurate to ~1e-4 relative (contract: kt_mm.h).
#
# The int16 values are then laid out once per call into "lanes" (4 bytes per
# value, layout chosen by the ISA's helper in kt_mm.h) and each weight row is
# dotted with up to IQKT_MM_NB activation rows per pass by iqkt_mm_row, which
# regenerates the trellis values (x86) or looks them up (scalar, NEON).

cdef int kt_quantize_activations(const float *x, int64_t nrows, int64_t n,
                                 int16_t *qx, float *xs) noexcept nogil:
    """x (nrows, n) -> qx (nrows, n) int16, xs (nrows, n/32) block scales s
    with x ~ s * qx."""
    cdef int64_t r, ib, nb = n // 32
    cdef int k, v
    cdef float amax, a, inv
    cdef const float *xb
    cdef int16_t *qb
    if n <= 0 or n % 32 != 0 or nrows < 0:
        return KT_ERR_SIZE
    for r in range(nrows):
        for ib in range(nb):
            xb = x + r * n + 32 * ib
            qb = qx + r * n + 32 * ib
            amax = 0
            for k in range(32):
                a = fabsf(xb[k])
                if not (a <= FLT_MAX):
                    return KT_ERR_NONFINITE_INPUT
                if a > amax:
                    amax = a
            xs[r * nb + ib] = amax / IQKT_MM_XMAX
            if amax == 0:
                memset(qb, 0, 64)
                continue
            inv = IQKT_MM_XMAX / amax
            for k in range(32):
                v = <int>floorf(xb[k] * inv + 0.5)
                qb[k] = <int16_t>(-IQKT_MM_XMAX if v < -IQKT_MM_XMAX else (IQKT_MM_XMAX if v > IQKT_MM_XMAX else v))
    return KT_OK

cdef int kt_prepare_activations(int type_id, const int16_t *qx, int64_t nrows, int64_t n,
                                uint8_t *lanes, int32_t *bsum) noexcept nogil:
    """qx (nrows, n) -> lanes (nrows, IQKT_MM_LANE_BYTES * n), bsum (nrows, n/32),
    laid out for products with weights of type type_id."""
    cdef int64_t r
    if iqkt_type_info(type_id) == NULL:
        return KT_ERR_TYPE
    if n <= 0 or n % QK != 0 or nrows < 0:
        return KT_ERR_SIZE
    iqkt_mm_prepare_rows(type_id, nrows, qx, n, lanes, bsum)
    return KT_OK

cdef int kt_mul_mat_q8(int type_id, const uint8_t *q, int64_t n,
                       const uint8_t *lanes, const int32_t *bsum, const float *xs, int64_t nb_rows,
                       float *y, int64_t ldy, int64_t row0, int64_t row1) noexcept nogil:
    """y[b*ldy + r] = dot(W[r], x[b]) for weight rows r in [row0, row1) and
    activation rows b < nb_rows, x given as (lanes, bsum, xs) made by
    kt_quantize_activations + kt_prepare_activations.  Each output depends
    only on its own weight row, so any split of rows gives identical bits."""
    cdef int64_t rs = kt_row_size(type_id, n)
    cdef int64_t r, b0, nsb = n // QK, nblk = n // 32, lstride = IQKT_MM_LANE_BYTES * n
    cdef int bi, nbc, nr, t
    cdef float d
    cdef float dt[4]
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
    if iqkt_mm_use_batch(nb_rows):
        # Batch kernel: tiles of IQKT_MM_TILE rows, each row's result computed
        # the same way whatever its tile holds.
        scratch = <uint8_t *>malloc(iqkt_mm_tile_scratch(nb_rows, n))
        tout = <float *>malloc(IQKT_MM_TILE * nb_rows * sizeof(float))
        if scratch == NULL or tout == NULL:
            free(scratch)
            free(tout)
            return KT_ERR_NOMEM
        iqkt_mm_batch_begin(nb_rows, n, xs, nblk, scratch)
        r = row0
        while r < row1:
            nr = <int>(row1 - r) if row1 - r < IQKT_MM_TILE else IQKT_MM_TILE
            for t in range(nr):
                dt[t] = iqkt_load_f32(q + (r + t) * rs)
                if not isfinite(dt[t]):
                    free(scratch)
                    free(tout)
                    return KT_ERR_NONFINITE_SCALE
                dt[t] = inference_scale(tt, dt[t])
            iqkt_mm_tile(type_id, q + r * rs, rs, nr, nsb, lanes, lstride, bsum, nblk, xs, nblk, nb_rows,
                         scratch, tout, CB8, CB4)
            for t in range(nr):
                for b0 in range(nb_rows):
                    y[b0 * ldy + r + t] = dt[t] * tout[t * nb_rows + b0]
            r += nr
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
            iqkt_mm_row(type_id, row + 4, nsb, lanes + b0 * lstride, lstride,
                        bsum + b0 * nblk, nblk, xs + b0 * nblk, nblk, nbc, out, CB8, CB4)
            for bi in range(nbc):
                y[(b0 + bi) * ldy + r] = d * out[bi]
            b0 += nbc
    return KT_OK

# Native threads for the int8 product: the parts take chunks of weight rows
# from a shared counter until none are left, so a part on a slower or busier
# core simply takes fewer chunks (hybrid P/E cores, shared vCPUs).  Rows are
# independent, so the result is the same for any number of parts and any
# assignment of chunks.

ctypedef struct MulMatJob:
    int type_id
    const uint8_t *q
    int64_t n
    const uint8_t *lanes
    const int32_t *bsum
    const float *xs
    int64_t nb_rows
    float *y
    int64_t ldy
    int64_t row0
    int64_t nrows
    int64_t chunk
    int64_t next_row            # shared counter, relative to row0
    int nparts
    int rc[64]

cdef void mul_mat_part(void *ctx, int part) noexcept nogil:
    cdef MulMatJob *j = <MulMatJob *>ctx
    cdef int64_t r0, r1
    cdef int rc = KT_OK
    while True:
        r0 = iqkt_atomic_fetch_add(&j.next_row, j.chunk)
        if r0 >= j.nrows:
            break
        r1 = r0 + j.chunk if r0 + j.chunk < j.nrows else j.nrows
        rc = kt_mul_mat_q8(j.type_id, j.q, j.n, j.lanes, j.bsum, j.xs, j.nb_rows, j.y, j.ldy,
                           j.row0 + r0, j.row0 + r1)
        if rc != KT_OK:
            break
    j.rc[part] = rc

cdef int kt_mul_mat_q8_threads(int type_id, const uint8_t *q, int64_t n,
                               const uint8_t *lanes, const int32_t *bsum, const float *xs, int64_t nb_rows,
                               float *y, int64_t ldy, int64_t row0, int64_t row1, int nthreads) noexcept nogil:
    """kt_mul_mat_q8 over weight rows [row0, row1) on up to nthreads native
    threads (call iqkt_pool_prepare(nthreads - 1) first, with the GIL)."""
    cdef MulMatJob job
    cdef int i
    if row0 < 0 or row1 < row0:
        return KT_ERR_ARG
    if nthreads < 1:
        nthreads = 1
    if nthreads > 64:
        nthreads = 64
    job.type_id = type_id
    job.q = q
    job.n = n
    job.lanes = lanes
    job.bsum = bsum
    job.xs = xs
    job.nb_rows = nb_rows
    job.y = y
    job.ldy = ldy
    job.row0 = row0
    job.nrows = row1 - row0
    job.nparts = nthreads
    job.next_row = 0
    # ~8 chunks per thread balance uneven cores; multiples of 16 rows keep
    # the batch kernels' 4-row tiles whole
    job.chunk = job.nrows if nthreads == 1 else (job.nrows + 8 * nthreads - 1) // (8 * nthreads)
    job.chunk = (job.chunk + 15) // 16 * 16
    if job.chunk < 16:
        job.chunk = 16
    iqkt_pool_run(nthreads, mul_mat_part, &job)
    for i in range(nthreads):
        if job.rc[i] != KT_OK:
            return job.rc[i]
    return KT_OK

cdef int kt_mul_mat_f32(int type_id, const uint8_t *q, int64_t n,
                        const float *x, int64_t nb_rows,
                        float *y, int64_t ldy, int64_t row0, int64_t row1) noexcept nogil:
    """Float path: the dequantized inference weights dotted with x in double."""
    cdef int64_t rs = kt_row_size(type_id, n)
    cdef int64_t r, ib, bi, nsb = n // QK
    cdef int b, k
    cdef float d
    cdef double *acc
    cdef const uint8_t *row
    cdef const float *xb
    cdef float w[QK]
    cdef double s
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
            for b in range(8):
                for bi in range(nb_rows):
                    xb = x + bi * n + ib * QK + 32 * b
                    s = 0
                    for k in range(32):
                        s = s + <double>w[32 * b + k] * <double>xb[k]
                    acc[bi] = acc[bi] + s
        for bi in range(nb_rows):
            y[bi * ldy + r] = <float>acc[bi]
    free(acc)
    return KT_OK

cdef int kt_mul_mat(int type_id, const uint8_t *q, int64_t nrows, int64_t n,
                    const float *x, int64_t nb, float *y, int precision_float) noexcept nogil:
    """All-in-one product on raw pointers (the stable entry for embedders):
    y (nb, nrows) = x (nb, n) @ W(nrows, n).T with W's inference values.
    precision_float != 0 uses the exact float path, else int8 activations."""
    cdef int64_t rs = kt_row_size(type_id, n)
    cdef int rc
    cdef int16_t *qx
    cdef uint8_t *lanes
    cdef int32_t *bsum
    cdef float *xs
    if rs < 0:
        return <int>rs
    if nrows < 0 or nb < 0:
        return KT_ERR_SIZE
    if nrows == 0 or nb == 0:
        return KT_OK
    if q == NULL or x == NULL or y == NULL:
        return KT_ERR_ARG
    if precision_float:
        return kt_mul_mat_f32(type_id, q, n, x, nb, y, nrows, 0, nrows)
    qx = <int16_t *>malloc(<size_t>nb * n * sizeof(int16_t))
    lanes = <uint8_t *>malloc(<size_t>nb * n * IQKT_MM_LANE_BYTES)
    bsum = <int32_t *>malloc(<size_t>nb * (n // 32) * sizeof(int32_t))
    xs = <float *>malloc(<size_t>nb * (n // 32) * sizeof(float))
    if qx == NULL or lanes == NULL or bsum == NULL or xs == NULL:
        free(qx)
        free(lanes)
        free(bsum)
        free(xs)
        return KT_ERR_NOMEM
    rc = kt_quantize_activations(x, nb, n, qx, xs)
    if rc == KT_OK:
        rc = kt_prepare_activations(type_id, qx, nb, n, lanes, bsum)
    if rc == KT_OK:
        rc = kt_mul_mat_q8(type_id, q, n, lanes, bsum, xs, nb, y, nrows, 0, nrows)
    free(qx)
    free(lanes)
    free(bsum)
    free(xs)
    return rc

include "kt_quantize.pxi"

# ---------------------------------------------------------------- Python wrappers
#
# Arrays arrive validated, C-contiguous and of the right dtype (iqkt/_api.py).
# row0/row1 let the caller split work across threads on shared arrays.

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


def dequantize_rows(int type_id, const uint8_t[:, ::1] q, int64_t n, float[:, ::1] out,
                    int inference, int64_t row0, int64_t row1):
    cdef int rc
    if row0 < 0 or row1 > q.shape[0] or row1 > out.shape[0] or row0 > row1:
        raise ValueError("dequantize_rows: bad row range")
    if row1 == row0:
        return
    with nogil:
        rc = kt_dequantize_rows(type_id, &q[row0, 0], row1 - row0, n, &out[row0, 0], inference)
    check(rc)


LANE_BYTES = IQKT_MM_LANE_BYTES
ACT_MAX = IQKT_MM_XMAX


def quantize_activations(const float[:, ::1] x, int16_t[:, ::1] qx, float[:, ::1] xs):
    cdef int rc
    cdef int64_t nrows = x.shape[0], n = x.shape[1]
    if qx.shape[0] != nrows or qx.shape[1] != n or xs.shape[0] != nrows or xs.shape[1] != n // 32:
        raise ValueError("quantize_activations: output shape mismatch")
    if nrows == 0:
        return
    with nogil:
        rc = kt_quantize_activations(&x[0, 0], nrows, n, &qx[0, 0], &xs[0, 0])
    check(rc)


def prepare_activations(int type_id, const int16_t[:, ::1] qx, uint8_t[:, ::1] lanes, int32_t[:, ::1] bsum):
    cdef int rc
    cdef int64_t nrows = qx.shape[0], n = qx.shape[1]
    if lanes.shape[0] != nrows or lanes.shape[1] != IQKT_MM_LANE_BYTES * n or bsum.shape[0] != nrows \
            or bsum.shape[1] != n // 32:
        raise ValueError("prepare_activations: output shape mismatch")
    if nrows == 0:
        return
    with nogil:
        rc = kt_prepare_activations(type_id, &qx[0, 0], nrows, n, &lanes[0, 0], &bsum[0, 0])
    check(rc)


def mul_mat_q8_threads(int type_id, const uint8_t[:, ::1] q, int64_t n, const uint8_t[:, ::1] lanes,
                       const int32_t[:, ::1] bsum, const float[:, ::1] xs, float[:, ::1] y,
                       int64_t row0, int64_t row1, int nthreads):
    """mul_mat_q8 over rows [row0, row1), split across nthreads native threads."""
    cdef int rc
    if row0 < 0 or row1 > q.shape[0] or row0 > row1 or y.shape[1] != q.shape[0]:
        raise ValueError("mul_mat_q8_threads: bad row range")
    if lanes.shape[1] != IQKT_MM_LANE_BYTES * n or xs.shape[1] != n // 32 or bsum.shape[1] != n // 32 \
            or y.shape[0] != lanes.shape[0] or xs.shape[0] != lanes.shape[0] or bsum.shape[0] != lanes.shape[0]:
        raise ValueError("mul_mat_q8_threads: activation shape mismatch")
    if row1 == row0 or lanes.shape[0] == 0:
        return
    if nthreads < 1:
        nthreads = 1
    if nthreads > 64:
        nthreads = 64
    if nthreads > 1:
        iqkt_pool_prepare(nthreads - 1)
    with nogil:
        rc = kt_mul_mat_q8_threads(type_id, &q[0, 0], n, &lanes[0, 0], &bsum[0, 0], &xs[0, 0],
                                   lanes.shape[0], &y[0, 0], y.shape[1], row0, row1, nthreads)
    check(rc)


def mul_mat_f32(int type_id, const uint8_t[:, ::1] q, int64_t n, const float[:, ::1] x,
                float[:, ::1] y, int64_t row0, int64_t row1):
    cdef int rc
    if row0 < 0 or row1 > q.shape[0] or row0 > row1 or y.shape[1] != q.shape[0]:
        raise ValueError("mul_mat_f32: bad row range")
    if row1 == row0 or x.shape[0] == 0:
        return
    with nogil:
        rc = kt_mul_mat_f32(type_id, &q[0, 0], n, &x[0, 0], x.shape[0],
                            &y[0, 0], y.shape[1], row0, row1)
    check(rc)


def quantize_rows(int type_id, const float[:, ::1] x, imatrix, uint8_t[:, ::1] out,
                  row_err, int64_t row0, int64_t row1, params=None):
    """params: None (defaults) or a mapping of quantizer parameters (see
    quantizer_params)."""
    cdef int rc
    cdef QuantParams p
    cdef const float[::1] im
    cdef const float *imp = NULL
    cdef double[::1] err
    cdef double *errp = NULL
    cdef int64_t n = x.shape[1]
    if row0 < 0 or row1 > x.shape[0] or row1 > out.shape[0] or row0 > row1:
        raise ValueError("quantize_rows: bad row range")
    if imatrix is not None:
        im = imatrix
        if im.shape[0] != n:
            raise ValueError("quantize_rows: imatrix length mismatch")
        imp = &im[0]
    if row_err is not None:
        err = row_err
        errp = &err[row0]
    params_from_changes(params, &p)
    if row1 == row0:
        return
    with nogil:
        rc = kt_quantize_rows_p(type_id, &x[row0, 0], row1 - row0, n, imp, &out[row0, 0], errp, &p)
    check(rc)

include "kt_capi.pxi"
