#!/bin/sh
# Builds the two C peer drivers against unmodified kann and ggml checkouts.
#   build.sh KANN_SRC GGML_SRC OUT
# KANN_SRC: a kann checkout (r557); GGML_SRC: a ggml checkout (0.21.0). Needs cmake and
# libopenblas-dev. OUT gets kann_step_blas and ggml_step_blas (and ggml's cmake build, with its
# log in OUT/ggml-build.log). At most two compile jobs: the benchmark machines have two cores.
set -eu
k=$1 g=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
gcc -O3 -march=native -DHAVE_CBLAS -I"$k" "$k/kautodiff.c" "$k/kann.c" "$here/kann_step.c" \
    -o "$out/kann_step_blas" -lopenblas -lpthread -lm
# cmake's chatter goes to a log, shown only when a step fails (the compiler's errors are on
# cmake --build's standard output, so /dev/null would hide them)
log=$out/ggml-build.log
run() { "$@" >>"$log" 2>&1 || { tail -n 40 "$log" >&2; echo "build.sh: failed: $*" >&2; exit 1; }; }
: >"$log"
run cmake -S "$g" -B "$out/ggml-build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_BLAS=ON \
    -DGGML_BLAS_VENDOR=OpenBLAS -DGGML_BUILD_EXAMPLES=OFF -DGGML_BUILD_TESTS=OFF
run cmake --build "$out/ggml-build" -j2
gb=$(cd "$out/ggml-build/src" && pwd)
gcc -O2 -DGGML_STEP_BLAS -I"$g/include" "$here/ggml_step.c" -o "$out/ggml_step_blas" \
    -L"$gb" -L"$gb/ggml-blas" -Wl,-rpath,"$gb:$gb/ggml-blas" \
    -lggml -lggml-base -lggml-cpu -lggml-blas -lopenblas -lm
echo "built $out/kann_step_blas $out/ggml_step_blas"
