r"""Cache the frozen vision tower's features of every image of a dataset (run once before pre-training).

    python train/cache_vision.py --config configs/X.py[:arg] [--config.key=value ...] [--debug]

Reads the training config (the fields of `mire_jax/train/config.py`): `model.dir` (the frozen tower's weights),
`data.builder`, `data.builder_config`, `data.data_dir`, `data.manual_dir`, `data.splits`, `data.image_root`,
`data.image_policy`, `data.vision_cache_dir` (the training pipeline reads the same key) and `vision_cache.*`.

Rerunning resumes: finished shards are kept and their images skipped. On several hosts every process
caches its share of the images into the same folder.
A bad command line, config or data file is reported in one line (`error: ...`, exit status 2); --debug (or
MIRE_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import json
import logging
import os

from absl import flags
from ml_collections import config_flags

from mire_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file (file.py[:arg]).",
                                          lock_config=True)
_DEBUG = flags.DEFINE_bool("debug", False, cli.DEBUG_HELP)


def main(argv) -> None:
    del argv
    from mire_jax.train.vision_cache import cache_vision_features
    report = cache_vision_features(_CONFIG.value)
    skipped = report.pop("skipped")
    for image_id, reason in skipped[:20]:
        logging.warning("skipped %s: %s", image_id, reason)
    report["num_skipped"] = len(skipped)
    print(json.dumps(report))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    flags.mark_flag_as_required("config")
    cli.run_absl_app(main, configs=[_CONFIG])
