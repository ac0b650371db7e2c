# The KT quantizer (included from kt_kernels.pxi).
#
# Shape of the algorithm (per row), common to the three types:
#   1. scale the row by a power of two so that max|x| is in [0.5, 1): exact,
#      and it keeps every intermediate far from float overflow/underflow;
#   2. per-weight importance w (from the imatrix if given);
#   3. per 32-block: try a few trial scales, find a good codebook entry of
#      every group at each (a cheap, approximate nearest-neighbour search),
#      keep the trial with the best least-squares score;
#   4. pick the row scale d and the block scale codes jointly;
#   5. re-search every group at its final scale (exact search), refit d.
#
# The nearest-neighbour search runs on a k-d tree built once at import: a
# perfect binary tree whose leaves are 16 codes (one SIMD scan block).  Each
# internal node splits its codes at the median of the coordinate with the
# largest variance.  The walk visits the nearer child first and skips a
# subtree when a lower bound of its distance (kept incrementally: per
# coordinate, the squared gap from the target to the subtree's extent in the
# coordinates split so far) cannot beat the best distance found.  Exact mode
# visits every subtree that might hold a better code; approximate mode stops
# after a fixed number of leaves (the first leaf is the target's own).
# Only the leaf scan is ISA-specific (iqkt_scan_codes); it computes every
# distance in the same order on every ISA and breaks ties by index, and the
# walk is plain scalar code, so the chosen code is the same everywhere.  The
# reference only searches one cluster of candidates.

cdef extern from "float.h":
    float FLT_MIN

# Tuning knobs (see set_quantizer_knobs; defaults measured in the notes).
cdef int TRIAL_LEAVES = 2       # leaves scanned per search while trying block scales
cdef int REFINE_LEAVES = 0      # leaves per search in all but the last refinement (0: exact)
cdef int USE_BEST_FIRST = 1
cdef int REFINE_ITERS = 3       # refinement passes
cdef int FINAL_LEAVES = 0       # leaves per search in the last refinement pass (0: exact)

cdef int64_t LEAF_COUNT[2]
cdef enum:
    MAX_DIM = 8
    LEAF_CODES = 16             # codes per leaf = one iqkt_scan_codes block
    MAX_DEPTH = 16

cdef struct SearchSpace:
    int dim                     # values per group: 8 (IQ2/IQ3) or 4 (IQ4)
    int depth                   # internal levels; leaves = 2**depth
    uint8_t *sdim               # split coordinate of each internal node
    float *elo                  # each node's smallest value in its parent's split coordinate
    float *ehi                  # ... and largest
    float *vals                 # per leaf: dim rows of 16 values
    int32_t *idx                # codebook index of each leaf slot
    float *byidx                # code values in codebook index order


