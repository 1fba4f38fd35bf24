"""`lfm-satellite model optimize DIR`: repack a published q4 decoder the way the project's own
q4 builds are.

The published `decoder_q4.onnx` keeps the tied lm-head in float32 (a Transpose of
`model.embed_tokens.weight` [vocab, hidden], 512 MB at full size, into a MatMul) and has no
`num_logits_to_keep` input, so every step reads the whole table, audio steps included, and the
text embeddings come from the float32 `embed_tokens.bin` beside it (another 512 MB). Repacked:

- the head becomes one `MatMulNBits` (4-bit, symmetric blocks of `HEAD_BLOCK`, accuracy level 4,
  onnxruntime's own quantizer), its packed weight and scales in `<stem>.head.onnx_data`;
- the decoder gets `num_logits_to_keep` (int64 scalar; 0 skips the head, as on audio steps),
  sliced before the head exactly as `lfm_toolchain.decoder` does;
- the text embeddings become an `embed_tokens` lookup graph (`GatherBlockQuantized`) whose table
  and scales are the same bytes of `<stem>.head.onnx_data`: the tied table is stored once, and
  the engine reads its rows directly (`satellite.engine.tables`).

The table is read and quantized a window at a time (`blockquant`), so the repack itself holds a
few tens of MB whatever the model size. The decoder's other weights stay where they are (the
new graph reads the original data file), the downloaded files are left untouched, and every new
file is written under a temporary name and renamed before the manifest points at it: an
interrupted repack leaves the directory as it was, and running it again starts over.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.matmul_nbits_quantizer import (
    DefaultWeightOnlyQuantConfig,
    DefaultWeightOnlyQuantizer,
)

from satellite.errors import UserError
from satellite.modeldir.blockquant import packed_windows
from satellite.modeldir.make import make_manifest
from satellite.modeldir.manifest import Manifest, read_manifest
from satellite.modeldir.tensorio import TensorReadError

HEAD_BLOCK = 64
"""Weights per block of the repacked head: the project's q4 block (lfm_toolchain.quantize explains why
64 rather than the export's 32). Narrow test models whose width it does not divide get the
largest of `SMALLER_BLOCKS` that does."""
SMALLER_BLOCKS = (32, 16)
BITS = 4
INT64_MAX = 2**63 - 1
MS_DOMAIN = "com.microsoft"
Progress = Callable[[int, int], None]
"""Called with (rows done, rows in all) as the head is quantized."""


class RepackError(UserError):
    """The decoder cannot be repacked; the message names the file and why."""

    exit_code = 1


@dataclasses.dataclass(frozen=True)
class FloatHead:
    """The float32 lm-head of a decoder graph."""

    table: onnx.TensorProto
    """The [vocab, hidden] table initializer (external data reference or embedded)."""
    transpose: onnx.NodeProto | None
    """The Transpose feeding the MatMul (None when the MatMul reads [hidden, vocab] itself)."""
    matmul: onnx.NodeProto

    @property
    def rows(self) -> int:
        return int(self.table.dims[0 if self.transpose is not None else 1])

    @property
    def width(self) -> int:
        return int(self.table.dims[1 if self.transpose is not None else 0])


def find_float_head(model: onnx.ModelProto) -> FloatHead | None:
    """The MatMul producing the graph's `logits` output from a float32 table, or None."""
    producers = {out: node for node in model.graph.node for out in node.output}
    inits = {t.name: t for t in model.graph.initializer}
    matmul = producers.get("logits")
    if matmul is None or matmul.op_type != "MatMul":
        return None
    weight = matmul.input[1]
    transpose = producers.get(weight)
    if transpose is not None:
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), [1, 0])
        if transpose.op_type != "Transpose" or perm != [1, 0]:
            return None
        weight = transpose.input[0]
    table = inits.get(weight)
    if table is None or table.data_type != TensorProto.FLOAT or len(table.dims) != 2:
        return None
    return FloatHead(table=table, transpose=transpose, matmul=matmul)


