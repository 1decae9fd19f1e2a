#!/bin/sh
# Installs what tapegrad needs on Debian 12 (only what is missing; apt-get is idempotent).
#
#   tools/install-deps.sh          build + test dependencies
#   tools/install-deps.sh --all    also PyTorch (side-by-side scripts), Fashion-MNIST, the word
#                                  list (wamerican, the character model), OpenMPI,
#                                  clang/libFuzzer and OpenBLAS (benchmarks, fuzzing, MPI),
#                                  Doxygen and scdoc (meson setup -Ddocs=enabled)
#   tools/install-deps.sh --ci     what .ci/run needs: the same as --all (PyTorch runs the
#                                  torch-reference gradient test; without it that test skips)
set -eu

# dpkg-dev: meson asks its dpkg-architecture for Debian's multiarch libdir
# (lib/x86_64-linux-gnu, on the loader's path); without it `meson install` uses lib64, which
# the loader does not search.
core="meson ninja-build pkg-config gcc libc6-dev dpkg-dev check libjansson-dev zlib1g-dev
      libgraphviz-dev graphviz valgrind python3 python3-numpy"
extra="libopenmpi-dev openmpi-bin clang libclang-rt-14-dev libopenblas-dev
       dataset-fashion-mnist wamerican binutils python3-torch doxygen scdoc"

want="$core"
case "${1:-}" in
    --all | --ci) want="$core $extra" ;;
    "") ;;
    *) echo "usage: $0 [--all|--ci]" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "install-deps: everything is installed"
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
    sudo=sudo
fi
echo "install-deps: installing$missing"
# apt's own output (hundreds of lines of dpkg progress, even with -qq) goes to a log, shown
# only when something fails.
log=$(mktemp "${TMPDIR:-/tmp}/install-deps.XXXXXX.log")
run() {
    if ! "$@" >>"$log" 2>&1; then
        echo "install-deps: failed: $*" >&2
        tail -n 40 "$log" >&2
        echo "install-deps: the whole output is in $log" >&2
        exit 1
    fi
}
run $sudo apt-get update -qq
# shellcheck disable=SC2086
run $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
rm -f "$log"
echo "install-deps: done"
