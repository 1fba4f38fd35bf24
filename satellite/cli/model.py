"""`lfm-satellite model ...` subcommands: list, fetch, verify, info."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from satellite.errors import UserError
from satellite.modeldir.catalog import (
    BACKBONE_FILE,
    BACKBONE_REPO,
    CATALOG_ENV,
    catalog_path,
    entry_as_dict,
    find_entry,
    load_catalog,
)
from satellite.modeldir.manifest import MANIFEST_NAME, VARIANTS, human_size, read_manifest
from satellite.modeldir.verify import Report, verify
from satellite.settings import ModelSettings


def add_model_commands(commands: Any) -> None:
    """Add `model` and its subcommands to the CLI's subparsers."""
    model = commands.add_parser(
        "model",
        help="list, fetch, verify and inspect models",
        description="Model directories: list the catalog, fetch a model from the Hugging Face "
        "hub, verify a directory, show what it holds.",
    )
    sub = model.add_subparsers(dest="model_command", metavar="MODEL_COMMAND")
    sub.required = True

    listing = sub.add_parser(
        "list",
        help="list the models of the catalog",
        description=f"List the catalog's models (models/lfm_toolchain/catalog.yaml, or --catalog / "
        f"${CATALOG_ENV}).",
    )
    _catalog_option(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_list)

    fetch = sub.add_parser(
        "fetch",
        help="download a model variant from the Hugging Face hub",
        description="Download only the files of one variant through huggingface_hub (resumable, "
        "with progress bars; honours HF_ENDPOINT and HF_TOKEN), check them against the hub's "
        "checksums, write manifest.json and verify the directory. With HF_HUB_OFFLINE=1 (or "
        "--offline) the files already in the directory are indexed instead.",
    )
    fetch.add_argument("name", help="catalog name, e.g. LiquidAI/LFM2.5-Audio-1.5B-ONNX")
    fetch.add_argument(
        "--variant", choices=VARIANTS, help="weights precision (default: the catalog's, q4)"
    )
    fetch.add_argument(
        "--dir",
        metavar="DIR",
        type=Path,
        help="model directory to fill (default: MODELS_DIR/NAME/VARIANT)",
    )
    fetch.add_argument(
        "--models-dir",
        metavar="DIR",
        type=Path,
        help="where models are kept (default: $STATE_DIRECTORY/models under systemd, else "
        "~/.local/share/lfm-satellite/models)",
    )
    fetch.add_argument("--revision", metavar="REV", help="branch, tag or commit to fetch")
    fetch.add_argument(
        "--offline", action="store_true", help="index files already in DIR; download nothing"
    )
    _catalog_option(fetch)
    fetch.set_defaults(handler=cmd_fetch)

    backbone = sub.add_parser(
        "fetch-backbone",
        help="download the backbone's GGUF file for `model.backbone: llamacpp`",
        description="Download Liquid AI's GGUF file of the model's LFM2 backbone into a model "
        "directory (resumable, checked against the hub's sha256), where `model.backbone: "
        "llamacpp` finds it. Needs `pip install 'lfm-satellite[llamacpp]'` to run.",
    )
    backbone.add_argument("directory", type=Path, help="the model directory (fetched before)")
    backbone.add_argument(
        "--repo", default=BACKBONE_REPO, help=f"hub repository (default {BACKBONE_REPO})"
    )
    backbone.add_argument(
        "--file", default=BACKBONE_FILE, help=f"GGUF file in it (default {BACKBONE_FILE})"
    )
    backbone.add_argument("--revision", default="main", help="branch, tag or commit (main)")
    backbone.set_defaults(handler=cmd_fetch_backbone)

    check = sub.add_parser(
        "verify",
        help="check a model directory",
        description="Check a model directory: manifest, every file's size and sha256, each "
        "graph's inputs and outputs against its role. Prints OK and a summary, or one line per "
        "problem (the file, then what is wrong) and exits 1.",
    )
    check.add_argument("directory", metavar="DIR", type=Path)
    check.add_argument(
        "--quick", action="store_true", help="compare sizes only, skip the sha256 checksums"
    )
    check.add_argument(
        "--load", action="store_true", help="also load each graph in onnxruntime (slow, memory)"
    )
    check.set_defaults(handler=cmd_verify)

    fix = sub.add_parser(
        "fix",
        help="correct the known defects of a published model's graphs",
        description="Write corrected graphs beside the defective ones of a model directory and "
        "point the manifest at them: the published vocoder_depthformer graphs run attention "
        "without rotary embeddings and with tables for theta 10,000 (the model uses 1,000,000). "
        "The downloaded files are left as they are. `model fetch` does this by itself.",
    )
    fix.add_argument("directory", metavar="DIR", type=Path)
    fix.set_defaults(handler=cmd_fix)

    optimize = sub.add_parser(
        "optimize",
        help="fix a published model and repack it for speed and memory",
        description="`model fix`, then repack a published q4 decoder the way the project's own "
        "q4 builds are: the float32 lm-head (512 MB, read on every step) quantized to 4-bit "
        "blocks, skipped on audio steps, and stored once with the text embeddings; and the "
        "depthformer rewritten to read less a run (its q/k rearrangement folded into the "
        "weights, one head per codebook); and a streaming detokenizer made from the published "
        "one's weights (new frames only, its state fed back, where the published graph re-runs "
        "17 past frames a call), used once it is shown to give the published graph's audio. "
        "Writes new files beside the downloaded ones. `model fetch` does this by itself.",
    )
    optimize.add_argument("directory", metavar="DIR", type=Path)
    optimize.set_defaults(handler=cmd_optimize)

    info = sub.add_parser(
        "info",
        help="show what a model directory holds",
        description="Show a model directory's family, variant, source, config numbers, and each "
        "role's file, size and inputs/outputs, from its manifest.",
    )
    info.add_argument("directory", metavar="DIR", type=Path)
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    info.set_defaults(handler=cmd_info)

    build = sub.add_parser(
        "build",
        help="build a model directory (random-weight test models; needs the export extra)",
        description="Build a model directory of the LFM2.5-Audio architecture: `--size tiny` "
        "(tests and the demo) or `--size full` (the real shapes, for speed and memory figures), "
        "with seeded random weights, or convert a real checkpoint with --from (which replaces "
        "--size and --seed). The tiny model's special rows are scaled (shaped) so that its "
        "replies reach audio; it is the model the demo and the tests build. `--layout "
        "published` writes the published ONNX export's files, defects included.",
    )
    build.add_argument("--size", choices=("tiny", "full"), default="tiny", help="default: tiny")
    build.add_argument("--variant", choices=VARIANTS, default="fp32", help="default: fp32")
    build.add_argument("--out", metavar="DIR", type=Path, required=True, help="directory to write")
    build.add_argument(
        "--seed",
        type=int,
        help="seed of the random weights (default: 216 for tiny, the demo's model; 0 for full)",
    )
    build.add_argument(
        "--shaped",
        action=argparse.BooleanOptionalAction,
        help="scale the special rows of the random weights so that generation reaches "
        "<|audio_start|>, audio and its end (default: tiny only); --no-shaped keeps them as drawn",
    )
    build.add_argument(
        "--family",
        choices=("lfm2.5-audio", "lfm2-audio"),
        default="lfm2.5-audio",
        help="lfm2.5-audio (LFM2 detokenizer, default) or lfm2-audio (v1, Mimi decoder)",
    )
    build.add_argument(
        "--from",
        dest="checkpoint",
        metavar="CHECKPOINT_DIR",
        type=Path,
        help="convert a real checkpoint (config.json + safetensors, the hub's layout)",
    )
    build.add_argument(
        "--block-size",
        type=int,
        metavar="N",
        help="weights per quantization block for q4/q8 (16, 32, 64, 128 or 256; default 64 for "
        "q4, 32 for q8). Smaller blocks round more finely and take more memory: the full-size q4 "
        "decoder takes 908 MB at 32, 753 MB at 64",
    )
    build.add_argument(
        "--layout",
        choices=("project", "published"),
        default="project",
        help="project: the project's own graphs (default); published: the files of the "
        "published LiquidAI/LFM2.5-Audio-1.5B-ONNX export with its known defects (fp32 or q4), "
        "to test what `model fetch` gets and `model fix` corrects",
    )
    build.add_argument(
        "--overwrite", action="store_true", help="replace a model directory already at --out"
    )
    build.set_defaults(handler=cmd_build)


