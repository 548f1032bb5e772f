"""The ``dejavu`` command: ``run`` chains every stage; each stage is also a subcommand."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

from dejavu.config import Config, choices, config_from_dict, load_config, resolve_config
from dejavu.api import refuse_trained_folder
from dejavu.config.shipped import description, is_study, shipped_configs, shipped_folder
from dejavu.data.examples import write_examples
from dejavu.errors import ConfigError, DejavuError, RunFolderError, os_error_message
from dejavu.launch.slurm import SlurmRequest, submit
from dejavu.metrics.outcomes import EXIT_CODES, exit_code
from dejavu.metrics.schema import read_metrics
from dejavu.models.outside_clip import absolute_arch
from dejavu.runs import Run, folder_lock, read_json
from dejavu.stages import (
    COMMANDS, STAGE_BY_NAME, finished_stages_hold, run_all, run_stage, set_threads, upstream_of,
)
from dejavu.sweep import run_sweep
from dejavu import distributed
from dejavu.train.loop import check_precision


EXIT_HELP = ("exit status of run and audit: 0 the headline test reached a verdict, detected or not detected "
             "(metrics.json's outcomes say which); 3 no verdict (a sanity gate failed, or the negative control is too "
             "small or shows a gap of its own); 4 inconclusive (not significant, but the interval does not rule out "
             "deja vu); 2 an error (one line on stderr); 130 interrupted")


def _parser() -> argparse.ArgumentParser:
    # No abbreviated options: a SLURM job re-issues the command, and a prefix like --slurm-part must not slip through.
    parser = argparse.ArgumentParser(
        prog="dejavu", allow_abbrev=False,
        description="Audit SSL vision models for deja vu memorization (Meehan et al., NeurIPS 2023).",
        epilog=EXIT_HELP,
    )
    sub = parser.add_subparsers(dest="command")

    every = ", ".join(COMMANDS)
    run_parser = sub.add_parser("run", allow_abbrev=False, help=f"the whole test, every stage in order: {every}",
                                description=f"The whole deja vu test, every stage in order: {every}. Finished "
                                            "stages of the same config are skipped (a run folder resumes).",
                                epilog=EXIT_HELP)
    _common(run_parser)
    _resume(run_parser)
    _slurm(run_parser)
    audit = sub.add_parser(
        "audit", allow_abbrev=False,
        help="the test on models trained elsewhere: load --target (trained on A) and --reference (on B) from "
             "checkpoints and run every stage after the split on them; without --reference, the one-model test",
        description="The deja vu test on models trained elsewhere: every stage of `run`, with the models loaded from "
                    "checkpoints (a state dict .pth/.pt, safetensors, TorchScript, the layouts of common SSL trainers; "
                    "model.factory=package.module:function for any other) instead of trained. Train them on the lists "
                    "`dejavu split` writes in RUN/data/export/ (train_A.txt, train_B.txt); the folder's split is used "
                    "(made first when it has none). Without --reference, the one-model test: a correlation classifier "
                    "(correlation.*), trained with labels on the periphery crops of B and X, takes the reference's place.",
        epilog=EXIT_HELP)
    _common(audit)
    audit.add_argument("--target", required=True, metavar="PATH",
                       help="model.target: the target's checkpoint (trained on A and the shared set)")
    audit.add_argument("--reference", metavar="PATH",
                       help="model.reference: the reference's checkpoint (trained on B and the shared set, same recipe); "
                            "absent: the one-model test, against a correlation classifier trained on B and X")
    audit.add_argument("--arch", metavar="NAME",
                       help="model.arch: convnet, resnet18/50/101, vit_tiny/small/base, timm:NAME or open_clip:NAME (a "
                            "CLIP: an open_clip config name, model-config JSON or release folder; default: the config's "
                            "train.backbone with its train.* settings)")
    sweep = sub.add_parser("sweep", allow_abbrev=False,
                           help="a study: one run per point of one or more grids of config keys (x seeds); points "
                                "that differ only after training share it; CSVs, figures and an index.html "
                                "linking every point's report")
    sweep.add_argument("--config", required=True, metavar="NAME|FILE",
                       help="the study: a shipped study's name (studies/smoke, studies/paper_findings: `dejavu configs` "
                            "lists them) or a study YAML")
    sweep.add_argument("--out", type=Path, default=None, help="sweep folder (default: runs/<study name>)")
    examples = sub.add_parser("examples", allow_abbrev=False, help="write tiny example datasets in every supported layout "
                                               "(imagenet, voc, coco, manifest) to try the commands of README")
    examples.add_argument("out", type=Path, help="folder to write them into (one subfolder per layout)")
    sub.add_parser("configs", allow_abbrev=False,
                   help="list the shipped configs by name, one line each (--config takes the name from any folder)")
    _stage_commands(sub)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="NAME|FILE",
                   help="a shipped config's name (smoke, demo, examples/tiny, paper/vicreg, ...: `dejavu configs` "
                        "lists them) or a YAML file (default: the built-in demo, identical to the `demo` config)")
    p.add_argument("--out", type=Path, default=None,
                   help="run folder (default: runs/<config name>, e.g. runs/demo); an existing run "
                        "with the same config resumes, skipping finished stages; --out alone on an "
                        "existing run folder uses the config saved there")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides, e.g. train.epochs=5 attack.k=50")
    data = p.add_argument_group("dataset shorthands (the same as the data.* / split.* keys)")
    data.add_argument("--dataset", choices=choices("data.dataset"),
                      help="data.dataset (default scenes, the built-in data; captioned_scenes: with captions)")
    data.add_argument("--root", metavar="PATH",
                      help="data.root: imagenet: the train folder of <wnid>/ class folders; voc: the folder holding "
                           "JPEGImages/ and Annotations/; coco: the images folder; manifest: the folder its paths "
                           "are relative to (with --boxes naming the manifest), or the CSV/JSONL manifest itself "
                           "(paths relative to its folder)")
    data.add_argument("--boxes", metavar="PATH",
                      help="data.annotations: imagenet's Annotation/ folder (default <root>/../Annotation), voc's "
                           "Annotations/ (default <root>/Annotations), coco's instances JSON, or the CSV/JSONL "
                           "manifest (when --root is the folder of its paths)")
    data.add_argument("--per-class", type=int, metavar="N",
                      help="split.a_per_class = split.b_per_class = N (paper presets: 100 to 500)")


def _resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out (refuses if there is none): finished stages are "
                        "kept and training restarts from its last resume state, losing at most the current epoch")


def _slurm(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SLURM (optional: pip install -e '.[slurm]'); the same command runs as one job, "
                             "one task per GPU")
    g.add_argument("--slurm-partition", metavar="NAME", help="submit to this partition instead of running here")
    g.add_argument("--nodes", type=int, default=1, help="nodes of the job (default 1)")
    g.add_argument("--gpus-per-node", type=int, default=1, help="GPUs (= tasks) per node (default 1)")
    g.add_argument("--cpus-per-task", type=int, default=10, help="CPU cores per task (default 10)")
    g.add_argument("--slurm-time", type=int, default=4320, metavar="MIN", help="time limit in minutes (default 3 days)")
    g.add_argument("--slurm-executor", choices=("slurm", "local"), default=None,
                   help="'local' runs the job with submitit's local executor (no cluster) and waits for it")


def _stage_commands(sub: argparse._SubParsersAction) -> None:
    """One subcommand per stage command, its help from the stage declarations."""
    for name, stages in COMMANDS.items():
        declared = [STAGE_BY_NAME[stage] for stage in stages]
        # A folder's name carries a slash, so that `-> data/` reads as the folder it is.
        outputs = ", ".join(out if Path(out).suffix else f"{out}/" for stage in declared for out in stage.outputs)
        what = f"the {name} stage" if stages == [name] else f"the stages {', '.join(stages)}"
        p = sub.add_parser(name, allow_abbrev=False, help=f"{declared[0].description} -> {outputs}",
                           description=f"{declared[0].description[0].upper()}{declared[0].description[1:]}; writes "
                                       f"{outputs} in the run folder. Re-runs {what} after any unfinished stage it "
                                       "needs; every stage that read its old output is computed again by the next run.")
        _common(p)
        if name == "train":
            p.add_argument("--model", choices=["A", "B"], default=None, help="train only this model (default both)")
            _resume(p)
            _slurm(p)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    command = args.command or "run"
    if args.command is None:
        args = _parser().parse_args(["run", *argv])
    rank = os.environ.get("RANK", "0")
    who = "dejavu" if rank == "0" else f"dejavu (rank {rank})"
    # Warnings as one line each (Python's own format adds the file, line number and source line).
    warnings.showwarning = lambda message, *_, **__: print(f"{who}: warning: {one_line(str(message))}", file=sys.stderr)
    code = 1
    try:
        code = _dispatch(command, args)
        return code
    except DejavuError as exc:
        print(f"{who}: error: {one_line(str(exc))}", file=sys.stderr)
        code = 2
        return code
    except OSError as exc:  # the machine's limits: a full disk, a read-only or unreachable folder
        print(f"{who}: error: {one_line(os_error_message(exc))}", file=sys.stderr)
        code = 2
        return code
    except MemoryError:
        print(f"{who}: error: out of memory; lower the sizes of the run (train.batch_size, attack.batch_size, "
              "data.image_size) or free memory, then run the same command again (finished stages are kept)",
              file=sys.stderr)
        code = 2
        return code
    except KeyboardInterrupt:
        print(f"{who}: interrupted; run the same command again to resume", file=sys.stderr)
        code = 130
        return code
    finally:
        distributed.shutdown(clean=code == 0)


def one_line(message: str) -> str:
    """A message as the single line the CLI promises (nested errors may bring their own line breaks)."""
    return " ".join(message.split())


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
    for option, key in (("target", "model.target"), ("reference", "model.reference")):
        if getattr(args, option, None):
            extra.append(f"{key}={json.dumps(str(Path(getattr(args, option)).expanduser().resolve()))}")
    named = any(str(o).startswith("model.reference=") for o in getattr(args, "overrides", []))
    if getattr(args, "target", None) and not getattr(args, "reference", None) and not named:
        extra.append('model.reference=""')  # no --reference is the one-model test, whatever --config names
    if getattr(args, "arch", None):
        extra.append(f"model.arch={json.dumps(absolute_arch(args.arch))}")
    return extra


def _examples(out: Path) -> int:
    written = write_examples(out)
    for layout, keys in written.items():
        flags = f"--dataset {keys['dataset']} --root {keys['root']}"
        if keys.get("annotations"):
            flags += f" --boxes {keys['annotations']}"
        print(f"{layout:9s} dejavu run --config examples/tiny {flags} --out runs/example-{layout}")
    return 0


def _configs() -> int:
    """Every shipped config by name with its first comment line; runs first, then the studies."""
    configs = shipped_configs()
    for title, studies in (("configs (dejavu run --config NAME)", False), ("studies (dejavu sweep --config NAME)", True)):
        group = {name: path for name, path in configs.items() if is_study(name) == studies}
        width = max(map(len, group))
        print(title)
        for name, path in group.items():
            print(f"  {name:{width}s}  {description(path)}")
    print(f"the files are in {shipped_folder()}; --config also takes the path of your own YAML (a copy to edit)")
    return 0


SLURM_DEFAULTS = {"nodes": 1, "gpus_per_node": 1, "cpus_per_task": 10, "slurm_time": 4320}


def _submit(command: str, args: argparse.Namespace) -> int:
    """Submit this command (without the SLURM options, paths absolute) as a submitit job."""
    if os.environ.get("DEJAVU_IN_JOB"):
        raise ConfigError("this command already runs inside a submitted dejavu job: it must not submit another")
    overrides = [*args.overrides, *_shorthand_overrides(args)]
    load_config(args.config, overrides)  # a bad config fails here, not in the queue
    request = SlurmRequest(
        partition=args.slurm_partition or "", nodes=args.nodes, gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task, time_min=args.slurm_time, executor=args.slurm_executor or "slurm",
    )
    out = _default_out(args).resolve()
    job_argv = [command, *(["--config", str(args.config.resolve())] if args.config else []), "--out", str(out)]
    if command == "train" and args.model:
        job_argv += ["--model", args.model]
    if args.resume:
        job_argv.append("--resume")
    job_argv += overrides
    folder = out.parent / f"{out.name}.slurm"
    job = submit(job_argv, request, folder, main)
    print(f"dejavu {command}: submitted job {job.job_id} ({request.executor}); logs in {folder}")
    if request.executor == "local":
        job.result()  # raises with the job's error if it failed
        print(f"dejavu {command}: job {job.job_id} finished; run folder {out}")
    return 0


def _default_out(args: argparse.Namespace) -> Path:
    """--out, or runs/<config file's name> (runs/demo without --config)."""
    return args.out or Path("runs") / (args.config.stem if args.config else "demo")


