# IQ4_KT rows (included from kt_quantize.pxi, which describes the algorithm).

# ---------------------------------------------------------------- IQ4_KT




cdef inline float iq4_trial_scale(int pair, float amax, float denom) noexcept nogil:
    """Block scale of a trial: amax / denom, negative for the pairs of sign 1."""
    cdef float dl = amax / denom
    return -dl if pair >> 1 else dl


cdef inline void iq4_keep_if_better(RowScratch *s, int64_t b, int f, const int32_t *idx,
                                    double sx, double s2, double *score,
                                    double *best_score) noexcept nogil:
    """score = the least-squares score of a trial's sums (-1 if none); the
    trial becomes block b's choice (codebook f, codes idx) if it beats
    best_score."""
    cdef int k
    score[0] = sx * sx / s2 if s2 > 0 else -1
    if s2 > 0 and score[0] > best_score[0]:
        best_score[0] = score[0]
        s.bscale[b] = <float>(sx / s2)
        s.bcurv[b] = <float>s2
        s.bflag[b] = f
        for k in range(8):
            s.gidx[8 * b + k] = idx[k]


cdef void iq4_batch_search(const SearchSpace *sp, const int8_t *cb, const float *xb,
                           const float *wb, float dl, const int32_t *hints,
                           int32_t *out, double *sumqx, double *sumq2,
                           uint32_t *proven, int nflips) noexcept nogil:
    """Approximate nearest codes of the 8 groups of one IQ4 block at scale dl
    (never worse than hints[g] when hints is not NULL); sum w*x*q and
    sum w*q^2 of the result.  Each group scans its target's own cell and,
    while their lower bound can still win, the cells one level away in each
    of its nflips (p.iq4_rank_flips, or 3 in refinement) coordinates
    cheapest to change (its cheapest neighbouring level there).  The groups
    are processed in stages (cells, cell ranges, scans, sums) with
    prefetches in between, so that the memory accesses of the 8 groups
    overlap instead of following one another (this was measured to matter
    more than the arithmetic before the setup was vectorised).  The cells are
    scanned in coordinate order; their bounds are valid lower bounds, so
    the order cannot change the result.
    proven (if not NULL): bit g set when group g's code is the exact
    (distance, index) minimum over the whole codebook, i.e. when every cell
    not scanned has a lower bound above the best distance found: cells that
    change the unflipped coordinate (at least its cheapest level change),
    change a flipped coordinate to any other level, or change
    two or more coordinates (at least the two cheapest level changes)."""
    cdef float t[32]
    cdef int cells[8][4]
    cdef float cpen[8][4]
    cdef int ncell[8]
    cdef float inv = 1.0 / dl
    cdef int g, k, j, m, l, i, own, fl, cell, c, stride, skip
    cdef bint flip[4]
    cdef float bnd
    cdef float lo_v[IQ4_LEVELS]
    cdef float hi_v[IQ4_LEVELS]
    cdef float thr_v[IQ4_LEVELS - 1]
    cdef int ownv[32]
    cdef int flv[32]
    cdef float fpv[32]
    cdef float spv[32]
    cdef float *fpen
    cdef float ti, fp, a1, a2, pn
    cdef float gap, gap2, pk, best_e, diff
    cdef float rest[8]
    cdef float m1, m2
    cdef uint32_t pmask = 0
    cdef int32_t best_i, b0, b1
    cdef float *tg
    cdef const float *wg
    # Per coordinate of the 32 (the block's 8 groups x 4), as straight-line
    # arithmetic over the space's IQ4_LEVELS levels so that the compiler can
    # vectorise it (the same operations on each value as a scalar loop, hence
    # the same results on every ISA): the target, its own level, the
    # cheapest neighbouring level (same penalty as nearest_code: squared gap
    # to that level's value interval; ties: the lower level) and the two
    # smallest penalties over the levels other than the own one.
    for l in range(IQ4_LEVELS):
        lo_v[l] = sp.lo[l]
        hi_v[l] = sp.hi[l]
    for l in range(IQ4_LEVELS - 1):
        thr_v[l] = sp.thr[l]
    for i in range(32):
        ti = xb[i] * inv
        t[i] = ti
        own = 0
        for l in range(IQ4_LEVELS - 1):
            own += ti > thr_v[l]
        fp = HUGE_VALF
        fl = own
        a1 = HUGE_VALF
        a2 = HUGE_VALF
        for l in range(IQ4_LEVELS):
            gap = lo_v[l] - ti
            gap2 = ti - hi_v[l]
            gap = gap if gap > gap2 else gap2
            gap = gap if gap > 0 else 0
            pk = wb[i] * gap * gap
            pn = pk if (l == own - 1 or l == own + 1) else HUGE_VALF
            fl = l if pn < fp else fl
            fp = pn if pn < fp else fp
            pk = pk if l != own else HUGE_VALF
            gap = pk if pk > a1 else a1
            a2 = gap if gap < a2 else a2
            a1 = pk if pk < a1 else a1
        ownv[i] = own
        flv[i] = fl
        fpv[i] = fp
        # With monotone penalties the cheapest neighbour is the cheapest
        # other level (fp == a1), so every other level costs at least a2.
        spv[i] = a2
    for g in range(8):
        fpen = fpv + 4 * g
        cell = ((ownv[4 * g] * IQ4_LEVELS + ownv[4 * g + 1]) * IQ4_LEVELS
                + ownv[4 * g + 2]) * IQ4_LEVELS + ownv[4 * g + 3]
        cells[g][0] = cell
        cpen[g][0] = 0
        ncell[g] = 1
        # The nflips cheapest coordinates are flipped (ties: the lower k; with
        # 3, the most expensive one, ties the higher k, is not).
        if nflips == 3:
            skip = 0
            for k in range(1, 4):
                if fpen[k] >= fpen[skip]:
                    skip = k
            for k in range(4):
                flip[k] = k != skip
        else:
            for k in range(4):
                m = 0
                for j in range(4):
                    m += fpen[j] < fpen[k] or (fpen[j] == fpen[k] and j < k)
                flip[k] = m < nflips
        stride = 1
        for k in range(3, -1, -1):
            if flip[k] and flv[4 * g + k] != ownv[4 * g + k]:
                cells[g][ncell[g]] = cell + (flv[4 * g + k] - ownv[4 * g + k]) * stride
                cpen[g][ncell[g]] = fpen[k]
                ncell[g] += 1
            stride *= IQ4_LEVELS
        # Lower bound of every cell not in the list (see proven).
        rest[g] = HUGE_VALF
        m1 = HUGE_VALF
        m2 = HUGE_VALF
        for k in range(4):
            bnd = spv[4 * g + k] if flip[k] else fpen[k]
            if bnd < rest[g]:
                rest[g] = bnd
            if fpen[k] < m1:
                m2 = m1
                m1 = fpen[k]
            elif fpen[k] < m2:
                m2 = fpen[k]
        if m1 + m2 < rest[g]:
            rest[g] = m1 + m2
        for c in range(ncell[g]):
            iqkt_prefetch(sp.cell_start + cells[g][c])
        if hints != NULL:
            iqkt_prefetch(cb + 4 * hints[g])
    for g in range(8):
        for c in range(ncell[g]):
            b0 = sp.cell_start[cells[g][c]]
            iqkt_prefetch(sp.vals + <size_t>b0 * 64)
            iqkt_prefetch(sp.idx + <size_t>b0 * 16)
    for g in range(8):
        tg = t + 4 * g
        wg = wb + 4 * g
        best_e = HUGE_VALF
        best_i = 0x7FFFFFFF
        if hints != NULL:
            # The distance scan_cell computes (code_distance's arithmetic on
            # the int8 codebook: the same float values).
            best_i = hints[g]
            best_e = 0
            for k in range(4):
                diff = tg[k] - <float>cb[4 * best_i + k]
                best_e = iqkt_fma(wg[k] * diff, diff, best_e)
        for c in range(ncell[g]):
            # The slack keeps float rounding of the bound from ever skipping
            # the true minimum (as in walk).
            if c > 0 and not (cpen[g][c] * 0.99999 <= best_e):
                continue
            b0 = sp.cell_start[cells[g][c]]
            b1 = sp.cell_start[cells[g][c] + 1]
            if b1 > b0:
                iqkt_scan_codes(sp.vals + <size_t>b0 * 64, sp.idx + <size_t>b0 * 16, b1 - b0, 4,
                                tg, wg, &best_e, &best_i)
        if best_i == 0x7FFFFFFF:    # empty cells, no hint (or NaN distances)
            best_i = 0
        elif rest[g] * 0.99999 > best_e:
            pmask |= 1u << g
        out[g] = best_i
        iqkt_prefetch(cb + 4 * best_i)
    iq4_block_sums(cb, out, xb, wb, sumqx, sumq2)
    if proven != NULL:
        proven[0] = pmask if sp.monotone else 0


