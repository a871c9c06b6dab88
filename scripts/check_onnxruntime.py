"""Fold every fixture and the real PP-OCRv4 detector with the onnx-fold binary,
then check each written model with onnx.checker and compare onnxruntime's
outputs of the folded model with its outputs of the original.

This is the acceptance check with an engine other than tract: it also covers
models that tract cannot run (Loop bodies, some If bodies). Exit status 1 on
any failure.

    python3 scripts/check_onnxruntime.py target/release/onnx-fold
"""

import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper

# onnxruntime's CPU provider has no float64 or bfloat16 Conv kernels.
NOT_RUNNABLE = {"f64", "bf16"}
# Relative to the largest magnitude of each output, as onnx-fold compares.
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float16): 1e-2}


def fixture_feeds(fixture_dir):
    feeds = []
    for data_set in sorted(glob.glob(os.path.join(fixture_dir, "test_data_set_*"))):
        feed = {}
        for path in sorted(glob.glob(os.path.join(data_set, "input_*.pb"))):
            tensor = onnx.TensorProto()
            with open(path, "rb") as file:
                tensor.ParseFromString(file.read())
            feed[tensor.name] = numpy_helper.to_array(tensor)
        feeds.append(feed)
    return feeds


def compare(name, original, folded, feeds):
    failures = []
    for feed in feeds:
        expected = onnxruntime.InferenceSession(original).run(None, feed)
        actual = onnxruntime.InferenceSession(folded).run(None, feed)
        for index, (want, got) in enumerate(zip(expected, actual)):
            magnitude = float(np.abs(want.astype(np.float64)).max()) if want.size else 0.0
            error = float(np.abs(want.astype(np.float64) - got.astype(np.float64)).max()) if want.size else 0.0
            limit = RTOL.get(want.dtype, 1e-4) * magnitude + 1e-6
            status = "ok" if error <= limit and want.shape == got.shape else "FAILED"
            print(f"{name} output {index}: max abs error {error:.3g}, magnitude {magnitude:.3g}: {status}")
            if status != "ok":
                failures.append(name)
    return failures


def fold(binary, source, target):
    # tract's optimizer does not finish on the Scan fixture; the time limit
    # keeps this check short, and onnxruntime checks that model here instead.
    result = subprocess.run([binary, source, target, "-q", "--verify-timeout", "20"], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"onnx-fold {source} failed with {result.returncode}: {result.stderr}")


def main():
    binary = sys.argv[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    failures = []
    with tempfile.TemporaryDirectory() as out_dir:
        for fixture_dir in sorted(glob.glob(os.path.join(root, "fixtures", "*", ""))):
            name = os.path.basename(os.path.dirname(fixture_dir))
            folded = os.path.join(out_dir, f"{name}.onnx")
            fold(binary, os.path.join(fixture_dir, "model.onnx"), folded)
            onnx.checker.check_model(folded, full_check=True)
            if name not in NOT_RUNNABLE:
                failures += compare(name, os.path.join(fixture_dir, "model.onnx"), folded, fixture_feeds(fixture_dir))

        detector = os.path.join(root, "models", "ch_PP-OCRv4_det_infer.onnx")
        folded = os.path.join(out_dir, "ppocr_det.onnx")
        fold(binary, detector, folded)
        onnx.checker.check_model(folded, full_check=True)
        image = np.random.default_rng(0).uniform(0.0, 1.0, size=(1, 3, 640, 640)).astype(np.float32)
        failures += compare("ch_PP-OCRv4_det_infer", detector, folded, [{"x": image}])

    if failures:
        print(f"onnxruntime check FAILED for: {', '.join(sorted(set(failures)))}")
        return 1
    print("onnxruntime check passed: every folded model is valid and matches its original")
    return 0


if __name__ == "__main__":
    sys.exit(main())