cdef int build_space(SearchSpace *sp, const int8_t *cb, int ncodes, int dim, int take_abs) noexcept nogil:
    """Index ncodes (16 * a power of two) groups of dim int8 values
    (absolute values if take_abs) as a k-d tree."""
    cdef int32_t *perm = NULL
    cdef int32_t *tmp = NULL
    cdef int8_t *v = NULL
    cdef int32_t count[256]
    cdef int64_t s1, s2, var, best_var
    cdef int i, k, lvl, node, nnodes, nleaves, first, seg, beg, end, half, d, c, pos, child
    nleaves = ncodes // LEAF_CODES
    sp.dim = dim
    sp.depth = 0
    while (1 << sp.depth) < nleaves:
        sp.depth += 1
    if (1 << sp.depth) != nleaves or nleaves * LEAF_CODES != ncodes:
        return KT_ERR_SIZE
    nnodes = 2 * nleaves - 1
    sp.sdim = <uint8_t *>malloc(nnodes)
    sp.elo = <float *>malloc(nnodes * sizeof(float))
    sp.ehi = <float *>malloc(nnodes * sizeof(float))
    sp.vals = <float *>malloc(<size_t>ncodes * dim * sizeof(float))
    sp.idx = <int32_t *>malloc(ncodes * sizeof(int32_t))
    sp.byidx = <float *>malloc(<size_t>ncodes * dim * sizeof(float))
    perm = <int32_t *>malloc(ncodes * sizeof(int32_t))
    tmp = <int32_t *>malloc(ncodes * sizeof(int32_t))
    v = <int8_t *>malloc(<size_t>ncodes * dim)
    if (sp.sdim == NULL or sp.elo == NULL or sp.ehi == NULL or sp.vals == NULL or sp.idx == NULL
            or sp.byidx == NULL or perm == NULL or tmp == NULL or v == NULL):
        free(perm); free(tmp); free(v)
        return KT_ERR_NOMEM
    for i in range(ncodes * dim):
        c = cb[i]
        v[i] = <int8_t>(-c if take_abs and c < 0 else c)
        sp.byidx[i] = <float>v[i]
    for i in range(ncodes):
        perm[i] = i
    memset(sp.sdim, 0, nnodes)
    sp.elo[0] = -HUGE_VALF
    sp.ehi[0] = HUGE_VALF
    # Level by level: split every node's segment at the median of its
    # largest-variance coordinate (ties: lower coordinate).  A stable counting
    # sort keeps equal values in index order, so the tree is deterministic.
    for lvl in range(sp.depth):
        first = (1 << lvl) - 1
        seg = ncodes >> lvl
        half = seg // 2
        for node in range(first, 2 * first + 1):
            beg = (node - first) * seg
            end = beg + seg
            best_var = -1
            d = 0
            for k in range(dim):
                s1 = 0
                s2 = 0
                for i in range(beg, end):
                    c = v[perm[i] * dim + k]
                    s1 += c
                    s2 += c * c
                var = s2 * seg - s1 * s1
                if var > best_var:
                    best_var = var
                    d = k
            sp.sdim[node] = <uint8_t>d
            memset(count, 0, sizeof(count))
            for i in range(beg, end):
                count[v[perm[i] * dim + d] + 128] += 1
            pos = beg
            for c in range(256):
                k = count[c]
                count[c] = pos
                pos += k
            for i in range(beg, end):
                c = v[perm[i] * dim + d] + 128
                tmp[count[c]] = perm[i]
                count[c] += 1
            memcpy(perm + beg, tmp + beg, seg * sizeof(int32_t))
            for child in range(2):
                i = beg + child * half
                sp.elo[2 * node + 1 + child] = <float>v[perm[i] * dim + d]
                sp.ehi[2 * node + 1 + child] = <float>v[perm[i + half - 1] * dim + d]
    # Leaves in tree order; inside a leaf, ascending codebook index.
    for node in range(nleaves):
        i = node * LEAF_CODES
        for k in range(LEAF_CODES):
            tmp[k] = perm[i + k]
        sort_small(tmp, LEAF_CODES)
        for k in range(LEAF_CODES):
            sp.idx[i + k] = tmp[k]
            for c in range(dim):
                sp.vals[<size_t>node * dim * LEAF_CODES + c * LEAF_CODES + k] = <float>v[tmp[k] * dim + c]
    free(perm); free(tmp); free(v)
    return KT_OK


cdef void sort_small(int32_t *a, int n) noexcept nogil:
    cdef int i, j
    cdef int32_t x
    for i in range(1, n):
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


cdef struct SearchState:
    const SearchSpace *sp
    const float *t              # target, in codebook units
    const float *w              # importance of each coordinate (>= 0)
    double gap[MAX_DIM]         # w * squared gap per coordinate on the current path
    int first_leaf
    int leaves_left             # approximate mode: leaves still allowed (< 0: exact)
    float best_e
    int32_t best_i


cdef inline double gap_cost(const SearchState *st, int k, float lo, float hi) noexcept nogil:
    cdef double g = 0
    if st.t[k] < lo:
        g = <double>lo - st.t[k]
    elif st.t[k] > hi:
        g = <double>st.t[k] - hi
    return st.w[k] * g * g


