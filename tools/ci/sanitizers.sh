#!/bin/sh
# The whole test suite under ASan+UBSan and valgrind memcheck, and the threaded tests under
# ThreadSanitizer, each in its own build directory. Called from .ci/run after the plain run.
#
#   tools/ci/sanitizers.sh            # all three
#   tools/ci/sanitizers.sh asan tsan  # a subset: asan, valgrind, tsan
#
# Environment: TG_CI_JOBS (parallel tests, default 2), TG_CI_BUILD_PREFIX (where the build
# dirs go, default the source root: build-asan, build-valgrind, build-tsan), TG_TSAN_TESTS
# (the tests TSan runs: the ones that use threads; default "threads pool parallel gemm").
# Needs (Debian): valgrind; clang and libclang-rt-14-dev for TSan. Prints the wall time of
# each step.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
prefix=${TG_CI_BUILD_PREFIX:-$root}
jobs=${TG_CI_JOBS:-2}
steps=${*:-asan valgrind tsan}
common="-Dexamples=false -Dtools=true -Dtests=enabled"
tsan_tests=${TG_TSAN_TESTS:-threads pool parallel gemm}

now() { date +%s; }
report() { echo "sanitizers: $1 took $(( $(now) - $2 ))s"; }

setup() { # dir, then meson options; reconfigures an existing dir
    dir=$1
    shift
    if [ -f "$dir/build.ninja" ]; then
        meson configure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$root" "$@" >/dev/null
    fi
}

run_asan() {
    t0=$(now)
    dir=$prefix/build-asan
    setup "$dir" $common -Dbuildtype=debugoptimized -Db_sanitize=address,undefined \
        -Db_lundef=false -Dc_args=-fno-sanitize-recover=all
    ninja -C "$dir" >/dev/null
    # CK_FORK=no: Check runs tests in-process, so LSan sees every leak at exit. The
    # suppression files name third-party libraries only (Graphviz rendering, fonts).
    asan="halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1"
    asan="$asan:check_initialization_order=1:suppressions=$root/tests/asan.supp"
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    export LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0"
    export CK_FORK=no TG_UNDER_SANITIZER=1
    ASAN_OPTIONS=$asan meson test -C "$dir" --no-suite mpi --num-processes "$jobs" \
        --print-errorlogs --timeout-multiplier 4
    # Under mpiexec, OpenMPI's own allocations (dlopen'ed plugins, no symbols) look leaked:
    # that suite runs with every ASan check but the leak check.
    ASAN_OPTIONS=$asan:detect_leaks=0 meson test -C "$dir" --suite mpi --print-errorlogs \
        --timeout-multiplier 4
    unset UBSAN_OPTIONS LSAN_OPTIONS CK_FORK TG_UNDER_SANITIZER
    report "ASan+UBSan (whole suite)" "$t0"
}

run_valgrind() {
    t0=$(now)
    dir=$prefix/build-valgrind
    setup "$dir" $common -Dbuildtype=debugoptimized
    ninja -C "$dir" >/dev/null
    # The 'valgrind' setup (top-level meson.build): --error-exitcode=1, full leak check,
    # tests/valgrind.supp, CK_FORK=no. Tests that check timing or spawn MPI skip themselves
    # under TG_UNDER_VALGRIND, and test-gemm runs its quick shapes (every kernel code path,
    # smaller sizes: about a minute instead of 11-14).
    # Tests that run an interpreter (python3 reading a checkpoint) are left out: valgrind
    # would check CPython and ld.so, not tapegrad (TG_VALGRIND_SKIP, space-separated names);
    # so is the install test (a shell script running meson, pkg-config and cc).
    python_tests="safetensors-python torch-reference torch-reference-ops torch-cnn-interop"
    python_tests="$python_tests torch-mha-interop torch-transformer-interop torch-rnn-reference"
    skip=" ${TG_VALGRIND_SKIP-$python_tests install} "
    names=$(meson test -C "$dir" --setup valgrind --list 2>/dev/null | sed -n 's|^.* / ||p' |
            while read -r name; do
                case $skip in *" $name "*) ;; *) printf '%s\n' "$name" ;; esac
            done)
    # shellcheck disable=SC2086 # one test name per word
    meson test -C "$dir" --setup valgrind --num-processes "$jobs" --print-errorlogs $names
    report "valgrind memcheck (whole suite)" "$t0"
}

run_tsan() {
    t0=$(now)
    dir=$prefix/build-tsan
    # clang: gcc 12's TSan build crashes before main, in the resolvers of the target_clones
    # kernels (the ifunc resolver runs instrumented before the TSan runtime is set up). The
    # thread pool is plain pthreads and C11 atomics, which TSan understands without help.
    command -v clang >/dev/null 2>&1 || { echo "sanitizers: tsan needs clang" >&2; exit 1; }
    [ -f "$dir/build.ninja" ] || CC=clang meson setup "$dir" "$root" >/dev/null
    setup "$dir" $common -Dbuildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false
    ninja -C "$dir" >/dev/null
    TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" CK_FORK=no TG_UNDER_SANITIZER=1 \
        meson test -C "$dir" --num-processes 1 --print-errorlogs --timeout-multiplier 4 \
        $tsan_tests
    report "ThreadSanitizer ($tsan_tests)" "$t0"
}

total=$(now)
for s in $steps; do
    case $s in
    asan) run_asan ;;
    valgrind) run_valgrind ;;
    tsan) run_tsan ;;
    *) echo "sanitizers: unknown step '$s' (asan, valgrind, tsan)" >&2; exit 2 ;;
    esac
done
report "all steps" "$total"
