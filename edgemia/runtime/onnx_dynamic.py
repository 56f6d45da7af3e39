"""ONNX Runtime's dynamic quantization (quantize_dynamic) in the ONNX translator.

quantize_dynamic writes DynamicQuantizeLinear -> MatMulInteger or ConvInteger
-> Cast -> Mul (-> Add bias) chains. The handlers below follow a chain node by
node and emit it as one DYNAMIC_FULLY_CONNECTED or DYNAMIC_CONV_2D op when its
last Mul arrives.
"""

from __future__ import annotations

import numpy as np

from edgemia.runtime.onnx_values import _Dequantized, _DynamicQuantized, _IntegerProduct, _ScaleProduct, _Value


class DynamicQuantizationHandlers:
    """Handlers of the quantize_dynamic ops, mixed into the ONNX translator, whose helpers they call."""

    def _DynamicQuantizeLinear(self, node) -> None:
        x = self.values.get(node.input[0])
        if not isinstance(x, _Value) or x.dtype != "float32":
            raise self.unsupported(node, f"'{node.input[0]}' is not a float activation")
        if len(node.output) != 3:
            raise self.fail(node, f"has {len(node.output)} outputs, expected 3 (values, scale, zero point)")
        for name, role in zip(node.output, ("values", "scale", "zero_point")):
            self.values[name] = _DynamicQuantized(x, role)

    def _dynamic_input(self, node) -> _Value:
        """Return the float activation that a MatMulInteger or ConvInteger quantizes, after checking its zero point."""
        values = self.values.get(node.input[0])
        zero_point = self.values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if not isinstance(values, _DynamicQuantized) or values.role != "values":
            raise self.unsupported(
                node, f"'{node.input[0]}' must come from DynamicQuantizeLinear; the native kernel runs this op only "
                "in graphs that quantize_dynamic writes")
        if (not isinstance(zero_point, _DynamicQuantized) or zero_point.role != "zero_point"
                or zero_point.source is not values.source):
            raise self.unsupported(node, "the input zero point must be the one DynamicQuantizeLinear computed")
        return values.source

    def _dynamic_weights(self, node, rank: int) -> np.ndarray:
        name = node.input[1] if len(node.input) > 1 else ""
        weights = self.constants.get(name)
        if weights is None or weights.dtype != np.int8 or weights.ndim != rank:
            raise self.unsupported(node, f"weights '{name}' must be a constant int8 tensor of rank {rank}")
        if len(node.input) > 3 and node.input[3]:
            zero_points = self.constants.get(node.input[3])
            if zero_points is None or zero_points.dtype != np.int8:
                raise self.unsupported(node, "the weight zero point must be an int8 constant")
            if (zero_points != 0).any():
                raise self.unsupported(node, "weights must be symmetric (zero point 0)")
        return weights

    def _MatMulInteger(self, node) -> None:
        if len(node.input) < 2:
            raise self.fail(node, f"has {len(node.input)} inputs, expected 2 to 4")
        source = self._dynamic_input(node)
        weights = self._dynamic_weights(node, 2)
        self.values[node.output[0]] = _IntegerProduct(node, source, np.ascontiguousarray(weights.T))

    def _ConvInteger(self, node) -> None:
        if len(node.input) < 2:
            raise self.fail(node, f"has {len(node.input)} inputs, expected 2 to 4")
        source = self._dynamic_input(node)
        weights = self._dynamic_weights(node, 4)
        group = int(self.attributes(node).get("group", 1))
        if len(source.shape) != 3 or group < 1 or weights.shape[1] * group != source.shape[0] \
                or weights.shape[0] % group:
            raise self.fail(node, f"weights of shape {list(weights.shape)} in {group} groups do not fit an input "
                                  f"of shape {source.shape}")
        self.values[node.output[0]] = _IntegerProduct(node, source, weights)

    def _Cast(self, node) -> None:
        product = self.values.get(node.input[0])
        if not isinstance(product, _IntegerProduct) or int(self.attributes(node).get("to", 0)) != 1:
            raise self.unsupported(node, "only the Cast of a MatMulInteger or ConvInteger sum to float is supported")
        self.values[node.output[0]] = _IntegerProduct(product.node, product.source, product.weights, cast=True)

    def _Mul(self, node) -> None:
        operands = [self.values.get(name) for name in node.input]
        if len(operands) != 2:
            raise self.fail(node, f"has {len(operands)} inputs, expected 2")
        scales = [s for s in operands if isinstance(s, _DynamicQuantized) and s.role == "scale"]
        constants = [name for name in node.input if name in self.constants]
        if scales and constants:
            weight_scales = self.constants[constants[0]]
            if weight_scales.dtype != np.float32:
                raise self.unsupported(node, "the weight scale must be a float32 constant")
            self.values[node.output[0]] = _ScaleProduct(scales[0].source, weight_scales.reshape(-1))
            return
        products = [p for p in operands if isinstance(p, _IntegerProduct) and p.cast]
        scale_products = [p for p in operands if isinstance(p, _ScaleProduct)]
        if any(isinstance(value, _Dequantized) for value in operands):
            self.qdq_binary(node, "MUL", operands)
            return
        if not products and not scale_products and any(isinstance(value, _Value) for value in operands):
            self.float_binary(node, "MUL")
            return
        if not products or not scale_products:
            raise self.unsupported(
                node, "this ONNX op is supported by the native kernel only as the Mul of a dynamically quantized "
                "sum by its scales (quantize_dynamic)")
        self._dynamic_op(node, products[0], scale_products[0])

    def _dynamic_op(self, node, product: _IntegerProduct, scale: _ScaleProduct) -> None:
        """Emit DYNAMIC_FULLY_CONNECTED or DYNAMIC_CONV_2D for the chain that ends at Mul `node`.

        A following Add of a constant bias with one value per output channel is folded in. The kernel adds it
        after the multiply, in a separate float32 rounding, as ONNX Runtime does.
        """
        if scale.source is not product.source:
            raise self.unsupported(node, "multiplies by the scale of another DynamicQuantizeLinear")
        convolution = product.weights.ndim == 4
        channels = product.weights.shape[0]
        if scale.weight_scales.size not in (1, channels):
            raise self.fail(node, f"{scale.weight_scales.size} weight scales for {channels} output channels")
        if convolution and scale.weight_scales.size > 1:
            # Mul broadcasts a vector of scales over the last axis of the NCHW sum, which is not the channel axis.
            raise self.unsupported(node, "per-channel weight scales on ConvInteger are not supported")
        weight_scales = np.broadcast_to(scale.weight_scales, (channels,)).astype(np.float32)
        if not (np.isfinite(weight_scales) & (weight_scales > 0)).all():
            raise self.fail(node, "weight scales must be positive and finite")
        name, bias = node.output[0], None
        add = self.sole_consumer(node.output[0])
        if add is not None and add.op_type == "Add" and len(add.input) == 2:
            other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
            values = self.constants.get(other)
            expected = {(channels,), (1, channels)} if not convolution else {(1, channels, 1, 1), (channels, 1, 1)}
            if values is not None and values.dtype == np.float32 and values.shape in expected:
                bias = values.reshape(-1)
                name = add.output[0]
                self.skipped.add(id(add))
        inner = product.node
        inputs = [0, 0, -1]
        if convolution:
            source = self.as_layout(product.source, True, inner)
            _, _, kh, kw = product.weights.shape
            options = self._conv_options(inner, [kh, kw])
            options.pop("activation")
            ohwi = np.ascontiguousarray(product.weights.transpose(0, 2, 3, 1))
            inputs[1] = self.add_constant(f"{inner.name}:weights", ohwi, "int8", weight_scales, [0] * channels, 0)
            if bias is not None:
                inputs[2] = self.add_constant(f"{inner.name}:bias", bias, "float32")
            inputs[0] = source.native_id
            out = self._conv_output(inner, name, source, channels, [kh, kw], options, "float32")
            self.add_op("DYNAMIC_CONV_2D", inner.name, inputs, [out.native_id], options)
        else:
            source = self.as_layout(product.source, False, inner)
            depth = product.weights.shape[1]
            if len(source.shape) != 1 or source.shape[0] != depth:
                raise self.fail(inner, f"the input has shape {source.shape} but the weights expect {depth} features")
            inputs[0] = source.native_id
            inputs[1] = self.add_constant(f"{inner.name}:weights", product.weights, "int8", weight_scales,
                                          [0] * channels, 0)
            if bias is not None:
                inputs[2] = self.add_constant(f"{inner.name}:bias", bias, "float32")
            out = _Value(self.add_activation(name, "float32", [channels]), "float32", [channels])
            self.add_op("DYNAMIC_FULLY_CONNECTED", inner.name, inputs, [out.native_id])
        self.values[name] = out
