"""The PyTorch peer of `bench/train_step.py`: one MIRe training step timed in PyTorch, trained the way the
published code trains (yeongjoonJu/MIRe), on the project's PyTorch oracle (`tests/torch_oracle.py`, written from
the model's description in docs/model.md); with `--text modernbert`, one SentMIRe step on its oracle
(`tests/sentmire_oracle.py`: Hugging Face's ModernBertModel, SDPA attention). Prints one JSON line.

    python bench/peer_train_step.py --size tiny --mode pretrain --batch 32            # CPU
    python bench/peer_train_step.py --size base --mode finetune --batch 128 --bf16    # GPU
    python bench/peer_train_step.py --size tiny --mode finetune --vision siglip       # the SigLIP tower

The shapes come from `bench/train_step.py:model_config` (tiny or base, CLIP or SigLIP), the configs the JAX side of
the benchmark uses.
The model is in train mode (BERT's dropout on), the optimizer AdamW (lr 1e-4, weight decay 0.01), the loss the
in-batch contrastive loss (query i's positive is passage i, every other passage of the batch a negative).

  pretrain   cached vision features (random stand-ins); BERT and its projection frozen, only the pooling head
             trains; the query is the visual tokens only; temperature 0.3.
  finetune   pixels through the frozen vision tower (no gradient); BERT, projection and head train; the query is
             visual tokens then text tokens; temperature 0.8.

SentMIRe's pre-training also trains the projection, as the published code does (configs/sentmire_pretrain.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import pathlib
import sys
import time

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
ORACLE_PATH = ROOT / "tests" / "torch_oracle.py"
SENTMIRE_ORACLE_PATH = ROOT / "tests" / "sentmire_oracle.py"
TEMPERATURE = {"pretrain": 0.3, "finetune": 0.8}  # the published training scripts' values
LEARNING_RATE, WEIGHT_DECAY = 1e-4, 0.01


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["tiny", "base"], default="tiny")
    p.add_argument("--mode", choices=["pretrain", "finetune"], default="pretrain")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--query-len", type=int, default=32)
    p.add_argument("--doc-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--bf16", action="store_true", help="run the step under bfloat16 autocast")
    p.add_argument("--vision", choices=["clip", "siglip"], default="clip", help="the vision tower")
    p.add_argument("--compile", action="store_true", help="time the step under torch.compile")
    p.add_argument("--text", choices=["bert", "modernbert"], default="bert", help="MIRe or SentMIRe")
    return p.parse_args()


def _load(name: str, path: pathlib.Path):
    """A tests/ module by file (tests/ is not a package); registered in sys.modules, where torch.compile looks its
    functions' module up (and where sentmire_oracle finds torch_oracle)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_oracle():
    return _load("torch_oracle", ORACLE_PATH)