cdef void walk(SearchState *st, int node, double bound) noexcept nogil:
    cdef const SearchSpace *sp = st.sp
    cdef int leaf, d, c, j
    cdef int kids[2]
    cdef double old, b
    cdef double cost[2]
    if node >= st.first_leaf:
        if st.leaves_left == 0:
            return
        if st.leaves_left > 0:
            st.leaves_left -= 1
        leaf = node - st.first_leaf
        LEAF_COUNT[0] += 1
        iqkt_scan_codes(sp.vals + <size_t>leaf * sp.dim * LEAF_CODES, sp.idx + leaf * LEAF_CODES,
                        1, sp.dim, st.t, st.w, &st.best_e, &st.best_i)
        return
    d = sp.sdim[node]
    LEAF_COUNT[1] += 1
    old = st.gap[d]
    for c in range(2):
        cost[c] = gap_cost(st, d, sp.elo[2 * node + 1 + c], sp.ehi[2 * node + 1 + c])
    kids[0] = 0 if cost[0] <= cost[1] else 1
    kids[1] = 1 - kids[0]
    for j in range(2):
        c = kids[j]
        b = bound - old + cost[c]
        # The slack keeps float rounding of the bound from ever pruning the
        # true minimum.
        if b * 0.99999 <= st.best_e and st.leaves_left != 0:
            st.gap[d] = cost[c]
            walk(st, 2 * node + 1 + c, b)
    st.gap[d] = old



cdef enum:
    HEAP_CAP = 256              # pending subtrees; beyond this, fall back to a depth-first walk


cdef struct Pending:
    double bound
    int node
    double gap[MAX_DIM]


cdef inline void heap_push(Pending *h, int *n, const Pending *e, int dim) noexcept nogil:
    cdef int i = n[0], parent
    n[0] += 1
    while i > 0:
        parent = (i - 1) >> 1
        if h[parent].bound < e.bound or (h[parent].bound == e.bound and h[parent].node < e.node):
            break
        h[i] = h[parent]
        i = parent
    h[i] = e[0]


cdef inline void heap_pop(Pending *h, int *n, Pending *out) noexcept nogil:
    cdef int i = 0, c, m
    cdef Pending last
    out[0] = h[0]
    n[0] -= 1
    m = n[0]
    if m == 0:
        return
    last = h[m]
    while True:
        c = 2 * i + 1
        if c >= m:
            break
        if c + 1 < m and (h[c + 1].bound < h[c].bound or (h[c + 1].bound == h[c].bound and h[c + 1].node < h[c].node)):
            c += 1
        if last.bound < h[c].bound or (last.bound == h[c].bound and last.node < h[c].node):
            break
        h[i] = h[c]
        i = c
    h[i] = last


