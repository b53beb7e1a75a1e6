"""`magicinfinite` command line: generate a video, or run / batch ComfyUI workflows headlessly.

Every failure caused by inputs is printed as ONE line starting with "error:" and exits with 1 (`batch`:
2 for a bad jobs file or arguments, 1 when some job failed; see `run --help` / `batch --help`), argparse
usage errors with 2 and Ctrl-C with 130, so scripts can rely on the exit code and humans get something
to act on. `run` and `batch` belong to
the headless runner (runner/headless.py, runner/batch.py) and are imported only when used. The entry
point lives here, outside the core, because it calls both the core and the runner.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from magicinfinite_core.config import MAX_HEAD_DEADZONE, MAX_OUTPUT_SIDE
from magicinfinite_core.errors import MagicInfiniteError, finite_error

SEED_MAX = 2**63 - 1  # the same range as the ComfyUI sampler node's seed

EXAMPLES = """\
examples:
  magicinfinite generate --portrait face.png --audio speech.wav \\
      --prompt "a woman talks calmly, soft light" --out talk.mp4
  # two speakers: one audio file and one mask image (white = that speaker's face) each, same order
  magicinfinite generate --portrait duo.png --audio left.wav --audio right.wav \\
      --speaker-mask left_mask.png --speaker-mask right_mask.png --prompt "two friends chat" --out duo.mp4
  # the model's fast 4-step distilled generator; continue a crashed run exactly where it stopped
  magicinfinite generate ... --distilled --resume

