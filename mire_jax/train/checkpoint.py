"""Training checkpoints: orbax CheckpointManager (async, keep K) holding the train state (params, optimizer
state, step, RNG) plus one JSON file per process with that process's data-iterator state.

orbax commits a step atomically (temporary folder, then rename), so a killed run leaves either a complete step or
none; the per-process data files are written (atomically) before the step is saved, and a step counts as
restorable only when orbax has committed it.
"""
from __future__ import annotations

import glob
import json
import os
import re

import jax
import orbax.checkpoint as ocp

DATA_DIR = "data_state"


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
                                               cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._data_dir = os.path.join(self.directory, DATA_DIR)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def _data_file(self, step: int, process: int | None = None) -> str:
        process = jax.process_index() if process is None else process
        return os.path.join(self._data_dir, f"step_{step}.process_{process}.json")

    def save(self, step: int, state, data_state: dict | None) -> None:
        """Start saving `state` (any pytree of arrays) and this process's data-iterator state at `step`."""
        os.makedirs(self._data_dir, exist_ok=True)
        tmp = self._data_file(step) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data_state, f)
        os.replace(tmp, self._data_file(step))
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        self._prune_data_files()

    def restore(self, step: int, abstract_state):
        """-> (state shaped and sharded like `abstract_state`, this process's data-iterator state)."""
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        path = self._data_file(step)
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint step {step} has no data-iterator state for process "
                                    f"{jax.process_index()}: {path}")
        with open(path) as f:
            return restored["state"], json.load(f)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def _prune_data_files(self) -> None:
        kept = set(self._manager.all_steps()) | {s for s in [self._manager.latest_step()] if s is not None}
        for path in glob.glob(os.path.join(self._data_dir, f"step_*.process_{jax.process_index()}.json")):
            step = int(re.match(r"step_(\d+)\.", os.path.basename(path)).group(1))
            if kept and step < min(kept):
                os.remove(path)
