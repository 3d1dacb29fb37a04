"""Training-step speed: our jitted step against the PyTorch peer (the published way of training), same shapes,
same run, same machine. Writes JSON to bench/results/.

    python bench/train_step.py --size tiny --mode finetune --batch 32            # CPU
    python bench/train_step.py --size base --mode both --batch 128 --bf16 --peer-compile   # GPU
    python bench/train_step.py --size tiny --vision siglip                     # the SigLIP tower (base: so400m/14)
    python bench/train_step.py --size base --mode both --batch 128 --text modernbert      # SentMIRe, GPU

The peer is `bench/peer_train_step.py` (another peer script with the same arguments and JSON line: `--peer PATH`):
it times one step of the project's PyTorch oracle of MIRe (`tests/torch_oracle.py`), or of SentMIRe with
`--text modernbert` (`tests/sentmire_oracle.py`: Hugging Face's ModernBertModel), trained as the published code
trains, on random inputs; this script times ours with the same shapes, modes and dropout (train mode). SentMIRe's
pre-training trains the projection with the head, as published (configs/sentmire_pretrain.py).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_PEER = ROOT / "bench" / "peer_train_step.py"


def model_config(size: str, vision: str = "clip", text: str = "bert"):
    """The benchmark's MIReConfig: tiny or base towers; the CLIP vision tower or the SigLIP one (base: so400m/14,
    384 px); BERT, or SentMIRe's ModernBERT-base with PyLate's two prefix tokens (GTE-ModernColBERT-v1's shapes)."""
    from mire_jax.config import MIReConfig, ModernBertConfig, VisionConfig
    if size == "tiny":
        config = MIReConfig.tiny(text=text)
        return config.replace(vision=MIReConfig.tiny_siglip().vision) if vision == "siglip" else config
    config = MIReConfig(modernbert=ModernBertConfig(vocab_size=50370)) if text == "modernbert" else MIReConfig()
    return config.replace(vision=VisionConfig.siglip()) if vision == "siglip" else config


def ours(size: str, mode: str, batch: int, q_len: int, d_len: int, steps: int, warmup: int, bf16: bool,
         vision: str = "clip", text: str = "bert", dropout: bool = True) -> dict:
    import jax
    import numpy as np

    import mire_jax
    from mire_jax.train.optim import learning_rate_schedule, make_optimizer
    from mire_jax.train.step import DataParallelStep, StepConfig, init_state

    config = model_config(size, vision, text).replace(dtype="bfloat16" if bf16 else "float32")
    params = mire_jax.init_params(config, jax.random.PRNGKey(0))
    pretrain = mode == "pretrain"
    # The peer scores each query against the whole batch: one negatives group of the whole batch.
    step_cfg = StepConfig(phase=mode, temperature=0.3 if pretrain else 0.8, negatives_group=batch, dropout=dropout)
    tx = make_optimizer(1e-4, 0, 0.01)
    step = DataParallelStep(config, step_cfg, tx, learning_rate_schedule(1e-4, 0), batch)
    trainable = ("pooling", "linear") if pretrain and text == "modernbert" else None  # SentMIRe's, as published
    state, frozen = init_state(params, mode, tx, jax.random.PRNGKey(1), trainable)
    state, frozen = step.prepare(state), step.prepare(frozen)

    rng = np.random.default_rng(0)
    v = config.text.vocab_size
    low = 1000 if v > 2000 else 5
    b = {"q_ids": rng.integers(low, v, (batch, q_len)).astype(np.int32), "q_mask": np.ones((batch, q_len), np.int32),
         "d_ids": rng.integers(low, v, (batch, d_len)).astype(np.int32), "d_mask": np.ones((batch, d_len), np.int32),
         "d_keep": np.ones((batch, d_len), bool)}
    if pretrain:
        b["vision_features"] = rng.normal(size=(batch, config.vision.num_patches + 1,
                                                config.vision.hidden_size)).astype(np.float32)
    else:
        side = config.vision.image_size
        b["pixels"] = rng.normal(size=(batch, side, side, 3)).astype(np.float32)
    batch_on_device = step.global_batch(b)  # the input pipeline prefetches; time the step itself, as the peer does

    t0 = time.perf_counter()
    for _ in range(warmup):
        state, metrics = step._step(state, frozen, batch_on_device)
    jax.block_until_ready(metrics)
    compile_and_warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = step._step(state, frozen, batch_on_device)
    jax.block_until_ready(metrics)
    dt = (time.perf_counter() - t0) / steps
    return {"impl": "mire-jax", "device": str(jax.devices()[0].device_kind), "devices": jax.device_count(), "jax": jax.__version__,
            "size": size, "vision": vision, "text": text, "mode": mode, "batch": batch, "query_len": q_len,
            "doc_len": d_len, "bf16": bf16,
            "step_s": round(dt, 5), "samples_per_s": round(batch / dt, 2),
            "maxsim_block": "auto", "compile_and_warmup_s": round(compile_and_warmup, 2),
            "loss": round(float(metrics["loss"]), 4)}


def peer(path: pathlib.Path, size, mode, batch, q_len, d_len, steps, warmup, bf16, vision, text, compile_) -> dict:
    if not path.exists():
        return {"impl": "pytorch-peer", "unavailable": f"peer script not found at {path} (pass --peer)"}
    cmd = [sys.executable, str(path), "--size", size, "--mode", mode, "--batch", str(batch), "--query-len",
           str(q_len), "--doc-len", str(d_len), "--steps", str(steps), "--warmup", str(warmup)]
    cmd += ["--vision", vision] if vision != "clip" else []  # a peer without --vision still times CLIP
    cmd += ["--bf16"] * bf16 + ["--compile"] * compile_ + ["--text", text] * (text != "bert")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"impl": "pytorch-peer", "unavailable": out.stderr[-1500:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["tiny", "base"], default="tiny")
    p.add_argument("--mode", choices=["pretrain", "finetune", "both"], default="finetune")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--query-len", type=int, default=32)
    p.add_argument("--doc-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--vision", choices=["clip", "siglip"], default="clip",
                   help="the vision tower (fine-tuning runs it on pixels in every step)")
    p.add_argument("--text", choices=["bert", "modernbert"], default="bert",
                   help="the text tower: BERT (MIRe) or ModernBERT with PyLate's projection (SentMIRe)")
    p.add_argument("--peer", type=pathlib.Path, default=DEFAULT_PEER)
    p.add_argument("--peer-compile", action="store_true", help="also time the peer under torch.compile")
    p.add_argument("--repeat", type=int, default=1, help="rounds, ours then the peer each time (the peer's "
                   "speed varies with the machine's load: report the median)")
    p.add_argument("--out", type=pathlib.Path, default=None)
    a = p.parse_args()

    rows = []
    for round_ in range(a.repeat):
        for mode in (["pretrain", "finetune"] if a.mode == "both" else [a.mode]):
            shape = (a.size, mode, a.batch, a.query_len, a.doc_len, a.steps, a.warmup, a.bf16, a.vision, a.text)
            mine = ours(*shape)
            peers = [peer(a.peer, *shape, False)] + ([peer(a.peer, *shape, True)] if a.peer_compile else [])
            for other in peers:
                ratio = (mine["samples_per_s"] / other["samples_per_s"]) if "samples_per_s" in other else None
                rows.append({"round": round_, "ours": mine, "peer": other,
                             "speedup": round(ratio, 3) if ratio else None})
                print(json.dumps(rows[-1]))
    summary = {}
    for row in rows:
        key = f"{row['ours']['mode']}{'_vs_compiled' if row['peer'].get('compile') else ''}"
        summary.setdefault(key, []).append(row["speedup"])
    summary = {k: {"speedups": v, "median": statistics.median(x for x in v if x is not None)
                   if any(x is not None for x in v) else None} for k, v in summary.items()}
    print(json.dumps({"median_speedup": {k: v["median"] for k, v in summary.items()}}))
    tower = ("_siglip" if a.vision == "siglip" else "") + ("_sentmire" if a.text == "modernbert" else "")
    out = a.out or ROOT / "bench" / "results" / (f"train_step_{a.size}{tower}_"
                                                 f"{mine['device'].replace(' ', '_').lower()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.node() and platform.machine(), "cpus": os.cpu_count(),
                               "summary": summary, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