def repack_model(
    directory: Path, manifest: Manifest | None = None, progress: Progress | None = None
) -> tuple[Manifest, list[str]]:
    """Repack the decoder of `directory` if it has a float32 lm-head; rewrite the manifest.
    Returns the manifest and what was done (nothing when there is nothing to repack)."""
    manifest = manifest or read_manifest(directory)
    entry = manifest.graphs.get("decoder")
    if entry is None or manifest.variant not in ("q4", "q8"):
        return manifest, []
    path = directory / entry.file
    model = onnx.load(str(path), load_external_data=False)
    head = find_float_head(model)
    if head is None:
        return manifest, []
    stem = PurePosixPath(entry.file).name.removesuffix(".onnx")
    folder = PurePosixPath(entry.file).parent
    data_name = f"{stem}.head.onnx_data"
    decoder_file = str(folder / f"{stem}.repacked.onnx")
    table_file = str(folder / "embed_tokens_q4.onnx")
    rows, width = head.rows, head.width
    block = head_block(width)
    if block is None:
        raise RepackError(f"{path}: hidden size {width} is not a multiple of 16 (4-bit blocks)")
    blob = block * BITS // 8
    blocks = width // block
    packed_bytes = rows * blocks * blob

    data_path = path.parent / data_name
    tmp = data_path.with_name(data_name + ".tmp")
    try:
        with tmp.open("wb") as out:
            scales = quantize_rows(path.parent, head, block, out, progress)
            out.write(scales.astype("<f4").tobytes())
            out.flush()
            os.fsync(out.fileno())
        packed = _external("lm_head.weight_Q4", TensorProto.UINT8, [rows, blocks, blob],
                           data_name, 0, packed_bytes)  # fmt: skip
        scale = _external("lm_head.weight_scales", TensorProto.FLOAT, [rows, blocks],
                          data_name, packed_bytes, rows * blocks * 4)  # fmt: skip
        rewrite_decoder(model, head, block, packed, scale)
        table = lookup_graph(rows, width, block, data_name, packed_bytes)
        _save(model, directory / decoder_file)
        _save(table, directory / table_file)
        os.replace(tmp, data_path)
    finally:
        tmp.unlink(missing_ok=True)

    graphs = {role: g.file for role, g in manifest.graphs.items()}
    graphs["decoder"] = decoder_file
    graphs["embed_tokens"] = table_file
    options = {role: dict(g.options) for role, g in manifest.graphs.items()}
    options["decoder"]["repack"] = {
        "from": entry.file,
        "lm_head": f"float32 {rows} x {width} -> MatMulNBits 4-bit, block {block}",
        "num_logits_to_keep": True,
        "embed_tokens": f"{table_file} reads the head's packed table ({data_name})",
    }
    side = {k: v for k, v in manifest.side_files.items() if k != "embed_tokens"}
    listed = set(manifest.files)
    repacked = make_manifest(
        directory,
        name=manifest.name,
        family=manifest.family,
        variant=manifest.variant,
        config=manifest.config,
        graphs=graphs,
        options=options,
        tokenizer=manifest.tokenizer,
        side_files=side,
        extra_files=sorted(listed),
        source=manifest.source,
        checksums=manifest.files,
    )
    repacked.write(directory)
    return repacked, [
        f"{entry.file}: float32 lm-head ({rows} x {width}) repacked to 4-bit blocks of "
        f"{block} in {folder / data_name}; {decoder_file} skips it on audio steps",
        f"{table_file}: text embeddings from the same packed table (stored once)",
    ]


def head_block(width: int) -> int | None:
    """The 4-bit block for a head `width` wide: `HEAD_BLOCK`, or a smaller one that divides it."""
    return next((b for b in (HEAD_BLOCK, *SMALLER_BLOCKS) if width % b == 0), None)


def quantize_rows(
    folder: Path, head: FloatHead, block: int, out: BinaryIO, progress: Progress | None
) -> npt.NDArray[np.float32]:
    """Quantize the table's rows a window at a time (`blockquant`), writing the packed blocks
    to `out` (a binary file); returns the scales [rows, blocks]."""
    quantizer = DefaultWeightOnlyQuantizer(
        DefaultWeightOnlyQuantConfig(
            block_size=block, is_symmetric=True, accuracy_level=4, bits=BITS
        )
    )
    all_scales: list[npt.NDArray[np.float32]] = []
    windows = packed_windows(
        head.table, folder, quantizer, stored_transposed=head.transpose is None
    )
    try:
        for window in windows:
            out.write(np.ascontiguousarray(window.blocks).tobytes())
            all_scales.append(np.asarray(window.scales, dtype=np.float32))
            if progress is not None:
                progress(window.stop, head.rows)
    except TensorReadError as err:
        raise RepackError(str(err)) from None
    return np.concatenate(all_scales, axis=0)