cdef void iq4_complete(const SearchSpace *sp, const int8_t *cb, const float *xb, const float *wb,
                       float dl, int32_t *idx, uint32_t proven, int nflip, double *sumqx,
                       double *sumq2) noexcept nogil:
    """Re-search at effort nflip (hinted by idx[g]) the groups of a block
    whose batched-search code is not proven exact (bit g of proven clear);
    sum w*x*q and sum w*q^2 of the result.  At an exact effort the result is
    the same as an exact search of every group: a proven code already is
    the (distance, index) minimum, and the hint never changes that minimum."""
    cdef float t[4]
    cdef float inv = 1.0 / dl if dl != 0 else 0.0
    cdef int g, k
    for g in range(8):
        if not (proven >> g) & 1:
            iqkt_prefetch(cb + 4 * idx[g])
    for g in range(8):
        if not (proven >> g) & 1:
            for k in range(4):
                t[k] = xb[4 * g + k] * inv
            idx[g] = nearest_code(sp, t, wb + 4 * g, idx[g], nflip)
    iq4_block_sums(cb, idx, xb, wb, sumqx, sumq2)


# A block's trials are searched in two stages: every trial with the batched
# approximate search (iq4_batch_search) to rank them, then the p.iq4_keep best
# (over all pairs) again at p.nflip_trial_iq4, hinted by their approximate
# indices, and only in the groups the ranking did not prove exact; the best
# of those is the block's choice (docs/perf-notes.md).