def _dispatch(command: str, args: argparse.Namespace) -> int:
    if command == "examples":
        return _examples(args.out)
    if command == "configs":
        return _configs()
    if args.config is not None:
        # A name becomes its shipped file here, so the default --out, a SLURM job and a study's relative
        # base config all see a real path.
        args.config = resolve_config(args.config)
    if command == "sweep":
        out = _default_out(args)
        # Under torchrun every process trains each point; rank zero alone runs the other stages and writes.
        distributed.init()
        if not distributed.is_main():
            sys.stdout = open(os.devnull, "w")
        with folder_lock(out, "dejavu sweep") if distributed.is_main() else contextlib.nullcontext():
            index = run_sweep(args.config, out)
        print(f"dejavu sweep: {out.resolve() / 'sweep.csv'}; report: {index.resolve()}")
        return 0
    if getattr(args, "slurm_partition", None) or getattr(args, "slurm_executor", None):
        return _submit(command, args)
    changed = [f"--{key.replace('_', '-')}" for key, default in SLURM_DEFAULTS.items()
               if getattr(args, key, default) != default]
    if changed:
        raise ConfigError(f"{', '.join(changed)} only apply to a SLURM job: add --slurm-partition NAME "
                          "(or --slurm-executor local); to use several GPUs here, run under torchrun")
    distributed.init()
    if not distributed.is_main():
        # Only rank zero reports; the others train their share and wait.
        sys.stdout = open(os.devnull, "w")
    args.overrides = [*args.overrides, *_shorthand_overrides(args)]

    out = _default_out(args)
    if command == "audit":
        refuse_trained_folder(out)
    config = _config_for(command, args, out)
    # Launch problems surface now, not after hours of data stages.
    distributed.local_batch(config.train.batch_size)
    check_precision(distributed.device(), config.train.precision)
    run = Run(out, config)
    # One process per run folder: rank zero holds the lock (the other ranks of a torchrun job write nothing).
    lock = folder_lock(out, f"dejavu {command}") if distributed.is_main() else contextlib.nullcontext()
    with lock:
        return _work(command, args, run)


