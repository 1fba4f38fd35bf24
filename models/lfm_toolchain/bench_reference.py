"""The reference side of `lfm-satellite bench engine --reference`: liquid-audio 1.3.0 + torch
on CPU (`lfm_toolchain.reference`), on the same weights as the model directory, the same 4-second query
and the same prompt ids, in its own process (`python -m lfm_toolchain.bench_reference SETTINGS.json`,
started by `satellite.bench.harness.run_child`) so that its peak RSS is its own.

The weights: a random-weight build names its size and seed in its manifest, and
`lfm_toolchain.weights` gives the identical arrays for them (before quantization: a q4 directory is
compared with the fp32 originals it was quantized from); a build from a checkpoint names the
checkpoint directory, which is read again. The reference runs in fp32 with sdpa attention.

Figures carry the engine's keys (`satellite.bench.engine.measure_engine`), measured with the
reference's own code:

- mel: its `AudioToMelSpectrogramPreprocessor`; encoder: `LFM2AudioModel._prefill` (conformer,
  adapter and the assembly of the prompt's embeddings);
- prefill: `lfm` over those embeddings on a fresh cache, plus the last position's text logits;
  decoder step: one `lfm` call on the filled cache, the tied lm-head and greedy choice, as
  `generate_interleaved` does per text token; audio step: a frame's summed code embeddings
  through `lfm`, no lm-head;
- depthformer: `_sample_audio_frame` (temperature 1, top-k 4);
- detokenizer: `LFM2AudioDetokenizer` on one frame at a time (it has no streaming state, so a
  frame decoded alone costs what streaming would, though its audio is not the exact stream);
- time-to-first-audio: from the utterance handed over to the first frame's audio, through
  the mel, `generate_interleaved` (which always prefills the whole prompt: the figure compares
  with the engine's cold one) and the detokenizer; real-time factor the same way, over the
  engine's audio length.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lfm_toolchain.config import AudioModelConfig, config_for
from lfm_toolchain.reference import (
    build_reference_model,
    liquid_audio,
    load_weights,
    reference_config,
)
from lfm_toolchain.weights import model_weights, random_detokenizer_weights
from satellite.bench.harness import (
    OUTPUT_RATE,
    BenchError,
    BenchSettings,
    FirstAudio,
    child_main,
    median,
    p95,
    rtf_figures,
    timed_runs,
    to_ms,
)
from satellite.bench.query import PromptIds
from satellite.bench.system import current_rss_mb, peak_rss_mb
from satellite.modeldir.manifest import read_manifest

Array = npt.NDArray[Any]


class Subset(Mapping[str, Array]):
    """The tensors of `names` from a lazy mapping (a checkpoint's extra tensors left out)."""

    def __init__(self, weights: Mapping[str, Array], names: set[str]) -> None:
        self.weights = weights
        self.names = sorted(n for n in names if n in weights)

    def __getitem__(self, name: str) -> Array:
        if name not in self.names:
            raise KeyError(name)
        return self.weights[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def reference_weights(
    directory: Path,
) -> tuple[AudioModelConfig, Mapping[str, Array], Mapping[str, Array], str]:
    """The architecture, main and detokenizer weights (lazy mappings, checkpoint names) the
    model directory was built from, and a description. Raises BenchError when the manifest
    does not say (a directory not built by `lfm-satellite model build`)."""
    from lfm_toolchain.weights import detokenizer_specs, model_specs

    manifest = read_manifest(directory)
    where = directory / "manifest.json"
    if manifest.family != "lfm2.5-audio":
        raise BenchError(
            f"{where}: family {manifest.family}: the reference benchmark runs LFM2.5-Audio only"
        )
    source = manifest.source
    kind = source.get("weights")
    if kind == "random":
        size, seed = source.get("size"), source.get("seed")
        if size not in ("tiny", "full") or not isinstance(seed, int):
            raise BenchError(f"{where}: source: random weights without a size and seed")
        config = config_for(size)
        shaped = source.get("shaped") is True  # absent: built before shaping, not shaped
        return (
            config,
            model_weights(config, seed, shaped=shaped),
            random_detokenizer_weights(config, seed),
            f"random weights, size {size}, seed {seed}{', shaped' if shaped else ''} "
            f"(lfm_toolchain.weights: the arrays the build was made from, fp32; the directory is "
            f"{manifest.variant})",
        )
    if kind == "checkpoint" and isinstance(source.get("checkpoint"), str):
        from lfm_toolchain.checkpoint import read_checkpoint

        checkpoint = read_checkpoint(Path(source["checkpoint"]))
        if checkpoint.detokenizer_weights is None:
            raise BenchError(f"{checkpoint.directory}: no LFM2.5 detokenizer weights")
        config = checkpoint.config
        return (
            config,
            Subset(checkpoint.weights, {s.name for s in model_specs(config)}),
            Subset(checkpoint.detokenizer_weights, {s.name for s in detokenizer_specs(config)}),
            f"checkpoint {checkpoint.directory} (fp32; the directory is {manifest.variant})",
        )
    raise BenchError(
        f"{where}: source does not name the weights (random size and seed, or a checkpoint): "
        "the reference cannot load the same ones"
    )


def build_detokenizer(config: AudioModelConfig, weights: Mapping[str, Array]) -> Any:
    """liquid-audio's `LFM2AudioDetokenizer` holding `weights`, fp32, sdpa (its eager attention
    ignores the sliding-window mask)."""
    import torch
    from transformers import Lfm2Config

    la = liquid_audio()
    torch.manual_seed(0)
    detokenizer = la.detokenizer.LFM2AudioDetokenizer(
        Lfm2Config(**config.detokenizer.backbone.reference_kwargs())
    )
    load_weights(detokenizer, weights)
    detokenizer.lfm.set_attn_implementation("sdpa")
    return detokenizer.float().eval()


def prompt_inputs(prompt: PromptIds, mel: Any, codebooks: int = 8) -> dict[str, Any]:
    """`generate_interleaved`'s inputs for the prompt around one utterance's mel [128, T]
    (what liquid-audio's `ChatState` would hold)."""
    import torch

    la = liquid_audio()
    flags = la.utils.LFMModality
    before = [*prompt.system, *prompt.user_open]
    embeddings = int(la.utils.mel2emb_len(mel.shape[1]))
    modality = (
        [int(flags.TEXT)] * len(before)
        + [int(flags.AUDIO_IN)] * embeddings
        + [int(flags.TEXT)] * len(prompt.user_close)
    )
    return {
        "text": torch.tensor([[*before, *prompt.user_close]], dtype=torch.long),
        "audio_in": mel,
        "audio_in_lens": torch.tensor([mel.shape[1]], dtype=torch.long),
        "audio_out": torch.zeros((codebooks, 0), dtype=torch.long),
        "modality_flag": torch.tensor([modality], dtype=torch.long),
    }


def measure_reference(settings: BenchSettings, samples: npt.NDArray[np.float32]) -> dict[str, Any]:
    """The reference's figures, keyed as the engine's (see the module docstring)."""
    import torch

    threads = settings.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    figures: dict[str, Any] = {"torch_version": torch.__version__, "threads": threads}
    started = time.perf_counter()
    config, weights, detok_weights, description = reference_weights(Path(settings.model))
    figures["weights"] = description
    la = liquid_audio()
    model = build_reference_model(config, weights)
    detokenizer = build_detokenizer(config, detok_weights)
    preprocessor = reference_config(config).preprocessor
    mel_module = la.mel.AudioToMelSpectrogramPreprocessor(**asdict(preprocessor)).eval()
    figures["load_seconds"] = round(time.perf_counter() - started, 3)
    figures["rss_after_load_mb"] = round(current_rss_mb(), 1)
    prompt = PromptIds.from_json(settings.prompt)
    wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None]
    length = torch.tensor([samples.size], dtype=torch.long)
    head = model.lfm.embed_tokens.weight
    seconds_in = samples.size / 16_000

    def mel() -> Any:
        return mel_module(input_signal=wave, length=length)[0][0]

    def generate(inputs: Mapping[str, Any]) -> Iterator[Any]:
        return model.generate_interleaved(  # type: ignore[no-any-return]
            **inputs,
            max_new_tokens=settings.max_new_tokens,
            text_temperature=None,
            text_top_k=None,
            audio_temperature=1.0,
            audio_top_k=4,
        )

    with torch.inference_mode():
        features = mel()
        inputs = prompt_inputs(prompt, features, config.codebooks)
        in_emb = model._prefill(**inputs)
        figures["audio_seconds_in"] = round(seconds_in, 3)
        figures["mel_frames"] = int(features.shape[1])
        figures["audio_embeddings"] = int(la.utils.mel2emb_len(features.shape[1]))
        figures["mel_ms"] = to_ms(median(timed_runs(settings.repeats, mel)))
        encoder_s = median(timed_runs(settings.repeats, lambda: model._prefill(**inputs)))
        figures["encoder_ms"] = to_ms(encoder_s)
        figures["encoder_ms_per_audio_second"] = round(figures["encoder_ms"] / seconds_in, 4)

        def prefill() -> tuple[Any, Any]:
            out = model.lfm(inputs_embeds=in_emb, use_cache=True)
            return out, torch.nn.functional.linear(out.last_hidden_state[0, -1], head)

        prefill_s = median(timed_runs(settings.repeats, prefill))
        figures["prefill_tokens"] = int(in_emb.shape[1])
        figures["prefill_ms"] = to_ms(prefill_s)
        figures["prefill_tokens_per_s"] = round(in_emb.shape[1] / prefill_s, 2)

        out, logits = prefill()
        cache = out.past_key_values
        walls = []
        for _ in range(settings.decoder_steps):
            before = time.perf_counter()
            token = logits.argmax(keepdim=True)
            out = model.lfm(
                inputs_embeds=model.lfm.embed_tokens(token)[None, :],
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            logits = torch.nn.functional.linear(out.last_hidden_state[0, -1], head)
            walls.append(time.perf_counter() - before)
        walls = walls[1:]
        figures["decoder_steps"] = len(walls)
        figures["decoder_ms_per_step"] = to_ms(median(walls))
        figures["decoder_p95_ms_per_step"] = to_ms(p95(walls))

        # audio steps: a frame's embedding in, no text logits (as generate_interleaved does)
        rng = np.random.default_rng(settings.seed)
        frames_in = torch.from_numpy(
            rng.integers(0, 2048, size=(settings.decoder_steps, config.codebooks))
        )
        walls = []
        for frame in frames_in:
            before = time.perf_counter()
            embedding = model.audio_embedding(frame + model.codebook_offsets).sum(0)
            out = model.lfm(
                inputs_embeds=embedding[None, None, :], past_key_values=cache, use_cache=True
            )
            cache = out.past_key_values
            walls.append(time.perf_counter() - before)
        figures["decoder_audio_ms_per_step"] = to_ms(median(walls[1:]))

        hidden = out.last_hidden_state[0, -1]
        torch.manual_seed(settings.seed)
        frames = timed_runs(
            settings.depthformer_frames,
            lambda: model._sample_audio_frame(hidden, temperature=1.0, top_k=4),
        )
        figures["depthformer_frames"] = len(frames)
        figures["depthformer_ms_per_frame"] = to_ms(median(frames))

        rng = np.random.default_rng(settings.seed)
        codes = torch.from_numpy(
            rng.integers(0, 2048, size=(settings.detokenizer_frames, 1, config.codebooks, 1))
        )
        detokenizer(codes[0])  # warm-up
        walls = []
        for frame in codes:
            before = time.perf_counter()
            detokenizer(frame)
            walls.append(time.perf_counter() - before)
        figures["detokenizer_backend"] = "one frame at a time, no state"
        figures["detokenizer_frames"] = len(walls)
        figures["detokenizer_ms_per_frame"] = to_ms(median(walls))

        runs = []
        for _ in range(settings.repeats + 1):  # the first is a warm-up
            torch.manual_seed(settings.seed)
            runs.append(
                _first_audio(
                    lambda: generate(prompt_inputs(prompt, mel(), config.codebooks)), detokenizer
                )
            )
        runs = runs[1:]
        middle = sorted(runs, key=lambda r: r.ttfa)[len(runs) // 2]
        figures["ttfa_cold_ms"] = to_ms(median([r.ttfa for r in runs]))
        figures["ttfa_first_text_ms"] = to_ms(middle.first_text)
        figures["ttfa_first_frame_ms"] = to_ms(middle.first_frame)
        figures["ttfa_detokenizer_ms"] = to_ms(middle.ttfa - middle.first_frame)
        figures["text_tokens_before_audio"] = middle.text_tokens
        figures["ttfa_repeats"] = len(runs)

        torch.manual_seed(settings.seed)
        figures.update(
            _real_time_factor(
                settings,
                lambda: generate(prompt_inputs(prompt, mel(), config.codebooks)),
                detokenizer,
            )
        )
    figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return figures


def decodable(frame: Any) -> bool:
    """Whether the detokenizer takes the frame: the end-of-audio code 2048 only in codebook 0
    (the reference's own `LFM2AudioProcessor.decode` refuses any other 2048; a random model
    samples one now and then)."""
    return not bool((frame[1:] >= 2048).any())


def _first_audio(start: Any, detokenizer: Any) -> FirstAudio:
    """Time one turn from the utterance to the first frame's audio; `start()` computes the mel
    and starts `generate_interleaved`."""
    t0 = time.monotonic()
    first_text = None
    texts = skipped = 0
    turn = start()
    try:
        for token in turn:
            now = time.monotonic()
            if token.numel() == 1:
                texts += 1
                first_text = now if first_text is None else first_text
            elif not decodable(token):
                skipped += 1
            elif int(token[0]) != 2048:
                detokenizer(token[None, :, None])
                done = time.monotonic()
                return FirstAudio(
                    ttfa=done - t0,
                    first_text=(first_text or now) - t0,
                    first_frame=now - t0,
                    text_tokens=texts,
                    frames_not_decodable=skipped,
                )
    finally:
        turn.close()
    raise BenchError(f"the reference ended its turn after {texts} text tokens without audio")


def _real_time_factor(settings: BenchSettings, start: Any, detokenizer: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    first_text = None
    produced = frames = texts = skipped = 0
    target = int(settings.audio_seconds * OUTPUT_RATE)
    turn = start()
    try:
        for token in turn:
            if token.numel() == 1:
                texts += 1
                first_text = time.monotonic() if first_text is None else first_text
                continue
            frames += 1  # every frame, as the engine counts them
            if not decodable(token):
                skipped += 1
            elif int(token[0]) != 2048:
                produced += int(detokenizer(token[None, :, None]).shape[-1])
                if produced >= target:
                    break
    finally:
        turn.close()
    t_end = time.monotonic()
    if first_text is None:
        raise BenchError("the reference's interleaved turn produced no audio")
    return rtf_figures(t0, first_text, t_end, produced, texts, frames, skipped)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:], measure_reference))