cdef void iq4_rank_trial(int pair, const float *xb, const float *wb, float amax, float denom,
                         const int32_t *hint, int32_t *idx, double *score,
                         uint32_t *proven, int nflips) noexcept nogil:
    """iq4_trial's ranking twin: the batched approximate search, only the score."""
    cdef int f = pair & 1
    cdef double sx, s2
    iq4_batch_search(&SPACE_IQ4[f], CB4 + 4 * IQ4_CODEBOOK * f, xb, wb,
                     iq4_trial_scale(pair, amax, denom), hint, idx, &sx, &s2, proven, nflips)
    score[0] = sx * sx / s2 if s2 > 0 else -1


cdef void iq4_two_stage(RowScratch *s, int64_t b, const float *xb, const float *wb, float amax,
                        float s0) noexcept nogil:
    """The block's trials in two stages (see above iq4_rank_trial)."""
    cdef int32_t cand[IQ4_MAX_TRIALS][8]
    cdef int32_t idx[8]
    cdef double cscore[IQ4_MAX_TRIALS]
    cdef float cden[IQ4_MAX_TRIALS]
    cdef int cpair[IQ4_MAX_TRIALS]
    cdef bint taken[IQ4_MAX_TRIALS]
    cdef uint32_t cproven[IQ4_MAX_TRIALS]
    cdef int pr, st, side, ntr, t, kk, pick, f
    cdef double sx, s2
    cdef float off, denom
    cdef int pcur[IQ4_PAIRS]
    cdef double pbest[IQ4_PAIRS]
    cdef float pcen[IQ4_PAIRS]
    cdef bint active[IQ4_PAIRS]
    cdef double sc, best_score = -1, top = 0, energy
    cdef const QuantParams *p = s.p
    energy = 0
    for t in range(32):
        energy += <double>wb[t] * xb[t] * xb[t]
    for pr in range(IQ4_PAIRS):
        iq4_rank_trial(pr, xb, wb, amax, s0, NULL, cand[pr], &cscore[pr], &cproven[pr],
                       p.iq4_rank_flips)
        cden[pr] = s0
        cpair[pr] = pr
    ntr = IQ4_PAIRS
    top = -1
    for pr in range(IQ4_PAIRS):
        pcur[pr] = pr
        pbest[pr] = cscore[pr]
        pcen[pr] = s0
        active[pr] = True
        if cscore[pr] > top:
            top = cscore[pr]
    # Breadth first: every pair's step st before any pair's step st + 1, so
    # that a pair whose best error is far behind the best of all pairs so far
    # (p.iq4_step_margin[st]) stops there.
    for st in range(p.iq4_nsteps):
        for pr in range(IQ4_PAIRS):
            if not active[pr]:
                continue
            if (p.iq4_step_margin[st] > 0
                    and energy - pbest[pr] > p.iq4_step_margin[st] * (energy - top)):
                active[pr] = False
                continue
            off = pcen[pr]
            for side in range(2):
                denom = pcen[pr] + (p.iq4_steps[st] if side else -p.iq4_steps[st])
                iq4_rank_trial(pr, xb, wb, amax, denom, cand[pcur[pr]], cand[ntr],
                               &cscore[ntr], &cproven[ntr], p.iq4_rank_flips)
                cden[ntr] = denom
                cpair[ntr] = pr
                if cscore[ntr] > pbest[pr]:
                    pbest[pr] = cscore[ntr]
                    off = denom
                    pcur[pr] = ntr
                    if cscore[ntr] > top:
                        top = cscore[ntr]
                ntr += 1
            pcen[pr] = off
    for t in range(ntr):
        taken[t] = False
    for kk in range(p.iq4_keep if p.iq4_keep < ntr else ntr):
        pick = -1
        for t in range(ntr):     # the best not yet taken (ties: the earlier trial)
            if not taken[t] and (pick < 0 or cscore[t] > cscore[pick]):
                pick = t
        taken[pick] = True
        if kk == 0:
            top = cscore[pick]
        elif p.iq4_keep_margin > 0 and energy - cscore[pick] > p.iq4_keep_margin * (energy - top):
            break
        # Only the groups whose ranking code is not proven exact.
        f = cpair[pick] & 1
        iq4_complete(&SPACE_IQ4[f], CB4 + 4 * IQ4_CODEBOOK * f, xb, wb,
                     iq4_trial_scale(cpair[pick], amax, cden[pick]), cand[pick], cproven[pick],
                     p.nflip_trial_iq4, &sx, &s2)
        iq4_keep_if_better(s, b, f, cand[pick], sx, s2, &sc, &best_score)