The video is exactly as long as the audio (25 fps). Any length works: memory does not grow with it.
A run saves its progress after every denoising step in OUT.state/; --resume continues from there.
"""


def _box(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"box {text!r} must be x0,y0,x1,y1 in pixels") from None
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"box {text!r} must have 4 numbers: x0,y0,x1,y1")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magicinfinite", description="MagicInfinite: talking videos of any length.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    g = sub.add_parser(
        "generate",
        help="portrait + voice + prompt -> mp4",
        description="Make a talking video from a portrait, a voice recording and a text prompt.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    need = g.add_argument_group("inputs")
    need.add_argument("--portrait", required=True, help="image of the person (png/jpg); cropped to the model's size")
    need.add_argument("--audio", required=True, action="append",
                      help="voice recording (wav/mp3/m4a/...); repeat once per speaker. '-' reads a live WAV "
                      "stream from stdin (a named pipe is live too): video is made until the voice ends")
    need.add_argument("--live", action="store_true",
                      help="--audio FILE is still being written: read it as it grows (ends after 2 s without growth)")
    need.add_argument("--prompt", default="", help="what the video should look like (emotion, motion, scene)")
    need.add_argument("--out", required=True, help="output .mp4 path")
    spk = g.add_argument_group("speakers (default: detect faces; one speaker without a detector: centre)")
    spk.add_argument("--speaker-mask", action="append", metavar="PNG",
                     help="mask image per speaker (white = face), same order as --audio")
    spk.add_argument("--speaker-box", action="append", type=_box, metavar="X0,Y0,X1,Y1",
                     help="face box per speaker in portrait-model pixels, same order as --audio")
    spk.add_argument("--face-fallback", choices=["error", "centre"], default="error",
                     help="when no face is detected: stop with an error (default) or use centred regions "
                     "(reported in the output)")
    m = g.add_argument_group("model and sampling")
    m.add_argument("--model", default=None,
                   help="model folder (bundle.json), or one HunyuanVideo-Avatar .safetensors file (its VAE and "
                   "Whisper found in the ComfyUI model folders around it); default: the embedded demo model")
    m.add_argument("--steps", type=int, default=None,
                   help="denoising steps of the base model (default: the model's own, bundle.json 'sampler'; else 30)")
    mode = m.add_mutually_exclusive_group()
    mode.add_argument("--distilled", action="store_true",
                      help="the model's 4-step distilled generator, no CFG (bundle.json 'distilled'); the default "
                      "when the model has one")
    mode.add_argument("--base", action="store_true",
                      help="the model's base transformer (CFG, --steps) even when it has a 4-step generator")
    m.add_argument("--cfg-audio", type=float, default=None, help="audio guidance scale (default: the model's; else 4)")
    m.add_argument("--cfg-text", type=float, default=None, help="text guidance scale (default: the model's; else 3)")
    m.add_argument("--no-cfg", action="store_true", help="turn guidance off (one pass per window, 3x faster)")
    m.add_argument("--negative-prompt", default="", help="prompt of the unconditional pass (default empty)")
    m.add_argument("--window", type=int, default=None,
                   help="frames per sliding window (default: the model's, e.g. 129 for HunyuanVideo-Avatar; else 33)")
    m.add_argument("--max-size", type=int, default=MAX_OUTPUT_SIDE, metavar="PX",
                   help="motion-latent models (the demo): the video has the portrait's own size, reduced to this "
                   f"many pixels on its longer side (default {MAX_OUTPUT_SIDE}); other models keep their own size")
    m.add_argument("--head-motion", type=float, default=1.0, metavar="SHARE",
                   help="motion-latent models (the demo): share of the model's head motion kept, 0 (the head held "
                   "where the picture has it; the mouth still talks) to 1 (default: as the model moves it)")
    m.add_argument("--head-deadzone", type=float, default=0.0, metavar="SHARE",
                   help="motion-latent models (the demo): head motion smaller than this share of the face's height "
                   "is held, one over three times it (a nod) kept whole, one between shortened less and less; 0 "
                   f"(default) to {MAX_HEAD_DEADZONE}; 0.02 holds a still prompt's bob on a full-length photo and "
                   "keeps about half of a clear nod (a faint nod is held too)")
    m.add_argument("--overlap", type=int, default=None,
                   help="frames shared by neighbouring windows (default: the model's; else 8)")
    m.add_argument("--shift", type=float, default=None, help="noise-schedule shift (default: the model's; else 7)")
    m.add_argument("--fixed-windows", action="store_true", help="do not move window boundaries between steps")
    m.add_argument("--seed", type=int, default=0,
                   help=f"random seed 0..{SEED_MAX}; same seed -> same video (default 0)")
    m.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda if present)")
    r = g.add_argument_group("long runs")
    r.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.state/")
    r.add_argument("--state-dir", default=None, help="where progress is saved (default OUT.state/)")
    r.add_argument("--keep-state", action="store_true", help="keep the saved progress after success")
    r.add_argument("--latent-file", default=None, help="keep the video latent in this memory-mapped file (--sweep)")
    r.add_argument("--save-every", type=float, default=10.0, metavar="SECONDS",
                   help="streaming: save the in-flight state at most this often (default 10; 0 = every chunk)")
    r.add_argument("--sweep", action="store_true",
                   help="the old order: every step over the whole video, then decode (same frames; the default "
                   "streams: wavefront order, frames muxed into a fragmented mp4 as they are final)")
    r.add_argument("--json", action="store_true", help="print the run report as JSON")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    from magicinfinite_core.distributed import add_sp_arguments

    add_sp_arguments(g)
    ins = sub.add_parser("inspect", help="name a transformer file's layout and list its bad keys (reads the header only)")
    ins.add_argument("file", help=".safetensors file, shard index or diffusers folder")
    ins.add_argument("--json", action="store_true", help='print {"layout","missing","unexpected","wrong_shapes"}')
    cv = sub.add_parser("convert", help="one-time: a pickled .pt checkpoint -> .safetensors (torch weights_only)")
    cv.add_argument("src", help="IN.pt (e.g. HunyuanVideo-Avatar's mp_rank_00_model_states.pt)")
    cv.add_argument("dst", help="OUT.safetensors")
    for name, text in (("run", "run an API-format ComfyUI workflow headlessly"),
                       ("batch", "run a workflow over many inputs headlessly")):
        s = sub.add_parser(name, help=text, add_help=False)
        s.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def _progress_bars(quiet: bool):
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def cb(p) -> None:
        bar = bars.get(p.phase)
        if bar is None:
            bar = bars[p.phase] = tqdm(total=p.total, desc=p.phase, unit="win" if p.phase == "denoise" else "chunk",
                                       initial=p.done - 1, file=sys.stderr)
        bar.set_postfix_str(f"step {p.step}/{p.steps} window {p.window}/{p.windows}")
        bar.update(p.done - bar.n)

    def close() -> None:
        for b in bars.values():
            b.close()

    return cb, close


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad numbers and paths before any work, each with one line naming the option.

    Why: argparse checks only types; NaN passes every comparison (an all-black video), ``--steps 0``
    meant "the default", a seed beyond 64 bits died in torch, and a bad ``--out`` failed only after
    the whole video was computed.
    """
    from magicinfinite_core.config import DEFAULT_OVERLAP
    from magicinfinite_core.devices import check_device
    from magicinfinite_core.limits import MAX_STEPS, OVERLAP_RANGE, WINDOW_RANGE, count_error
    from magicinfinite_core.media.video_io import check_output_path, partial_path
    from magicinfinite_core.output_files import refuse_inputs_as_outputs
    from magicinfinite_core.sampling.sliding_window import window_sizes

    errors = [
        finite_error("--shift", args.shift, 1e-6) if args.shift is not None else None,
        finite_error("--cfg-audio", args.cfg_audio, 0.0) if args.cfg_audio is not None else None,
        finite_error("--cfg-text", args.cfg_text, 0.0) if args.cfg_text is not None else None,
        f"--steps must be at least 1, got {args.steps}" if args.steps is not None and args.steps < 1 else None,
        f"--steps must be at most {MAX_STEPS}, got {args.steps}" if args.steps is not None and args.steps > MAX_STEPS
        else None,
        f"--seed must be in 0..{SEED_MAX}, got {args.seed}" if not 0 <= args.seed <= SEED_MAX else None,
        finite_error("--save-every", args.save_every, 0.0),
        f"--max-size must be in 64..4096, got {args.max_size}" if not 64 <= args.max_size <= 4096 else None,
        f"--head-motion must be in 0..1 (0: a still head, 1: as the model moves it), got {args.head_motion}"
        if not 0.0 <= args.head_motion <= 1.0 else None,
        f"--head-deadzone must be in 0..{MAX_HEAD_DEADZONE} (a share of the face's height), got {args.head_deadzone}"
        if not 0.0 <= args.head_deadzone <= MAX_HEAD_DEADZONE else None,
    ]
    for e in errors:
        if e:
            raise MagicInfiniteError(e)
    # without --window / --overlap the model's own apply (checked when the model is loaded)
    for e in (args.window is not None and count_error("--window", args.window, *WINDOW_RANGE),
              args.overlap is not None and count_error("--overlap", args.overlap, *OVERLAP_RANGE)):
        if e:
            raise MagicInfiniteError(e)
    overlap = DEFAULT_OVERLAP if args.overlap is None else args.overlap
    try:
        if args.window is not None:
            window_sizes(args.window, overlap)
    except ValueError as e:
        raise MagicInfiniteError(f"--window {args.window} / --overlap {overlap}: {e}") from None
    check_device(args.device)
    from magicinfinite_core.inputs.live_audio import is_live_source

    live = [a for a in args.audio if is_live_source(a)]
    if (live or args.live) and len(args.audio) != 1:
        raise MagicInfiniteError("live audio ('-', a named pipe or --live) takes exactly one --audio (one speaker)")
    if (live or args.live) and (args.resume or args.sweep):
        raise MagicInfiniteError("live audio cannot be resumed or swept: it cannot be read twice; drop "
                                 "--resume / --sweep")
    inputs = [args.portrait, *[a for a in args.audio if a not in live], *(args.speaker_mask or [])]
    for p in inputs:
        if not Path(p).is_file():
            raise MagicInfiniteError(f"input file not found: {p}")
    model = Path(args.model) if args.model else None
    if model is not None and model.is_dir():  # the bundle's own files are inputs too
        inputs += [f for f in model.iterdir() if f.is_file()]
    refuse_inputs_as_outputs({"--out": args.out, "--out's temporary file": partial_path(args.out),
                              "--latent-file": args.latent_file, "--state-dir": args.state_dir}, inputs)
    if args.latent_file is not None:
        refuse_inputs_as_outputs({"--latent-file": args.latent_file}, [args.out])
    check_output_path(args.out)


