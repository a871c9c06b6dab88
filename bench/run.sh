#!/usr/bin/env bash
# Times onnx-fold on generated models and prints one Markdown table row per
# case: median wall time over RUNS runs, its user CPU time and peak RSS.
# Usage: bench/run.sh [RUNS]   (needs python3 with onnx and numpy; writes bench/out/)
set -euo pipefail

cd "$(dirname "$0")/.."
runs=${1:-5}
binary=target/release/onnx-fold
cargo build --release --quiet
mkdir -p bench/out/small bench/out/large

[ -f bench/out/small/model.onnx ] || python3 bench/make_model.py bench/out/small/model.onnx --channels 1024 --expand 4 --chains 4
[ -f bench/out/large/model.onnx ] || python3 bench/make_model.py bench/out/large/model.onnx --channels 2048 --expand 4 --chains 2 --filler 40 --external

# Prints "median_wall user_of_that_run max_rss_kb" over $runs runs of the command.
measure() {
    for _ in $(seq "$runs"); do
        /usr/bin/time -f "%e %U %M" -o bench/out/time.txt "$@" > /dev/null
        cat bench/out/time.txt
    done | sort -n | awk -v middle=$(( (runs + 1) / 2 )) 'NR == middle { print }'
}

row() {
    local name=$1
    shift
    read -r wall user rss < <(measure "$@")
    printf '| %s | `%s` | %s s | %s s | %d MiB |\n' "$name" "${*/#$binary/onnx-fold}" "$wall" "$user" $(( rss / 1024 ))
}

echo "| case | command | median wall | user CPU | peak RSS |"
echo "|---|---|---|---|---|"
row "small, fold only" $binary bench/out/small/model.onnx bench/out/small/folded.onnx --no-verify --no-fold-check -q
row "small, default" $binary bench/out/small/model.onnx bench/out/small/folded.onnx -q
row "large, fold only" $binary bench/out/large/model.onnx bench/out/large/folded.onnx --no-verify --no-fold-check -q
row "large, default" $binary bench/out/large/model.onnx bench/out/large/folded.onnx -q
