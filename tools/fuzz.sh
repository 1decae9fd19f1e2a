#!/bin/sh
# Run one libFuzzer target for a while.
#
#   tools/fuzz.sh <target> [seconds] [libFuzzer options...]
#   tools/fuzz.sh graph 600
#   tools/fuzz.sh checkpoint 300 -jobs=2 -workers=2
#
# Targets: graph, checkpoint, statedict, idx, csv, dot (tests/fuzz/fuzz-<target>.c). Needs
# clang and libFuzzer (Debian: clang libclang-rt-14-dev). Builds the library with ASan + UBSan and
# coverage instrumentation into build-fuzz/ (TG_FUZZ_BUILD overrides) on first use.
#
# Seeds are read from tests/fuzz/corpus/<target>/; new coverage goes to
# build-fuzz/fuzz-work/<target>/ (not the source tree). A crash, leak or timeout is written to
# tests/fuzz/corpus/<target>/ as crash-*/leak-*/timeout-*, so once fixed it stays a regression
# test that `meson test` replays. To fold the new coverage back into the seeds (minimised):
#   build-fuzz/tests/fuzz/fuzz-<target> -merge=1 tests/fuzz/corpus/<target> build-fuzz/fuzz-work/<target>
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
target=${1:?usage: tools/fuzz.sh <graph|checkpoint|statedict|idx|csv|dot> [seconds] [libFuzzer options]}
seconds=${2:-60}
[ $# -ge 2 ] && shift 2 || shift $#
build=${TG_FUZZ_BUILD:-$root/build-fuzz}

if [ ! -f "$build/build.ninja" ]; then
    CC=${CC:-clang} meson setup "$build" "$root" \
        -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
        -Dc_args='-fsanitize=fuzzer-no-link -fno-sanitize-recover=all' \
        -Dthreads=disabled -Dexamples=false -Dtools=false >/dev/null
fi
ninja -C "$build" "tests/fuzz/fuzz-$target" >/dev/null

corpus=$root/tests/fuzz/corpus/$target
work=$build/fuzz-work/$target
mkdir -p "$work"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export TMPDIR=${TMPDIR:-/dev/shm}
exec "$build/tests/fuzz/fuzz-$target" "$work" "$corpus" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=4096 \
    -artifact_prefix="$corpus/" -print_final_stats=1 "$@"
