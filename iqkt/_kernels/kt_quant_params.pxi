# The quantizer's tunables (included from kt_quantize.pxi): one const struct
# built by the entry point and passed down (RowScratch.p), never a global the
# kernels read.  Defaults and their measurements: docs/perf-notes.md.

cdef enum:
    IQ4_STEPS = 3               # most local-search steps per IQ4 (sign, codebook) pair
    IQ4_PAIRS = 4               # (sign, codebook) pairs: sign = pair >> 1, codebook = pair & 1
    IQ4_MAX_TRIALS = IQ4_PAIRS * (1 + 2 * IQ4_STEPS)

ctypedef struct QuantParams:
    int nflip_trial             # search effort while trying block scales (IQ2/IQ3; IQ4 zero blocks)
    int nflip_trial_iq4         # effort of IQ4's re-searched trials
    int nflip_early             # refinement passes before the last
    int nflip_refine            # the last refinement pass (>= the group size: exact)
    int refine_passes
    int iq4_keep                # ranked IQ4 trials re-searched
    double iq4_keep_margin      # ... only while within this error factor of the best (0: no margin)
    int iq4_nsteps              # local-search steps over an IQ4 pair's scale denominator
    int iq4_steps[IQ4_STEPS]    # their denominator steps
    double iq4_step_margin[IQ4_STEPS]   # a pair takes step st only within this factor of the best
    int iq4_rank_flips          # coordinates the ranking's batched search may flip


cdef QuantParams default_params() noexcept nogil:
    cdef QuantParams p
    p.nflip_trial = 2
    p.nflip_trial_iq4 = 3
    p.nflip_early = 3
    p.nflip_refine = 8
    p.refine_passes = 2
    p.iq4_keep = 4
    p.iq4_keep_margin = 1.15
    p.iq4_nsteps = 2
    p.iq4_steps[0] = 24
    p.iq4_steps[1] = 12
    p.iq4_steps[2] = 6
    p.iq4_step_margin[0] = 4.0
    p.iq4_step_margin[1] = 1.4
    p.iq4_step_margin[2] = 0
    p.iq4_rank_flips = 3
    return p


# Effort levels: presets over the defaults, what `iqkt quantize --effort` and
# iqkt.quantize(..., effort=) choose.  Measurements: docs/perf-notes.md.
cdef enum:
    EFFORT_FAST = 0
    EFFORT_DEFAULT = 1
    EFFORT_BEST = 2

EFFORTS = ("fast", "default", "best")

# What the levels set per type.
#   nflip_trial: the trial phase's search effort at each level (fast, default,
#     best).  IQ1_KT's 8192 codes fill the same 256 search cells 8x more
#     sparsely than IQ2_KT's 65536, so the same effort sees 8x fewer
#     candidates: it searches harder (IQ4_KT: only its all-zero blocks).
#   fast_nflip_refine: the fast level's last pass: approximate where the error
#     stays below the reference's on the golden cases (for IQ1_KT: the model
#     of it), exact where it would not (IQ3_KT; IQ4_KT's search is exact at 4).
ctypedef struct TypeLevels:
    int nflip_trial[3]
    int fast_nflip_refine

cdef TypeLevels TYPE_LEVELS[IQKT_NTYPES]
for _t, _trial, _refine in ((KT_IQ2, (1, 2, 3), 3), (KT_IQ3, (1, 2, 3), 8),
                            (KT_IQ4, (1, 2, 3), 8), (KT_IQ1, (3, 4, 8), 4)):
    for _l in range(3):
        TYPE_LEVELS[<int>_t].nflip_trial[_l] = _trial[_l]
    TYPE_LEVELS[<int>_t].fast_nflip_refine = _refine


cdef QuantParams effort_params(int effort, int type_id) noexcept nogil:
    """The parameters of an effort level for one type (type_id < 0: as for
    IQ2_KT)."""
    cdef QuantParams p = default_params()
    cdef const TypeLevels *tl = &TYPE_LEVELS[type_id if 0 <= type_id < IQKT_NTYPES else KT_IQ2]
    p.nflip_trial = tl.nflip_trial[effort]
    if effort == EFFORT_FAST:
        p.refine_passes = 1
        p.nflip_refine = tl.fast_nflip_refine
        p.iq4_nsteps = 1
        p.iq4_keep = 1
        p.iq4_rank_flips = 2
        p.nflip_trial_iq4 = 0       # as good as 3 here (the exact last pass follows), and faster
    elif effort == EFFORT_BEST:
        p.nflip_early = 8
        p.refine_passes = 3
        p.iq4_nsteps = 3
        p.iq4_step_margin[0] = 0
        p.iq4_step_margin[1] = 0
        p.iq4_step_margin[2] = 0
        p.iq4_keep_margin = 0
        p.iq4_keep = 8
    return p


