#!/bin/sh
# Every public header compiles on its own, first in a translation unit, as strict C99
# (-std=c99 -pedantic -Werror) and C11, and as C++ when a C++ compiler is available.
#   test-headers.sh <source include dir> <build include dir> <cc...> [-- <c++...>]
set -eu
src_inc=$1
build_inc=$2
shift 2
cc=""
cxx=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do cc="$cc $1"; shift; done
[ $# -gt 0 ] && shift
while [ $# -gt 0 ]; do cxx="$cxx $1"; shift; done

status=0
n=0
for h in "$src_inc"/tapegrad/*.h "$build_inc"/tapegrad/*.h; do
    [ -f "$h" ] || continue
    name=tapegrad/$(basename "$h")
    extra=""
    if grep -q '^#include <mpi.h>' "$h"; then
        # an optional module's header: needs MPI's include path, skipped without MPI
        extra="$(pkg-config --cflags ompi-c 2>/dev/null || mpicc --showme:compile 2>/dev/null || true) -DOMPI_SKIP_MPICXX -DMPICH_SKIP_MPICXX"
        if ! printf '#include <mpi.h>\n' | $cc $extra -x c -fsyntax-only - 2>/dev/null; then
            echo "skip: $name (no MPI headers)"
            continue
        fi
    fi
    for std in c99 c11; do
        if ! printf '#include <%s>\nint tg_header_test_%s;\n' "$name" "$std" |
            $cc $extra -std=$std -pedantic -Werror -Wall -Wextra -Wstrict-prototypes \
                -I"$src_inc" -I"$build_inc" -x c -fsyntax-only - ; then
            echo "FAIL: $name as $std"
            status=1
        fi
    done
    if [ -n "$cxx" ] && ! printf '#include <%s>\nint tg_header_test;\n' "$name" |
        $cxx $extra -std=c++11 -pedantic -Werror -Wall -Wextra -I"$src_inc" -I"$build_inc" \
            -x c++ -fsyntax-only - ; then
        echo "FAIL: $name as C++11"
        status=1
    fi
    n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "no headers found"; exit 1; }
[ "$status" -ne 0 ] || echo "ok: $n headers compile as C99, C11${cxx:+ and C++11}"
exit $status
