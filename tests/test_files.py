"""The shared JSON Lines reader: plain and gzipped files, and errors that name the file and line."""
import gzip
import json

import pytest

from mire_jax.files import iter_json_lines


class MyError(Exception):
    pass


def test_plain_and_gzipped_files_read_alike(tmp_path):
    text = '{"a": 1}\n\n{"a": 2}\n'
    (tmp_path / "x.jsonl").write_text(text)
    with gzip.open(tmp_path / "x.jsonl.gz", "wt") as f:
        f.write(text)
    for name in ("x.jsonl", "x.jsonl.gz"):
        rows = list(iter_json_lines(tmp_path / name))
        assert [(n, r) for n, _, r in rows] == [(1, {"a": 1}), (3, {"a": 2})]
        assert rows[1][1] == f"{tmp_path / name}: line 3"


@pytest.mark.parametrize("content,options,message", [
    (b'{"a": 1}\n{"a": \n', {}, r"bad\.jsonl: line 2: invalid JSON"),
    (b'{"a": 1}\n[1, 2]\n', {}, r"bad\.jsonl: line 2: expected a JSON object, got list"),
    (b'{"a": 1}\n\n', {"skip_blank": False}, r"bad\.jsonl: line 2: invalid JSON"),
    (b'{"a": 1}\n{"a": "\xff"}\n', {}, r"bad\.jsonl: line 2: not UTF-8 text"),
])
def test_bad_lines_raise_the_given_error_naming_file_and_line(tmp_path, content, options, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(MyError, match=message):
        list(iter_json_lines(path, error=MyError, **options))


def test_non_objects_pass_when_allowed(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('[1, 2]\n"s"\n')
    assert [r for _, _, r in iter_json_lines(path, objects_only=False)] == [[1, 2], "s"]


def test_atomic_writes_replace_whole_files_with_normal_permissions(tmp_path):
    import os
    import stat

    import pytest

    from mire_jax import files
    target = tmp_path / "sub" / "out.json"
    files.write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    with pytest.raises(RuntimeError):
        with files.atomic_open(target, fsync=True) as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"a": 1}          # the old file stands, whole
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]  # no temporary left behind
    with files.atomic_open(target, "w", fsync=True) as f:
        f.write("[2]")
    assert target.read_text() == "[2]" and files.is_temporary(".out.json.0a1b2c3d4e5f.partial")
