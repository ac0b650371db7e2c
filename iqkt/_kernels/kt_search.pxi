# The exact nearest-codeword search and its index over the codebooks (included from kt_quantize.pxi, which describes the algorithm).

cdef enum:
    # IQ4_KT's search_levels and codebook_size (iqkt_types.h), as compile-time
    # constants for array sizes; checked against the table at import.
    IQ4_LEVELS = 6              # grid levels per coordinate of the IQ4 search spaces
    IQ4_CODEBOOK = 32768
    # Cells with fewer 16-code blocks are scanned whole: bounding the blocks
    # would cost about as much as scanning them (IQ4 cells hold ~2 blocks).
    BOUND_MIN_BLOCKS = 3
    MAX_DIM = 8
    MAX_LEVELS = 8

cdef struct SearchSpace:
    int dim                     # values per group: 8 (IQ2/IQ3) or 4 (IQ4)
    int levels                  # grid levels per coordinate
    int ncells                  # levels ** dim
    float thr[MAX_LEVELS]       # level(v) = number of thresholds below v
    float lo[MAX_LEVELS]        # smallest value any code has in a level
    float hi[MAX_LEVELS]        # largest value any code has in a level
    int monotone                # no empty level: penalties grow away from a target's level
    int32_t *cell_start         # ncells + 1 offsets, in blocks of 16 codes
    int8_t *vals                # per 16-code block: dim rows of 16 values (small: the scan
                                # is bound by memory traffic once blocks are pruned)
    uint16_t *idx               # codebook index of each slot (padding: a copy of a real slot)
    const int8_t *cb            # the codebook itself, index order (the lines the quantizer
    int take_abs                # reads for the chosen codes): values, absolute if take_abs
    int32_t *cell_chunk         # ncells + 1 offsets, in chunks of up to 16 blocks
    int8_t *box                 # per chunk, per coordinate k: 16 smallest then 16 largest
                                # values of k, one per block (dim * 32 bytes, contiguous:
                                # bounding a chunk touches a few cache lines, not 2 * dim)


cdef inline int value_level(const SearchSpace *sp, float v) noexcept nogil:
    cdef int l = 0
    while l < sp.levels - 1 and v > sp.thr[l]:
        l += 1
    return l


