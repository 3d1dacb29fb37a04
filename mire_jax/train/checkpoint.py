"""Training checkpoints: an orbax CheckpointManager (async, keep K) whose every step holds the train state AND
each process's data-iterator position, committed together.

Layout of one step, `<directory>/<step>/`:

  state/           the train state pytree (params, optimizer state, step, RNG), orbax `StandardSave`
  data_iterator/   process_<i>-of-<n>.json, one per process: that process's iterator position (grain's
                   position plus the count of skipped records), written by grain's own orbax handler
                   (`grain.checkpoint.CheckpointSave` / `CheckpointRestore`)

orbax commits a step atomically (temporary folder, then rename, once every process has written its part), so
a killed run leaves either a complete step (state and every iterator position) or none, and keep-K deletes
both together. The arrays are written in the background; the iterator position (a few hundred bytes) is
written before `save` returns, so it is the position at the step being saved.
"""
from __future__ import annotations

import json
import os

import grain.checkpoint
import orbax.checkpoint as ocp

STATE_ITEM = "state"
DATA_ITERATOR_ITEM = "data_iterator"


class GrainCheckpointableIterator:
    """Our `BatchIterator` (a grain `DatasetIterator` plus the count of skipped records) in the form grain's
    orbax `CheckpointHandler` saves and restores an iterator that is not itself a grain `DatasetIterator`
    (the protocol of grain's `DataLoaderIterator`): `get_state()` -> bytes, `set_state(bytes)`, and
    `start_prefetch()` after a restore. The bytes are the iterator's JSON state, `num_skipped` included."""

    def __init__(self, iterator):
        self.iterator = iterator

    def get_state(self) -> bytes:
        return json.dumps(self.iterator.get_state(), indent=2).encode()

    def set_state(self, state: bytes) -> None:
        self.iterator.set_state(json.loads(state))

    def start_prefetch(self) -> None:
        """Nothing to start: the iterator's prefetch thread restarts with the next batch."""


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
                                               cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, data_iterator) -> None:
        """Start saving `state` (any pytree of arrays) and this process's `data_iterator` position at `step`;
        every process calls it at the same step."""
        self._manager.save(step, args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardSave(state),
            DATA_ITERATOR_ITEM: grain.checkpoint.CheckpointSave(GrainCheckpointableIterator(data_iterator))}))

    def restore(self, step: int, abstract_state, data_iterator):
        """-> the state at `step`, shaped and sharded like `abstract_state`; `data_iterator` (a fresh iterator of
        the same pipeline) is moved to its position at `step`."""
        if not os.path.isdir(os.path.join(self.directory, str(step), DATA_ITERATOR_ITEM)):
            raise FileNotFoundError(f"checkpoint step {step} in {self.directory} has no {DATA_ITERATOR_ITEM}/ "
                                    "(the data-iterator positions): it cannot be resumed exactly")
        restored = self._manager.restore(step, args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardRestore(abstract_state),
            DATA_ITERATOR_ITEM: grain.checkpoint.CheckpointRestore(GrainCheckpointableIterator(data_iterator))}))
        return restored[STATE_ITEM]

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
