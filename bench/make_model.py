"""Write a large model for the onnx-fold benchmarks.

The model has CHAINS foldable Conv1d chains C -> E*C -> C (kernel 1, with
biases), each followed by a Relu, then FILLER Conv1d C -> C with kernel 3 and a
Relu, which cannot fold and only add weight bytes. Weights are random float32.
With --external every initializer goes to weights.bin next to the model, which
is needed above the 2 GiB limit of one protobuf.

    python3 bench/make_model.py OUT.onnx --channels 1024 --expand 4 --chains 4 --filler 0
"""

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv(name, x, y, c_in, c_out, kernel, rng, initializers, **attributes):
    weight = (rng.standard_normal((c_out, c_in, kernel), dtype=np.float32) / np.sqrt(c_in * kernel)).astype(np.float32)
    bias = rng.standard_normal(c_out, dtype=np.float32) * 0.1
    initializers.append(numpy_helper.from_array(weight, f"{name}.weight"))
    initializers.append(numpy_helper.from_array(bias, f"{name}.bias"))
    return helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [y], name=name, kernel_shape=[kernel], **attributes)


def build(channels, expand, chains, filler, length, seed):
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    value = "x"
    for index in range(chains):
        nodes.append(conv(f"chain{index}_a", value, f"chain{index}_a_out", channels, channels * expand, 1, rng, initializers))
        nodes.append(conv(f"chain{index}_b", f"chain{index}_a_out", f"chain{index}_b_out", channels * expand, channels, 1, rng, initializers))
        nodes.append(helper.make_node("Relu", [f"chain{index}_b_out"], [f"chain{index}_relu"], name=f"chain{index}_relu"))
        value = f"chain{index}_relu"
    for index in range(filler):
        nodes.append(conv(f"filler{index}", value, f"filler{index}_out", channels, channels, 3, rng, initializers, pads=[1, 1]))
        nodes.append(helper.make_node("Relu", [f"filler{index}_out"], [f"filler{index}_relu"], name=f"filler{index}_relu"))
        value = f"filler{index}_relu"
    nodes.append(helper.make_node("Identity", [value], ["y"], name="output"))

    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, length])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, length])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--expand", type=int, default=4)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--filler", type=int, default=0)
    parser.add_argument("--length", type=int, default=16, help="sequence length of the input x")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--external", action="store_true")
    args = parser.parse_args()

    model = build(args.channels, args.expand, args.chains, args.filler, args.length, args.seed)
    if args.external:
        onnx.save_model(model, args.out, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    else:
        onnx.save_model(model, args.out)
    size = os.path.getsize(args.out)
    if args.external:
        size += os.path.getsize(os.path.join(os.path.dirname(os.path.abspath(args.out)), "weights.bin"))
    print(f"wrote {args.out}: {size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
