# Row scale choice and refinement, common to the KT types (included from kt_quantize.pxi, which describes the algorithm).

# ---------------------------------------------------------------- refinement
#
# Coordinate descent on the row's weighted squared error.  Each step is an
# exact minimisation over one set of variables with the others fixed, so the
# error never increases:
#   (a) group indices at the current block scale (exact search; IQ4 also
#       picks the better of its two codebooks),
#   (b) each block's scale code for the current indices and row scale,
#   (c) the row scale, by least squares.


cdef inline void iq4_block_sums(const int8_t *cb, const int32_t *idx, const float *xb,
                                const float *wb, double *sumqx, double *sumq2) noexcept nogil:
    """sum w*x*q and sum w*q^2 over the 8 groups of an IQ4 block with codes
    idx[g] of codebook cb."""
    cdef int g, k, q
    cdef double sx = 0, s2 = 0
    for g in range(8):
        for k in range(4):
            q = cb[4 * idx[g] + k]
            sx += <double>wb[g * 4 + k] * xb[g * 4 + k] * q
            s2 += <double>wb[g * 4 + k] * q * q
    sumqx[0] = sx
    sumq2[0] = s2


cdef void block_sums(int type_id, const RowScratch *s, int64_t b, double *sumqx, double *sumq2) noexcept nogil:
    """sum w*x*q and sum w*q^2 over block b for its current indices."""
    cdef int g, k
    cdef double sx = 0, s2 = 0
    cdef const float *xb = s.x + 32 * b
    cdef const float *wb = s.w + 32 * b
    cdef int qv[8]
    cdef const iqkt_type_traits *t = iqkt_type_info(type_id)
    if t.group_size == 4:
        iq4_block_sums(CB4 + 4 * t.codebook_size * s.bflag[b], s.gidx + 8 * b, xb, wb, sumqx, sumq2)
        return
    for g in range(4):
        trellis8_code(<uint32_t>s.gidx[4 * b + g], t.sign_plane, qv)
        for k in range(8):
            sx += <double>wb[g * 8 + k] * xb[g * 8 + k] * qv[k]
            s2 += <double>wb[g * 8 + k] * qv[k] * qv[k]
    sumqx[0] = sx
    sumq2[0] = s2


cdef bint research_block(int type_id, RowScratch *s, int64_t b, float dl, int nflip) noexcept nogil:
    """Re-search block b's groups at scale dl; True if any index or flag changed."""
    cdef double sx, s2, err, best_err
    cdef bint changed = False
    cdef int32_t old[8]
    cdef int f, j, best_f
    cdef int32_t cand[2][8]
    cdef uint32_t proven
    cdef const float *xb = s.x + 32 * b
    cdef const float *wb = s.w + 32 * b
    cdef const iqkt_type_traits *t = iqkt_type_info(type_id)
    if t.codebooks == 1:
        for j in range(4):
            old[j] = s.gidx[4 * b + j]
        search_block(TYPE_SPACE[type_id][0], CB8, t.sign_plane,
                     xb, wb, dl, s.target, old, s.gidx + 4 * b, &sx, &s2, nflip)
        for j in range(4):
            changed = changed or old[j] != s.gidx[4 * b + j]
        return changed
    best_err = HUGE_VALF
    best_f = 0
    for f in range(2):
        if nflip < s.p.nflip_refine:
            # Passes before the last: only the block's own codebook, with the
            # batched approximate search (the last pass tries both exactly;
            # docs/perf-notes.md).
            if f != s.bflag[b]:
                continue
            iq4_batch_search(&SPACE_IQ4[f], CB4 + 4 * IQ4_CODEBOOK * f, xb, wb, dl, s.gidx + 8 * b,
                             cand[f], &sx, &s2, NULL, 3)
        else:
            # The batched search, then nearest_code only where its code is not
            # proven exact (the same result as searching every group).
            iq4_batch_search(&SPACE_IQ4[f], CB4 + 4 * IQ4_CODEBOOK * f, xb, wb, dl,
                             s.gidx + 8 * b if f == s.bflag[b] else NULL, cand[f], &sx, &s2,
                             &proven, 3)
            if proven != 0xFF:
                iq4_complete(&SPACE_IQ4[f], CB4 + 4 * IQ4_CODEBOOK * f, xb, wb, dl, cand[f], proven,
                             nflip, &sx, &s2)
        # Error up to a constant: dl^2 * sum w q^2 - 2 dl * sum w x q.
        err = <double>dl * dl * s2 - 2 * <double>dl * sx
        if err < best_err:
            best_err = err
            best_f = f
    changed = s.bflag[b] != best_f
    s.bflag[b] = best_f
    for j in range(8):
        changed = changed or s.gidx[8 * b + j] != cand[best_f][j]
        s.gidx[8 * b + j] = cand[best_f][j]
    return changed


