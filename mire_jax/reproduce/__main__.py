"""python -m mire_jax.reproduce --data-root D --out R [--preset full|large|smoke|demo|demo-quick] [--stages ...]
[--init CHECKPOINT] [--set SECTION.KEY=VALUE ...] [--force ...] [--keep-going] [--list] [--debug]

Runs the paper's pipeline as a graph of stages (`mire_jax.reproduce.plan`), each when its inputs exist, skipping
what is done and up to date, rerunning what changed, and writes R/reproduction.md and R/reproduction.json.
docs/reproduce.md has the stage graph, the data root to download and the commands of a TPU pod.

Several hosts: run the same command on every host with MIRE_COORDINATOR, MIRE_NUM_PROCESSES and MIRE_PROCESS_ID
(or --coordinator/--num-processes/--process-id, or --distributed-auto on a TPU pod); D and R on a shared filesystem.

A bad command line or setting is reported in one line (`error: ...`, exit status 2); a failed stage in one line
naming it (exit status 1), after the report of what finished is written; --debug (or MIRE_DEBUG=1) shows tracebacks.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from mire_jax import cli
from mire_jax.reproduce.presets import PRESETS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mire_jax.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", help="the downloaded data (docs/reproduce.md); demo presets: where the generated "
                   "world is written (default: OUT/data)")
    p.add_argument("--out", required=True, help="the output folder: stage records, work, results and the report")
    p.add_argument("--preset", choices=list(PRESETS), default="full", help="which data and recipes (default: full)")
    p.add_argument("--stages", action="append", metavar="PATTERNS",
                   help="run only these stages: names, globs or groups, comma-separated or repeated (e.g. "
                        "'zeroshot,ablations/remuq'); the others are kept as they are")
    p.add_argument("--force", action="append", metavar="PATTERNS", default=[],
                   help="rerun these stages even when up to date (and, through their new results, what reads them)")
    p.add_argument("--init", default="", help="start from this published checkpoint instead of pre-training: a model "
                   "folder, a training workdir, or a .pth/.bin/.safetensors (converted with mire_jax.convert)")
    p.add_argument("--init-vision", choices=("base", "large"), default=None,
                   help="the CLIP tower of an --init checkpoint file (default: the preset's size)")
    p.add_argument("--tokenizer", default="", help="the vocabulary of an --init checkpoint file (default: the data "
                   "root's starting model folder's)")
    p.add_argument("--init-config", default="", help="the sizes of an --init checkpoint file that is neither base nor "
                   "large: a mire-jax config.json (e.g. a model folder's)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change one setting on top of the preset (sections: pretrain, finetune, finetune.<set>, eval, "
                        "eval.<benchmark>, vid2r); e.g. --set finetune.remuq.lr=1e-4")
    p.add_argument("--protocols", default=None, help="protocols of the main evaluations (default: published,textbook)")
    p.add_argument("--seed", type=int, default=0, help="the generated world's seed (demo presets)")
    p.add_argument("--keep-going", action="store_true", help="after a failed stage, run the stages that do not need it")
    p.add_argument("--code-changes", choices=("rerun", "keep"), default="rerun",
                   help="a finished stage whose code changed since it ran: rerun it (default), or keep its results "
                        "when nothing else changed (the report says so; for edits known not to change results)")
    p.add_argument("--list", action="store_true", help="print the stage graph and what a run would do with each "
                   "stage (run, skip and why, up to date), run nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    d = p.add_argument_group("several hosts (or the MIRE_* environment)")
    d.add_argument("--coordinator", default=None, help="host:port of process 0")
    d.add_argument("--num-processes", type=int, default=None)
    d.add_argument("--process-id", type=int, default=None)
    d.add_argument("--distributed-auto", action="store_true", help="let JAX find the cluster (TPU pods, SLURM)")
    p.add_argument("--debug", action="store_true", help=cli.DEBUG_HELP)
    return p


def _patterns(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status = {"code": 0}

    def go():
        status["code"] = reproduce(args, list(sys.argv[1:] if argv is None else argv))
    code = cli.user_error_status(go, debug=args.debug)
    return code or status["code"]


def reproduce(args: argparse.Namespace, argv: list[str]) -> int:
    """Runs the graph the parsed command line describes; -> the exit status (1 when a stage failed)."""
    from mire_jax import hosts
    hosts.initialize_distributed(args.coordinator, args.num_processes, args.process_id, auto=args.distributed_auto)

    from mire_jax.reproduce import multihost
    from mire_jax.reproduce import report as report_lib
    from mire_jax.reproduce.engine import Engine, StageFailed
    from mire_jax.reproduce.layout import PAPER_BENCHMARKS, PAPER_FINETUNE, WORLD_BENCHMARKS, WORLD_FINETUNE, DataLayout
    from mire_jax.reproduce.plan import Options, build_plan
    from mire_jax.reproduce.presets import get_preset, parse_sets

    started = time.time()
    preset = get_preset(args.preset)
    out = os.path.abspath(args.out)
    data_root = args.data_root or (os.path.join(out, "data") if preset.world else None)
    if not data_root:
        raise ValueError("--data-root is required (the downloaded data, laid out as docs/reproduce.md says)")
    if not preset.world and not os.path.isdir(data_root):
        raise FileNotFoundError(f"--data-root {data_root}: no such folder")
    protocols = tuple(_patterns([args.protocols])) if args.protocols else None
    for protocol in protocols or ():
        if protocol not in ("published", "textbook"):
            raise ValueError(f"--protocols: unknown protocol {protocol!r} (published, textbook)")
    names = {"finetune": set(PAPER_FINETUNE) | set(WORLD_FINETUNE), "eval": set(PAPER_BENCHMARKS) |
             set(WORLD_BENCHMARKS)}
    options = Options(init=args.init, init_vision=args.init_vision or preset.size, tokenizer=args.tokenizer,
                      init_config=args.init_config,
                      sets=parse_sets(args.sets, names), seed=args.seed, protocols=protocols)
    plan = build_plan(preset, DataLayout(data_root), out, options)
    engine = Engine(plan, select=_patterns(args.stages), force=_patterns(args.force) or [],
                    keep_going=args.keep_going, progress=not args.no_progress, dry=args.list,
                    code_changes=args.code_changes,
                    log=(lambda line: None) if args.list else print)
    if args.list:
        _list(plan, engine.run())
        return 0
    failure = None
    try:
        outcomes = engine.run()
    except StageFailed as e:  # several hosts: stop every process at once
        failure, outcomes = str(e), engine.outcomes
    failed = [o for o in outcomes.values() if o.status == "failed"]
    if multihost.is_writer():
        md, js = report_lib.write(plan, outcomes, started=started, argv=argv)
        print(f"wrote {md} and {js} in {time.time() - started:.1f} s")
    if failed or failure:
        for o in failed:
            cli.report(f"stage {o.stage} failed: {o.reason}")
        return 1
    return 0


def _list(plan, outcomes) -> None:
    """The stage graph and what a run would do with each stage."""
    width = max(len(s.name) for s in plan.stages)
    for stage in plan.stages:
        outcome = outcomes[stage.name]
        after = f"  <- {', '.join(stage.after)}" if stage.after else ""
        print(f"{stage.name:<{width}}  {stage.title}{after}")
        print(f"{'':<{width}}  [{outcome.status}]" + (f" {outcome.reason}" if outcome.reason else ""))


if __name__ == "__main__":
    sys.exit(main())
