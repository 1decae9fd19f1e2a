#!/bin/sh
# Installs what tapegrad needs on Debian 12 (only what is missing; apt-get is idempotent).
#
#   tools/install-deps.sh          build + test dependencies
#   tools/install-deps.sh --all    also PyTorch (side-by-side scripts), Fashion-MNIST, OpenMPI,
#                                  clang/libFuzzer and OpenBLAS (benchmarks, fuzzing, MPI)
#   tools/install-deps.sh --ci     what .ci/run needs: the same as --all (PyTorch runs the
#                                  torch-reference gradient test; without it that test skips)
set -eu

core="meson ninja-build pkg-config gcc libc6-dev check libjansson-dev zlib1g-dev
      libgraphviz-dev graphviz valgrind python3 python3-numpy"
extra="libopenmpi-dev openmpi-bin clang libclang-rt-14-dev libopenblas-dev
       dataset-fashion-mnist binutils python3-torch"

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
$sudo apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