cdef inline int clamp_linear_code(const iqkt_type_traits *t, int c) noexcept nogil:
    """Clamp an integer block scale to its type's code range (IQ3: 0..15, IQ4: -64..63)."""
    return t.scale_code_min if c < t.scale_code_min else (t.scale_code_max if c > t.scale_code_max else c)


cdef int best_scale_code(const iqkt_type_traits *t, float d, double sx, double s2, int current) noexcept nogil:
    """Scale code minimising d^2 v^2 s2 - 2 d v sx for code value v."""
    cdef int c, best = current
    cdef double e, best_e, v, opt
    if d == 0 or s2 <= 0:
        return current
    if t.scale_values != NULL:
        best_e = HUGE_VALF
        for c in range(t.scale_code_min, t.scale_code_max + 1):
            v = <double>d * t.scale_values[c]
            e = v * v * s2 - 2 * v * sx
            if e < best_e:
                best_e = e
                best = c
        return best
    # Linear codes: the error is a convex quadratic in the code, so the best
    # integer is the rounded, clamped optimum.
    opt = sx / (<double>d * s2)
    return clamp_linear_code(t, <int>floor(opt + 0.5) if opt > -1e9 and opt < 1e9
                             else (-1000 if opt < 0 else 1000))


cdef float refine_row(int type_id, RowScratch *s, int64_t n, float d, int iters) noexcept nogil:
    """Up to iters passes of coordinate descent.  A pass is a deterministic
    function of (indices, flags, codes, d); one that changes none of them
    would be repeated identically by every later pass, so it ends the loop
    (same bytes as running all passes, less work)."""
    cdef int64_t nblk = n // 32, b
    cdef int it, v, code
    cdef double sx, s2, num, den
    cdef float dl, d_new
    cdef bint changed
    cdef int nflip
    cdef const iqkt_type_traits *t = iqkt_type_info(type_id)
    it = 0
    while it < iters:
        nflip = s.p.nflip_early if it < iters - 1 else s.p.nflip_refine
        changed = False
        num = 0
        den = 0
        for b in range(nblk):
            dl = d * <float>iqkt_scale_value(t, s.bcode[b])
            if dl != 0:
                if research_block(type_id, s, b, dl, nflip):
                    changed = True
            block_sums(type_id, s, b, &sx, &s2)
            code = best_scale_code(t, d, sx, s2, s.bcode[b])
            if code != s.bcode[b]:
                changed = True
                s.bcode[b] = code
            v = iqkt_scale_value(t, s.bcode[b])
            num += v * sx
            den += <double>v * v * s2
        if den > 0 and not s.use_fixed_d:
            d_new = <float>(num / den)
            if d_new != d:
                changed = True
            d = d_new
        if not changed:
            if nflip == s.p.nflip_refine:
                break
            it = iters - 1      # the cheap search converged: finish with the exact pass
        else:
            it += 1
    return d


cdef inline int nearest_scale_code(const iqkt_type_traits *t, float u) noexcept nogil:
    """Scale code whose value is nearest to u."""
    if t.scale_values != NULL:
        return nearest_table_code(t, u)
    return clamp_linear_code(t, <int>floorf(u + 0.5) if u > -1000 and u < 1000
                             else (-1000 if u < 0 else 1000))


