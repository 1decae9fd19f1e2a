#!/bin/sh
# Regenerates docs/ops.md from the op table (the math, vjp_math and shapes strings of each
# built-in tg_op), by building tg-gradcheck and running `tg-gradcheck --list --markdown`.
#
#   tools/gen-ops-md.sh [BUILD_DIR]     # default: build (a configured meson build directory)
#
# The meson test 'ops-md-fresh' (suite tools) fails while docs/ops.md differs from the output.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
if [ ! -f "$build/build.ninja" ]; then
    echo "gen-ops-md: $build is not a meson build directory (meson setup $build first)" >&2
    exit 1
fi
meson compile -C "$build" tg-gradcheck >/dev/null
tmp=$root/docs/ops.md.tmp.$$
trap 'rm -f "$tmp"' EXIT
"$build/tools/tg-gradcheck" --list --markdown >"$tmp"
mv "$tmp" "$root/docs/ops.md"
echo "gen-ops-md: wrote docs/ops.md ($(grep -c '^| `' "$root/docs/ops.md") ops)"