cdef void best_first(SearchState *st) noexcept nogil:
    """Visit subtrees in increasing order of their lower bound: from each
    popped subtree descend to a leaf along the nearer children, queueing the
    farther ones.  Stops when no queued bound can beat the best distance (or
    the leaf budget is spent)."""
    cdef const SearchSpace *sp = st.sp
    cdef Pending heap[HEAP_CAP]
    cdef Pending cur, far
    cdef int nheap = 0, node, d, near, k
    cdef double cost0, cost1, nb, fb
    memset(&cur, 0, sizeof(Pending))
    heap_push(heap, &nheap, &cur, sp.dim)
    while nheap > 0 and st.leaves_left != 0:
        heap_pop(heap, &nheap, &cur)
        if cur.bound * 0.99999 > st.best_e:
            break
        node = cur.node
        while node < st.first_leaf:
            d = sp.sdim[node]
            for k in range(sp.dim):
                st.gap[k] = cur.gap[k]
            cost0 = gap_cost(st, d, sp.elo[2 * node + 1], sp.ehi[2 * node + 1])
            cost1 = gap_cost(st, d, sp.elo[2 * node + 2], sp.ehi[2 * node + 2])
            near = 2 * node + 1 if cost0 <= cost1 else 2 * node + 2
            fb = cur.bound - cur.gap[d] + (cost1 if cost0 <= cost1 else cost0)
            nb = cur.bound - cur.gap[d] + (cost0 if cost0 <= cost1 else cost1)
            if fb * 0.99999 <= st.best_e:
                far = cur
                far.node = 4 * node + 3 - near
                far.bound = fb
                far.gap[d] = cost1 if cost0 <= cost1 else cost0
                if nheap < HEAP_CAP:
                    heap_push(heap, &nheap, &far, sp.dim)
                else:
                    for k in range(sp.dim):
                        st.gap[k] = far.gap[k]
                    walk(st, far.node, fb)
            cur.gap[d] = cost0 if cost0 <= cost1 else cost1
            cur.bound = nb
            node = near
            if nb * 0.99999 > st.best_e:
                break
        if node >= st.first_leaf and cur.bound * 0.99999 <= st.best_e and st.leaves_left != 0:
            if st.leaves_left > 0:
                st.leaves_left -= 1
            LEAF_COUNT[0] += 1
            iqkt_scan_codes(sp.vals + <size_t>(node - st.first_leaf) * sp.dim * LEAF_CODES,
                            sp.idx + (node - st.first_leaf) * LEAF_CODES,
                            1, sp.dim, st.t, st.w, &st.best_e, &st.best_i)


cdef inline float code_distance(const SearchSpace *sp, const float *t, const float *w,
                                int32_t i) noexcept nogil:
    """The distance iqkt_scan_codes computes, for codebook index i."""
    cdef float e = 0, diff
    cdef int k
    cdef const float *c = sp.byidx + i * sp.dim
    for k in range(sp.dim):
        diff = t[k] - c[k]
        e = e + (w[k] * diff) * diff
    return e


cdef int32_t nearest_code(const SearchSpace *sp, const float *t, const float *w,
                          int32_t hint, int max_leaves) noexcept nogil:
    """Codebook index minimising sum_k w[k] * (t[k] - code[k])**2 (ties:
    lowest index).  max_leaves <= 0: exact.  Otherwise only the first
    max_leaves leaves of the nearest-first walk are scanned (a fast
    approximation).  hint: an index (or -1) that is always a candidate, so
    the result is never worse than the hint."""
    cdef SearchState st
    cdef int k
    st.sp = sp
    st.t = t
    st.w = w
    st.first_leaf = (1 << sp.depth) - 1
    st.leaves_left = max_leaves if max_leaves > 0 else -1
    st.best_e = HUGE_VALF
    st.best_i = 0x7FFFFFFF
    for k in range(sp.dim):
        st.gap[k] = 0
    if hint >= 0:
        st.best_i = hint
        st.best_e = code_distance(sp, t, w, hint)
    if USE_BEST_FIRST:
        best_first(&st)
    else:
        walk(&st, 0, 0)
    if st.best_i == 0x7FFFFFFF:     # only when every distance is NaN: cannot happen for finite input
        st.best_i = 0
    return st.best_i


cdef SearchSpace SPACE_IQ2          # signed 8-value groups
cdef SearchSpace SPACE_IQ3          # magnitudes of 8-value groups
cdef SearchSpace SPACE_IQ4[2]       # the two 4-value codebooks of IQ4_KT

cdef int build_spaces() except -1:
    cdef int rc = 0
    with nogil:
        rc |= build_space(&SPACE_IQ2, CB8, KT_CODEBOOK_SIZE, 8, 0)
        rc |= build_space(&SPACE_IQ3, CB8, KT_CODEBOOK_SIZE, 8, 1)
        rc |= build_space(&SPACE_IQ4[0], CB4, 32768, 4, 0)
        rc |= build_space(&SPACE_IQ4[1], CB4 + 4 * 32768, 32768, 4, 0)
    if rc != 0:
        raise MemoryError("iqkt: cannot allocate the codebook search index")
    return 0