cdef bint codes_at_row_scale(int type_id, RowScratch *s, int64_t nblk, float d) noexcept nogil:
    """Block codes nearest to each block's least-squares scale at a given row
    scale d (the fixed-row-scale mode; refine_row then improves them).
    False when d cannot carry any block (zero)."""
    cdef const iqkt_type_traits *t = iqkt_type_info(type_id)
    cdef int64_t b
    if not (d != 0):
        return False
    for b in range(nblk):
        s.bcode[b] = nearest_scale_code(t, s.bscale[b] / d)
    return True


cdef enum:
    ROW_SCALE_ANCHORS = 8       # largest blocks that anchor row-scale candidates


cdef bint choose_row_scale(int type_id, RowScratch *s, int64_t nblk, float *d_out) noexcept nogil:
    """Pick the row scale d and every block's scale code (s.bcode) from the
    blocks' least-squares scales s.bscale and curvatures s.bcurv.

    Candidates put one of the largest blocks exactly on one code value; each
    is scored by the least-squares fit of all blocks with their codes rounded
    to nearest.  Trying every code for several anchors (not only the largest
    block at the extreme code) lets a row with a lone outlier block trade
    that block's accuracy for resolution everywhere else.
    Returns False for a row whose blocks are all zero."""
    cdef int anchors[ROW_SCALE_ANCHORS]
    cdef int na = 0, a, j, c, v, lo, hi
    cdef int64_t b, pick
    cdef float amax, u, inv_d, best_inv = 0
    cdef double num, den, score, best_score = -1, best_num = 0, best_den = 1
    cdef int ncand, ci
    cdef const iqkt_type_traits *t = iqkt_type_info(type_id)
    cdef float cinv[4]
    cdef double cnum[4]
    cdef double cden[4]
    # The ROW_SCALE_ANCHORS blocks of largest |scale| (ties: lower block).
    for a in range(ROW_SCALE_ANCHORS):
        pick = -1
        amax = 0
        for b in range(nblk):
            if fabsf(s.bscale[b]) > amax:
                for j in range(na):
                    if anchors[j] == b:
                        break
                else:
                    amax = fabsf(s.bscale[b])
                    pick = b
        if pick < 0:
            break
        anchors[na] = <int>pick
        na += 1
    if na == 0:
        return False
    lo = t.scale_code_min
    hi = t.scale_code_max
    for a in range(na):
        c = lo
        while c <= hi:
            # Up to 4 candidates at once: independent sums (each in the same
            # order as alone, so the same values) overlap their latencies.
            ncand = 0
            while c <= hi and ncand < 4:
                v = iqkt_scale_value(t, c)
                c += 1
                if v == 0:
                    continue
                cinv[ncand] = <float>v / s.bscale[anchors[a]]
                ncand += 1
            for ci in range(4):
                cnum[ci] = 0
                cden[ci] = 0
            for b in range(nblk):
                for ci in range(ncand):
                    v = iqkt_scale_value(t, nearest_scale_code(t, s.bscale[b] * cinv[ci]))
                    cnum[ci] += <double>s.bcurv[b] * s.bscale[b] * v
                    cden[ci] += <double>s.bcurv[b] * v * v
            for ci in range(ncand):
                num = cnum[ci]
                den = cden[ci]
                if den > 0:
                    score = num * num / den
                    if score > best_score:
                        best_score = score
                        best_inv = cinv[ci]
                        best_num = num
                        best_den = den
    if best_score < 0:
        return False
    for b in range(nblk):
        s.bcode[b] = nearest_scale_code(t, s.bscale[b] * best_inv)
    d_out[0] = <float>(best_num / best_den)
    return True


cdef inline bint row_scale_and_codes(int type_id, RowScratch *s, int64_t nblk, int expo,
                                     float *d_out) noexcept nogil:
    """Step 4 of a row: the row scale and block codes, chosen jointly, or the
    caller's row scale (brought into the row's power-of-two scaled units)."""
    if s.use_fixed_d:
        d_out[0] = ldexpf(s.fixed_d, -expo)
        return codes_at_row_scale(type_id, s, nblk, d_out[0])
    return choose_row_scale(type_id, s, nblk, d_out)
