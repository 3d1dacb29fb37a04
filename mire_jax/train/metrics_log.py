"""Training logs of process 0: a console progress bar, WORKDIR/metrics.jsonl and TensorBoard event files."""
from __future__ import annotations

import json
import os

from tqdm import tqdm

from mire_jax import files

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    def __init__(self, workdir: str, total_steps: int, start_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        self.path = os.path.join(workdir, METRICS_FILE)
        self._drop_after(start_step)  # a resumed run logs again what came after its checkpoint
        self._file = open(self.path, "a")
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1)
        self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def _drop_after(self, step: int) -> None:
        if not os.path.exists(self.path):
            return
        rows = [row for _, _, row in files.iter_json_lines(self.path) if row["step"] <= step]
        with files.atomic_open(self.path) as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)

    def advance(self) -> None:
        if self.enabled:
            self._bar.update(1)

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        for key, value in row.items():
            if key != "step":
                self._tb.add_scalar(f"train/{key}", value, row["step"])
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['accuracy']:.3f}",
                              samples_s=f"{row['samples_per_s']:.1f}")

    def log_validation(self, row: dict) -> None:
        """A validation row (val_* metrics of a step) into the same files; the bar shows its accuracy."""
        if not self.enabled:
            return
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        for key, value in row.items():
            if key.startswith("val_"):
                self._tb.add_scalar(f"validation/{key[4:]}", value, row["step"])
        self._bar.write(f"step {row['step']}: validation loss {row['val_loss']:.4f}, in-batch accuracy "
                        f"{row['val_accuracy']:.4f} ({row['val_examples']} examples)")

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tb.close()
            self._bar.close()
