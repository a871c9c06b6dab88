#!/usr/bin/env bash
# Fetches the real models that the tests run on: the PaddleOCR detector and
# classifier shipped in the rapidocr-onnxruntime 1.4.4 wheel (Apache-2.0),
# pinned by the wheel's sha256, into models/ (not committed).
set -euo pipefail

cd "$(dirname "$0")/.."
wheel_name="rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
wheel_sha256="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf"
declare -A model_sha256=(
    [ch_PP-OCRv4_det_infer.onnx]=d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9
    [ch_ppocr_mobile_v2.0_cls_infer.onnx]=e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c
)

all_present() {
    for model in "${!model_sha256[@]}"; do
        [ -f "models/$model" ] || return 1
        echo "${model_sha256[$model]}  models/$model" | sha256sum --check --quiet || return 1
    done
}

if all_present; then
    echo "models/ is up to date"
    exit 0
fi

mkdir -p models/download
python3 -m pip download --quiet --no-deps --dest models/download "rapidocr-onnxruntime==1.4.4"
echo "$wheel_sha256  models/download/$wheel_name" | sha256sum --check --quiet || {
    echo "error: models/download/$wheel_name does not have the pinned sha256; delete it and run again" >&2
    exit 1
}

for model in "${!model_sha256[@]}"; do
    python3 - "models/download/$wheel_name" "rapidocr_onnxruntime/models/$model" "models/$model" <<'PY'
import sys, zipfile
wheel, member, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive, open(target, "wb") as out:
    out.write(archive.read(member))
PY
    echo "${model_sha256[$model]}  models/$model" | sha256sum --check --quiet || {
        echo "error: models/$model does not have the pinned sha256" >&2
        exit 1
    }
done
echo "fetched ${!model_sha256[*]} into models/"
