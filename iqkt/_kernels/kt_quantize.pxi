# The KT quantizer (included from kt_kernels.pxi).
#
# Shape of the algorithm (per row), common to the KT types:
#   1. scale the row by a power of two so that max|x| is in [0.5, 1): exact,
#      and it keeps every intermediate far from float overflow/underflow;
#   2. per-weight importance w (from the imatrix if given);
#   3. per 32-block: try a few trial scales, find the best codebook entry of
#      every group at each (exact weighted nearest-neighbour search), keep the
#      trial with the best least-squares score;
#   4. pick the row scale d and the block scale codes jointly;
#   5. re-search every group at its final scale, refit d by least squares.
#
# The nearest-neighbour search is exact: the codebook is split into cells by
# a per-coordinate quantile grid; a depth-first walk over the grid visits a
# cell only if the lower bound of the distance to it (sum over coordinates of
# the squared gap to that cell's value interval) beats the best distance so
# far.  Inside a cell the codes are grouped k-d style into 16-code blocks with
# a bounding box each; the same kind of bound, computed for 16 blocks at once,
# skips the blocks that cannot win (about 70% of those in visited cells for
# IQ2/IQ3; the 8-D searches list the cells and the surviving blocks first and
# scan them in batches, see search_8x2).  Distances accumulate with fused
# multiply-adds on every variant.  The reference only searches one cluster
# of candidates.
#
# Files: kt_quant_params.pxi (the tunables, passed down as a const struct),
# kt_search.pxi (search index and nearest-codeword search), this file (per-row
# scratch and helpers, entry point), kt_refine.pxi (row scale and refinement),
# kt_quant_iq23.pxi and kt_quant_iq4.pxi (the per-type row quantizers).

include "kt_quant_params.pxi"
include "kt_search.pxi"

# ---------------------------------------------------------------- per-row work

cdef struct RowScratch:
    const QuantParams *p        # the call's parameters (kt_quant_params.pxi)
    float *x                    # row scaled into [0.5, 1) max magnitude
    float *w                    # importance
    float *target               # group target in codebook units
    int32_t *gidx               # chosen codebook index per group (IQ4: within its codebook)
    float *bscale               # least-squares block scale (x units per code unit)
    float *bcurv                # curvature of the block error in its scale: sum w q^2
    int *bcode                  # final integer block scale code
    int *bflag                  # IQ4 codebook per block
    int32_t *tmp_idx            # trial indices of one block
    float *imn                  # imatrix normalised to max 1 (or NULL)
    float *deq                  # a dequantized row, to measure error
    float *alt_x                # alternative input row (outlier handling)
    uint8_t *alt_q              # its encoding
    int use_fixed_d             # quantize at a given row scale: block codes and indices only
    float fixed_d               # that row scale, as stored (set per row by the caller)


cdef void free_scratch(RowScratch *s) noexcept nogil:
    free(s.x); free(s.w); free(s.target); free(s.gidx); free(s.bscale); free(s.bcurv)
    free(s.bcode); free(s.bflag); free(s.tmp_idx); free(s.imn); free(s.deq)
    free(s.alt_x); free(s.alt_q)