cdef int build_space(SearchSpace *sp, const int8_t *cb, int ncodes, int dim, int levels,
                     int take_abs) noexcept nogil:
    """Index ncodes groups of dim int8 values (absolute values if take_abs)."""
    cdef int64_t hist[256]
    cdef int64_t total, acc, target
    cdef int i, j, k, l, v, cell, pos, nslots, b, lo, hi
    cdef int8_t *box
    cdef int8_t *byidx = NULL
    cdef int32_t *slot = NULL
    if ncodes > 65536:          # indices are stored as uint16
        return KT_ERR_ARG
    cdef int32_t *fill
    cdef int32_t *keys = NULL
    cdef uint8_t level_of[256]
    memset(hist, 0, sizeof(hist))
    sp.dim = dim
    sp.levels = levels
    sp.ncells = 1
    for k in range(dim):
        sp.ncells *= levels
    for i in range(ncodes * dim):
        v = cb[i]
        if take_abs and v < 0:
            v = -v
        hist[v + 128] += 1
    # Thresholds at the value quantiles, placed between integers so every
    # code value falls strictly on one side.
    total = ncodes * dim
    acc = 0
    l = 0
    for v in range(256):
        acc += hist[v]
        while l < levels - 1 and acc * levels >= (l + 1) * total:
            sp.thr[l] = <float>(v - 128) + 0.5
            l += 1
    for l in range(levels):
        sp.lo[l] = HUGE_VALF
        sp.hi[l] = -HUGE_VALF
    for v in range(256):
        if hist[v]:
            l = value_level(sp, <float>(v - 128))
            if <float>(v - 128) < sp.lo[l]:
                sp.lo[l] = <float>(v - 128)
            if <float>(v - 128) > sp.hi[l]:
                sp.hi[l] = <float>(v - 128)
    sp.monotone = 1
    for l in range(levels):
        if sp.lo[l] > sp.hi[l]:        # empty level: make its gap infinite
            sp.monotone = 0
            sp.lo[l] = HUGE_VALF
            sp.hi[l] = HUGE_VALF
    for v in range(256):
        level_of[v] = <uint8_t>value_level(sp, <float>(v - 128))
    # Count codes per cell, round each cell up to whole 16-code blocks.
    sp.cell_start = <int32_t *>malloc((sp.ncells + 1) * sizeof(int32_t))
    fill = <int32_t *>malloc((sp.ncells + 1) * sizeof(int32_t))
    sp.cb = cb
    sp.take_abs = take_abs
    byidx = <int8_t *>malloc(<size_t>ncodes * dim * sizeof(int8_t))
    if sp.cell_start == NULL or fill == NULL or byidx == NULL:
        free(fill)
        free(byidx)
        free(slot)
        return KT_ERR_NOMEM
    memset(fill, 0, (sp.ncells + 1) * sizeof(int32_t))
    for i in range(ncodes):
        fill[code_cell(sp, level_of, cb + i * dim, take_abs)] += 1
    sp.cell_start[0] = 0
    for cell in range(sp.ncells):
        sp.cell_start[cell + 1] = sp.cell_start[cell] + (fill[cell] + 15) // 16
    nslots = sp.cell_start[sp.ncells] * 16
    sp.vals = <int8_t *>malloc(<size_t>nslots * dim * sizeof(int8_t))
    slot = <int32_t *>malloc(<size_t>nslots * sizeof(int32_t))
    if sp.vals == NULL or slot == NULL:
        free(fill)
        free(byidx)
        free(slot)
        return KT_ERR_NOMEM
    # Padding slots (marked INT32_MAX until filled below).
    for i in range(nslots):
        slot[i] = 0x7FFFFFFF
    for cell in range(sp.ncells):
        fill[cell] = sp.cell_start[cell] * 16
    # First ascending index order inside a cell ...
    for i in range(ncodes):
        cell = code_cell(sp, level_of, cb + i * dim, take_abs)
        pos = fill[cell]
        fill[cell] += 1
        slot[pos] = i
        for k in range(dim):
            v = cb[i * dim + k]
            if take_abs and v < 0:
                v = -v
            byidx[i * dim + k] = <int8_t>v
    # ... then each cell reordered so that its 16-code blocks are spatially
    # tight (their bounding boxes prune well); the order of codes does not
    # change any result: the scan's minimum is taken in the total order
    # (distance, index).
    sp.cell_chunk = <int32_t *>malloc((sp.ncells + 1) * sizeof(int32_t))
    keys = <int32_t *>malloc(<size_t>nslots * sizeof(int32_t))
    if sp.cell_chunk == NULL or keys == NULL:
        free(fill)
        free(keys)
        free(byidx)
        free(slot)
        return KT_ERR_NOMEM
    sp.cell_chunk[0] = 0
    for cell in range(sp.ncells):
        sp.cell_chunk[cell + 1] = (sp.cell_chunk[cell]
                                   + (sp.cell_start[cell + 1] - sp.cell_start[cell] + 15) // 16)
    # Zeroed: the lanes of a chunk's last blocks past the cell's end are
    # read but never used.
    sp.box = <int8_t *>calloc(<size_t>sp.cell_chunk[sp.ncells] * dim * 32, sizeof(int8_t))
    if sp.box == NULL:
        free(fill)
        free(keys)
        free(byidx)
        free(slot)
        return KT_ERR_NOMEM
    for cell in range(sp.ncells):
        split_blocks(byidx, dim, slot + sp.cell_start[cell] * 16,
                     fill[cell] - sp.cell_start[cell] * 16, keys)
    # A padding slot repeats the first code of its block, index included: a
    # duplicate of (distance, index) never changes the minimum.
    for pos in range(nslots):
        if slot[pos] == 0x7FFFFFFF:
            slot[pos] = slot[pos - pos % 16]
        i = slot[pos]
        b = pos // 16
        for k in range(dim):
            sp.vals[b * dim * 16 + k * 16 + pos % 16] = byidx[i * dim + k]
    for cell in range(sp.ncells):
        for b in range(sp.cell_start[cell], sp.cell_start[cell + 1]):
            box = (sp.box + (<size_t>sp.cell_chunk[cell] + (b - sp.cell_start[cell]) // 16) * dim * 32
                   + (b - sp.cell_start[cell]) % 16)
            for k in range(dim):
                lo = 127
                hi = -128
                for j in range(16):
                    v = sp.vals[b * dim * 16 + k * 16 + j]
                    lo = v if v < lo else lo
                    hi = v if v > hi else hi
                box[32 * k] = <int8_t>lo
                box[32 * k + 16] = <int8_t>hi
    # Indices as uint16 (every codebook here has at most 65536 codes): half
    # the cache lines of int32 for the picks.
    sp.idx = <uint16_t *>malloc(<size_t>nslots * sizeof(uint16_t))
    if sp.idx != NULL:
        for pos in range(nslots):
            sp.idx[pos] = <uint16_t>slot[pos]
    free(fill)
    free(keys)
    free(byidx)
    free(slot)
    return KT_OK if sp.idx != NULL else KT_ERR_NOMEM


cdef void split_blocks(const int8_t *byidx, int dim, int32_t *ids, int m, int32_t *keys) noexcept nogil:
    """Order the m codebook indices ids[] so that consecutive runs of 16 are
    compact: split along the coordinate of largest spread (variance), the first
    part taking half of the whole blocks, and recurse (a k-d split)."""
    cdef int nb = (m + 15) // 16, k, j, best_k = 0, left
    cdef int64_t s, s2, spread, best = -1
    cdef int v
    cdef int32_t count[257]
    if nb <= 1:
        return
    for k in range(dim):
        s = 0
        s2 = 0
        for j in range(m):
            v = <int>byidx[ids[j] * dim + k]
            s += v
            s2 += v * v
        spread = m * s2 - s * s
        if spread > best:
            best = spread
            best_k = k
    # Stable counting sort by that coordinate's value (an integer in
    # [-128, 127]): deterministic and cheap enough for import time.
    memset(count, 0, sizeof(count))
    for j in range(m):
        count[<int>byidx[ids[j] * dim + best_k] + 129] += 1
    for v in range(1, 257):
        count[v] += count[v - 1]
    for j in range(m):
        v = <int>byidx[ids[j] * dim + best_k] + 128
        keys[count[v]] = ids[j]
        count[v] += 1
    memcpy(ids, keys, m * sizeof(int32_t))
    left = 16 * (nb // 2)
    split_blocks(byidx, dim, ids, left, keys)
    split_blocks(byidx, dim, ids + left, m - left, keys)


cdef inline int code_cell(const SearchSpace *sp, const uint8_t *level_of, const int8_t *c,
                          int take_abs) noexcept nogil:
    cdef int k, v, cell = 0
    for k in range(sp.dim):
        v = c[k]
        if take_abs and v < 0:
            v = -v
        cell = cell * sp.levels + level_of[v + 128]
    return cell


cdef struct SearchState:
    const SearchSpace *sp
    const float *t              # target, in codebook units
    const float *w              # importance of each coordinate (>= 0)
    float pen[MAX_DIM][MAX_LEVELS]
    int order[MAX_DIM][MAX_LEVELS]  # per coordinate: own level, then increasing penalty
    int nlev[MAX_DIM]           # levels walked per coordinate (1 = own level only)
    float best_e
    int32_t best_i


cdef inline void scan_cell_dim(SearchState *st, int cell, int dim) noexcept nogil:
    """Scan the blocks of a cell whose bounding-box bound can beat the best
    (dim: the space's, passed as a constant so the helpers unroll)."""
    cdef const SearchSpace *sp = st.sp
    cdef int32_t b0 = sp.cell_start[cell], b1 = sp.cell_start[cell + 1], n
    cdef const int8_t *box = sp.box + <size_t>sp.cell_chunk[cell] * dim * 32
    cdef float lb[16]
    cdef uint32_t mask
    if b1 - b0 < BOUND_MIN_BLOCKS:
        iqkt_scan_codes(sp.vals + <size_t>b0 * dim * 16, sp.idx + <size_t>b0 * 16,
                        b1 - b0, dim, st.t, st.w, &st.best_e, &st.best_i)
        return
    while b0 < b1:
        n = b1 - b0 if b1 - b0 < 16 else 16
        mask = iqkt_block_bounds(box, n, dim, st.t, st.w, st.best_e, lb)
        iqkt_prefetch_blocks(sp.vals + <size_t>b0 * dim * 16, sp.idx + <size_t>b0 * 16, mask, dim)
        iqkt_scan_masked(sp.vals + <size_t>b0 * dim * 16, sp.idx + <size_t>b0 * 16, mask, lb,
                         dim, st.t, st.w, &st.best_e, &st.best_i)
        b0 += n
        box += dim * 32


cdef void scan_cell(SearchState *st, int cell) noexcept nogil:
    if st.sp.dim == 8:
        scan_cell_dim(st, cell, 8)
    else:
        scan_cell_dim(st, cell, 4)


cdef inline void trellis8_code(uint32_t i, int take_abs, int *q) noexcept nogil:
    """q = line i of CB8 (absolute values if take_abs), computed by the same
    trellis steps that build CB8.  A few multiplies instead of a likely cache
    miss: the codebook is 512 KiB and read at random, and leaving it out of
    the searches' working set leaves the cache to the search space.  The
    8-D spaces (IQ2/IQ3) are the ones built on CB8."""
    cdef uint32_t state = i + IQKT_TRELLIS_OFFSET
    cdef int k, v
    for k in range(8):
        v = trellis_step(&state)
        if take_abs and v < 0:
            v = -v
        q[k] = v


cdef inline float code_distance(const SearchSpace *sp, const float *t, const float *w,
                                int32_t i) noexcept nogil:
    """The distance scan_cell computes, for codebook index i."""
    cdef float e = 0, diff
    cdef int k
    cdef const int8_t *c = sp.cb + i * sp.dim
    cdef int v
    cdef int q[8]
    if sp.dim == 8:
        trellis8_code(<uint32_t>i, sp.take_abs, q)
        for k in range(8):
            diff = t[k] - <float>q[k]
            e = iqkt_fma(w[k] * diff, diff, e)
        return e
    for k in range(sp.dim):
        v = c[k]
        if sp.take_abs and v < 0:
            v = -v
        diff = t[k] - <float>v
        e = iqkt_fma(w[k] * diff, diff, e)
    return e


cdef void walk(SearchState *st, int k, int cell, float lb) noexcept nogil:
    cdef int j, l
    cdef float p
    cdef bint last = k == st.sp.dim - 1
    cell = cell * st.sp.levels
    for j in range(st.nlev[k]):
        l = st.order[k][j]
        p = lb + st.pen[k][l]
        # The slack keeps float rounding of the bound from ever pruning the
        # true minimum.
        if p * 0.99999 <= st.best_e:
            if last:
                scan_cell(st, cell + l)
            else:
                walk(st, k + 1, cell + l, p)
        elif st.sp.monotone:
            break       # the remaining levels have larger penalties: they fail too


cdef void walk_8x2(SearchState *st, int k, int cell, float lb) noexcept nogil:
    """walk for 8-D spaces of 2 levels (IQ2/IQ3), the shape as constants."""
    cdef int j, l
    cdef float p
    cell = cell * 2
    for j in range(st.nlev[k]):
        l = st.order[k][j]
        p = lb + st.pen[k][l]
        if p * 0.99999 <= st.best_e:
            if k == 7:
                scan_cell_dim(st, cell + l, 8)
            else:
                walk_8x2(st, k + 1, cell + l, p)
        elif st.sp.monotone:
            break


cdef enum:
    # Blocks search_8x2 collects before scanning them: enough to overlap the
    # work of many blocks, few enough that the best tightens as it goes
    # (flushing after ~48 blocks rather than ~500: -10% time, same result).
    SCAN_LIST = 64


cdef inline int collect_cell(SearchState *st, int cell, int32_t *blocks, int nb,
                             float *best) noexcept nogil:
    """Append to blocks[nb..] the blocks of cell whose bound can beat best
    (bounds of 16 blocks at a time; cells of few blocks are taken whole);
    returns the new count.  When the list is full it is scanned first, which
    also tightens best."""
    cdef const SearchSpace *sp = st.sp
    cdef int32_t b0 = sp.cell_start[cell], b1 = sp.cell_start[cell + 1]
    cdef const int8_t *box = sp.box + <size_t>sp.cell_chunk[cell] * 256
    cdef float lb[16]
    cdef bint whole = b1 - b0 < BOUND_MIN_BLOCKS
    cdef int n
    while b0 < b1:
        if nb > SCAN_LIST - 16:
            iqkt_scan_list(sp.vals, sp.idx, blocks, nb, 8, st.t, st.w, &st.best_e, &st.best_i)
            nb = 0
            best[0] = st.best_e
        n = b1 - b0 if b1 - b0 < 16 else 16
        nb = iqkt_append_mask(blocks, nb, b0, (1u << n) - 1 if whole else
                              iqkt_block_bounds(box, n, 8, st.t, st.w, best[0], lb))
        b0 += n
        box += 256
    return nb


cdef void search_8x2(SearchState *st) noexcept nogil:
    """The search walk_8x2 does (8-D spaces of 2 levels), reordered: the
    target's own cell first (its blocks bounded against the hint, the
    survivors scanned), which sets a good best; then every other allowed cell
    whose bound can beat it, its blocks bounded and the survivors collected
    and scanned in batches (a batch is scanned once it holds more than
    SCAN_LIST - 16 blocks).  The result is
    the same: the (distance, index) minimum over the allowed cells and the
    hint (a cell or block is skipped only when its bound exceeds the best, so
    it cannot hold the minimum).  The difference is the shape of the work:
    walk_8x2 runs a chain of bound, branch, scan and pick per block, each
    waiting on the last; here the blocks' work is independent and overlaps
    (gains: docs/perf-notes.md)."""
    cdef const SearchSpace *sp = st.sp
    cdef float pk[8][2]
    cdef float hs[16]
    cdef float ls[16]
    cdef float tmp[16]
    cdef int32_t blocks[SCAN_LIST + 16]
    cdef int freek[8]
    cdef int k, l, h, nfree = 0, own = 0, cell, nb = 0, sub, lev
    cdef uint32_t mask
    cdef float p, best
    for k in range(8):
        own = own * 2 + st.order[k][0]
        if st.nlev[k] > 1:
            freek[nfree] = k
            nfree += 1
    best = st.best_e
    nb = collect_cell(st, own, blocks, 0, &best)
    iqkt_scan_list(sp.vals, sp.idx, blocks, nb, 8, st.t, st.w, &st.best_e, &st.best_i)
    nb = 0
    if nfree == 0:
        return
    if not (st.best_e < HUGE_VALF):
        # No finite best (no hint, own cell empty or NaN): leave it to the
        # walk, which never leaves the frozen coordinates' own levels.
        walk_8x2(st, 0, 0, 0)
        return
    best = st.best_e
    if nfree <= 4:
        # Few free coordinates: every other allowed cell, bound by bound.
        for sub in range(1, 1 << nfree):
            cell = own
            for l in range(nfree):
                if (sub >> l) & 1:
                    cell ^= 1 << (7 - freek[l])
            p = 0
            for k in range(8):
                lev = (cell >> (7 - k)) & 1
                p = p + st.pen[k][lev]
            if p * 0.99999 <= best:
                nb = collect_cell(st, cell, blocks, nb, &best)
    else:
        for k in range(8):
            for l in range(2):
                # A frozen coordinate (nlev 1) keeps its own level.
                pk[k][l] = st.pen[k][l] if (st.nlev[k] > 1 or l == st.order[k][0]) else HUGE_VALF
        # Bounds of the cells' first and last 4 coordinates (cell = 16 h + l,
        # coordinate 0 the most significant bit, as in walk_8x2).
        for h in range(16):
            hs[h] = ((pk[0][(h >> 3) & 1] + pk[1][(h >> 2) & 1]) + pk[2][(h >> 1) & 1]) + pk[3][h & 1]
            ls[h] = ((pk[4][(h >> 3) & 1] + pk[5][(h >> 2) & 1]) + pk[6][(h >> 1) & 1]) + pk[7][h & 1]
        for h in range(16):
            if not (hs[h] * 0.99999 <= best):
                continue
            for l in range(16):
                tmp[l] = (hs[h] + ls[l]) * 0.99999
            mask = iqkt_le_mask16(tmp, best)
            if h == own >> 4:
                mask &= ~(1u << (own & 15))
            while mask:
                l = iqkt_lowest_bit(mask)
                mask &= mask - 1
                nb = collect_cell(st, 16 * h + l, blocks, nb, &best)
    iqkt_scan_list(sp.vals, sp.idx, blocks, nb, 8, st.t, st.w, &st.best_e, &st.best_i)


cdef void walk4(SearchState *st) noexcept nogil:
    """walk for 4-D spaces as four nested loops (same cells, same order, same
    bounds as the recursion; no calls, and the cell scan inlines)."""
    cdef const SearchSpace *sp = st.sp
    cdef int L = sp.levels, j0, j1, j2, j3, l0, l1, l2, l3
    cdef bint mono = sp.monotone
    cdef float p0, p1, p2, p3
    for j0 in range(st.nlev[0]):
        l0 = st.order[0][j0]
        p0 = 0 + st.pen[0][l0]
        if not (p0 * 0.99999 <= st.best_e):
            if mono:
                break
            continue
        for j1 in range(st.nlev[1]):
            l1 = st.order[1][j1]
            p1 = p0 + st.pen[1][l1]
            if not (p1 * 0.99999 <= st.best_e):
                if mono:
                    break
                continue
            for j2 in range(st.nlev[2]):
                l2 = st.order[2][j2]
                p2 = p1 + st.pen[2][l2]
                if not (p2 * 0.99999 <= st.best_e):
                    if mono:
                        break
                    continue
                for j3 in range(st.nlev[3]):
                    l3 = st.order[3][j3]
                    p3 = p2 + st.pen[3][l3]
                    if not (p3 * 0.99999 <= st.best_e):
                        if mono:
                            break
                        continue
                    scan_cell_dim(st, ((l0 * L + l1) * L + l2) * L + l3, 4)


cdef inline int32_t nearest_code_shape(const SearchSpace *sp, const float *t, const float *w,
                                      int32_t hint, int nflip, int dim, int levels) noexcept nogil:
    """Codebook index minimising sum_k w[k] * (t[k] - code[k])**2.

    nflip >= dim: exact.  Smaller nflip searches only the cells that differ
    from the target's own cell in the nflip coordinates that are cheapest to
    change (a fast approximation).  hint: an index (or -1) that is always a
    candidate, so the result is never worse than the hint."""
    cdef SearchState st
    cdef int k, l, own, j, m, lo_l, hi_l
    cdef float gap, gap2, tk
    cdef float flip_cost[MAX_DIM]
    st.sp = sp
    st.t = t
    st.w = w
    st.best_e = HUGE_VALF
    st.best_i = 0x7FFFFFFF
    if hint >= 0:
        st.best_i = hint
        st.best_e = code_distance(sp, t, w, hint)
    for k in range(dim):
        tk = t[k]
        # Branch-free forms of value_level and of the gap to [lo, hi] (the
        # same values: thresholds ascend; lo <= hi, or both +inf when empty).
        own = 0
        for l in range(levels - 1):
            own += tk > sp.thr[l]
        flip_cost[k] = HUGE_VALF
        for l in range(levels):
            gap = sp.lo[l] - tk
            gap2 = tk - sp.hi[l]
            gap = gap if gap > gap2 else gap2
            gap = gap if gap > 0 else 0
            st.pen[k][l] = w[k] * gap * gap
        # The cheapest other level: the own level's penalty is set aside for
        # the minimum (a branch-free chain of min ops; NaN never wins).
        gap2 = st.pen[k][own]
        st.pen[k][own] = HUGE_VALF
        for l in range(levels):
            flip_cost[k] = st.pen[k][l] if st.pen[k][l] < flip_cost[k] else flip_cost[k]
        st.pen[k][own] = gap2
        # Own level first (finds a good bound early), then the others in
        # increasing penalty, so walk can stop at the first that fails.
        # Penalties grow outward on each side of the own level (when no level
        # is empty), so this is a merge of the two sides.
        st.order[k][0] = own
        lo_l = own - 1
        hi_l = own + 1
        for j in range(1, levels):
            if hi_l >= levels or (lo_l >= 0 and st.pen[k][lo_l] <= st.pen[k][hi_l]):
                st.order[k][j] = lo_l
                lo_l -= 1
            else:
                st.order[k][j] = hi_l
                hi_l += 1
        st.nlev[k] = levels
    if nflip < dim:
        # Freeze all but the nflip cheapest coordinates (ties: lower k).
        for k in range(dim):
            m = 0
            for j in range(dim):
                if flip_cost[j] < flip_cost[k] or (flip_cost[j] == flip_cost[k] and j < k):
                    m += 1
            if m >= nflip:
                st.nlev[k] = 1
    if dim == 4:
        walk4(&st)
    elif dim == 8 and levels == 2:
        search_8x2(&st)
    else:
        walk(&st, 0, 0, 0)
    if st.best_i == 0x7FFFFFFF:     # only when every distance is NaN: cannot happen for finite input
        st.best_i = 0
    return st.best_i


cdef int32_t nearest_code(const SearchSpace *sp, const float *t, const float *w,
                          int32_t hint, int nflip) noexcept nogil:
    """nearest_code_shape for the space's shape; the shapes in use are passed
    as constants so the per-coordinate and per-level loops unroll."""
    if sp.dim == 8 and sp.levels == 2:
        return nearest_code_shape(sp, t, w, hint, nflip, 8, 2)
    if sp.dim == 4 and sp.levels == 6:
        return nearest_code_shape(sp, t, w, hint, nflip, 4, 6)
    return nearest_code_shape(sp, t, w, hint, nflip, sp.dim, sp.levels)


cdef SearchSpace SPACE_IQ2          # signed 8-value groups
cdef SearchSpace SPACE_IQ3          # magnitudes of 8-value groups
cdef SearchSpace SPACE_IQ4[2]       # the two 4-value codebooks of IQ4_KT
cdef SearchSpace SPACE_IQ1          # signed 8-value groups, the first 8192 codes (13-bit index)
# The search space of (type, codebook).
cdef const SearchSpace *TYPE_SPACE[IQKT_NTYPES][2]
TYPE_SPACE[KT_IQ2][0] = &SPACE_IQ2
TYPE_SPACE[KT_IQ2][1] = NULL
TYPE_SPACE[KT_IQ3][0] = &SPACE_IQ3
TYPE_SPACE[KT_IQ3][1] = NULL
TYPE_SPACE[KT_IQ4][0] = &SPACE_IQ4[0]
TYPE_SPACE[KT_IQ4][1] = &SPACE_IQ4[1]
TYPE_SPACE[KT_IQ1][0] = &SPACE_IQ1
TYPE_SPACE[KT_IQ1][1] = NULL

cdef int build_spaces() except -1:
    cdef int rc = 0
    with nogil:
        rc |= build_space(&SPACE_IQ2, CB8, KT_CODEBOOK_SIZE, 8, iqkt_type_info(KT_IQ2).search_levels, 0)
        rc |= build_space(&SPACE_IQ3, CB8, KT_CODEBOOK_SIZE, 8, iqkt_type_info(KT_IQ3).search_levels, 1)
        # IQ1_KT's seeds are IQ2_KT's (index + 4096): its codebook is CB8's first rows.
        rc |= build_space(&SPACE_IQ1, CB8, iqkt_type_info(KT_IQ1).codebook_size, 8,
                          iqkt_type_info(KT_IQ1).search_levels, 0)
        # IQ4: 6 levels (1296 cells of ~25 codes) rather than 4 (256 cells of
        # ~128): tighter cell bounds; the exact search scans fewer codes and
        # the approximate one (nflip_trial_iq4) is better per instruction
        # (docs/perf-notes.md).
        rc |= build_space(&SPACE_IQ4[0], CB4, IQ4_CODEBOOK, 4, IQ4_LEVELS, 0)
        rc |= build_space(&SPACE_IQ4[1], CB4 + 4 * IQ4_CODEBOOK, IQ4_CODEBOOK, 4, IQ4_LEVELS, 0)
    if (iqkt_type_info(KT_IQ4).search_levels != IQ4_LEVELS
            or iqkt_type_info(KT_IQ4).codebook_size != IQ4_CODEBOOK):
        raise ImportError("iqkt build error: IQ4_LEVELS / IQ4_CODEBOOK disagree with iqkt_types.h")
    if rc != 0:
        raise MemoryError("iqkt: cannot allocate the codebook search index")
    return 0

build_spaces()
