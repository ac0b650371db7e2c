# IQ1_KT, IQ2_KT and IQ3_KT rows: 8-value groups, one codebook (included from
# kt_quantize.pxi, which describes the algorithm).

# ---------------------------------------------------------------- IQ1_KT / IQ2_KT / IQ3_KT

# Midpoints between neighbouring tabled scales, per type (_check_scale_tables).
cdef float SCALE_MIDPOINTS[IQKT_NTYPES][32]


cdef inline int type_of_table(const iqkt_type_traits *t) noexcept nogil:
    return <int>(t - iqkt_type_info(0))


cdef inline int nearest_table_code(const iqkt_type_traits *t, float v) noexcept nogil:
    """The code whose tabled scale is nearest to v (ties: the lower code) as a
    scan keeping the first least fabsf(v - value) picks it, for an ascending
    table (checked at import): the exactly nearest code counted off the
    midpoints (branch-free; this runs for every block and row-scale candidate),
    then down while the float distance rounds to the same value."""
    cdef int k, lo = t.scale_code_min, hi = t.scale_code_max
    cdef int c = lo
    cdef float e
    cdef const float *mid = SCALE_MIDPOINTS[type_of_table(t)]
    if v != v:                  # NaN: no distance is smaller than the first
        return lo
    for k in range(hi - lo):
        c += v > mid[k]
    e = fabsf(v - <float>t.scale_values[c])
    while c > lo and fabsf(v - <float>t.scale_values[c - 1]) == e:
        c -= 1
    return c


cdef int nearest_table_code_scan(const iqkt_type_traits *t, float v) noexcept nogil:
    """nearest_table_code's definition, for the test that holds them equal."""
    cdef int c, best = t.scale_code_min
    cdef float e, best_e = HUGE_VALF
    for c in range(t.scale_code_min, t.scale_code_max + 1):
        e = fabsf(v - <float>t.scale_values[c])
        if e < best_e:
            best_e = e
            best = c
    return best


def _nearest_table_codes(int type_id, const float[::1] v):
    """(fast, scan) codes of every v: test hook for nearest_table_code."""
    cdef const iqkt_type_traits *t = iqkt_type_info(type_id)
    cdef Py_ssize_t i
    if t == NULL or t.scale_values == NULL:
        raise ValueError("type has no scale table")
    fast = [nearest_table_code(t, v[i]) for i in range(v.shape[0])]
    scan = [nearest_table_code_scan(t, v[i]) for i in range(v.shape[0])]
    return fast, scan


cdef int _check_scale_tables() except -1:
    """Fill SCALE_MIDPOINTS (exact in float: halves of small integers) and
    check that every scale table ascends, as nearest_table_code assumes."""
    cdef int ty, k
    cdef const iqkt_type_traits *t
    for ty in range(IQKT_NTYPES):
        t = iqkt_type_info(ty)
        if t.scale_values != NULL:
            if t.scale_code_max - t.scale_code_min >= 32:
                raise ImportError(f"type {ty}: scale table longer than SCALE_MIDPOINTS")
            for k in range(t.scale_code_min, t.scale_code_max):
                if not t.scale_values[k] < t.scale_values[k + 1]:
                    raise ImportError(f"type {ty}: scale table not ascending (nearest_table_code needs it)")
                SCALE_MIDPOINTS[ty][k - t.scale_code_min] = 0.5 * (t.scale_values[k] + t.scale_values[k + 1])
    return 0

_check_scale_tables()