def _use_generator(args: argparse.Namespace, model: Path) -> bool:
    """The 4-step generator when the model has one, unless --base, or a base-only option, is given."""
    if args.distilled or args.base:
        return bool(args.distilled)
    from magicinfinite_core.weights.bundle import bundle_has_generator

    if not bundle_has_generator(model):
        return False
    base_only = [flag for flag, given in (("--steps", args.steps is not None), ("--cfg-audio", args.cfg_audio is not None),
                                          ("--cfg-text", args.cfg_text is not None), ("--no-cfg", args.no_cfg)) if given]
    if base_only:
        print(f"note: {', '.join(base_only)} given: sampling the base transformer (the 4-step generator takes "
              "neither steps nor guidance)", file=sys.stderr)
        return False
    return True


def _generate(args: argparse.Namespace) -> int:
    from magicinfinite_core.sampling.guidance import CFGConfig
    from magicinfinite_core.weights.bundle import (
        BUNDLE_FILE,
        DEMO_MODEL_DIR,
        bundle_sampler_defaults,
        recommended_guidance,
    )

    check_args(args)

    model = Path(args.model) if args.model else DEMO_MODEL_DIR
    if not (model / BUNDLE_FILE).is_file() and not model.is_file():
        if args.model is None:
            raise MagicInfiniteError(
                f"the embedded demo model is not installed ({DEMO_MODEL_DIR}); pass --model PATH to a model folder"
            )
        raise MagicInfiniteError(f"no model at {model}: expected a folder with {BUNDLE_FILE}")
    if args.speaker_mask and args.speaker_box:
        raise MagicInfiniteError("give --speaker-mask or --speaker-box, not both")
    speakers = args.speaker_mask or args.speaker_box
    if speakers is not None and len(speakers) != len(args.audio):
        raise MagicInfiniteError(f"{len(args.audio)} --audio but {len(speakers)} speaker masks/boxes; give one each")
    args.distilled = _use_generator(args, model)
    cfg = None  # the model's recommended guidance
    if args.no_cfg:
        cfg = CFGConfig.off()
    elif args.cfg_audio is not None or args.cfg_text is not None:
        cfg = recommended_guidance(bundle_sampler_defaults(model), args.cfg_audio, args.cfg_text)
    state_dir = Path(args.state_dir) if args.state_dir else Path(str(args.out) + ".state")
    out, bundle = args.out, _maybe_sequence_parallel(model, args)
    scratch = None  # the other ranks' throwaway video: removed when the run ends, however it ends
    if bundle is not None:
        from magicinfinite_core.distributed import is_main_process

        if not is_main_process():  # every rank samples the same windows; only rank 0 keeps files
            import tempfile

            scratch = tempfile.TemporaryDirectory(prefix="magicinfinite-rank-")
            out = Path(scratch.name) / "discard.mp4"
            state_dir, args.quiet = None, True
    from magicinfinite_core.output_files import OutputLocks

    locks = {"--out": out, **({"--state-dir": state_dir} if args.state_dir and state_dir is not None else {})}
    try:
        with OutputLocks(locks if out == args.out else {}):  # a second run on the same files stops here
            return _run_locked(args, model, out, bundle, options_kw=dict(
                steps=args.steps, cfg=cfg, shift=args.shift, distilled=args.distilled, window=args.window,
                overlap=args.overlap, shift_windows=not args.fixed_windows, speakers=speakers, seed=args.seed,
                negative_prompt=args.negative_prompt,
                face_fallback="center" if args.face_fallback == "centre" else None,
                state_dir=state_dir, resume=args.resume, keep_state=args.keep_state, latent_file=args.latent_file,
                max_size=args.max_size, head_motion=args.head_motion, head_deadzone=args.head_deadzone,
            ))
    finally:
        if scratch is not None:
            scratch.cleanup()


