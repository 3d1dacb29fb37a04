"""python -m mire_jax.convert {import,import-hf,export}: published checkpoints and Hugging Face parts to a model
folder, and back; MIRe (BERT text tower) and SentMIRe (a PyLate ModernColBERT text tower). A bad file or setting is
reported in one line (`error: ...`, exit status 2), the traceback only with --debug (or MIRE_DEBUG=1)."""
from __future__ import annotations

import argparse
import os

import jax
import numpy as np

from mire_jax import cli, convert
from mire_jax.config import BertConfig, TorchLayout, VisionConfig
from mire_jax.convert import from_hf_parts, from_torch, load_state_dict, save_state_dict, to_torch
from mire_jax.convert.published import checkpoint_variant
from mire_jax.convert.pylate import MODULES_FILE
from mire_jax.files import read_json
from mire_jax.retrieval.model_folder import has_tokenizer, load_model, save_model
from mire_jax.tokenization.pylate import FRAMINGS, PylateConventions, PylateTokenizer


def _config_arg(value: str, kind: str) -> dict:
    """A Hugging Face config.json path (or a folder holding one), or the name of a published size."""
    named = {"bert": {"base": BertConfig(), "large": BertConfig(hidden_size=1024, num_hidden_layers=24,
                                                                 num_attention_heads=16, intermediate_size=4096)},
             "vision": {"base": VisionConfig(), "large": VisionConfig(hidden_size=1024, intermediate_size=4096,
                                                                     num_hidden_layers=24, num_attention_heads=16,
                                                                     image_size=336, patch_size=14),
                        "siglip": VisionConfig.siglip()}}
    if value in named[kind]:
        return named[kind][value].__dict__
    path = os.path.join(value, "config.json") if os.path.isdir(value) else value
    return read_json(path)


def _modernbert_config_arg(value: str) -> dict:
    """A ModernBERT config.json, or a folder holding one: a published SentMIRe checkpoint folder, a PyLate model
    (its Transformer module's config.json)."""
    if os.path.isdir(value) and os.path.isfile(os.path.join(value, MODULES_FILE)):
        modules = read_json(os.path.join(value, MODULES_FILE))
        value = os.path.join(value, modules[0].get("path", "")) if modules else value
    config = read_json(os.path.join(value, "config.json") if os.path.isdir(value) else value)
    if config.get("model_type") != "modernbert":
        raise ValueError(f"{value}: model_type {config.get('model_type')!r}, not 'modernbert'")
    return config


def _write_conventions(out: str, source: str, framing: str) -> None:
    """PyLate's prefixes and skiplist (from `source`: a PyLate model, a published SentMIRe checkpoint folder or a
    mire-jax model folder) recorded in the SentMIRe model folder `out`, checked against its tokenizer.json."""
    conventions = PylateConventions.from_folder(source, framing)
    conventions.save(out)
    if os.path.isfile(os.path.join(out, "tokenizer.json")):
        PylateTokenizer.from_pretrained(out)  # the markers exist, the framing is [CLS] ... [SEP]
    print(f"tokenizer conventions: prefixes {conventions.query_prefix!r} / {conventions.document_prefix!r}, "
          f"{len(conventions.skiplist_words)} skiplist words, {conventions.framing} framing")


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    with cli.user_errors(args.debug):
        _run(args)


