r"""Zero-shot retrieval evaluation of a MIRe checkpoint on one benchmark.

    python eval/evaluate.py --config configs/eval_okvqa_gs.py --checkpoint runs/pretrain/model \
        --workdir runs/eval [--mode text_only] [--image_ablation shuffle|blank] [--protocol published|textbook] \
        [--config.key=value ...]

--checkpoint: a mire-jax model folder (config.json + params.safetensors; `python -m mire_jax.convert` makes one
from a published .pth), or a training workdir (its `model/`). --protocol (default: the config's `protocol`,
"published"): "published" indexes passages as MIRe's published evaluation (punctuation kept), "textbook" as
ColBERT (punctuation dropped); see `mire_jax.evaluation`. The corpus index is encoded once per model, doc_maxlen
and protocol, and reused. Writes WORKDIR/<benchmark>_<split>/results_<mode>[_<ablation>]_<protocol>.json (the
protocol, the passage keep policy, and metrics at k = 1, 5, 10, 20, 50, 100: published, and textbook where the set
has gold ids, each labelled with the run's protocol) and run_<same>.json, and prints a table.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "evaluation config (configs/eval_*.py)", lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "model folder or training workdir", required=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/eval", "where encoded corpora, runs and results go")
_MODE = flags.DEFINE_enum("mode", "mire", ["mire", "text_only"], "query with image + text, or text only")
_ABLATION = flags.DEFINE_enum("image_ablation", None, ["shuffle", "blank"], "replace the query images")
_PROTOCOL = flags.DEFINE_enum("protocol", None, ["published", "textbook"],
                              "evaluation protocol (default: the config's `protocol`)")


def resolve_checkpoint(path: str) -> str:
    if os.path.exists(os.path.join(path, "config.json")) and os.path.exists(os.path.join(path, "params.safetensors")):
        return path
    if os.path.exists(os.path.join(path, "model", "params.safetensors")):
        return os.path.join(path, "model")
    raise FileNotFoundError(f"{path} is neither a mire-jax model folder nor a training workdir with model/ "
                            "(convert a published checkpoint with `python -m mire_jax.convert import ...`)")


def find_tokenizer(cfg, model_dir: str):
    from mire_jax.tokenizer import ColbertTokenizer
    candidates = [cfg.tokenizer] if cfg.tokenizer else [model_dir, os.path.dirname(os.path.abspath(model_dir))]
    for c in candidates:
        if c and (os.path.isfile(c) or any(os.path.exists(os.path.join(c, f)) for f in ("tokenizer.json", "vocab.txt"))):
            return ColbertTokenizer.from_pretrained(c)
    raise FileNotFoundError(f"no tokenizer: set --config.tokenizer to a vocab.txt or tokenizer folder "
                            f"(looked in {candidates})")


def main(argv):
    del argv
    cfg = _CONFIG.value
    from mire_jax import evaluation
    from mire_jax.data.benchmarks import load_benchmark
    from mire_jax.model_io import load_model

    model_dir = resolve_checkpoint(_CHECKPOINT.value)
    config, params = load_model(model_dir)
    tokenizer = find_tokenizer(cfg, model_dir)
    benchmark = load_benchmark(cfg.benchmark, cfg.root, split=cfg.split or None)
    index_cfg = {k: v for k, v in cfg.index.to_dict().items() if v is not None}
    settings = evaluation.EvalSettings(mode=_MODE.value, image_ablation=_ABLATION.value,
                                       protocol=_PROTOCOL.value or cfg.protocol, k=cfg.k,
                                       query_maxlen=cfg.query_maxlen, doc_maxlen=cfg.doc_maxlen,
                                       attend_to_mask_tokens=cfg.attend_to_mask_tokens, batch_size=cfg.batch_size,
                                       shard_size=cfg.shard_size, seed=cfg.seed, index=index_cfg)
    run = evaluation.retrieve(benchmark, config, params, tokenizer, _WORKDIR.value, settings)
    results = evaluation.score(benchmark, run, run_protocol=settings.protocol)
    name = settings.run_name
    out_dir = os.path.join(_WORKDIR.value, f"{benchmark.name}_{benchmark.split}")
    os.makedirs(out_dir, exist_ok=True)
    payload = {"benchmark": benchmark.name, "split": benchmark.split, "checkpoint": model_dir, "mode": _MODE.value,
               "image_ablation": _ABLATION.value, "protocol": settings.protocol,
               "passage_keep": settings.passage_keep, "num_queries": len(benchmark.queries),
               "num_passages": len(benchmark.corpus), "notes": list(benchmark.notes), "metrics": results}
    with open(os.path.join(out_dir, f"results_{name}.json"), "w") as f:
        json.dump(payload, f, indent=2)
    with open(os.path.join(out_dir, f"run_{name}.json"), "w") as f:
        json.dump(run, f)
    columns = ["P@1", "MRR@5", "P@5", "R@5", "R@10", "R@20", "R@50", "R@100"]
    print(evaluation.format_table({f"{name} ({p} metrics)": m for p, m in results.items()}, columns))
    print(f"wrote {os.path.join(out_dir, f'results_{name}.json')}")


if __name__ == "__main__":
    app.run(main)