def _run_locked(args: argparse.Namespace, model: Path, out: str, bundle, options_kw: dict) -> int:
    """The generation itself, once the output (and its state folder) are this run's."""
    from magicinfinite_core.errors import MaskError
    from magicinfinite_core.generate import GenerateOptions, generate
    from magicinfinite_core.inputs.live_audio import is_live_source

    cb, close = _progress_bars(args.quiet)
    try:
        options = GenerateOptions(**options_kw)
        audio = args.audio if len(args.audio) > 1 else args.audio[0]
        common = dict(model=bundle if bundle is not None else model, out=out, options=options, device=args.device,
                      callback=cb)
        if args.sweep:  # the whole latent, step by step, then decode
            path, report = generate(args.portrait, audio, args.prompt, **common)
        elif args.live or is_live_source(audio):
            from magicinfinite_core.streaming import generate_live

            path, report = generate_live(args.portrait, audio, args.prompt, **common)
        else:
            from magicinfinite_core.streaming import generate_streaming

            path, report = generate_streaming(args.portrait, audio, args.prompt, save_every_s=args.save_every,
                                              **common)
    except MaskError as exc:
        if "no face found" not in str(exc):
            raise
        raise MaskError(f"{exc}. On the command line: --speaker-box / --speaker-mask, or --face-fallback centre") from None
    finally:
        close()
    for note in report.notes:  # fallbacks and input changes: where the user looks
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return 0
    if not args.sweep and report.first_frame_s is not None:
        since = report.first_frame_since_process_s
        print(f"first frame {report.first_frame_s:.2f} s after the model was ready"
              + (f" ({since:.2f} s after the command started)" if since is not None else "")
              + f"; {report.realtime_factor:.2f} video s per wall s", file=sys.stderr)
    print(f"{path}  ({report.frames} frames, {report.seconds:.2f} s of video in {report.wall_s:.1f} s, "
          f"peak RAM {report.peak_rss_mb:.0f} MB)")
    return 0


