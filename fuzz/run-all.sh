#!/bin/sh
# Runs every fuzz target for SECONDS each (default 60), one after the other, starting
# from the committed seeds in corpus/TARGET. New inputs go to scratch/TARGET (not
# committed); a crash leaves its input in artifacts/TARGET/ and makes the script exit 1.
#
#   fuzz/run-all.sh [SECONDS]
#
# Builds optimised with debug assertions (-O -a), so an arithmetic overflow is a crash
# too. Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain the sanitizer
# flags need RUSTC_BOOTSTRAP=1, which this script sets unless rustc is a nightly.
set -eu
cd "$(dirname "$0")"
seconds=${1:-60}
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi
cargo fuzz build -O -a
status=0
for target in $(cargo fuzz list); do
    mkdir -p "scratch/$target"
    echo "== $target: ${seconds}s"
    dict=
    case $target in
    stream | stanza | core) dict=-dict=xmpp.dict ;;
    esac
    if ! cargo fuzz run -O -a "$target" "scratch/$target" "corpus/$target" -- $dict \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 2>"scratch/$target.log"; then
        status=1
        echo "== $target: CRASH (see fuzz/artifacts/$target/ and fuzz/scratch/$target.log)"
        grep -E "panicked|ERROR|SUMMARY" "scratch/$target.log" | head -5
    fi
    grep -E "^stat::number_of_executed_units|^Done" "scratch/$target.log" || true
done
exit $status
