#!/usr/bin/env bash
# Fuzz stage: the hypothesis fuzz and property tests with more examples than
# the regular suite.  Reuses the ASan/UBSan build of .ci/sanitize.sh when it
# is there (fuzzing with sanitizers finds more), else builds a plain copy.
#
# Locally:  bash .ci/fuzz.sh                      (IQKT_FUZZ=150 examples per test)
#           IQKT_FUZZ=long bash .ci/fuzz.sh       (10000 examples per test: hours)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
BASE=${CI_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/iqkt-fuzz.XXXXXX")}
export IQKT_FUZZ=${IQKT_FUZZ:-150}

if [ -f "$BASE/sanitize/iqkt/_kernels/_kt_scalar.c" ] && ls "$BASE"/sanitize/iqkt/_kernels/_kt_scalar*.so >/dev/null 2>&1; then
    WORK="$BASE/sanitize"
    export LD_PRELOAD="$(${CC:-gcc} -print-file-name=libasan.so) $(${CC:-gcc} -print-file-name=libubsan.so)"
    export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:abort_on_error=1
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    export PYTHONMALLOC=malloc
    echo "--- fuzzing the sanitizer build in $WORK (IQKT_FUZZ=$IQKT_FUZZ)"
else
    WORK="$BASE/fuzz"
    rm -rf "$WORK" && mkdir -p "$WORK"
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
        | tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$WORK"
    (cd "$WORK" && "$PY" setup.py -q build_ext --inplace -j 2 >build.log 2>&1) \
        || { tail -40 "$WORK/build.log"; exit 1; }
    echo "--- fuzzing a plain build in $WORK (IQKT_FUZZ=$IQKT_FUZZ)"
fi
cd "$WORK"
t0=$SECONDS
"$PY" -m pytest -q -p no:cacheprovider tests/test_fuzz.py tests/test_properties.py
echo "    fuzzing took $((SECONDS - t0)) s"