def _config_for(command: str, args: argparse.Namespace, out: Path) -> Config:
    """The config of this command: the file and overrides given, or the one saved in ``out`` (with the
    overrides on top) when no --config is given there."""
    saved = out / "config.json"
    resume = getattr(args, "resume", False)
    if resume and not saved.is_file():
        raise RunFolderError(f"--resume: '{out}' holds no dejavu run (no config.json); start it without --resume")
    if args.config is None and saved.is_file():
        # An existing run folder: resume it / re-run its stage with its own config (and any override).
        try:
            config = config_from_dict(read_json(saved), args.overrides)
        except ConfigError as exc:
            if args.overrides:
                raise
            raise RunFolderError(f"{saved}: {exc} (a run folder of an older dejavu? start a new --out)") from None
        print(f"dejavu {command}: using the config saved in {saved}" + (" with the overrides given" if args.overrides else ""))
        return config
    if command not in ("run", "audit") and args.config is None and not args.overrides:
        # A stage command alone on a folder with no run would otherwise start the whole default demo.
        raise RunFolderError(
            f"'{out}' holds no dejavu run (no config.json): start one with `dejavu run --out {out}` (add --config "
            f"FILE or KEY=VALUE overrides), or give them to `dejavu {command}` to start it with this stage"
        )
    return load_config(args.config, args.overrides)