def load_toolchain() -> Any:
    """`lfm_toolchain.build`, imported only when asked for: the daemon never needs the toolchain.
    It runs on the run-time dependencies (onnx, onnxruntime's quantizer), so a board can build
    from a checkpoint; the `export` extra adds what the reference comparisons need."""
    try:
        import lfm_toolchain.build as build
    except ImportError as err:
        raise UserError(
            f"`model build` needs the model toolchain (the `lfm_toolchain` package of lfm-satellite), "
            f"which cannot import {err.name!r}: reinstall lfm-satellite, e.g. "
            "pip install --force-reinstall 'lfm-satellite[export]' from a source checkout"
        ) from None
    return build


def cmd_build(args: argparse.Namespace) -> int:
    from satellite.modeldir.info import format_info

    build = load_toolchain()
    manifest = build.build_model(
        args.out,
        size=args.size,
        variant=args.variant,
        seed=args.seed,
        shaped=args.shaped,
        family=args.family,
        checkpoint=args.checkpoint,
        overwrite=args.overwrite,
        block_size=args.block_size,
        layout=args.layout,
        progress=print_step(),
    )
    print(format_info(args.out, manifest))
    report = verify(args.out)
    _print_report(report)
    if args.layout == "published" and report.errors:
        print(
            f"{args.out}: written as published, with the export's known defects (above); "
            f"`lfm-satellite model optimize {args.out}` corrects and repacks it"
        )
        return 0
    if not report.ok:
        return 1
    print(f"OK: {args.out} verified")
    return 0