build_spaces()


def set_quantizer_knobs(trial_leaves=None, refine_leaves=None, refine_iters=None, final_leaves=None, best_first=None):
    """Experiment hook: change the search effort (process-wide; not thread-safe
    against running quantizations).  Returns the previous values."""
    global TRIAL_LEAVES, REFINE_LEAVES, REFINE_ITERS, FINAL_LEAVES
    prev = (TRIAL_LEAVES, REFINE_LEAVES, REFINE_ITERS, FINAL_LEAVES)
    global USE_BEST_FIRST
    if best_first is not None:
        USE_BEST_FIRST = int(best_first)
    if final_leaves is not None:
        FINAL_LEAVES = max(0, int(final_leaves))
    if trial_leaves is not None:
        TRIAL_LEAVES = max(1, int(trial_leaves))
    if refine_leaves is not None:
        REFINE_LEAVES = max(0, int(refine_leaves))
    if refine_iters is not None:
        REFINE_ITERS = max(1, int(refine_iters))
    return prev

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
    float *deq                  # dequantized row, for statistics


cdef void free_scratch(RowScratch *s) noexcept nogil:
    free(s.x); free(s.w); free(s.target); free(s.gidx); free(s.bscale); free(s.bcurv)
    free(s.bcode); free(s.bflag); free(s.tmp_idx); free(s.imn); free(s.deq)


cdef int alloc_scratch(RowScratch *s, int64_t n, int want_imatrix, int want_deq) noexcept nogil:
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
    if want_deq:
        s.deq = <float *>malloc(n * sizeof(float))
    if (s.x == NULL or s.w == NULL or s.target == NULL or s.gidx == NULL or s.bscale == NULL
            or s.bcurv == NULL or s.bcode == NULL or s.bflag == NULL or s.tmp_idx == NULL
            or (want_imatrix and s.imn == NULL) or (want_deq and s.deq == NULL)):
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
    for g in range(ng):
        for k in range(dim):
            target[k] = xb[g * dim + k] * inv
        i = nearest_code(sp, target, wb + g * dim, hints[g] if hints != NULL else -1, nflip)
        out_idx[g] = i
        for k in range(dim):
            q = cb[i * dim + k]
            if take_abs and q < 0:
                q = -q
            sx += <double>wb[g * dim + k] * xb[g * dim + k] * q
            s2 += <double>wb[g * dim + k] * q * q
    sumqx[0] = sx
    sumq2[0] = s2


cdef inline float finite_or_max(float v) noexcept nogil:
    if v > FLT_MAX:
        return FLT_MAX
    if v < -FLT_MAX:
        return -FLT_MAX
    return v


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

cdef inline int code_value(int type_id, int code) noexcept nogil:
    if type_id == KT_IQ2:
        return IQ2_SCALE_TABLE[code]
    return code


cdef inline int group_value(int type_id, const RowScratch *s, int64_t b, int g, int k) noexcept nogil:
    cdef int q
    if type_id == KT_IQ4:
        return CB4[(s.gidx[8 * b + g] + 32768 * s.bflag[b]) * 4 + k]
    q = CB8[s.gidx[4 * b + g] * 8 + k]
    if type_id == KT_IQ3 and q < 0:
        q = -q
    return q


