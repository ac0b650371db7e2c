# The KT quantizer (included from kt_kernels.pxi).
#
# Shape of the algorithm (per row), common to the three types:
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

cdef int NFLIP_TRIAL = 2       # approximate search while trying block scales (IQ2/IQ3)
# IQ4 searches its trial scales (see IQ4_STEP) at effort 3 rather than 2:
# 2 was -5% time but +1.1% error (geometric mean of 6 synthetic cases,
# 16x4096 rows) and worse than the reference-style fixed list on outliers
# (+1.7%); at 3 every case is better than that list.  Ranking the trials
# with nearest_code at effort 0 or 1 and re-searching the best few did not
# pay (its fixed cost is most of a search's); the two-stage search used now
# (IQ4_TWO_STAGE) ranks with a batched search of a block's 8 groups.
cdef int NFLIP_TRIAL_IQ4 = 3
cdef int NFLIP_REFINE = 8      # exact search in the last refinement pass
cdef int NFLIP_EARLY = 3       # cheaper search in the refinement passes before the last
# Two passes rather than three: -14% / -9% / -6% time for +0.28% / +0.05% /
# +0.01% error (IQ2 / IQ3 / IQ4, geometric mean of 6 synthetic cases).
cdef int REFINE_PASSES = 2

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
    (measured alone: x1.30 / x1.20 on AVX512 IQ2 / IQ3 quantization, x1.09 /
    x1.06 on AVX2, where the scan is bound by arithmetic)."""
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
# The search space of (type, codebook).
cdef const SearchSpace *TYPE_SPACE[IQKT_NTYPES][2]
TYPE_SPACE[KT_IQ2][0] = &SPACE_IQ2
TYPE_SPACE[KT_IQ2][1] = NULL
TYPE_SPACE[KT_IQ3][0] = &SPACE_IQ3
TYPE_SPACE[KT_IQ3][1] = NULL
TYPE_SPACE[KT_IQ4][0] = &SPACE_IQ4[0]
TYPE_SPACE[KT_IQ4][1] = &SPACE_IQ4[1]

cdef int build_spaces() except -1:
    cdef int rc = 0
    with nogil:
        rc |= build_space(&SPACE_IQ2, CB8, KT_CODEBOOK_SIZE, 8, iqkt_type_info(KT_IQ2).search_levels, 0)
        rc |= build_space(&SPACE_IQ3, CB8, KT_CODEBOOK_SIZE, 8, iqkt_type_info(KT_IQ3).search_levels, 1)
        # IQ4: 6 levels (1296 cells of ~25 codes) rather than 4 (256 cells of
        # ~128): tighter cell bounds; the exact search scans fewer codes and
        # the approximate one (see NFLIP_TRIAL_IQ4) is better per instruction.
        # Measured against 4 levels: 5 levels -9%, 6 levels -14%, 8 levels
        # -2% instructions (AVX2 variant, whole IQ4 quantize).
        rc |= build_space(&SPACE_IQ4[0], CB4, IQ4_CODEBOOK, 4, IQ4_LEVELS, 0)
        rc |= build_space(&SPACE_IQ4[1], CB4 + 4 * IQ4_CODEBOOK, IQ4_CODEBOOK, 4, IQ4_LEVELS, 0)
    if (iqkt_type_info(KT_IQ4).search_levels != IQ4_LEVELS
            or iqkt_type_info(KT_IQ4).codebook_size != IQ4_CODEBOOK):
        raise ImportError("iqkt build error: IQ4_LEVELS / IQ4_CODEBOOK disagree with iqkt_types.h")
    if rc != 0:
        raise MemoryError("iqkt: cannot allocate the codebook search index")
    return 0

build_spaces()

# ---------------------------------------------------------------- per-row work

cdef struct RowScratch:
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
        if IQ4_EARLY_OWN_CODEBOOK and nflip < NFLIP_REFINE:
            # Passes before the last: only the block's own codebook, with the
            # batched approximate search (the last pass tries both exactly).
            # Measured: same error as both codebooks at nflip 3, -60% time of
            # the pass.
            if f != s.bflag[b]:
                continue
            iq4_batch_search(&SPACE_IQ4[f], CB4 + 4 * IQ4_CODEBOOK * f, xb, wb, dl, s.gidx + 8 * b,
                             cand[f], &sx, &s2, NULL, 3)
        elif IQ4_PROVEN_SKIP:
            # The batched search, then nearest_code only where its code is not
            # proven exact (the same result as searching every group).
            iq4_batch_search(&SPACE_IQ4[f], CB4 + 4 * IQ4_CODEBOOK * f, xb, wb, dl,
                             s.gidx + 8 * b if f == s.bflag[b] else NULL, cand[f], &sx, &s2,
                             &proven, 3)
            if proven != 0xFF:
                iq4_complete(&SPACE_IQ4[f], CB4 + 4 * IQ4_CODEBOOK * f, xb, wb, dl, cand[f], proven,
                             nflip, &sx, &s2)
        else:
            search_block(&SPACE_IQ4[f], CB4 + 4 * IQ4_CODEBOOK * f, 0, xb, wb, dl, s.target,
                         s.gidx + 8 * b if f == s.bflag[b] else NULL, cand[f], &sx, &s2, nflip)
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
        nflip = NFLIP_EARLY if it < iters - 1 else NFLIP_REFINE
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
        if den > 0:
            d_new = <float>(num / den)
            if d_new != d:
                changed = True
            d = d_new
        if not changed:
            if nflip == NFLIP_REFINE:
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


# ---------------------------------------------------------------- IQ2_KT / IQ3_KT

cdef int nearest_table_code(const iqkt_type_traits *t, float v) noexcept nogil:
    """The code whose tabled scale is nearest to v (ties: the lower code)."""
    cdef int c, best = t.scale_code_min
    cdef float e, best_e = HUGE_VALF
    for c in range(t.scale_code_min, t.scale_code_max + 1):
        e = fabsf(v - <float>t.scale_values[c])
        if e < best_e:
            best_e = e
            best = c
    return best


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
                         NFLIP_TRIAL)
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
                         trial_idx, &sx, &s2, NFLIP_TRIAL)
            if s2 > 0:
                score = sx * sx / s2
                if score > best_score:
                    best_score = score
                    s.bscale[b] = <float>(sx / s2)
                    s.bcurv[b] = <float>s2
                    for g in range(4):
                        s.gidx[4 * b + g] = trial_idx[g]

    # 4. row scale and block codes, jointly.
    if not choose_row_scale(type_id, s, nblk, &d):
        memset(out, 0, kt_row_size(type_id, n))
        return KT_OK

    # 5. re-search at the final block scales, refit d.
    d = refine_row(type_id, s, n, d, REFINE_PASSES)

    # Encode.
    max_prod = tt.scale_abs_max * 126
    iqkt_store_f32(out, unscale_row_scale(d, expo, max_prod))
    for ib in range(n // QK):
        sb = out + 4 + ib * tt.block_bytes
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


# ---------------------------------------------------------------- IQ4_KT

cdef enum:
    IQ4_PAIRS = 4               # (sign, codebook) pairs: sign = pair >> 1, codebook = pair & 1
    IQ4_STEPS = 3               # local-search steps per pair (most)
    IQ4_MAX_TRIALS = IQ4_PAIRS * (1 + 2 * IQ4_STEPS)

# Denominator steps of the local search over each pair's trial scale
# amax / denom (denom starts at s0).  Measured against the reference-style
# fixed list (denominators s0 - 16 .. s0 + 16 in steps of 8; 20 searches per
# group, as here), both at search effort 3, 6 synthetic cases (Gaussian,
# Student-t 3, 0.5% x20 outliers; with/without chi-square imatrix), 16x4096
# rows: error -2.7% (geometric mean; every case better, Gaussian -6%), same
# time.  The range of scales matters more than their density: a third step
# of 6 gave -5.2% for +29% time; one step of 24 (12 searches) +2.4% for -25%;
# searching only the 2 or 3 pairs best at s0 loses 1-5%.
cdef int IQ4_STEP[IQ4_STEPS]
IQ4_STEP[0] = 24
IQ4_STEP[1] = 12
IQ4_STEP[2] = 6
cdef int IQ4_NSTEPS = 2


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
    of its nflips (3 everywhere by default; see IQ4_RANK_FLIPS) coordinates
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


cdef void iq4_trial(RowScratch *s, int64_t b, const float *xb, const float *wb, float amax,
                    float denom, int pair, const int32_t *hint, int32_t *idx, double *score,
                    double *best_score, int nflip) noexcept nogil:
    """Search block b at trial scale +-amax/denom (sign and codebook from
    pair) into idx; score = its least-squares score (-1 if none).  Makes it
    the block's choice if the score beats best_score."""
    cdef double sx, s2
    cdef int f = pair & 1
    search_block(&SPACE_IQ4[f], CB4 + 4 * IQ4_CODEBOOK * f, 0, xb, wb,
                 iq4_trial_scale(pair, amax, denom), s.target, hint, idx, &sx, &s2, nflip)
    iq4_keep_if_better(s, b, f, idx, sx, s2, score, best_score)


