"""python -m mire_jax.convert {import,import-hf,export}: published checkpoints and Hugging Face parts to a model
folder, and back. A bad file or setting is reported in one line (`error: ...`, exit status 2), the traceback only
with --debug (or MIRE_DEBUG=1)."""
from __future__ import annotations

import argparse
import os

import jax
import numpy as np

from mire_jax import cli, convert
from mire_jax.config import BertConfig, TorchLayout, VisionConfig
from mire_jax.convert import from_hf_parts, from_torch, load_state_dict, save_state_dict, to_torch
from mire_jax.files import read_json
from mire_jax.retrieval.model_folder import has_tokenizer, load_model, save_model


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
    a.add_argument("--vision-config", default="base",
                   help="CLIP(Vision) or SigLIP(Vision) config.json (or folder), or 'base' (CLIP ViT-B/32, 224 px) / "
                        "'large' (CLIP ViT-L/14, 336 px) / 'siglip' (SigLIP so400m/14, 384 px)")
    a.add_argument("--out", required=True, help="model folder to write")
    a.add_argument("--tokenizer", default="", help="vocab.txt or tokenizer folder to copy into the model folder "
                   "(the published runs use bert-base-uncased's, as ColBERTv2 ships it)")
    h = sub.add_parser("import-hf", help="separate Hugging Face checkpoints (ColBERTv2 or BERT + CLIP or SigLIP) -> "
                       "model folder")
    h.add_argument("--text", required=True, help="ColBERTv2 or BERT folder (config.json + weights)")
    h.add_argument("--vision", required=True, help="CLIP, CLIPVision, SigLIP or SiglipVision folder (config.json + "
                   "weights; its model_type picks the tower)")
    h.add_argument("--seed", type=int, default=0, help="seed of the parts the checkpoints lack (pooling head)")
    h.add_argument("--out", required=True)
    for q in (a, h):
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
            config, params = from_torch(load_state_dict(args.checkpoint), _config_arg(args.bert_config, "bert"),
                                        _config_arg(args.vision_config, "vision"), head)
            tokenizer = args.tokenizer
        else:
            config, params = from_hf_parts(args.text, args.vision, head, seed=args.seed)
            tokenizer = args.text if has_tokenizer(args.text) else ""  # ColBERTv2's folder holds its vocabulary
            if not tokenizer:
                print(f"note: {args.text} holds no vocab.txt or tokenizer.json; copy one into {args.out}")
        save_model(args.out, config, params, tokenizer=tokenizer)
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
