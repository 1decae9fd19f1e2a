#!/bin/sh
# The shared library exports only tg_[a-z]* names (internal helpers are tg__*, hidden) and
# imports nothing that ends the process or changes process-wide state: no abort/exit (errors
# are returned, never fatal), no assert (compiled out under NDEBUG, fatal otherwise), no
# signal handlers, locale or floating-point environment changes.
#   test-symbols.sh <path to libtapegrad.so> [nm]
set -eu
lib=$1
nm=${2:-nm}
status=0

# Linker-made markers that some toolchains put in the dynamic symbol table.
exported=$("$nm" -D --defined-only "$lib" | awk '{print $NF}' |
           grep -v -E '^(_init|_fini|_edata|_end|__bss_start)$' | sed 's/@.*//' | sort -u)
count=$(printf '%s\n' "$exported" | grep -c . || true)
bad=$(printf '%s\n' "$exported" | grep -v -E '^tg_[a-z]' | grep . || true)
if [ -n "$bad" ]; then
    echo "exported symbols not matching ^tg_[a-z]:"
    printf '  %s\n' $bad
    status=1
fi
internal=$(printf '%s\n' "$exported" | grep -E '^tg__' || true)
[ -z "$internal" ] || { echo "internal tg__ symbols exported: $internal"; status=1; }

forbidden='abort|exit|_exit|_Exit|quick_exit|__assert_fail|__assert|signal|sigaction|sigprocmask|raise|setlocale|fesetenv|feupdateenv|feholdexcept|fesetround|feenableexcept|fedisableexcept|fesetexceptflag|__fesetround|putenv|setenv|unsetenv|chdir|umask'
imported=$("$nm" -D --undefined-only "$lib" | awk '{print $NF}' | sed 's/@.*//' | sort -u)
hits=$(printf '%s\n' "$imported" | grep -x -E "$forbidden" || true)
if [ -n "$hits" ]; then
    echo "the library imports process-ending or process-global functions:"
    printf '  %s\n' $hits
    status=1
fi
[ "$status" -ne 0 ] || echo "ok: $count exported symbols, all tg_*; no forbidden imports"
exit $status