def rewrite_decoder(
    model: onnx.ModelProto, head: FloatHead, block: int, packed: TensorProto, scales: TensorProto
) -> None:
    """Replace the float head by MatMulNBits over the last `num_logits_to_keep` positions."""
    graph = model.graph
    x = head.matmul.input[0]
    drop = {id(head.matmul)} | ({id(head.transpose)} if head.transpose is not None else set())
    nodes = [n for n in graph.node if id(n) not in drop]
    keep_input = helper.make_tensor_value_info("num_logits_to_keep", TensorProto.INT64, [])
    graph.input.append(keep_input)
    consts = {
        "/lm_head/keep/one": [1],
        "/lm_head/keep/axis1": 1,
        "/lm_head/keep/zero": 0,
        "/lm_head/keep/axes": [0],
        "/lm_head/keep/end": [INT64_MAX],
    }
    inits = [numpy_helper.from_array(np.asarray(v, dtype=np.int64), k) for k, v in consts.items()]
    n = "/lm_head/keep"
    nodes += [
        helper.make_node("Shape", [x], [f"{n}/shape"], name=f"{n}/Shape"),
        helper.make_node("Gather", [f"{n}/shape", f"{n}/axis1"], [f"{n}/len"], name=n, axis=0),
        helper.make_node("Sub", [f"{n}/len", "num_logits_to_keep"], [f"{n}/sub"], name=f"{n}/Sub"),
        helper.make_node("Max", [f"{n}/sub", f"{n}/zero"], [f"{n}/max"], name=f"{n}/Max"),
        helper.make_node("Unsqueeze", [f"{n}/max", f"{n}/axes"], [f"{n}/start"], name=f"{n}/Unsqueeze"),
        helper.make_node(
            "Slice", [x, f"{n}/start", f"{n}/end", f"{n}/one"], [f"{n}/kept"], name=f"{n}/Slice"
        ),
        helper.make_node(
            "MatMulNBits",
            [f"{n}/kept", packed.name, scales.name],
            ["logits"],
            name="/lm_head/MatMulNBits",
            domain=MS_DOMAIN,
            K=head.width,
            N=head.rows,
            bits=BITS,
            block_size=block,
            accuracy_level=4,
        ),
    ]  # fmt: skip
    graph.ClearField("node")
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name != head.table.name]
    graph.ClearField("initializer")
    graph.initializer.extend([*kept, *inits, packed, scales])
    for output in graph.output:
        if output.name == "logits":
            output.type.tensor_type.shape.dim[1].dim_param = "logits_length"
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def lookup_graph(
    rows: int, width: int, block: int, data_name: str, packed_bytes: int
) -> onnx.ModelProto:
    """`embed_tokens`: GatherBlockQuantized over the head's packed table, read in place."""
    blocks = width // block
    data = _external("embed_tokens.weight_Q4", TensorProto.UINT8, [rows, width * BITS // 8],
                     data_name, 0, packed_bytes)  # fmt: skip
    scales = _external("embed_tokens.weight_scales", TensorProto.FLOAT, [rows, blocks],
                       data_name, packed_bytes, rows * blocks * 4)  # fmt: skip
    node = helper.make_node(
        "GatherBlockQuantized",
        [data.name, "input_ids", scales.name],
        ["inputs_embeds"],
        name="/embed_tokens/GatherBlockQuantized",
        domain=MS_DOMAIN,
        bits=BITS,
        block_size=block,
        gather_axis=0,
        quantize_axis=1,
    )
    graph = helper.make_graph(
        [node],
        "embed_tokens",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"])],
        [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch_size", "sequence_length", width])],
        [data, scales],
    )  # fmt: skip
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS_DOMAIN, 1)],
        ir_version=10,
        doc_string="LFM2 text embeddings read from the repacked lm-head (lfm-satellite repack)",
    )


def _external(
    name: str, dtype: int, dims: list[int], location: str, offset: int, length: int
) -> TensorProto:
    tensor = TensorProto()
    tensor.name = name
    tensor.data_type = dtype
    tensor.dims.extend(dims)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _save(model: onnx.ModelProto, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