def model_config(size: str, vision: str = "clip", text: str = "bert"):
    """The benchmark's MIReConfig (bench/train_step.py's); JAX stays on the CPU here, the accelerator is the peer's."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, str(ROOT / "bench"))
    from train_step import model_config as benchmark_config
    return benchmark_config(size, vision, text)


def hugging_face_configs(config):
    """MIReConfig -> (BertConfig, CLIPVisionConfig or SiglipVisionConfig, head dict) for the oracle: our config
    uses HF field names."""
    from transformers import BertConfig, CLIPVisionConfig, SiglipVisionConfig
    head = dataclasses.asdict(config.head)
    vision = dataclasses.asdict(config.vision)
    tower = SiglipVisionConfig if vision.pop("model_type") == "siglip" else CLIPVisionConfig
    return (BertConfig(**dataclasses.asdict(config.bert)), tower(**vision),
            {key: head[key] for key in ("dim", "num_tokens", "num_heads", "residual")})


def sentmire_model(config):
    """SentMIRe's oracle from the MIReConfig: Hugging Face's ModernBertConfig has our field names."""
    from transformers import CLIPVisionConfig, ModernBertConfig
    sentmire = _load("sentmire_oracle", SENTMIRE_ORACLE_PATH)
    fields = dataclasses.asdict(config.modernbert)
    projection_bias = fields.pop("projection_bias")
    fields["layer_types"] = list(fields["layer_types"]) or None
    text = ModernBertConfig(**fields)
    text._attn_implementation = "sdpa"
    head = dataclasses.asdict(config.head)
    return sentmire.SentMIReOracle(text, CLIPVisionConfig(**dataclasses.asdict(config.vision)),
                                   {key: head[key] for key in ("dim", "num_tokens", "num_heads", "residual")},
                                   projection_bias=projection_bias)


def build_model(oracle, config, mode: str, device: torch.device):
    """-> (the oracle in train mode, the parameters that train in `mode`). SentMIRe's projection (`dense`) sits
    outside the frozen module, as published, so it trains in pre-training too."""
    model = sentmire_model(config) if config.modernbert is not None else oracle.Oracle(*hugging_face_configs(config))
    model = model.to(device).train()
    model.vision_tower.requires_grad_(False)
    if mode == "pretrain":
        model.model.requires_grad_(False)
    return model, [p for p in model.parameters() if p.requires_grad]


def random_batch(config, mode: str, batch: int, query_len: int, doc_len: int, device: torch.device) -> dict:
    """Random token ids (above the special tokens of the real vocabulary), full masks, and the image input of
    `mode`: vision features [B, 1+S, v] or NHWC pixels [B, H, W, 3]."""
    vocab = config.text.vocab_size
    lowest_id = 1000 if vocab > 2000 else 5
    ids = lambda length: torch.randint(lowest_id, vocab, (batch, length), device=device)
    out = {"q_ids": ids(query_len), "q_mask": torch.ones(batch, query_len, dtype=torch.long, device=device),
           "d_ids": ids(doc_len), "d_mask": torch.ones(batch, doc_len, dtype=torch.long, device=device),
           "d_keep": torch.ones(batch, doc_len, dtype=torch.bool, device=device)}
    vision = config.vision
    if mode == "pretrain":
        out["vision_features"] = torch.randn(batch, 1 + vision.num_patches, vision.hidden_size, device=device)
    else:
        out["pixels"] = torch.randn(batch, vision.image_size, vision.image_size, 3, device=device)
    return out


def in_batch_loss(oracle, queries, docs, doc_keep, temperature: float) -> torch.Tensor:
    """Cross-entropy of the all-pairs MaxSim scores / temperature, passage i the positive of query i."""
    scores = oracle.maxsim(queries.float(), docs.float(), doc_keep) / temperature
    return F.cross_entropy(scores, torch.arange(scores.shape[0], device=scores.device))


def make_step(oracle, model, optimizer, batch: dict, mode: str, bf16: bool, device: torch.device):
    """-> a function running one optimizer step on `batch` and returning the loss."""
    pretraining = mode == "pretrain"

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            if pretraining:
                features = batch["vision_features"]
            else:
                with torch.no_grad():  # the vision tower is frozen
                    features = model.vision_tower(batch["pixels"].permute(0, 3, 1, 2))
            queries = model.encode_query(batch["q_ids"], batch["q_mask"], feats=features, pretraining=pretraining)
            docs = model.encode_doc(batch["d_ids"], batch["d_mask"], batch["d_keep"])
            loss = in_batch_loss(oracle, queries, docs, batch["d_keep"], TEMPERATURE[mode])
        loss.backward()
        optimizer.step()
        return loss

    return step


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_step(step, steps: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """-> (mean wall time of `steps` steps after `warmup` untimed ones, the last loss)."""
    for _ in range(warmup):
        step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _synchronize(device)
    return (time.perf_counter() - start) / steps, float(loss.item())


def main() -> None:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    oracle, config = load_oracle(), model_config(args.size, args.vision, args.text)
    model, trainable = build_model(oracle, config, args.mode, device)
    optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    batch = random_batch(config, args.mode, args.batch, args.query_len, args.doc_len, device)
    step = make_step(oracle, model, optimizer, batch, args.mode, args.bf16, device)
    step_s, loss = seconds_per_step(torch.compile(step) if args.compile else step, args.steps, args.warmup, device)
    print(json.dumps({
        "impl": "pytorch-peer", "model": f"tests/{'sentmire' if args.text == 'modernbert' else 'torch'}_oracle.py",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
        "size": args.size, "vision": args.vision, "text": args.text, "mode": args.mode, "batch": args.batch,
        "query_len": args.query_len, "doc_len": args.doc_len, "bf16": args.bf16, "compile": args.compile,
        "step_s": round(step_s, 5),
        "samples_per_s": round(args.batch / step_s, 2), "loss": round(loss, 4)}))


if __name__ == "__main__":
    main()