# The trial list is searched in two stages: every trial with the batched
# approximate search (iq4_batch_search) to rank them, then the IQ4_KEEP best
# (by that score, over all pairs) again at NFLIP_TRIAL_IQ4, hinted by their
# approximate indices; the best of those is the block's choice.  Measured on
# 6 synthetic cases (Gaussian, Student-t 3, 0.5% x20 outliers; with/without
# chi-square imatrix; 16x4096 rows) against searching every trial at
# NFLIP_TRIAL_IQ4 (IQ4_TWO_STAGE = 0): see the project notes; keeping 4 is
# about +2% error (geometric mean, outliers with imatrix +5%) for about 1.5x
# speed; keeping 2 or none is faster but loses up to 8-9% on that case.
cdef int IQ4_TWO_STAGE = 1
cdef int IQ4_KEEP = 4
cdef int IQ4_EARLY_OWN_CODEBOOK = 1
cdef int IQ4_PROVEN_SKIP = 1
# Error margins (residual error of the block, sum w x^2 - score): a pair
# takes local-search step st only while its best error is within
# IQ4_STEP_MARGIN[st] times the best error of all pairs so far (the local
# search runs breadth first, so step 0 compares the pairs at s0), and a
# ranked trial is re-searched only while its error is within IQ4_KEEP_MARGIN
# times the best ranked error.  0 = no margin.  Measured on the 6 synthetic
# cases against no margins (same trials, same bytes as main 5bc96a5):
# (4, 1.4) + 1.15: x1.28 speed, error +1.3% geometric mean (max +3.1%,
# Student-t imatrix); against main at 206a211 +3.2% (max +5.4%, outliers
# with imatrix).  (4, 1.3) + 1.2 is as fast but +0.2% error and loses 18% on
# the heavy-tailed golden case (0.632 -> 0.748 of the reference).  Tried:
# s0 margin 1.3 or 2 (x1.38 / x1.32 but +6% / +2.6%), step margin 1.15 or
# 1.08 (x1.16 / x1.15, +2-2.4%), a third step (6) for the best pair only
# (x1.06 for -0.9%, then the others cost more), re-search margin 1.05 (+3% on
# one case).
cdef double IQ4_STEP_MARGIN[IQ4_STEPS]
IQ4_STEP_MARGIN[0] = 4.0
IQ4_STEP_MARGIN[1] = 1.4
IQ4_STEP_MARGIN[2] = 0
cdef double IQ4_KEEP_MARGIN = 1.15
# Coordinates flipped by the ranking's batched search.  Measured: 2 is x1.07
# for +0.7% error (max +2%), 4 is slower and worse (+1.3%; the ranking then
# favours trials the re-search at NFLIP_TRIAL_IQ4 cannot match).
cdef int IQ4_RANK_FLIPS = 3


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
    """The block's trials in two stages (see IQ4_KEEP)."""
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
    # The same trial list as the one-stage search (quantize_row_iq4).
    energy = 0
    for t in range(32):
        energy += <double>wb[t] * xb[t] * xb[t]
    for pr in range(IQ4_PAIRS):
        iq4_rank_trial(pr, xb, wb, amax, s0, NULL, cand[pr], &cscore[pr], &cproven[pr],
                       IQ4_RANK_FLIPS)
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
    # (IQ4_STEP_MARGIN[st]) stops there.
    for st in range(IQ4_NSTEPS):
        for pr in range(IQ4_PAIRS):
            if not active[pr]:
                continue
            if (IQ4_STEP_MARGIN[st] > 0
                    and energy - pbest[pr] > IQ4_STEP_MARGIN[st] * (energy - top)):
                active[pr] = False
                continue
            off = pcen[pr]
            for side in range(2):
                denom = pcen[pr] + (IQ4_STEP[st] if side else -IQ4_STEP[st])
                iq4_rank_trial(pr, xb, wb, amax, denom, cand[pcur[pr]], cand[ntr],
                               &cscore[ntr], &cproven[ntr], IQ4_RANK_FLIPS)
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
    for kk in range(IQ4_KEEP if IQ4_KEEP < ntr else ntr):
        pick = -1
        for t in range(ntr):     # the best not yet taken (ties: the earlier trial)
            if not taken[t] and (pick < 0 or cscore[t] > cscore[pick]):
                pick = t
        taken[pick] = True
        if kk == 0:
            top = cscore[pick]
        elif IQ4_KEEP_MARGIN > 0 and energy - cscore[pick] > IQ4_KEEP_MARGIN * (energy - top):
            break
        if not IQ4_PROVEN_SKIP:
            iq4_trial(s, b, xb, wb, amax, cden[pick], cpair[pick], cand[pick], idx, &sc,
                      &best_score, NFLIP_TRIAL_IQ4)
            continue
        # Only the groups whose ranking code is not proven exact.
        f = cpair[pick] & 1
        iq4_complete(&SPACE_IQ4[f], CB4 + 4 * IQ4_CODEBOOK * f, xb, wb,
                     iq4_trial_scale(cpair[pick], amax, cden[pick]), cand[pick], cproven[pick],
                     NFLIP_TRIAL_IQ4, &sx, &s2)
        iq4_keep_if_better(s, b, f, cand[pick], sx, s2, &sc, &best_score)


