#!/bin/sh
# run-doxygen.sh DOXYGEN DOXYFILE HEADER_DIR...
# Doxygen reports nothing about a header that has no @file comment (its functions silently
# drop out of the reference), so first require one in every *.h of each HEADER_DIR; then run
# Doxygen, whose warnings are errors (WARN_AS_ERROR in Doxyfile.in).
set -eu
doxygen=$1
doxyfile=$2
shift 2
missing=0
for dir in "$@"; do
    for h in "$dir"/*.h; do
        if ! grep -q '@file' "$h"; then
            echo "$h:1: error: no @file comment: Doxygen would document nothing in it" >&2
            missing=1
        fi
    done
done
[ "$missing" = 0 ] || exit 1
exec "$doxygen" "$doxyfile"
