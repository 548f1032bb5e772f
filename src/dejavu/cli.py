"""The ``dejavu`` command: ``run`` chains every stage; each stage is also a subcommand."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dejavu.config import CHOICES, config_from_dict, load_config
from dejavu.errors import DejavuError
from dejavu.runs import read_json

STAGE_COMMANDS = {
    "data": ["data"],
    "split": ["split"],
    "crops": ["crops"],
    "train": ["train_A", "train_B"],
    "embed": ["embed"],
    "neighbours": ["neighbours"],
    "metrics": ["metrics"],
    "report": ["report"],
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dejavu",
        description="Audit SSL vision models for deja vu memorization (Meehan et al., NeurIPS 2023).",
    )
    sub = parser.add_subparsers(dest="command")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, default=None,
                       help="YAML config (default: the built-in demo, identical to configs/demo.yaml)")
        p.add_argument("--out", type=Path, default=None,
                       help="run folder (default: runs/<config name>, e.g. runs/demo); an existing run "
                            "with the same config resumes, skipping finished stages; --out alone on an "
                            "existing run folder uses the config saved there")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="dotted config overrides, e.g. train.epochs=5 attack.k=50")
        data = p.add_argument_group("dataset shorthands (the same as the data.* / split.* keys)")
        data.add_argument("--dataset", choices=CHOICES["data.dataset"],
                          help="data.dataset (default scenes, the built-in data)")
        data.add_argument("--root", help="data.root: the image folder (manifest: the CSV/JSONL file)")
        data.add_argument("--boxes", help="data.annotations: imagenet's Annotation/ folder, voc's Annotations/, "
                                          "coco's instances JSON, or the manifest")
        data.add_argument("--per-class", type=int, metavar="N",
                          help="split.a_per_class = split.b_per_class = N (paper presets: 100 to 500)")

    common(sub.add_parser("run", help="the whole test: data, split, crops, train A and B, attack, metrics, report"))
    examples = sub.add_parser("examples", help="write tiny example datasets in every supported layout "
                                               "(imagenet, voc, coco, manifest) to try the commands of README")
    examples.add_argument("out", type=Path, help="folder to write them into (one subfolder per layout)")
    for name in STAGE_COMMANDS:
        p = sub.add_parser(name, help=f"re-run the {name} stage (after any unfinished stage it needs)")
        common(p)
        if name == "train":
            p.add_argument("--model", choices=["A", "B"], default=None, help="train only this model (default both)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "run"
    if args.command is None:
        args = _parser().parse_args(["run", *(argv or [])])
    try:
        return _dispatch(command, args)
    except DejavuError as exc:
        print(f"dejavu: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dejavu: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def _shorthand_overrides(args: argparse.Namespace) -> list[str]:
    """``--dataset imagenet --root R --boxes B --per-class N`` as dotted overrides (paths made absolute)."""
    extra = []
    if args.dataset:
        extra.append(f"data.dataset={args.dataset}")
    if args.root:
        extra.append(f"data.root={json.dumps(str(Path(args.root).expanduser().resolve()))}")
    if args.boxes:
        extra.append(f"data.annotations={json.dumps(str(Path(args.boxes).expanduser().resolve()))}")
    if args.per_class is not None:
        extra += [f"split.a_per_class={args.per_class}", f"split.b_per_class={args.per_class}"]
    return extra


def _examples(out: Path) -> int:
    from dejavu.data.examples import write_examples

    written = write_examples(out)
    for layout, keys in written.items():
        flags = f"--dataset {keys['dataset']} --root {keys['root']}"
        if keys.get("annotations"):
            flags += f" --boxes {keys['annotations']}"
        print(f"{layout:9s} dejavu run --config configs/examples/tiny.yaml {flags} --out runs/example-{layout}")
    return 0


def _dispatch(command: str, args: argparse.Namespace) -> int:
    from dejavu.pipeline import run_all, run_stage, set_threads, upstream_of
    from dejavu.runs import Run

    if command == "examples":
        return _examples(args.out)
    args.overrides = [*args.overrides, *_shorthand_overrides(args)]

    name = args.config.stem if args.config else "demo"
    out = args.out or Path("runs") / name
    saved = out / "config.json"
    if args.config is None and not args.overrides and saved.is_file():
        # An existing run folder named alone: resume it / re-run its stage with its own config.
        config = config_from_dict(read_json(saved))
        print(f"dejavu {command}: using the config saved in {saved}")
    else:
        config = load_config(args.config, args.overrides)
    run = Run(out, config)
    run.claim()
    print(f"dejavu {command}: run folder {out.resolve()}")
    start = time.perf_counter()
    if command == "run":
        run_all(run)
        _print_summary(run)
    else:
        set_threads(config)
        stages = STAGE_COMMANDS[command]
        if command == "train" and args.model:
            stages = [f"train_{args.model}"]
        # Prerequisites that are not done yet run first (finished ones are skipped); the named stage
        # always re-runs, and every stage that read its old output is invalidated by its new token.
        for stage in upstream_of(stages):
            run_stage(run, stage)
        for stage in stages:
            run_stage(run, stage, force=True)
    print(f"finished in {time.perf_counter() - start:.1f} s; run folder {out.resolve()}")
    return 0


def _print_summary(run) -> None:
    from dejavu.runs import read_json

    metrics = read_json(run.root / "metrics.json")
    print()
    print(metrics["verdict"])
    print(f"report: {(run.root / 'report.html').resolve()}")


if __name__ == "__main__":
    sys.exit(main())