cdef int quantize_row_iq4(int type_id, const float *xrow, int64_t n, RowScratch *s, uint8_t *out) noexcept nogil:
    cdef int64_t nblk = n // 32, b, j, ib
    cdef int expo, k, jj, pr, st, side, ntr, cur
    cdef float amax_row, amax, s0, d, centre, off, denom
    cdef double sx, s2, best_score, best_here
    cdef float *xb
    cdef float *wb
    cdef int32_t cand[IQ4_MAX_TRIALS][8]   # indices found by each trial (hints for the next)
    cdef double cscore[IQ4_MAX_TRIALS]
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
                         NFLIP_TRIAL)
            s.bcurv[b] = <float>s2
            continue
        s0 = 120 * amax / amax_row
        if s0 < 96:
            s0 = 96
        if IQ4_TWO_STAGE:
            iq4_two_stage(s, b, xb, wb, amax, s0)
            continue
        # Every (sign, codebook) pair at denominator s0, then per pair a
        # local search over the denominator (both sides of the best so far,
        # steps IQ4_STEP), all at search effort NFLIP_TRIAL_IQ4.
        for pr in range(IQ4_PAIRS):
            iq4_trial(s, b, xb, wb, amax, s0, pr, NULL, cand[pr], &cscore[pr], &best_score,
                      NFLIP_TRIAL_IQ4)
        ntr = IQ4_PAIRS
        for pr in range(IQ4_PAIRS):
            cur = pr
            best_here = cscore[cur]
            centre = s0
            for st in range(IQ4_NSTEPS):
                off = centre
                for side in range(2):
                    denom = centre + (IQ4_STEP[st] if side else -IQ4_STEP[st])
                    iq4_trial(s, b, xb, wb, amax, denom, pr, cand[cur], cand[ntr],
                              &cscore[ntr], &best_score, NFLIP_TRIAL_IQ4)
                    if cscore[ntr] > best_here:
                        best_here = cscore[ntr]
                        off = denom
                        cur = ntr
                    ntr += 1
                centre = off

    if not choose_row_scale(type_id, s, nblk, &d):
        memset(out, 0, kt_row_size(type_id, n))
        return KT_OK
    d = refine_row(type_id, s, n, d, REFINE_PASSES)

    iqkt_store_f32(out, unscale_row_scale(d, expo, tt.scale_abs_max * 126))
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