def _maybe_sequence_parallel(model: Path, args: argparse.Namespace):
    """Under torchrun (or with --sp-* options) load the bundle and wrap its DiT for USP; else None."""
    import os

    wanted = (args.sp_ulysses or 1) * args.sp_ring * args.sp_cfg > 1 or args.sp_attention == "xfuser"
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and not wanted:
        return None
    from magicinfinite_core.distributed import wrap_for_torchrun
    from magicinfinite_core.weights.bundle import load_bundle

    bundle = load_bundle(model, distilled=args.distilled)
    bundle.dit = wrap_for_torchrun(bundle.dit, ulysses=args.sp_ulysses, ring=args.sp_ring, cfg=args.sp_cfg,
                                   attention=args.sp_attention)
    return bundle


def _headless(command: str, rest: list[str]) -> int:
    """`run` -> runner.headless.main, `batch` -> runner.batch.main (imported only when used)."""
    if command == "run":
        from runner import headless as mod
    else:
        from runner import batch as mod
    return int(mod.main(rest) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    from runner import console_warnings

    console_warnings.install()  # "warning: <message>", no file:line and no source line
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("run", "batch"):  # the runner parses its own options (--help included)
        try:
            return _headless(argv[0], argv[1:])
        except MagicInfiniteError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "inspect":
            from magicinfinite_core.weights.inspect_file import inspect_file

            report = inspect_file(args.file)
            print(report.to_json() if args.json else report.to_text())
            return 0
        if args.command == "convert":
            from runner.convert import convert

            n = convert(args.src, args.dst)
            print(f"wrote {n} tensors to {args.dst}")
            return 0
        return _generate(args)
    except OSError as exc:
        from magicinfinite_core.output_files import disk_full_error

        print(f"error: {disk_full_error(exc.filename or args.out, exc) or exc}", file=sys.stderr)
        return 1
    except (MagicInfiniteError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; run the same command with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
