#!/usr/bin/env bash
# Sanitizer stage: build every kernel variant with AddressSanitizer + UBSan
# (IQKT_SANITIZE=1, see setup.py) in a scratch copy of the tree and run the
# test suite against it.  Any sanitizer report aborts the run (non-zero exit).
#
# Locally:  bash .ci/sanitize.sh          (needs Cython, numpy, pytest, hypothesis)
# Knobs:    PYTHON=python3  CI_WORK=/tmp/dir  IQKT_SANITIZE_TESTS="tests -m 'not slow'"
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
WORK=${CI_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/iqkt-san.XXXXXX")}/sanitize
CC_BIN=${CC:-gcc}

rm -rf "$WORK" && mkdir -p "$WORK"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
    | tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$WORK"

echo "--- building all variants with -fsanitize=address,undefined"
t0=$SECONDS
(cd "$WORK" && IQKT_SANITIZE=1 "$PY" setup.py -q build_ext --inplace -j 2 >build.log 2>&1) \
    || { tail -40 "$WORK/build.log"; exit 1; }
echo "    built in $((SECONDS - t0)) s"

# The interpreter is not instrumented, so the ASan runtime must be loaded
# first.  Python's own allocations are not ours to judge: no leak check.
ASAN_LIB=$("$CC_BIN" -print-file-name=libasan.so)
UBSAN_LIB=$("$CC_BIN" -print-file-name=libubsan.so)
[ -f "$ASAN_LIB" ] || { echo "libasan.so not found ($ASAN_LIB)"; exit 1; }
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
# (detect_stack_use_after_return is off: its fake stack does not honour the
# 64-byte alignment GCC assumes for AVX-512 spills and crashes by itself.)
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PYTHONMALLOC=malloc
cd "$WORK"
"$PY" -c 'import iqkt, sys; assert iqkt.__file__.startswith(sys.argv[1]), iqkt.__file__; print("iqkt from", iqkt.__file__, "variants", iqkt.available_isas())' "$WORK"
t0=$SECONDS
# shellcheck disable=SC2086
eval "\"$PY\" -m pytest -q -p no:cacheprovider ${IQKT_SANITIZE_TESTS:-tests -m \"not slow\"}"
echo "    sanitized tests took $((SECONDS - t0)) s"
