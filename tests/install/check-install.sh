#!/bin/sh
# The path README gives a user who builds their own program, checked from outside the tree:
#
#   1. `meson install` (into a temporary DESTDIR), then README's short program
#      (examples/quickstart.c) built with `pkg-config --cflags --libs tapegrad`, shared, and
#      with `pkg-config --static` into a fully static binary; the seed example (it renders)
#      built with `pkg-config ... tapegrad-render`. Each one is run.
#   2. The same short program built against the uninstalled tree through
#      <build>/meson-uninstalled/tapegrad-uninstalled.pc.
#   3. The library directory the build installs into is one the dynamic loader searches
#      (/etc/ld.so.conf and what it includes), so that after `meson install` and `ldconfig`
#      a program runs without LD_LIBRARY_PATH. (Meson picks Debian's multiarch
#      lib/x86_64-linux-gnu only when dpkg-dev is installed; lib64 is not searched.)
#
# usage: check-install.sh BUILD_DIR SOURCE_DIR LIBDIR   (LIBDIR: prefix/libdir, absolute)
set -eu

build=$1
src=$2
libdir=$3
cc=${CC:-cc}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tg-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
fail() { echo "check-install: FAIL: $*" >&2; exit 1; }
step() { echo "check-install: $*"; }

# ---- 3. the loader searches libdir ---------------------------------------------------------
loader_dirs() { # every directory ld.so.conf names, following its include lines
    for f in "$@"; do
        [ -r "$f" ] || continue
        while read -r first rest; do
            case $first in
                '' | '#'*) ;;
                include)
                    # shellcheck disable=SC2086 # the glob is meant to expand
                    loader_dirs $rest ;;
                *) echo "$first" ;;
            esac
        done <"$f"
    done
}
case $libdir in
    /lib | /usr/lib | /lib/x86_64-linux-gnu | /usr/lib/x86_64-linux-gnu) ;; # built-in paths
    *)
        if [ -r /etc/ld.so.conf ]; then
            loader_dirs /etc/ld.so.conf | grep -qx "$libdir" ||
                fail "meson installs the library into $libdir, which the dynamic loader" \
                     "does not search (/etc/ld.so.conf): programs would need LD_LIBRARY_PATH." \
                     "On Debian install dpkg-dev (tools/install-deps.sh does) and reconfigure," \
                     "or pass --libdir"
        fi ;;
esac
step "libdir $libdir is on the loader's path"

# ---- 1. installed ------------------------------------------------------------------------------
dest=$tmp/root
meson install -C "$build" --no-rebuild --destdir "$dest" --quiet >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "meson install"; }
pcdir=$dest$libdir/pkgconfig
[ -f "$pcdir/tapegrad.pc" ] || fail "no tapegrad.pc in $pcdir"
# The DESTDIR stands in for /: pkg-config prefixes every -I and -L with it.
sys_pc=$(pkg-config --variable pc_path pkg-config)
pc() {
    PKG_CONFIG_SYSROOT_DIR=$dest PKG_CONFIG_LIBDIR="$pcdir:$sys_pc" pkg-config "$@"
}
run() { # name, then the command; its output must end in the program's last line
    name=$1
    shift
    "$@" >"$tmp/$name.out" 2>&1 || { cat "$tmp/$name.out" >&2; fail "$name exited $?"; }
}

cd "$tmp"
# shellcheck disable=SC2046 # pkg-config's flags are separate words
$cc -o quickstart-shared "$src/examples/quickstart.c" $(pc --cflags --libs tapegrad) \
    -Wl,-rpath,"$dest$libdir" || fail "building the short program against the installed library"
run quickstart-shared ./quickstart-shared
grep -q '^step 500' quickstart-shared.out || fail "quickstart (shared) printed no step 500"
ldd ./quickstart-shared | grep -q "$dest$libdir/libtapegrad.so" ||
    fail "quickstart-shared did not load the installed libtapegrad.so"
step "shared: built and ran the short program against the installed library"

# shellcheck disable=SC2046
$cc -static -o quickstart-static "$src/examples/quickstart.c" \
    $(pc --static --cflags --libs tapegrad) 2>static.err ||
    { cat static.err >&2; fail "linking the short program statically"; }
if readelf -l quickstart-static | grep -q 'program interpreter'; then
    fail "quickstart-static is not statically linked"
fi
run quickstart-static ./quickstart-static
cmp -s quickstart-shared.out quickstart-static.out ||
    fail "the static and the shared program printed different output"
step "static: linked with pkg-config --static, ran, same output as shared"

# shellcheck disable=SC2046
$cc -o seed-network "$src/examples/seed-network.c" $(pc --cflags --libs tapegrad-render) -lm \
    -Wl,-rpath,"$dest$libdir" || fail "building the seed example against tapegrad-render"
run seed-network ./seed-network --quiet --steps 50 --graph "$tmp/seed.dot"
[ -s seed.dot ] || fail "the seed example wrote no graph"
step "render: built and ran the seed example against tapegrad-render"

# ---- 2. uninstalled ----------------------------------------------------------------------------
# shellcheck disable=SC2046
$cc -o quickstart-uninst "$src/examples/quickstart.c" \
    $(PKG_CONFIG_PATH="$build/meson-uninstalled" pkg-config --cflags --libs tapegrad) \
    -Wl,-rpath,"$build/lib" || fail "building the short program against the uninstalled tree"
run quickstart-uninst ./quickstart-uninst
cmp -s quickstart-shared.out quickstart-uninst.out ||
    fail "the program built against the uninstalled tree printed different output"
step "uninstalled: built through meson-uninstalled/tapegrad-uninstalled.pc and ran"