# ---------------------------------------------------------------- entry point

ctypedef int (*quantize_row_fn)(int type_id, const float *xrow, int64_t n, RowScratch *s,
                                uint8_t *out) noexcept nogil
# The row quantizer of each type.
cdef quantize_row_fn QUANTIZE_ROW[IQKT_NTYPES]
QUANTIZE_ROW[KT_IQ2] = quantize_row_iq23
QUANTIZE_ROW[KT_IQ3] = quantize_row_iq23
QUANTIZE_ROW[KT_IQ4] = quantize_row_iq4

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
    bytes).  imatrix: NULL or n finite non-negative importances.  row_err:
    NULL or nrows doubles receiving each row's relative squared error
    (imatrix-weighted when an imatrix is given)."""
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
    rc = alloc_scratch(&s, n, imatrix != NULL, rs)
    if rc != KT_OK:
        return rc
    if imatrix != NULL:
        # Scale-free: only ratios of importances matter; normalising keeps
        # huge imatrix values from overflowing.
        for j in range(n):
            s.imn[j] = imatrix[j] / immax if immax > 0 else 1.0
    for r in range(nrows):
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
    search space 0 (IQ2), 1 (IQ3 magnitudes), 2 / 3 (IQ4 codebook 0 / 1).
    nflip >= dim: exact.  Returns int32 codebook indices."""
    import numpy as np
    cdef const SearchSpace *sp
    if space < 0 or space > 3:
        raise ValueError("nearest_codes: space must be 0..3")
    sp = &SPACE_IQ2 if space == 0 else (&SPACE_IQ3 if space == 1 else &SPACE_IQ4[space - 2])
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