def _work(command: str, args: argparse.Namespace, run: Run) -> int:
    """Claim the folder, then run every stage (``run``) or one stage command with its prerequisites."""
    out, config, resume = run.root, run.config, getattr(args, "resume", False)
    distributed.on_rank_zero(lambda: run.claim(still_valid=lambda: finished_stages_hold(run)), "claiming the run folder")
    print(f"dejavu {command}: run folder {out.resolve()}")
    start = time.perf_counter()
    code = 0
    if command in ("run", "audit"):
        run_all(run)
        if distributed.is_main():
            code = _print_summary(run)
    else:
        set_threads(config)
        stages = COMMANDS[command]
        if command == "train" and args.model:
            stages = [f"train_{args.model}"]
        # Prerequisites that are not done yet run first (finished ones are skipped); the named stage
        # always re-runs, and every stage that read its old output is invalidated by its new token.
        for stage in upstream_of(stages):
            run_stage(run, stage)
        if command == "train" and not resume:
            # A plain `dejavu train` trains afresh; continuing an interrupted training is what --resume is for.
            distributed.on_rank_zero(lambda: _forget_resume_states(run, stages), "removing old resume states")
        for stage in stages:
            run_stage(run, stage, force=not resume)
    print(f"finished in {time.perf_counter() - start:.1f} s; run folder {out.resolve()}")
    return code


def _forget_resume_states(run: Run, stages: list[str]) -> None:
    for stage in stages:
        path = run.model_dir(stage.removeprefix("train_")) / "resume.pt"
        if path.exists():
            print(f"dejavu train: starting {stage} afresh (its resume state is removed; --resume would continue it)")
            path.unlink()


# A finished run whose headline test reached no verdict (a sanity gate failed, the control is too small or
# not clean) or an inconclusive one: scripts must not read a decision from it (dejavu.metrics.outcomes).
NO_VERDICT_EXIT = EXIT_CODES["no_verdict"]
INCONCLUSIVE_EXIT = EXIT_CODES["inconclusive"]


def _print_summary(run: Run) -> int:
    """Print every test's outcome, the headline first; the exit code follows the headline's decision."""
    metrics = read_metrics(run.root / "metrics.json")
    print()
    for outcome in metrics.outcomes.values():
        print(outcome.sentence)
    print(f"report: {(run.root / 'report.html').resolve()}")
    return exit_code(metrics.outcomes)


if __name__ == "__main__":
    sys.exit(main())
