"""Helpers of the reproduction's tests: a data root in the real download layouts made of the fixtures (symbolic
links, as a user links COCO into two benchmark folders) with a tiny random model as the starting model, and an
in-process run of `python -m mire_jax.reproduce` that returns its exit status, output and report."""
import contextlib
import dataclasses
import io
import json
import os
import pathlib

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"


def _link(source: pathlib.Path, target: pathlib.Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source, target)


def make_data_root(root: pathlib.Path, model: pathlib.Path, leave_out: tuple[str, ...] = ()) -> pathlib.Path:
    """D as docs/reproduce.md lays it out, from the fixture folders; `leave_out`: top-level folders not made."""
    parts = {"models/mire_base_init": model, "llava": FIXTURES / "llava", "wiki6m": FIXTURES / "wiki6m",
             "vid2r/images": FIXTURES / "llava" / "images", "remuq": FIXTURES / "remuq", "m2kr": FIXTURES / "m2kr",
             "aokvqa": FIXTURES / "aokvqa", "okvqa/RAVQA_v2_data": FIXTURES / "okvqa_gs" / "RAVQA_v2_data",
             "okvqa/images": FIXTURES / "okvqa_gs" / "images"}
    parts.update({f"okvqa/{f.name}": f for f in (FIXTURES / "okvqa_wiki").iterdir() if f.name != "images"})
    for rel, source in parts.items():
        if rel.split("/")[0] not in leave_out:
            _link(source, root / rel)
    return root


@dataclasses.dataclass
class Run:
    status: int
    stdout: str
    stderr: str
    out: pathlib.Path

    @property
    def report(self) -> dict:
        return json.loads((self.out / "reproduction.json").read_text())

    def outcomes(self) -> dict[str, tuple[str, str]]:
        """{stage: (status, reason)} from the report's stage table."""
        return {row["stage"]: (row["status"], row["reason"]) for row in self.report["stages"]}


def reproduce(out: pathlib.Path, *args: str) -> Run:
    """`python -m mire_jax.reproduce --out OUT ARGS --no-progress`, in this process."""
    from mire_jax.reproduce.__main__ import main
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["--out", str(out), *args, "--no-progress"])
    return Run(status, stdout.getvalue(), stderr.getvalue(), out)
