"""The embedding graphs: `embed_tokens` (text ids) and `audio_embedding` (audio codes).

Both are one `Gather` over a checkpoint table:

- `embed_tokens`: `input_ids` int64 [batch_size, sequence_length] -> `inputs_embeds` f32
  [batch_size, sequence_length, hidden] from `lfm.embed_tokens.weight` (the table the decoder's
  tied lm-head also uses).
- `audio_embedding` (the official export's contract): `audio_codes` int64
  [batch_size, audio_length] holding flat indices `codebook * 2049 + code` (code 2048 is
  end-of-audio and is valid here) -> `audio_embeds` f32 [batch_size, audio_length, hidden] from
  `audio_embedding.embedding.weight`. The caller sums the 8 rows of a frame to get the
  decoder's next input. No norm: `embedding_norm` belongs to the unused logits head.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from lfm_toolchain.config import AudioModelConfig
from lfm_toolchain.onnx_graph import FLOAT, INT64, GraphBuilder
from lfm_toolchain.weights import Array


def build_embed_tokens(
    g: GraphBuilder, config: AudioModelConfig, weights: Mapping[str, Array]
) -> onnx.ModelProto:
    name = "lfm.embed_tokens.weight"
    g.input("input_ids", INT64, ["batch_size", "sequence_length"])
    g.output("inputs_embeds", FLOAT, ["batch_size", "sequence_length", config.backbone.hidden_size])
    table = g.weight(name, weights[name])
    g.op("Gather", [table, "input_ids"], name="/embed_tokens/Gather", outputs=["inputs_embeds"])
    return g.model(doc="LFM2 text embedding (lfm-satellite lfm_toolchain.embeddings)")


def build_audio_embedding(
    g: GraphBuilder, config: AudioModelConfig, weights: Mapping[str, Array]
) -> onnx.ModelProto:
    name = "audio_embedding.embedding.weight"
    g.input("audio_codes", INT64, ["batch_size", "audio_length"])
    g.output("audio_embeds", FLOAT, ["batch_size", "audio_length", config.backbone.hidden_size])
    table = g.weight(name, weights[name])
    g.op("Gather", [table, "audio_codes"], name="/audio_embedding/Gather", outputs=["audio_embeds"])
    return g.model(doc="audio code embedding (lfm-satellite lfm_toolchain.embeddings)")