cdef void block_sums(int type_id, const RowScratch *s, int64_t b, double *sumqx, double *sumq2) noexcept nogil:
    """sum w*x*q and sum w*q^2 over block b for its current indices."""
    cdef int dim = 4 if type_id == KT_IQ4 else 8
    cdef int g, k, q
    cdef double sx = 0, s2 = 0
    cdef const float *xb = s.x + 32 * b
    cdef const float *wb = s.w + 32 * b
    for g in range(32 // dim):
        for k in range(dim):
            q = group_value(type_id, s, b, g, k)
            sx += <double>wb[g * dim + k] * xb[g * dim + k] * q
            s2 += <double>wb[g * dim + k] * q * q
    sumqx[0] = sx
    sumq2[0] = s2


cdef bint research_block(int type_id, RowScratch *s, int64_t b, float dl, int leaves) noexcept nogil:
    """Re-search block b's groups at scale dl; True if any index or flag changed."""
    cdef double sx, s2, err, best_err
    cdef bint changed = False
    cdef int32_t old[8]
    cdef int f, j, best_f
    cdef int32_t cand[2][8]
    cdef const float *xb = s.x + 32 * b
    cdef const float *wb = s.w + 32 * b
    if type_id != KT_IQ4:
        for j in range(4):
            old[j] = s.gidx[4 * b + j]
        search_block(&SPACE_IQ3 if type_id == KT_IQ3 else &SPACE_IQ2, CB8, type_id == KT_IQ3,
                     xb, wb, dl, s.target, old, s.gidx + 4 * b, &sx, &s2, leaves)
        for j in range(4):
            changed = changed or old[j] != s.gidx[4 * b + j]
        return changed
    best_err = HUGE_VALF
    best_f = 0
    for f in range(2):
        search_block(&SPACE_IQ4[f], CB4 + 4 * 32768 * f, 0, xb, wb, dl, s.target,
                     s.gidx + 8 * b if f == s.bflag[b] else NULL, cand[f], &sx, &s2, leaves)
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


cdef int best_scale_code(int type_id, float d, double sx, double s2, int current) noexcept nogil:
    """Scale code minimising d^2 v^2 s2 - 2 d v sx for code value v."""
    cdef int c, best = current
    cdef double e, best_e, v, opt
    if d == 0 or s2 <= 0:
        return current
    if type_id == KT_IQ2:
        best_e = HUGE_VALF
        for c in range(16):
            v = <double>d * IQ2_SCALE_TABLE[c]
            e = v * v * s2 - 2 * v * sx
            if e < best_e:
                best_e = e
                best = c
        return best
    # Linear codes: the error is a convex quadratic in the code, so the best
    # integer is the rounded, clamped optimum.
    opt = sx / (<double>d * s2)
    c = <int>floor(opt + 0.5) if opt > -1e9 and opt < 1e9 else (-1000 if opt < 0 else 1000)
    if type_id == KT_IQ3:
        return 0 if c < 0 else (15 if c > 15 else c)
    return -64 if c < -64 else (63 if c > 63 else c)


cdef float refine_row(int type_id, RowScratch *s, int64_t n, float d, int iters) noexcept nogil:
    """Coordinate descent; passes before the last may use the approximate
    search, the last is exact.  A pass that changes nothing would repeat
    itself, so it ends the approximate phase (or the whole refinement, if
    it was exact)."""
    cdef int64_t nblk = n // 32, b
    cdef int it, v, code, leaves
    cdef double sx, s2, num, den
    cdef float dl, d_new
    cdef bint changed
    it = 0
    while it < iters:
        leaves = REFINE_LEAVES if it < iters - 1 else FINAL_LEAVES
        changed = False
        num = 0
        den = 0
        for b in range(nblk):
            dl = d * <float>code_value(type_id, s.bcode[b])
            if dl != 0:
                if research_block(type_id, s, b, dl, leaves):
                    changed = True
            block_sums(type_id, s, b, &sx, &s2)
            code = best_scale_code(type_id, d, sx, s2, s.bcode[b])
            if code != s.bcode[b]:
                changed = True
                s.bcode[b] = code
            v = code_value(type_id, s.bcode[b])
            num += v * sx
            den += <double>v * v * s2
        if den > 0:
            d_new = <float>(num / den)
            if d_new != d:
                changed = True
            d = d_new
        if not changed:
            if it == iters - 1 or leaves == FINAL_LEAVES:
                break
            it = iters - 1      # converged approximately: go to the exact pass
        else:
            it += 1
    return d


cdef inline int nearest_scale_code(int type_id, float u) noexcept nogil:
    """Scale code whose value is nearest to u."""
    cdef int c
    if type_id == KT_IQ2:
        return nearest_iq2_scale_code(u)
    c = <int>floorf(u + 0.5) if u > -1000 and u < 1000 else (-1000 if u < 0 else 1000)
    if type_id == KT_IQ3:
        return 0 if c < 0 else (15 if c > 15 else c)
    return -64 if c < -64 else (63 if c > 63 else c)


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
    lo = 0 if type_id != KT_IQ4 else -64
    hi = 15 if type_id != KT_IQ4 else 63
    for a in range(na):
        for c in range(lo, hi + 1):
            v = code_value(type_id, c)
            if v == 0:
                continue
            inv_d = <float>v / s.bscale[anchors[a]]
            num = 0
            den = 0
            for b in range(nblk):
                v = code_value(type_id, nearest_scale_code(type_id, s.bscale[b] * inv_d))
                num += <double>s.bcurv[b] * s.bscale[b] * v
                den += <double>s.bcurv[b] * v * v
            if den > 0:
                score = num * num / den
                if score > best_score:
                    best_score = score
                    best_inv = inv_d
                    best_num = num
                    best_den = den
    if best_score < 0:
        return False
    for b in range(nblk):
        s.bcode[b] = nearest_scale_code(type_id, s.bscale[b] * best_inv)
    d_out[0] = <float>(best_num / best_den)
    return True


# ---------------------------------------------------------------- IQ2_KT / IQ3_KT

cdef int nearest_iq2_scale_code(float v) noexcept nogil:
    cdef int c, best = 0
    cdef float e, best_e = HUGE_VALF
    for c in range(16):
        e = fabsf(v - <float>IQ2_SCALE_TABLE[c])
        if e < best_e:
            best_e = e
            best = c
    return best


cdef int quantize_row_iq23(int type_id, const float *xrow, int64_t n, RowScratch *s,
                           uint8_t *out) noexcept nogil:
    cdef int64_t nblk = n // 32, b, j, ib
    cdef int take_abs = type_id == KT_IQ3
    cdef const SearchSpace *sp = &SPACE_IQ3 if take_abs else &SPACE_IQ2
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
                         TRIAL_LEAVES)
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
                         trial_idx, &sx, &s2, TRIAL_LEAVES)
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
    d = refine_row(type_id, s, n, d, REFINE_ITERS)

    # Encode.
    max_prod = 127 * 126 if type_id == KT_IQ2 else 15 * 126
    iqkt_store_f32(out, unscale_row_scale(d, expo, max_prod))
    for ib in range(n // QK):
        sb = out + 4 + ib * SB_BYTES[type_id]
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

cdef int quantize_row_iq4(const float *xrow, int64_t n, RowScratch *s, uint8_t *out) noexcept nogil:
    cdef int64_t nblk = n // 32, b, j, ib
    cdef int expo, trial, f, k, c, jj, best_t
    cdef float amax_row, amax, s0, dl, max_scale, v, inv_d, d
    cdef double sx, s2, score, best_score, num, den, best_num, best_den
    cdef float *xb
    cdef float *wb
    cdef int32_t prev[2][8]
    cdef uint8_t *sb
    cdef uint32_t word
    cdef int idx

    amax_row = block_amax(xrow, <int>n) if n < 0x7FFFFFFF else 0
    if amax_row == 0:
        memset(out, 0, kt_row_size(KT_IQ4, n))
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
                         TRIAL_LEAVES)
            s.bcurv[b] = <float>s2
            continue
        s0 = 120 * amax / amax_row
        if s0 < 96:
            s0 = 96
        for trial in range(10):
            dl = amax / (s0 + 8 * (trial // 2 - 2))
            if trial & 1:
                dl = -dl
            for f in range(2):
                search_block(&SPACE_IQ4[f], CB4 + 4 * 32768 * f, 0, xb, wb, dl, s.target,
                             prev[f] if trial > 0 else NULL, prev[f], &sx, &s2, TRIAL_LEAVES)
                if s2 > 0:
                    score = sx * sx / s2
                    if score > best_score:
                        best_score = score
                        s.bscale[b] = <float>(sx / s2)
                        s.bcurv[b] = <float>s2
                        s.bflag[b] = f
                        for k in range(8):
                            s.gidx[8 * b + k] = prev[f][k]

    if not choose_row_scale(KT_IQ4, s, nblk, &d):
        memset(out, 0, kt_row_size(KT_IQ4, n))
        return KT_OK
    d = refine_row(KT_IQ4, s, n, d, REFINE_ITERS)

    iqkt_store_f32(out, unscale_row_scale(d, expo, 64 * 126))
    for ib in range(n // QK):
        sb = out + 4 + ib * SB_BYTES[KT_IQ4]
        memset(sb + 96, 0, 32)
        for b in range(8):
            word = <uint32_t>s.bflag[8 * ib + b] | (<uint32_t>(s.bcode[8 * ib + b] + 64) << 1)
            for j in range(8):
                jj = 8 * b + j
                idx = s.gidx[64 * ib + jj]
                word |= <uint32_t>((idx >> 12) & 7) << (8 + 3 * j)
                sb[32 + jj] = <uint8_t>(idx & 0xFF)
                sb[96 + (jj & 31)] |= <uint8_t>(((idx >> 8) & 15) << (4 * (jj >> 5)))
            iqkt_store_u32(sb + 4 * b, word)
    return KT_OK


# ---------------------------------------------------------------- entry point

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
    cdef double num, den, diff, wt
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
    rc = alloc_scratch(&s, n, imatrix != NULL, row_err != NULL)
    if rc != KT_OK:
        return rc
    if imatrix != NULL:
        # Scale-free: only ratios of importances matter; normalising keeps
        # huge imatrix values from overflowing.
        for j in range(n):
            s.imn[j] = imatrix[j] / immax if immax > 0 else 1.0
    for r in range(nrows):
        if type_id == KT_IQ4:
            rc = quantize_row_iq4(x + r * n, n, &s, out + r * rs)
        else:
            rc = quantize_row_iq23(type_id, x + r * n, n, &s, out + r * rs)
        if rc != KT_OK:
            break
        if row_err != NULL:
            rc = kt_dequantize_rows(type_id, out + r * rs, 1, n, s.deq, 0)
            if rc != KT_OK:
                break
            num = 0
            den = 0
            for j in range(n):
                wt = imatrix[j] if imatrix != NULL else 1.0
                diff = <double>x[r * n + j] - <double>s.deq[j]
                num += wt * diff * diff
                den += wt * <double>x[r * n + j] * <double>x[r * n + j]
            row_err[r] = num / den if den > 0 else 0.0
    free_scratch(&s)
    return rc


def nearest_codes(int space, const float[:, ::1] t, const float[:, ::1] w, int max_leaves=0):
    """Test hook: nearest_code for every row of t (weights w) in search space
    0 (IQ2), 1 (IQ3 magnitudes), 2/3 (IQ4 codebook 0/1).  Returns int32 indices."""
    import numpy as np
    cdef const SearchSpace *sp = &SPACE_IQ2 if space == 0 else (&SPACE_IQ3 if space == 1 else &SPACE_IQ4[space - 2])
    if space < 0 or space > 3 or t.shape[1] != sp.dim or w.shape[0] != t.shape[0] or w.shape[1] != sp.dim:
        raise ValueError("nearest_codes: bad space or shapes")
    out = np.empty(t.shape[0], dtype=np.int32)
    cdef int32_t[::1] o = out
    cdef Py_ssize_t r
    with nogil:
        for r in range(t.shape[0]):
            o[r] = nearest_code(sp, &t[r, 0], &w[r, 0], -1, max_leaves)
    return out

def leaf_count():
    return LEAF_COUNT[0], LEAF_COUNT[1]
