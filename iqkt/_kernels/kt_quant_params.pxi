# The quantizer's tunables (included from kt_quantize.pxi): one const struct
# built by the entry point and passed down (RowScratch.p), never a global the
# kernels read.  Defaults and their measurements: docs/perf-notes.md.

cdef enum:
    IQ4_STEPS = 3               # most local-search steps per IQ4 (sign, codebook) pair
    IQ4_PAIRS = 4               # (sign, codebook) pairs: sign = pair >> 1, codebook = pair & 1
    IQ4_MAX_TRIALS = IQ4_PAIRS * (1 + 2 * IQ4_STEPS)

ctypedef struct QuantParams:
    int nflip_trial             # search effort while trying block scales (IQ2/IQ3; IQ4 zero blocks)
    int nflip_trial_iq1         # ... IQ1_KT's (trial_nflip says which type reads which)
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
    p.nflip_trial_iq1 = 4
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


cdef inline int trial_nflip(const QuantParams *p, int type_id) noexcept nogil:
    """Search effort of the 8-value types' trial phase.  IQ1_KT's own: its
    8192 codes fill the same 256 search cells 8x more sparsely than IQ2_KT's
    65536, so the same effort sees 8x fewer candidates (docs/perf-notes.md)."""
    return p.nflip_trial_iq1 if type_id == KT_IQ1 else p.nflip_trial


cdef dict params_as_dict(const QuantParams *p):
    return dict(nflip_trial=p.nflip_trial, nflip_trial_iq1=p.nflip_trial_iq1,
                nflip_trial_iq4=p.nflip_trial_iq4,
                nflip_early=p.nflip_early, nflip_refine=p.nflip_refine,
                refine_passes=p.refine_passes, iq4_keep=p.iq4_keep,
                iq4_keep_margin=p.iq4_keep_margin, iq4_nsteps=p.iq4_nsteps,
                iq4_steps=[p.iq4_steps[i] for i in range(IQ4_STEPS)],
                iq4_step_margin=[p.iq4_step_margin[i] for i in range(IQ4_STEPS)],
                iq4_rank_flips=p.iq4_rank_flips)


cdef int params_from_changes(changes, QuantParams *p) except -1:
    """p = the defaults with changes (a mapping of parameter names) applied,
    each clamped to its valid range; unknown names raise TypeError."""
    p[0] = default_params()
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
    v = changes.get("nflip_trial_iq1")
    if v is not None:
        p.nflip_trial_iq1 = max(0, int(v))
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


def quantizer_params(changes=None):
    """The quantizer parameters (a dict) that iqkt.quantize(..., params=changes)
    runs with: the defaults with changes applied and clamped.  Parameters:
    nflip_trial (search effort of the IQ2/IQ3 trial phase), nflip_trial_iq1,
    nflip_trial_iq4,
    nflip_early (refinement passes before the last), nflip_refine (the last
    pass; >= the group size is exact), refine_passes, and for IQ4: iq4_keep /
    iq4_keep_margin (ranked trials re-searched), iq4_nsteps / iq4_steps /
    iq4_step_margin (local search over the scale denominator),
    iq4_rank_flips (coordinates the ranking search may flip)."""
    cdef QuantParams p
    params_from_changes(changes, &p)
    return params_as_dict(&p)
