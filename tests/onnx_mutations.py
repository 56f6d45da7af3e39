"""Seeded structural mutations of ONNX models, for tests that the native loader fails cleanly.

Byte flips in a serialized model mostly break the protobuf, which the onnx
reader rejects before the translator reads it. These mutations keep the file
parseable and change what the translator and the kernel must check: tensor
shapes, data types and values, node inputs and attributes.
"""

from __future__ import annotations

import random

import numpy as np

SPECIAL_FLOATS = [0.0, -1.0, 1e-45, 1e38, float("inf"), float("nan")]
SPECIAL_INTS = [0, -1, 2, 7, 1 << 20, -(1 << 31)]


def _mutate_initializer(rng: random.Random, init) -> str:
    from onnx import TensorProto, numpy_helper

    kind = rng.choice(["dims", "dtype", "value", "truncate"])
    try:
        numpy_helper.to_array(init)
    except ValueError:  # an earlier mutation already broke it
        kind = "dims"
    if kind == "dims":
        if init.dims:
            init.dims[rng.randrange(len(init.dims))] = rng.choice([0, 1, 3, 1000])
        else:
            init.dims.append(rng.choice([2, 5]))
    elif kind == "dtype":
        array = numpy_helper.to_array(init)
        target = rng.choice([np.int8, np.uint8, np.int32, np.float32])
        init.CopyFrom(numpy_helper.from_array(array.astype(target), init.name))
    elif kind == "value":
        array = numpy_helper.to_array(init).copy()
        if array.size:
            flat = array.reshape(-1)
            if init.data_type == TensorProto.FLOAT:
                flat[rng.randrange(flat.size)] = rng.choice(SPECIAL_FLOATS)
            else:
                info = np.iinfo(array.dtype)
                flat[rng.randrange(flat.size)] = rng.choice([info.min, info.max, 0, 1])
        init.CopyFrom(numpy_helper.from_array(array, init.name))
    else:
        array = numpy_helper.to_array(init)
        if array.size > 1:
            init.CopyFrom(numpy_helper.from_array(array.reshape(-1)[: array.size // 2].copy(), init.name))
    return f"initializer '{init.name}': {kind}"


def _mutate_node(rng: random.Random, node, names: list[str]) -> str:
    kind = rng.choice(["drop input", "swap inputs", "rename input", "attribute"])
    if kind == "drop input" and node.input:
        del node.input[rng.randrange(len(node.input))]
    elif kind == "swap inputs" and len(node.input) > 1:
        i, j = rng.sample(range(len(node.input)), 2)
        node.input[i], node.input[j] = node.input[j], node.input[i]
    elif kind == "rename input" and node.input:
        node.input[rng.randrange(len(node.input))] = rng.choice(names)
    else:
        ints = [a for a in node.attribute if a.ints or a.type == a.INT]
        if ints:
            attribute = rng.choice(ints)
            if attribute.ints:
                attribute.ints[rng.randrange(len(attribute.ints))] = rng.choice(SPECIAL_INTS)
            else:
                attribute.i = rng.choice(SPECIAL_INTS)
    return f"node '{node.name}' ({node.op_type}): {kind}"


def mutated_models(model, count: int, seed: int):
    """Yield (description, mutated ModelProto) pairs, each with one to three mutations."""
    import onnx

    rng = random.Random(seed)
    names = [init.name for init in model.graph.initializer] + [o for n in model.graph.node for o in n.output]
    for _ in range(count):
        mutated = onnx.ModelProto()
        mutated.CopyFrom(model)
        changes = []
        for _ in range(rng.choice([1, 2, 3])):
            if rng.random() < 0.5 and mutated.graph.initializer:
                changes.append(_mutate_initializer(rng, rng.choice(mutated.graph.initializer)))
            else:
                changes.append(_mutate_node(rng, rng.choice(mutated.graph.node), names))
        yield "; ".join(changes), mutated


def assert_fails_cleanly(path, model, records: np.ndarray) -> bool:
    """Load and run a mutated model on the native kernel; True when it was rejected.

    Only edgemia's InputError may come out of the loader, and it must name the
    file. A model that loads must run the records to an output of their count.
    """
    import onnx

    from edgemia.errors import InputError
    from edgemia.runtime.native import NativeSession
    from edgemia.runtime.onnx_model import read_onnx

    onnx.save(model, str(path))
    try:
        session = NativeSession(read_onnx(path), threads=2)
    except InputError as exc:
        assert str(path) in str(exc)
        return True
    output = session.run(records)
    assert len(output) == len(records)
    return False