def set_quantizer_knobs(**changes):
    """Experiment hook (process-wide, not thread-safe): set quantizer knobs by
    name and return a dict of the previous values of ALL knobs (pass it back
    as keyword arguments to restore them).  Knobs: nflip_trial (search
    effort of the IQ2/IQ3 trial phase), nflip_early (refinement passes before
    the last), nflip_refine (the last pass; >= the group size is exact),
    refine_passes, and for IQ4: nflip_trial_iq4 (effort of the re-searched
    trials), iq4_two_stage (rank every trial with the batched
    search, re-search the best), iq4_keep (how many), iq4_keep_margin (only
    those within this error factor of the best), iq4_early_own_codebook,
    iq4_proven_skip (re-search only groups not proven exact), iq4_nsteps /
    iq4_steps / iq4_step_margin (local search over the scale denominator),
    iq4_rank_flips (coordinates the batched search may flip)."""
    global NFLIP_TRIAL, NFLIP_EARLY, REFINE_PASSES, NFLIP_TRIAL_IQ4
    global IQ4_TWO_STAGE, IQ4_KEEP, IQ4_EARLY_OWN_CODEBOOK, IQ4_PROVEN_SKIP
    global IQ4_NSTEPS, IQ4_RANK_FLIPS, IQ4_KEEP_MARGIN, NFLIP_REFINE
    prev = dict(nflip_trial=NFLIP_TRIAL, nflip_early=NFLIP_EARLY, nflip_refine=NFLIP_REFINE,
                refine_passes=REFINE_PASSES,
                nflip_trial_iq4=NFLIP_TRIAL_IQ4, iq4_two_stage=IQ4_TWO_STAGE, iq4_keep=IQ4_KEEP,
                iq4_keep_margin=IQ4_KEEP_MARGIN, iq4_early_own_codebook=IQ4_EARLY_OWN_CODEBOOK,
                iq4_proven_skip=IQ4_PROVEN_SKIP, iq4_nsteps=IQ4_NSTEPS,
                iq4_steps=[IQ4_STEP[i] for i in range(IQ4_STEPS)],
                iq4_step_margin=[IQ4_STEP_MARGIN[i] for i in range(IQ4_STEPS)],
                iq4_rank_flips=IQ4_RANK_FLIPS)
    unknown = set(changes) - set(prev)
    if unknown:
        raise TypeError("set_quantizer_knobs: unknown knob(s) %s" % ", ".join(sorted(unknown)))
    v = changes.get("nflip_trial")
    if v is not None:
        NFLIP_TRIAL = max(0, int(v))
    v = changes.get("nflip_early")
    if v is not None:
        NFLIP_EARLY = max(0, int(v))
    v = changes.get("refine_passes")
    if v is not None:
        REFINE_PASSES = max(1, int(v))
    v = changes.get("nflip_trial_iq4")
    if v is not None:
        NFLIP_TRIAL_IQ4 = max(0, int(v))
    v = changes.get("iq4_two_stage")
    if v is not None:
        IQ4_TWO_STAGE = 1 if v else 0
    v = changes.get("iq4_keep")
    if v is not None:
        IQ4_KEEP = min(max(1, int(v)), IQ4_MAX_TRIALS)
    v = changes.get("iq4_keep_margin")
    if v is not None:
        IQ4_KEEP_MARGIN = float(v)
    v = changes.get("iq4_early_own_codebook")
    if v is not None:
        IQ4_EARLY_OWN_CODEBOOK = 1 if v else 0
    v = changes.get("iq4_proven_skip")
    if v is not None:
        IQ4_PROVEN_SKIP = 1 if v else 0
    v = changes.get("iq4_nsteps")
    if v is not None:
        IQ4_NSTEPS = min(max(0, int(v)), IQ4_STEPS)
    v = changes.get("iq4_steps")
    if v is not None:
        for i, x in enumerate(list(v)[:IQ4_STEPS]):
            IQ4_STEP[i] = int(x)
    v = changes.get("iq4_step_margin")
    if v is not None:
        for i, x in enumerate(list(v)[:IQ4_STEPS]):
            IQ4_STEP_MARGIN[i] = float(x)
    v = changes.get("nflip_refine")
    if v is not None:
        NFLIP_REFINE = max(0, int(v))
    v = changes.get("iq4_rank_flips")
    if v is not None:
        IQ4_RANK_FLIPS = min(max(0, int(v)), 4)
    return prev
