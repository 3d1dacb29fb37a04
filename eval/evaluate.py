r"""Zero-shot retrieval evaluation of a MIRe checkpoint on one benchmark.

    python eval/evaluate.py --config configs/eval.py:okvqa_gs --checkpoint runs/pretrain/model \
        --workdir runs/eval [--mode text_only] [--image_ablation shuffle|blank] [--query_rows visual|text] \
        [--question_ablation generic] [--generic_question TEXT] [--protocol published|textbook] \
        [--config.key=value ...] [--debug]

--checkpoint: a mire-jax model folder (config.json + params.safetensors; `python -m mire_jax.convert` makes one
from a published .pth), or a training workdir (its `model/`). --protocol (default: the config's `protocol`,
"published"): "published" indexes passages as MIRe's published evaluation (punctuation kept), "textbook" as
ColBERT (punctuation dropped); see `mire_jax.eval.runner`. The corpus index is encoded once per model, doc_maxlen
and protocol, and reused. --query_rows: the paper's inference ablations, searching with the pooled tokens
[E_g ; E_m] alone (visual: "w/o E_t") or the text tokens alone (text: "w/o E_g & E_m"). --question_ablation generic
asks every query the same generic question (--generic_question, default "What is shown in this picture?"), to
measure how much a model relies on the question's words. M2KR sets search the passage split
`--config.passages_split` (configs/eval.py: the published `test_passages`). Writes
WORKDIR/<benchmark>_<split>/results_<mode>[_<ablation>][_question_generic][_<rows>_rows]_<protocol>.json (the
settings, the corpus searched, the protocol, the passage keep policy, and metrics at k = 1, 5, 10, 20, 50, 100:
published, and textbook where the set has gold ids, each labelled with the run's protocol), "index": the search's
error (recall@10 and @100 of the index against exact MaxSim search on a sample of the benchmark's queries, the sample
size, the index's calibration), and run_<same>.json, and prints a table. --exact searches exactly (no error to
report).
A bad command line, config or data file is reported in one line (`error: ...`, exit status 2); --debug (or
MIRE_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from mire_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "evaluation config (configs/eval.py:<benchmark>)", lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "model folder or training workdir", required=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/eval", "where encoded corpora, runs and results go")
_MODE = flags.DEFINE_enum("mode", "mire", ["mire", "text_only"], "query with image + text, or text only")
_ABLATION = flags.DEFINE_enum("image_ablation", None, ["shuffle", "blank"], "replace the query images")
_ROWS = flags.DEFINE_enum("query_rows", "all", ["all", "visual", "text"],
                          "search with every query row, the pooled tokens only (visual: w/o E_t) or the text tokens "
                          "only (text: w/o E_g & E_m)")
_QUESTION_ABLATION = flags.DEFINE_enum("question_ablation", None, ["generic"],
                                        "replace every question by --generic_question")
_GENERIC_QUESTION = flags.DEFINE_string("generic_question", None, "the question of --question_ablation generic "
                                        "(default: \"What is shown in this picture?\")")
_PROTOCOL = flags.DEFINE_enum("protocol", None, ["published", "textbook"],
                              "evaluation protocol (default: the config's `protocol`)")
_EXACT = flags.DEFINE_bool("exact", False, "exact MaxSim search over every passage (no approximation error)")
_DEBUG = flags.DEFINE_bool("debug", False, cli.DEBUG_HELP)


def loader_overrides(cfg) -> dict:
    """The loader arguments of the config: `cfg.image_root` (ReMuQ's and WebQA's images are WebQA's TSV folder) and,
    for the M2KR sets, `cfg.passages_split`."""
    overrides = {}
    if cfg.image_root:
        overrides[{"remuq": "webqa_dir", "webqa": "image_dir"}.get(cfg.benchmark, "image_root")] = cfg.image_root
    if cfg.get("passages_split"):
        overrides["passages_split"] = cfg.passages_split
    return overrides


def main(argv):
    del argv
    cfg = _CONFIG.value
    from mire_jax.eval import runner
    from mire_jax.eval.benchmarks import load_benchmark
    from mire_jax.retrieval.model_folder import load_model, load_tokenizer, resolve_model_dir

    model_dir = resolve_model_dir(_CHECKPOINT.value)
    config, params = load_model(model_dir)
    tokenizer = load_tokenizer(model_dir, cfg.tokenizer)
    benchmark = load_benchmark(cfg.benchmark, cfg.root, split=cfg.split or None, **loader_overrides(cfg))
    index_cfg = {k: v for k, v in cfg.index.to_dict().items() if v is not None}
    question = {"generic_question": _GENERIC_QUESTION.value} if _GENERIC_QUESTION.value is not None else {}
    settings = runner.EvalSettings(mode=_MODE.value, image_ablation=_ABLATION.value,
                                       question_ablation=_QUESTION_ABLATION.value, **question,
                                       protocol=_PROTOCOL.value or cfg.protocol, k=cfg.k,
                                       query_maxlen=cfg.query_maxlen, doc_maxlen=cfg.doc_maxlen,
                                       attend_to_mask_tokens=cfg.attend_to_mask_tokens, batch_size=cfg.batch_size,
                                       shard_size=cfg.shard_size, seed=cfg.seed, index=index_cfg,
                                       exact=_EXACT.value, recall_sample=cfg.index_recall_sample,
                                       query_rows=_ROWS.value)
    searcher = runner.make_searcher(config, params, tokenizer, settings, model_dir)
    payload, run = runner.evaluate(benchmark, searcher, _WORKDIR.value, settings, checkpoint=model_dir)
    index_report, name = payload["index"], settings.run_name
    path = runner.write_results(os.path.join(_WORKDIR.value, f"{benchmark.name}_{benchmark.split}"), settings,
                                payload, run)
    columns = ["P@1", "MRR@5", "P@5", "R@5", "R@10", "R@20", "R@50", "R@100"]
    print(runner.format_table({f"{name} ({p} metrics)": m for p, m in payload["metrics"].items()}, columns))
    if index_report["exact_requested"]:
        print("search: exact MaxSim (--exact: no approximation error)")
    else:
        print(f"search: {index_report['search']}; recall against exact search on {index_report['sample_size']} "
              f"queries: @10 {index_report['recall@10']:.3f}, @100 {index_report['recall@100']:.3f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    cli.run_absl_app(main, configs=[_CONFIG])