def _catalog_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--catalog",
        metavar="FILE",
        help=f"model catalog (default: ${CATALOG_ENV} or the shipped one)",
    )


def cmd_list(args: argparse.Namespace) -> int:
    entries = load_catalog(catalog_path(args.catalog))
    if args.json:
        print(json.dumps([entry_as_dict(e) for e in entries], indent=2))
        return 0
    rows = [("NAME", "KIND", "VARIANTS", "DESCRIPTION")]
    for e in entries:
        variants = " ".join(f"{v}*" if v == e.default_variant else v for v in e.variants)
        rows.append((e.name, e.kind, variants, e.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    print("* default variant; kind checkpoint/build: make it with `lfm-satellite model build`")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from lfm_toolchain.streaming_detokenizer import add_streaming_detokenizer

    from satellite.modeldir.fetch import fetch

    entry = find_entry(load_catalog(catalog_path(args.catalog)), args.name)
    result = fetch(
        entry,
        variant=args.variant,
        directory=args.dir,
        models_dir=args.models_dir,
        revision=args.revision,
        offline=True if args.offline else None,
    )
    _print_report(result.report)
    if not result.report.ok:
        print(
            f"{result.directory}: fetched, but the files do not fit the runtime (see above)",
            file=sys.stderr,
        )
        return 1
    manifest, streamed = add_streaming_detokenizer(result.directory, result.manifest)
    for line in streamed:
        print(line)
    print(
        f"OK: {result.directory}: {manifest.name} {manifest.variant}, "
        f"{len(manifest.files)} files, {human_size(result.total_bytes)}"
    )
    return 0


def fetch_if_missing(settings: ModelSettings, spec: str | None) -> None:
    """`run --fetch`: the catalog model that `spec` (else the config's model section) names,
    fetched into the models folder unless it is there already; a model directory, given or
    configured, is left as it is."""
    from satellite.modeldir.fetch import default_model_dir, default_models_dir

    if settings.directory or (spec is not None and Path(spec).expanduser().exists()):
        return
    entry = find_entry(load_catalog(catalog_path()), spec or settings.name)
    models_dir = (
        Path(settings.models_dir).expanduser() if settings.models_dir else default_models_dir()
    )
    if (default_model_dir(models_dir, entry.name, settings.variant) / MANIFEST_NAME).is_file():
        return
    print(f"fetching {entry.name} ({settings.variant}): it is not in {models_dir} yet", flush=True)
    request = argparse.Namespace(
        catalog=None, name=entry.name, variant=settings.variant, dir=None,
        models_dir=models_dir, revision=None, offline=False,
    )  # fmt: skip
    if cmd_fetch(request) != 0:
        raise UserError(f"could not fetch {entry.name} ({settings.variant}); see the lines above")


def cmd_fetch_backbone(args: argparse.Namespace) -> int:
    from satellite.modeldir.fetch import fetch_backbone

    path = fetch_backbone(
        args.directory, repo=args.repo, filename=args.file, revision=args.revision
    )
    print(
        f"OK: {path} ({human_size(path.stat().st_size)}); set `model.backbone: llamacpp` to run "
        "the backbone on llama.cpp"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from satellite.engine.sessions import open_to_check  # onnxruntime: only when it runs

    report = verify(
        args.directory, checksums=not args.quick, load=open_to_check if args.load else None
    )
    _print_report(report)
    if not report.ok:
        return 1
    m = report.manifest
    assert m is not None
    total = sum(e.size for e in m.files.values())
    how = "sizes checked" if args.quick else "sizes and sha256 checked"
    print(
        f"OK: {args.directory}: {m.name} ({m.family}, {m.variant}): {len(m.graphs)} graphs "
        f"({', '.join(m.graphs)}) fit their roles; {len(m.files)} files, {human_size(total)}, "
        f"{how}" + ("; all graphs load in onnxruntime" if args.load else "")
    )
    return 0


def cmd_fix(args: argparse.Namespace) -> int:
    # Imported here, as fetch is: they load onnx, which no other command (the daemon's `run`
    # above all) should pay for at start.
    from satellite.modeldir.repair import fix_model

    manifest, repairs = fix_model(args.directory)
    for repair in repairs:
        print(f"{args.directory / repair.original}: {'; '.join(repair.problems)}")
        print(f"  wrote {args.directory / repair.fixed}; manifest.json now uses it")
    if not repairs:
        print(f"{args.directory}: no known defect to correct")
    report = verify(args.directory, checksums=False)
    _print_report(report)
    if not report.ok:
        return 1
    print(f"OK: {args.directory}: {manifest.name} ({manifest.variant}) verified")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from lfm_toolchain.streaming_detokenizer import add_streaming_detokenizer

    from satellite.modeldir.depthfold import fold_model
    from satellite.modeldir.repack import repack_model
    from satellite.modeldir.repair import fix_model

    manifest, repairs = fix_model(args.directory)
    for repair in repairs:
        print(f"fixed {repair.original}: {'; '.join(repair.problems)} -> {repair.fixed}")
    manifest, done = repack_model(args.directory, manifest, progress=print_progress("lm-head"))
    manifest, folded = fold_model(args.directory, manifest)
    manifest, streamed = add_streaming_detokenizer(args.directory, manifest)
    for line in [*done, *folded, *streamed]:
        print(line)
    if not repairs and not done and not folded and not streamed:
        print(f"{args.directory}: nothing to fix, repack, fold or make streaming")
    report = verify(args.directory, checksums=False)
    _print_report(report)
    if not report.ok:
        return 1
    print(f"OK: {args.directory}: {manifest.name} ({manifest.variant}) verified")
    return 0


def print_step() -> Callable[[str], None]:
    """A progress callback printing each step on stderr with the seconds since the start."""
    started = time.monotonic()

    def show(step: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {step}", file=sys.stderr, flush=True)

    return show


def print_progress(what: str) -> Callable[[int, int], None]:
    """A progress callback printing `what: n/total rows (p%)` on stderr, a line per tenth."""
    shown = [-1]

    def show(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth != shown[0]:
            shown[0] = tenth
            print(f"{what}: {done}/{total} rows ({done * 100 // max(total, 1)}%)", file=sys.stderr)

    return show


def cmd_info(args: argparse.Namespace) -> int:
    from satellite.modeldir.info import format_info, info_dict

    manifest = read_manifest(args.directory)
    if args.json:
        print(json.dumps(info_dict(args.directory, manifest), indent=2))
    else:
        print(format_info(args.directory, manifest))
    return 0


def _print_report(report: Report) -> None:
    for note in report.notes:
        print(note)
    for finding in report.warnings:
        print(f"warning: {finding}", file=sys.stderr)
    for finding in report.errors:
        print(str(finding), file=sys.stderr)
