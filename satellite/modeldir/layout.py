"""Which export a set of files is: the layout this engine runs, or the newer onnxruntime-genai
one (Liquid4All/onnx-export's current exporter: `genai_config.json`, `onnx/embeddings*.onnx`, a
decoder with a conv state of 2 and an int8 lm-head), which it does not."""

from __future__ import annotations

import re
from collections.abc import Iterable

NEWER_LAYOUT_MARKERS = ("genai_config.json",)
NEWER_LAYOUT_GRAPHS = re.compile(r"onnx/embeddings(_\w+)?\.onnx")


def newer_layout(paths: Iterable[str]) -> str | None:
    """The first file among `paths` (relative, `/`-separated) that marks the newer
    onnxruntime-genai layout, or None."""
    for path in sorted(paths):
        if path in NEWER_LAYOUT_MARKERS or NEWER_LAYOUT_GRAPHS.fullmatch(path):
            return path
    return None