def _parser():
    p = argparse.ArgumentParser(prog="python -m mire_jax.convert", description=convert.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("import", help="published MIRe checkpoint (.pth/.bin/.safetensors) -> model folder")
    a.add_argument("checkpoint")
    a.add_argument("--bert-config", default="base", help="config.json (or folder), or 'base' / 'large'")
    a.add_argument("--modernbert-config", default="", help="a SentMIRe checkpoint: its ModernBERT config.json, or a "
                   "folder holding one (the checkpoint's folder, or the PyLate model it was trained from)")
    a.add_argument("--vision-config", default="base",
                   help="CLIP(Vision) or SigLIP(Vision) config.json (or folder), or 'base' (CLIP ViT-B/32, 224 px) / "
                        "'large' (CLIP ViT-L/14, 336 px) / 'siglip' (SigLIP so400m/14, 384 px)")
    a.add_argument("--out", required=True, help="model folder to write")
    a.add_argument("--tokenizer", default="", help="vocab.txt or tokenizer folder to copy into the model folder "
                   "(the published runs use bert-base-uncased's, as ColBERTv2 ships it; SentMIRe: the PyLate "
                   "model's folder, default the --modernbert-config folder)")
    h = sub.add_parser("import-hf", help="separate Hugging Face checkpoints (ColBERTv2, BERT or PyLate ModernColBERT + "
                       "CLIP or SigLIP) -> model folder")
    h.add_argument("--text", required=True, help="ColBERTv2 or BERT folder (config.json + weights): MIRe; or a "
                   "PyLate ModernColBERT folder (modules.json): SentMIRe")
    h.add_argument("--vision", required=True, help="CLIP, CLIPVision, SigLIP or SiglipVision folder (config.json + "
                   "weights; its model_type picks the tower)")
    h.add_argument("--seed", type=int, default=0, help="seed of the parts the checkpoints lack (pooling head)")
    h.add_argument("--out", required=True)
    for q in (a, h):
        q.add_argument("--framing", choices=FRAMINGS, default=FRAMINGS[0],
                       help="SentMIRe only: how texts meet PyLate's prefixes: 'sentmire' as the published SentMIRe "
                       "trains and evaluates, 'pylate' as PyLate itself encodes (docs/model.md)")
        q.add_argument("--head-dim", type=int, default=128)
        q.add_argument("--head-tokens", type=int, default=16, help="global visual tokens")
        q.add_argument("--head-heads", type=int, default=12, help="pooling heads")
        q.add_argument("--residual", action="store_true", help="the fusion ablation head (text added back)")
    e = sub.add_parser("export", help="model folder -> published layout (.safetensors, or .pth with {'model': ...})")
    e.add_argument("model")
    e.add_argument("--out", required=True, help="file ending in .safetensors or .pth")
    e.add_argument("--layout", choices=["keep", "transformers4", "transformers5"], default="keep",
                   help="CLIP key spelling: with (transformers4) or without (transformers5) 'vision_model.'; "
                        "'keep' reproduces the imported checkpoint's (a SigLIP tower's keys always have it)")
    p.add_argument("--debug", action="store_true", help=cli.DEBUG_HELP)
    for q in (a, h, e):  # also after the command; SUPPRESS keeps a --debug given before it
        q.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=cli.DEBUG_HELP)
    return p


def _run(args) -> None:
    if args.command in ("import", "import-hf"):
        head = dict(dim=args.head_dim, num_tokens=args.head_tokens, num_heads=args.head_heads, residual=args.residual)
        if args.command == "import":
            state = load_state_dict(args.checkpoint)
            if args.modernbert_config:
                text_config = _modernbert_config_arg(args.modernbert_config)
            elif checkpoint_variant(state) == "modernbert":
                raise ValueError(f"{args.checkpoint}: a SentMIRe checkpoint (ModernBERT keys model.layers.*, "
                                 "dense.weight): name its ModernBERT config with --modernbert-config")
            else:
                text_config = _config_arg(args.bert_config, "bert")
            config, params = from_torch(state, text_config, _config_arg(args.vision_config, "vision"), head)
            tokenizer = args.tokenizer
            if config.modernbert is not None and not tokenizer and has_tokenizer(args.modernbert_config):
                tokenizer = args.modernbert_config
        else:
            config, params = from_hf_parts(args.text, args.vision, head, seed=args.seed)
            tokenizer = args.text if has_tokenizer(args.text) else ""  # ColBERTv2's folder holds its vocabulary
            if not tokenizer:
                print(f"note: {args.text} holds no vocab.txt or tokenizer.json; copy one into {args.out}")
        save_model(args.out, config, params, tokenizer=tokenizer)
        if config.modernbert is not None:
            source = tokenizer if tokenizer and os.path.isdir(tokenizer) else ""
            if source:
                _write_conventions(args.out, source, args.framing)
            else:
                print(f"note: no tokenizer folder given; copy the PyLate model's tokenizer.json into {args.out} and "
                      "record its prefixes (mire_jax.tokenization.pylate.PylateConventions)")
        n = sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
        print(f"wrote {args.out}: {n / 1e6:.1f}M parameters")
    else:
        config, params = load_model(args.model)
        if args.layout != "keep":
            config = config.replace(layout=TorchLayout(args.layout == "transformers4", config.layout.position_ids))
        sd = to_torch(config, params)
        save_state_dict(sd, args.out)
        print(f"wrote {args.out}: {len(sd)} keys")


if __name__ == "__main__":
    main()