cdef int quantize_row_iq23(int type_id, const float *xrow, int64_t n, RowScratch *s,
                           uint8_t *out) noexcept nogil:
    cdef int64_t nblk = n // 32, b, j, ib
    cdef const iqkt_type_traits *tt = iqkt_type_info(type_id)
    cdef int take_abs = tt.sign_plane
    cdef const SearchSpace *sp = TYPE_SPACE[type_id][0]
    cdef int expo, trial, ntrials, g, k, c, best_t, sign
    cdef float amax_row, amax, s0, dl, max_scale, inv_d, v
    cdef double sx, s2, score, best_score, num, den, best_num, best_den
    cdef float d
    cdef float *xb
    cdef float *wb
    cdef int32_t *trial_idx = s.tmp_idx
    cdef uint8_t *sb
    cdef int max_prod

    amax_row = block_amax(xrow, <int>n) if n < 0x7FFFFFFF else 0
    if amax_row == 0:
        memset(out, 0, kt_row_size(type_id, n))
        return KT_OK
    frexpf(amax_row, &expo)
    # IQ3_KT codes magnitudes (signs are stored separately): work on |x|.
    for j in range(n):
        s.x[j] = ldexpf(fabsf(xrow[j]) if take_abs else xrow[j], -expo)
    importance(s.imn, n, s.w)
    amax_row = block_amax(s.x, <int>n)

    # 3. per block: trial scales, exact search, keep the best LS score.
    for b in range(nblk):
        xb = s.x + 32 * b
        wb = s.w + 32 * b
        amax = block_amax(xb, 32)
        best_score = -1
        s.bscale[b] = 0
        s.bcurv[b] = 0
        if amax == 0:
            search_block(sp, CB8, take_abs, xb, wb, 1.0, s.target, NULL, s.gidx + 4 * b, &sx, &s2,
                         s.p.nflip_trial)
            s.bcurv[b] = <float>s2
            continue
        ntrials = 7 if take_abs else 2
        for trial in range(ntrials):
            if take_abs:
                s0 = 123 * amax / amax_row
                if s0 < 84:
                    s0 = 84
                dl = amax / (s0 + 8 * (trial - 3))
            else:
                s0 = 124 * amax / amax_row
                if s0 < 90:
                    s0 = 90
                dl = amax / s0 if trial == 0 else -amax / s0
            # The previous trial's indices are good starting guesses.
            search_block(sp, CB8, take_abs, xb, wb, dl, s.target, trial_idx if trial > 0 else NULL,
                         trial_idx, &sx, &s2, s.p.nflip_trial)
            if s2 > 0:
                score = sx * sx / s2
                if score > best_score:
                    best_score = score
                    s.bscale[b] = <float>(sx / s2)
                    s.bcurv[b] = <float>s2
                    for g in range(4):
                        s.gidx[4 * b + g] = trial_idx[g]

    # 4. row scale and block codes, jointly.
    if not row_scale_and_codes(type_id, s, nblk, expo, &d):
        memset(out, 0, kt_row_size(type_id, n))
        return KT_OK

    # 5. re-search at the final block scales, refit d.
    d = refine_row(type_id, s, n, d, s.p.refine_passes)

    # Encode.
    max_prod = tt.scale_abs_max * 126
    iqkt_store_f32(out, s.fixed_d if s.use_fixed_d else unscale_row_scale(d, expo, max_prod))
    for ib in range(n // QK):
        sb = out + 4 + ib * tt.block_bytes
        if tt.index_layout == IQKT_INDEX_SPLIT13:
            encode_split13(sb, s.bcode + 8 * ib, s.gidx + 32 * ib)
            continue
        for k in range(4):
            sb[k] = <uint8_t>(s.bcode[8 * ib + k] | (s.bcode[8 * ib + k + 4] << 4))
        for g in range(32):
            iqkt_store_u16(sb + 4 + 2 * g, <uint16_t>s.gidx[32 * ib + g])
        if take_abs:
            memset(sb + 68, 0, 32)
            for b in range(8):
                for k in range(32):
                    if xrow[ib * QK + 32 * b + k] < 0:
                        sb[68 + k] |= <uint8_t>(1 << b)
    return KT_OK


cdef void encode_split13(uint8_t *sb, const int *bcode, const int32_t *gidx) noexcept nogil:
    """One super-block in the IQKT_INDEX_SPLIT13 / IQKT_SCALES_SH layout (IQ1_KT):
    sh[b] = scale code | bit 12 of group g's index at bit 4 + g; ql[j] = bits
    0..7 of group j; qh[j % 16] nibble j / 16 = bits 8..11."""
    cdef int b, g, j
    cdef uint32_t idx
    memset(sb, 0, 56)
    for b in range(8):
        sb[b] = <uint8_t>bcode[b]
    for j in range(32):
        idx = <uint32_t>gidx[j]
        b = j >> 2
        g = j & 3
        sb[8 + j] = <uint8_t>(idx & 0xFF)
        sb[40 + (j & 15)] |= <uint8_t>(((idx >> 8) & 15) << (4 * (j >> 4)))
        sb[b] |= <uint8_t>(((idx >> 12) & 1) << (4 + g))
