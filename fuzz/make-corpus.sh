#!/bin/sh
# Fills fuzz/corpus/load_fold_save with the fixture models as seeds. Models
# over 1 MB (the 9 MB seed model) are left out: libFuzzer caps the length of
# the inputs it makes at the largest seed, and large inputs slow every run.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
corpus="$root/fuzz/corpus/load_fold_save"
mkdir -p "$corpus"

for model in "$root"/fixtures/*/model.onnx; do
    size=$(wc -c < "$model")
    if [ "$size" -gt 1048576 ]; then
        continue
    fi
    name=$(basename "$(dirname "$model")")
    cp "$model" "$corpus/fixture-$name.onnx"
done
echo "$(ls "$corpus" | wc -l) seeds in $corpus"