cdef int effort_level(effort) except -1:
    """The EFFORT_* value of an effort name ("fast", "default", "best")."""
    if effort is None:
        return EFFORT_DEFAULT
    if not isinstance(effort, str) or effort not in EFFORTS:
        raise ValueError(f"effort must be one of {', '.join(EFFORTS)}, not {effort!r}")
    return EFFORTS.index(effort)


cdef dict params_as_dict(const QuantParams *p):
    return dict(nflip_trial=p.nflip_trial, nflip_trial_iq4=p.nflip_trial_iq4,
                nflip_early=p.nflip_early, nflip_refine=p.nflip_refine,
                refine_passes=p.refine_passes, iq4_keep=p.iq4_keep,
                iq4_keep_margin=p.iq4_keep_margin, iq4_nsteps=p.iq4_nsteps,
                iq4_steps=[p.iq4_steps[i] for i in range(IQ4_STEPS)],
                iq4_step_margin=[p.iq4_step_margin[i] for i in range(IQ4_STEPS)],
                iq4_rank_flips=p.iq4_rank_flips)


cdef int params_from_changes(changes, QuantParams *p, int effort=EFFORT_DEFAULT,
                             int type_id=-1) except -1:
    """p = the effort level's parameters for the type (default: the defaults)
    with changes (a mapping of parameter names) applied, each clamped to its
    valid range; unknown names raise TypeError."""
    p[0] = effort_params(effort, type_id)
    if changes is None:
        return 0
    try:
        changes = dict(changes)
    except (TypeError, ValueError):
        raise TypeError(f"quantizer params must be a mapping of names to values, not {changes!r}") from None
    unknown = set(changes) - set(params_as_dict(p))
    if unknown:
        raise TypeError("unknown quantizer parameter(s) %s" % ", ".join(sorted(map(str, unknown))))
    v = changes.get("nflip_trial")
    if v is not None:
        p.nflip_trial = max(0, int(v))
    v = changes.get("nflip_trial_iq4")
    if v is not None:
        p.nflip_trial_iq4 = max(0, int(v))
    v = changes.get("nflip_early")
    if v is not None:
        p.nflip_early = max(0, int(v))
    v = changes.get("nflip_refine")
    if v is not None:
        p.nflip_refine = max(0, int(v))
    v = changes.get("refine_passes")
    if v is not None:
        p.refine_passes = max(1, int(v))
    v = changes.get("iq4_keep")
    if v is not None:
        p.iq4_keep = min(max(1, int(v)), IQ4_MAX_TRIALS)
    v = changes.get("iq4_keep_margin")
    if v is not None:
        p.iq4_keep_margin = float(v)
    v = changes.get("iq4_nsteps")
    if v is not None:
        p.iq4_nsteps = min(max(0, int(v)), IQ4_STEPS)
    v = changes.get("iq4_steps")
    if v is not None:
        for i, x in enumerate(list(v)[:IQ4_STEPS]):
            p.iq4_steps[i] = int(x)
    v = changes.get("iq4_step_margin")
    if v is not None:
        for i, x in enumerate(list(v)[:IQ4_STEPS]):
            p.iq4_step_margin[i] = float(x)
    v = changes.get("iq4_rank_flips")
    if v is not None:
        p.iq4_rank_flips = min(max(0, int(v)), 4)
    return 0


def quantizer_params(changes=None, effort="default", int type_id=-1):
    """The quantizer parameters (a dict) that iqkt.quantize(..., params=changes,
    effort=effort) runs with for type_id: the effort level's preset with
    changes applied and clamped.  Parameters:
    nflip_trial (search effort of the IQ2/IQ3 trial phase), nflip_trial_iq4,
    nflip_early (refinement passes before the last), nflip_refine (the last
    pass; >= the group size is exact), refine_passes, and for IQ4: iq4_keep /
    iq4_keep_margin (ranked trials re-searched), iq4_nsteps / iq4_steps /
    iq4_step_margin (local search over the scale denominator),
    iq4_rank_flips (coordinates the ranking search may flip)."""
    cdef QuantParams p
    params_from_changes(changes, &p, effort_level(effort), type_id)
    return params_as_dict(&p)
