"""One LiteRT interpreter wrapper: load a TFLite flatbuffer, feed it images one by one, quantize what goes in
and dequantize what comes out. The engine (``engine.py``), the pretrained TFLite classifiers
(``inference/pretrained.py``) and the export parity check (``deploy/parity.py``) all run LiteRT through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from tl_core.errors import TLError


class LiteRTModel:
    """A batch-1 XNNPACK interpreter: images run one by one (faster per image than batched on CPU: the
    activations stay in cache). Not thread-safe: its owner serialises calls.

    Integer models: a float input is quantized with the input's scale and zero point; an array already in
    the input's integer type goes in as it is. Integer outputs come back dequantized (float64); float
    outputs as they are."""

    def __init__(self, model: Union[str, Path, bytes], threads: int):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interpreter = (
                Interpreter(model_content=model, num_threads=threads)
                if isinstance(model, bytes)
                else Interpreter(model_path=str(model), num_threads=threads)
            )
            self.input = self._interpreter.get_input_details()[0]
            self.output = self._interpreter.get_output_details()[0]
            if len(self.input["shape"]) and self.input["shape"][0] != 1:
                self._interpreter.resize_tensor_input(self.input["index"], (1, *self.input["shape"][1:]))
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise TLError(f"Not a TFLite model LiteRT can load: {str(exc)[:200]}") from None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input["shape"])

    @property
    def input_dtype(self) -> type:
        return self.input["dtype"]

    @property
    def outputs(self) -> int:
        return int(self.output["shape"][-1])

    def quantize(self, inputs: np.ndarray) -> np.ndarray:
        """``inputs`` in the model's input type: integer inputs rounded to its quantization, clipped to its range."""
        dtype = self.input["dtype"]
        if np.asarray(inputs).dtype == dtype:
            return np.asarray(inputs)
        inputs = np.asarray(inputs, dtype=np.float32)
        if dtype == np.float32:
            return inputs
        scale, zero = self.input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(inputs / scale + zero), info.min, info.max).astype(dtype)

    def dequantize(self, outputs: np.ndarray) -> np.ndarray:
        if self.output["dtype"] == np.float32:
            return outputs
        scale, zero = self.output["quantization"]
        return (outputs.astype(np.float64) - zero) * scale

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """(N, ...) inputs -> (N, ...) outputs, one invocation per row."""
        source, sink = self.input["index"], self.output["index"]
        rows = []
        for row in self.quantize(inputs):
            self._interpreter.set_tensor(source, row[None])
            self._interpreter.invoke()
            rows.append(self.dequantize(self._interpreter.get_tensor(sink)[0].copy()))
        return np.stack(rows) if rows else np.zeros((0, *self.output["shape"][1:]), np.float32)
