r"""Train MIRe (pre-training or fine-tuning) from an ml_collections config.

    python train/train.py --config configs/tiny.py --workdir /tmp/mire_tiny [--config.key=value ...] [--debug]

Rerunning the same command on a workdir with a checkpoint resumes. SIGTERM saves a checkpoint, exit code 0.
Multi-host: --config.distributed.coordinator=host:port --config.distributed.num_processes=N
--config.distributed.process_id=I (or the MIRE_* environment, or --config.distributed.auto on TPU pods).
A bad command line, config or data file is reported in one line (`error: ...`, exit status 2); --debug (or
MIRE_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import logging
import sys

from absl import flags
from ml_collections import config_flags

from mire_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file (file.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, logs and the final model go", required=True)
_DEBUG = flags.DEFINE_bool("debug", False, cli.DEBUG_HELP)


def main(argv):
    del argv
    cfg = _CONFIG.value
    from mire_jax import hosts
    d = cfg.distributed
    hosts.initialize_distributed(d.coordinator or None, d.num_processes or None,
                                    None if d.process_id < 0 else d.process_id, auto=d.auto)
    from mire_jax.train.loop import TrainingDiverged, train
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save chatter
    logging.getLogger("mire_jax").setLevel(logging.INFO)
    try:
        last = train(cfg, _WORKDIR.value)
    except TrainingDiverged as e:
        logging.error("%s", e)
        sys.exit(3)
    if last:
        logging.info("done: %s", {k: round(v, 4) if isinstance(v, float) else v for k, v in last.items()})


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    cli.run_absl_app(main, configs=[_CONFIG])
