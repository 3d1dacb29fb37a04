"""`make demo`: the whole path of the paper on a generated multimodal knowledge base, with no downloads.

    python -m mire_jax.demo [--out runs/demo] [--quick] [--analyses | --analyses-only]

data construction (generated entities, pictures, passages and dialogues; ViD2R by response-to-passage
conversion with our own text retriever) -> warm-ups (the real MiniLM-L6 text tower's ColBERT projection on text
pairs; a small ViT contrastively on image-caption pairs, then frozen) -> the vision-feature cache -> MIRe
pre-training (pooling head only), fusion-free and with the residual ablation -> zero-shot retrieval on unseen
attribute combinations with the ScaNN late-interaction index (text-only baseline, both models, and with shuffled
images) -> export to the PyTorch layout. Outputs in --out: results.json, report.md, PNG curves, attention heatmaps.

--analyses then runs the analyses of `mire_jax.analyses` on the same world (`mire_jax.demo.analyses`): conversion
variants pre-trained and evaluated, where the pooling looks, modality reliance, and the text-dominance trap world
with MIRe and the residual ablation over several seeds, into --out/analyses/ (analyses.md, analyses.json, PNGs).
--analyses-only runs them on a demo already finished in --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import time

from mire_jax.demo.stages import DemoPlan, build_vid2r, cache_vision, make_init_model, pretrain
from mire_jax.files import atomic_open, iter_json_lines, write_json
from mire_jax.retrieval.searcher import write_run_paths


class Stopwatch:
    def __init__(self):
        self.t0 = time.perf_counter()
        self.stages: dict[str, float] = {}
        self._last = self.t0

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = round(now - self._last, 1)
        self._last = now
        print(f"== {name}: {self.stages[name]:.1f} s (total {now - self.t0:.1f} s)", flush=True)


def evaluate_all(data_dir: str, models: dict[str, str], work: str, plan: DemoPlan) -> tuple[dict, dict]:
    """-> (results, the zero-shot index of each model), the index folders as the evaluation cached them."""
    from mire_jax.demo.world.benchmark import load_synthetic
    from mire_jax.eval import runner
    from mire_jax.retrieval.model_folder import load_model, load_tokenizer

    bench = load_synthetic(data_dir, "zeroshot")
    results, indexes = {}, {}
    for name, model_dir in models.items():
        config, params = load_model(model_dir)
        tokenizer = load_tokenizer(model_dir)
        mode = "text_only" if name == "text_only" else "mire"
        for ablation in (None, "shuffle"):
            settings = runner.EvalSettings(mode=mode, image_ablation=ablation, protocol="published", k=100,
                                           query_maxlen=plan.eval_query_maxlen, doc_maxlen=plan.doc_maxlen,
                                           batch_size=32, index={"mode": "scann"})
            searcher = runner.make_searcher(config, params, tokenizer, settings, model_dir)
            run = runner.retrieve(bench, searcher, work, settings)
            indexes[name] = os.path.join(runner.corpus_folder(bench, searcher, work, settings), "index")
            m = bench.evaluate_published(run).as_dict()
            row = {"R@1": m["R@1"], "R@5": m["R@5"], "R@10": m["R@10"], "MRR@5": m["MRR@5"]}
            results[name + ("_shuffled" if ablation else "")] = row
    return {"benchmark": f"synthetic zero-shot ({len(bench.queries)} queries, {len(bench.corpus)} passages, "
                         f"unseen attribute combinations)", "protocol": "published (gold id; R@k = hit rate)",
            "chance_R@5": 5 / len(bench.corpus), "results": results}, indexes


def attention_figures(data_dir: str, model_dir: str, out_dir: str, query_maxlen: int, count: int = 2) -> list[str]:
    from PIL import Image

    from mire_jax.eval.heatmaps import save_heatmaps
    from mire_jax.retrieval.searcher import Searcher

    searcher = Searcher.load(model_dir, settings={"query_maxlen": query_maxlen})
    paths = []
    queries = [q for _, _, q in iter_json_lines(os.path.join(data_dir, "zeroshot", "test.jsonl"))]
    for i, q in enumerate(queries[:count]):
        image = Image.open(os.path.join(data_dir, "images", q["image"])).convert("RGB")
        maps = searcher.pooling_maps(image, q["question"])
        paths.append(save_heatmaps(image.resize((128, 128)), maps, q["question"],
                                   os.path.join(out_dir, f"attention_{i}.png")))
    return paths


def write_report(out: str, results: dict, timings: dict, figures: list[str]) -> str:
    from mire_jax.eval.runner import format_table
    table = format_table(results["results"], ["R@1", "R@5", "R@10", "MRR@5"])
    lines = ["# MIRe demo: zero-shot retrieval on a generated multimodal knowledge base", "",
             f"Benchmark: {results['benchmark']}; protocol: {results['protocol']}; chance R@5 = "
             f"{100 * results['chance_R@5']:.1f}%.", "",
             "| model | R@1 | R@5 | R@10 | MRR@5 |", "|---|---|---|---|---|"]
    for name, m in results["results"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * m[k]:.1f}" for k in ("R@1", "R@5", "R@10", "MRR@5")) + " |")
    lines += ["", "`text_only`: the ColBERT text tower with the question alone (questions are generic: only the "
              "picture tells which entity is meant). `mire`: the fusion-free pooling head trained on ViD2R. "
              "`mire_residual`: the same head with the text added back (the paper's fusion ablation). "
              "`*_shuffled`: each query gets another query's picture.", "",
              "Training curves: " + ", ".join(f"`{f}`" for f in sorted(os.listdir(out)) if f.startswith("curves_")),
              "", "Attention of the pooling heads: " + ", ".join(f"`{os.path.basename(f)}`" for f in figures), "",
              "Stage timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items())]
    path = os.path.join(out, "report.md")
    with atomic_open(path) as f:
        f.write("\n".join(lines) + "\n")
    print("\n" + table)
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="tiny sizes and a few steps (the smoke test of make test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--analyses", action="store_true",
                   help="after the demo, run the analyses (conversion variants, pooling focus, modality reliance, "
                        "the text-dominance trap world) into OUT/analyses")
    p.add_argument("--analyses-only", action="store_true",
                   help="run only the analyses, on the finished demo in --out (give the --quick and --seed it ran "
                        "with)")
    a = p.parse_args(argv)
    plan = DemoPlan.quick() if a.quick else DemoPlan.full()
    out = os.path.abspath(a.out)
    if a.analyses_only:
        return {"analyses": analyses(a, out, plan, Stopwatch())}
    os.makedirs(out, exist_ok=True)
    clock = Stopwatch()

    from mire_jax.demo.world import generate
    data = os.path.join(out, "data")
    generate(data, seed=a.seed, **plan.sizes)
    clock.lap("data")
    init = make_init_model(data, os.path.join(out, "models", "init"), plan, a.seed, os.path.join(out, "warmup"))
    clock.lap("warm-ups")
    vid2r_dir = os.path.join(out, "vid2r")
    build_vid2r(data, init, vid2r_dir, plan)
    clock.lap("ViD2R (R2P)")
    images, tfds_dir, cache = os.path.join(data, "images"), os.path.join(out, "tfds"), os.path.join(out, "vision_cache")
    cache_vision(vid2r_dir, images, init, tfds_dir, cache)
    clock.lap("vision cache")
    models = {"text_only": init}
    for name, residual in (("mire", False), ("mire_residual", True)):
        models[name] = pretrain(name, residual, vid2r_dir, images, init, tfds_dir, cache,
                                os.path.join(out, "train", name), plan, a.seed)
    clock.lap("pre-training")
    results, indexes = evaluate_all(data, models, os.path.join(out, "eval"), plan)
    clock.lap("zero-shot evaluation")

    from mire_jax import convert
    from mire_jax.retrieval.model_folder import load_model
    config, params = load_model(models["mire"])
    convert.save_state_dict(convert.to_torch(config, params), os.path.join(out, "mire_pytorch.safetensors"))
    from mire_jax.train.plot import plot
    for name in ("mire", "mire_residual"):
        plot(os.path.join(out, "train", name), os.path.join(out, f"curves_{name}.png"), f"pre-training: {name}")
    figures = attention_figures(data, models["mire"], out, plan.eval_query_maxlen)
    clock.lap("export and figures")
    results["timings_s"] = {**clock.stages, "total": round(time.perf_counter() - clock.t0, 1)}
    write_json(os.path.join(out, "results.json"), results, indent=2)
    write_report(out, results, results["timings_s"], figures)
    print(f"\nwrote {out}/results.json, report.md, curves_*.png, attention_*.png, mire_pytorch.safetensors "
          f"in {results['timings_s']['total']:.0f} s")

    # What the server needs to find the trained model, the index its evaluation built and the zero-shot passages.
    write_run_paths(out, model=models["mire"], index=indexes["mire"],
                    passages=os.path.join(data, "corpora", "zeroshot.jsonl"))
    shown = os.path.relpath(out) if out.startswith(os.getcwd() + os.sep) else out
    if a.analyses:
        results["analyses"] = analyses(a, out, plan, clock)
        write_json(os.path.join(out, "results.json"), results, indent=2)
    print("\nto search the demo's corpus from a browser (the server prints its address):\n"
          f"python -m mire_jax.serve {shlex.quote(shown)}")
    return results


def finished_demo(out: str, plan: DemoPlan, seed: int) -> dict:
    """The folders and models of the demo finished in `out` -> DemoRun fields; refuses (one line) a folder without a
    finished demo, or one made with other sizes or another seed than `plan` and `seed`."""
    from mire_jax.demo.world import SyntheticSizes
    from mire_jax.files import read_json

    data = os.path.join(out, "data")
    models = {"text_only": os.path.join(out, "models", "init"), "mire": os.path.join(out, "train", "mire", "model"),
              "mire_residual": os.path.join(out, "train", "mire_residual", "model")}
    needed = [os.path.join(out, "results.json"), os.path.join(data, "manifest.json"),
              os.path.join(out, "vid2r", "hits.jsonl"), *models.values()]
    missing = [path for path in needed if not os.path.exists(path)]
    if missing:
        raise FileNotFoundError(f"{out}: no finished demo ({missing[0]} is missing); run `python -m mire_jax.demo "
                                f"--out {out} --analyses` instead")
    manifest = read_json(os.path.join(data, "manifest.json"))
    sizes = dataclasses.asdict(SyntheticSizes(**plan.sizes))
    if manifest["sizes"] != sizes or manifest["seed"] != seed:
        raise ValueError(f"{out}: its demo ran with other sizes or another seed (seed {manifest['seed']}) than "
                         f"--seed {seed}{' --quick' if plan.sizes else ''}: give the flags it ran with")
    return {"out": out, "data": data, "vid2r": os.path.join(out, "vid2r"), "images": os.path.join(data, "images"),
            "vision_cache": os.path.join(out, "vision_cache"), "models": models}


def analyses(a, out: str, plan: DemoPlan, clock: Stopwatch) -> dict:
    """--analyses: the four analyses on the demo's world and models -> {"report", "json", "timings_s"}."""
    from mire_jax.analyses.report import table
    from mire_jax.demo.analyses import AnalysesPlan, DemoRun, run_analyses

    start, cpu_start = time.perf_counter(), time.process_time()
    laps = {}

    def lap(name):
        clock.lap(name)
        laps[name] = clock.stages[name]

    run = DemoRun(**finished_demo(out, plan, a.seed), plan=plan, seed=a.seed)
    done = run_analyses(run, AnalysesPlan.quick() if a.quick else AnalysesPlan.full(), lap)
    for result in done["results"]:
        print(f"\n{result['title']}\n" + "\n".join(table(result["columns"], result["rows"])))
        for finding in result.get("findings", ()):
            print(f"  - {finding}")
    # CPU time of this process too: on a machine others share, it says more of the work than the wall time does.
    timings = {**laps, "analyses total": round(time.perf_counter() - start, 1),
               "demo and analyses total": round(time.perf_counter() - clock.t0, 1),
               "analyses cpu": round(time.process_time() - cpu_start, 1),
               "cpu before the analyses": round(cpu_start, 1)}
    print(f"\nwrote {done['report']} and {done['json']} (analyses {timings['analyses total']:.0f} s, demo and analyses "
          f"{timings['demo and analyses total']:.0f} s)")
    return {"report": done["report"], "json": done["json"], "timings_s": timings}