cdef int alloc_scratch(RowScratch *s, int64_t n, int want_imatrix, int64_t row_bytes) noexcept nogil:
    cdef int64_t nblk = n // 32
    memset(s, 0, sizeof(RowScratch))
    s.x = <float *>malloc(n * sizeof(float))
    s.w = <float *>malloc(n * sizeof(float))
    s.target = <float *>malloc(32 * sizeof(float))
    s.gidx = <int32_t *>malloc((n // 4) * sizeof(int32_t))
    s.bscale = <float *>malloc(nblk * sizeof(float))
    s.bcurv = <float *>malloc(nblk * sizeof(float))
    s.bcode = <int *>malloc(nblk * sizeof(int))
    s.bflag = <int *>malloc(nblk * sizeof(int))
    s.tmp_idx = <int32_t *>malloc(8 * sizeof(int32_t))
    if want_imatrix:
        s.imn = <float *>malloc(n * sizeof(float))
    s.deq = <float *>malloc(n * sizeof(float))
    s.alt_x = <float *>malloc(n * sizeof(float))
    s.alt_q = <uint8_t *>malloc(row_bytes)
    if (s.x == NULL or s.w == NULL or s.target == NULL or s.gidx == NULL or s.bscale == NULL
            or s.bcurv == NULL or s.bcode == NULL or s.bflag == NULL or s.tmp_idx == NULL
            or (want_imatrix and s.imn == NULL) or s.deq == NULL or s.alt_x == NULL
            or s.alt_q == NULL):
        free_scratch(s)
        return KT_ERR_NOMEM
    memset(s.bflag, 0, nblk * sizeof(int))
    return KT_OK


cdef void importance(const float *imn, int64_t n, float *w) noexcept nogil:
    """Per-weight importance: the quality measure itself.  Error is judged as
    sum imatrix * (x - y)^2 (plain squared error without an imatrix), so that
    is what the search minimises; the reference instead weights by a function
    of x, which measured worse on that criterion (see the project notes).
    A 32-block whose importances are all zero still needs a sensible search:
    it gets flat weights, small enough not to pull the row scale."""
    cdef int64_t j
    cdef int k
    cdef float wsum, wmean
    cdef double tot = 0
    cdef int64_t cnt = 0
    for j in range(n):
        w[j] = 1.0 if imn == NULL else imn[j]
    if imn == NULL:
        return
    for j in range(n):
        if w[j] > 0:
            tot += w[j]
            cnt += 1
    wmean = <float>(tot / cnt) if cnt > 0 else 1.0
    for j in range(n // 32):
        wsum = 0
        for k in range(32):
            wsum = wsum + w[32 * j + k]
        if not (wsum > 0):
            for k in range(32):
                w[32 * j + k] = 1e-4 * wmean if cnt > 0 else 1.0


cdef inline float block_amax(const float *x, int len) noexcept nogil:
    cdef float a = 0
    cdef int k
    for k in range(len):
        if fabsf(x[k]) > a:
            a = fabsf(x[k])
    return a


# Search every group of one 32-block at scale dl; returns sum w*x*q and sum w*q^2.
cdef void search_block(const SearchSpace *sp, const int8_t *cb, int take_abs, const float *xb,
                       const float *wb, float dl, float *target, const int32_t *hints,
                       int32_t *out_idx, double *sumqx, double *sumq2, int nflip) noexcept nogil:
    cdef int dim = sp.dim
    cdef int ng = 32 // dim
    cdef int g, k, q
    cdef float inv = 1.0 / dl if dl != 0 else 0.0
    cdef int32_t i
    cdef double sx = 0, s2 = 0
    cdef int qv[8]
    if hints != NULL and dim != 8:
        # The hints' codes are read at the start of each search: fetch them
        # all now rather than miss on each in turn.
        for g in range(ng):
            if hints[g] >= 0:
                iqkt_prefetch(cb + <size_t>hints[g] * dim)
    for g in range(ng):
        for k in range(dim):
            target[k] = xb[g * dim + k] * inv
        i = nearest_code(sp, target, wb + g * dim, hints[g] if hints != NULL else -1, nflip)
        out_idx[g] = i
        if dim == 8:
            trellis8_code(<uint32_t>i, take_abs, qv)
        for k in range(dim):
            if dim == 8:
                q = qv[k]
            else:
                q = cb[i * dim + k]
                if take_abs and q < 0:
                    q = -q
            sx += <double>wb[g * dim + k] * xb[g * dim + k] * q
            s2 += <double>wb[g * dim + k] * q * q
    sumqx[0] = sx
    sumq2[0] = s2


cdef float unscale_row_scale(float d, int expo, int max_code_product) noexcept nogil:
    """Undo the power-of-two row scaling, keeping every decoded weight finite."""
    cdef double dd = <double>d
    cdef double lim
    cdef int i
    if expo > 0:
        for i in range(expo):
            dd *= 2
    else:
        for i in range(-expo):
            dd *= 0.5
    if max_code_product > 0:
        lim = FLT_MAX / (<double>max_code_product * 1.0001)
        if dd > lim:
            dd = lim
        elif dd < -lim:
            dd = -lim
    return <float>dd


include "kt_refine.pxi"
include "kt_quant_iq23.pxi"
include "kt_quant_iq4.pxi"


# ---------------------------------------------------------------- entry point

ctypedef int (*quantize_row_fn)(int type_id, const float *xrow, int64_t n, RowScratch *s,
                                uint8_t *out) noexcept nogil
# The row quantizer of each type.
cdef quantize_row_fn QUANTIZE_ROW[IQKT_NTYPES]
QUANTIZE_ROW[KT_IQ2] = quantize_row_iq23
QUANTIZE_ROW[KT_IQ3] = quantize_row_iq23
QUANTIZE_ROW[KT_IQ4] = quantize_row_iq4
QUANTIZE_ROW[KT_IQ1] = quantize_row_iq23

cdef inline int quantize_one_row(int type_id, const float *xrow, int64_t n, RowScratch *s,
                                 uint8_t *out) noexcept nogil:
    return QUANTIZE_ROW[type_id](type_id, xrow, n, s, out)


cdef double weighted_sq_error(int type_id, const float *xrow, int64_t n, const uint8_t *q,
                              const float *imatrix, float *deq, double *signal) noexcept nogil:
    """sum w (x - decode(q))^2 with w = imatrix or 1; also sum w x^2."""
    cdef int64_t j
    cdef double num = 0, den = 0, diff, wt
    kt_dequantize_rows(type_id, q, 1, n, deq, 0)
    for j in range(n):
        wt = imatrix[j] if imatrix != NULL else 1.0
        diff = <double>xrow[j] - <double>deq[j]
        num += wt * diff * diff
        den += wt * <double>xrow[j] * <double>xrow[j]
    signal[0] = den
    return num


cdef int quantize_outlier_row(int type_id, const float *xrow, int64_t n, const float *imatrix,
                              RowScratch *s, uint8_t *out) noexcept nogil:
    """A row dominated by one weight can land in a poor local optimum of the
    scale search; also try encoding just that weight (the rest zeroed) and
    keep whichever reconstructs the row better.  Only rows where the largest
    weight carries at least a quarter of the energy pay for this."""
    cdef int64_t j, jmax = 0
    cdef double e_full, e_alt, sig, tot = 0
    cdef int rc
    cdef int64_t rs = kt_row_size(type_id, n)
    for j in range(n):
        tot += <double>xrow[j] * xrow[j]
        if fabsf(xrow[j]) > fabsf(xrow[jmax]):
            jmax = j
    if not (<double>xrow[jmax] * xrow[jmax] >= 0.25 * tot) or tot == 0:
        return KT_OK
    memset(s.alt_x, 0, n * sizeof(float))
    s.alt_x[jmax] = xrow[jmax]
    rc = quantize_one_row(type_id, s.alt_x, n, s, s.alt_q)
    if rc != KT_OK:
        return rc
    e_full = weighted_sq_error(type_id, xrow, n, out, imatrix, s.deq, &sig)
    e_alt = weighted_sq_error(type_id, xrow, n, s.alt_q, imatrix, s.deq, &sig)
    if e_alt < e_full:
        memcpy(out, s.alt_q, rs)
    return KT_OK


cdef int kt_quantize_rows(int type_id, const float *x, int64_t nrows, int64_t n,
                          const float *imatrix, uint8_t *out, double *row_err) noexcept nogil:
    """Quantize nrows rows of n float32 weights into out (nrows * row_size
    bytes) with the default parameters.  imatrix: NULL or n finite
    non-negative importances.  row_err: NULL or nrows doubles receiving each
    row's relative squared error (imatrix-weighted when an imatrix is given)."""
    cdef QuantParams p = effort_params(EFFORT_DEFAULT, type_id)
    return kt_quantize_rows_p(type_id, x, nrows, n, imatrix, NULL, out, row_err, &p)


cdef int kt_quantize_rows_p(int type_id, const float *x, int64_t nrows, int64_t n,
                            const float *imatrix, const float *row_scale, uint8_t *out,
                            double *row_err, const QuantParams *params) noexcept nogil:
    """kt_quantize_rows with the given parameters.  row_scale: NULL, or nrows
    finite row scales the rows are stored with (only block codes and indices
    are chosen), so that column slices of one row quantized separately share
    a scale (LDLQ error feedback over slices, iqkt/ldlq.py)."""
    cdef int64_t rs = kt_row_size(type_id, n)
    cdef int64_t r, j
    cdef RowScratch s
    cdef int rc
    cdef float immax = 0
    cdef double num, den
    if rs < 0:
        return <int>rs
    if nrows < 0:
        return KT_ERR_SIZE
    if nrows == 0:
        return KT_OK
    if x == NULL or out == NULL:
        return KT_ERR_ARG
    for j in range(nrows * n):
        if not isfinite(x[j]):
            return KT_ERR_NONFINITE_INPUT
    if imatrix != NULL:
        for j in range(n):
            if not isfinite(imatrix[j]) or imatrix[j] < 0:
                return KT_ERR_IMATRIX
            if imatrix[j] > immax:
                immax = imatrix[j]
    if row_scale != NULL:
        for r in range(nrows):
            if not isfinite(row_scale[r]):
                return KT_ERR_ARG
    rc = alloc_scratch(&s, n, imatrix != NULL, rs)
    if rc != KT_OK:
        return rc
    s.p = params
    if imatrix != NULL:
        # Scale-free: only ratios of importances matter; normalising keeps
        # huge imatrix values from overflowing.
        for j in range(n):
            s.imn[j] = imatrix[j] / immax if immax > 0 else 1.0
    for r in range(nrows):
        if row_scale != NULL:
            s.use_fixed_d = 1
            s.fixed_d = row_scale[r]
        rc = quantize_one_row(type_id, x + r * n, n, &s, out + r * rs)
        if rc == KT_OK:
            rc = quantize_outlier_row(type_id, x + r * n, n, imatrix, &s, out + r * rs)
        if rc != KT_OK:
            break
        if row_err != NULL:
            num = weighted_sq_error(type_id, x + r * n, n, out + r * rs, imatrix, s.deq, &den)
            row_err[r] = num / den if den > 0 else 0.0
    free_scratch(&s)
    return rc


def nearest_codes(int space, const float[:, ::1] t, const float[:, ::1] w, int nflip=8):
    """Test hook: nearest_code for every row of t (weights w, no hint) in
    search space 0 (IQ2), 1 (IQ3 magnitudes), 2 / 3 (IQ4 codebook 0 / 1), 4 (IQ1).
    nflip >= dim: exact.  Returns int32 codebook indices."""
    import numpy as np
    cdef const SearchSpace *sp
    if space < 0 or space > 4:
        raise ValueError("nearest_codes: space must be 0..4")
    sp = (&SPACE_IQ2 if space == 0 else (&SPACE_IQ3 if space == 1 else
          (&SPACE_IQ1 if space == 4 else &SPACE_IQ4[space - 2])))
    if t.shape[1] != sp.dim or w.shape[0] != t.shape[0] or w.shape[1] != sp.dim:
        raise ValueError("nearest_codes: t and w must both have shape (m, %d)" % sp.dim)
    out = np.empty(t.shape[0], dtype=np.int32)
    cdef int32_t[::1] o = out
    cdef Py_ssize_t r
    if t.shape[0] == 0:
        return out
    with nogil:
        for r in range(t.shape[0]):
            o[r] = nearest_code(sp, &t[r, 0], &w[r, 0], -1, nflip)
    return out