cdef int quantize_row_iq4(int type_id, const float *xrow, int64_t n, RowScratch *s, uint8_t *out) noexcept nogil:
    cdef int64_t nblk = n // 32, b, j, ib
    cdef int expo, k, jj
    cdef float amax_row, amax, s0, d
    cdef double sx, s2, best_score
    cdef float *xb
    cdef float *wb
    cdef uint8_t *sb
    cdef uint32_t word
    cdef int idx
    cdef const iqkt_type_traits *tt = iqkt_type_info(type_id)

    amax_row = block_amax(xrow, <int>n) if n < 0x7FFFFFFF else 0
    if amax_row == 0:
        memset(out, 0, kt_row_size(type_id, n))
        return KT_OK
    frexpf(amax_row, &expo)
    for j in range(n):
        s.x[j] = ldexpf(xrow[j], -expo)
    importance(s.imn, n, s.w)
    amax_row = block_amax(s.x, <int>n)

    for b in range(nblk):
        xb = s.x + 32 * b
        wb = s.w + 32 * b
        amax = block_amax(xb, 32)
        best_score = -1
        s.bscale[b] = 0
        s.bcurv[b] = 0
        s.bflag[b] = 0
        if amax == 0:
            search_block(&SPACE_IQ4[0], CB4, 0, xb, wb, 1.0, s.target, NULL, s.gidx + 8 * b, &sx, &s2,
                         s.p.nflip_trial)
            s.bcurv[b] = <float>s2
            continue
        s0 = 120 * amax / amax_row
        if s0 < 96:
            s0 = 96
        iq4_two_stage(s, b, xb, wb, amax, s0)

    if not row_scale_and_codes(type_id, s, nblk, expo, &d):
        memset(out, 0, kt_row_size(type_id, n))
        return KT_OK
    d = refine_row(type_id, s, n, d, s.p.refine_passes)

    iqkt_store_f32(out, s.fixed_d if s.use_fixed_d else unscale_row_scale(d, expo, tt.scale_abs_max * 126))
    for ib in range(n // QK):
        sb = out + 4 + ib * tt.block_bytes
        memset(sb + 96, 0, 32)
        for b in range(8):
            word = <uint32_t>s.bflag[8 * ib + b] | (<uint32_t>(s.bcode[8 * ib + b] + tt.scale_bias) << 1)
            for j in range(8):
                jj = 8 * b + j
                idx = s.gidx[64 * ib + jj]
                word |= <uint32_t>((idx >> 12) & 7) << (8 + 3 * j)
                sb[32 + jj] = <uint8_t>(idx & 0xFF)
                sb[96 + (jj & 31)] |= <uint8_t>(((idx >> 8) & 15) << (4 * (jj >> 5)))
            iqkt_store_u32(sb + 4 * b, word)
    return KT_OK
