"""The tfds builders on the fixtures: build into tmp_path, read back, compare with the source files."""
import json
import shutil

import pyarrow.parquet as pq
import pytest

from mire_jax.data import builders


def _text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else v


def _by_id(source):
    return {_text(r["id"]): r for r in (source[i] for i in range(len(source)))}


def test_vid2r(tmp_path, fixtures_dir):
    manual = fixtures_dir / "vid2r"
    builder = builders.prepare("vid2r", data_dir=tmp_path, manual_dir=manual)
    source = builder.as_data_source(split="train")
    expected = json.loads((manual / "ViD2R.json").read_text())
    got = _by_id(source)
    assert len(source) == len(expected) == 5 and set(got) == {r["id"] for r in expected}
    for rec in expected:
        row = got[rec["id"]]
        assert _text(row["question"]) == rec["question"]
        assert _text(row["document"]) == rec["document"].strip()
        assert [_text(a) for a in row["answers"]] == [rec["answer"]]
        assert _text(row["image_id"]) == rec["image"]
        assert row["image"] == (manual / "images" / rec["image"]).read_bytes()
        assert _text(row["instruction"]) == "" and list(row["negs"]) == []
    # Read back from the folder alone (what a pod does): same records.
    reread = builders.open_split(tmp_path / "vid2r" / "1.0.0", "train")
    assert _by_id(reread).keys() == got.keys()


def test_vid2r_negs_and_paths_only(tmp_path, fixtures_dir):
    manual = tmp_path / "manual"
    shutil.copytree(fixtures_dir / "vid2r" / "images", manual / "images")
    records = json.loads((fixtures_dir / "vid2r" / "ViD2R.json").read_text())
    records[0]["negs"] = [{"id": "x", "document": " neg passage "}, "plain neg"]
    (manual / "ViD2R_all.json").write_text(json.dumps(records))
    builder = builders.prepare("vid2r", data_dir=tmp_path / "out", manual_dir=manual, embed_images=False)
    got = _by_id(builder.as_data_source(split="train"))
    assert [_text(n) for n in got[records[0]["id"]]["negs"]] == ["neg passage", "plain neg"]
    assert all(r["image"] == b"" for r in got.values())
    assert _text(got[records[2]["id"]]["image_id"]) == records[2]["image"]


def test_jsonl(tmp_path, fixtures_dir):
    manual = fixtures_dir / "jsonl"
    builder = builders.prepare("image_question_jsonl", data_dir=tmp_path, manual_dir=manual)
    sources = builder.as_data_source()
    assert {k: len(v) for k, v in sources.items()} == {"train": 3, "validation": 1}
    for split in ("train", "validation"):
        got = _by_id(sources[split])
        for line in (manual / f"{split}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            row = got[rec["id"]]
            assert _text(row["question"]) == rec["question"]
            assert _text(row["document"]) == rec["document"]
            assert _text(row["document_id"]) == rec.get("document_id", "")
            assert [_text(a) for a in row["answers"]] == ([rec["answer"]] if "answer" in rec else [])
            assert row["image"] == (manual / "images" / rec["image"]).read_bytes()


def test_jsonl_bad_record_names_file_and_line(tmp_path, fixtures_dir):
    manual = tmp_path / "manual"
    shutil.copytree(fixtures_dir / "jsonl" / "images", manual / "images")
    lines = (fixtures_dir / "jsonl" / "train.jsonl").read_text().splitlines()
    bad = json.loads(lines[1])
    del bad["document"]
    (manual / "train.jsonl").write_text("\n".join([lines[0], json.dumps(bad), lines[2]]) + "\n")
    with pytest.raises(builders.RecordError, match=r"train\.jsonl: line 2: missing required field 'document'"):
        builders.prepare("image_question_jsonl", data_dir=tmp_path / "out", manual_dir=manual)


def test_missing_image_is_stored_empty(tmp_path, fixtures_dir):
    manual = tmp_path / "manual"
    shutil.copytree(fixtures_dir / "jsonl", manual)
    (manual / "images" / "inat" / "monarch.jpg").unlink()
    builder = builders.prepare("image_question_jsonl", data_dir=tmp_path / "out", manual_dir=manual)
    got = _by_id(builder.as_data_source(split="train"))
    assert got["jl_2"]["image"] == b"" and got["jl_0"]["image"] != b""


@pytest.mark.parametrize("task", ["EVQA", "Infoseek", "OKVQA"])
def test_m2kr_data(tmp_path, fixtures_dir, task):
    manual = fixtures_dir / "m2kr"
    builder = builders.prepare("m2kr", config=f"{task}_data", data_dir=tmp_path, manual_dir=manual)
    sources = builder.as_data_source()
    expected_splits = builders.m2kr.TASK_SPLITS[task]
    assert set(sources) == set(expected_splits)
    for split in expected_splits:
        table = pq.read_table(manual / f"{task}_data" / f"{split}-00000-of-00001.parquet").to_pylist()
        got = _by_id(sources[split])
        assert len(got) == len(table)
        for row in table:
            rec = got[row["question_id"]]
            assert _text(rec["question"]) == row["question"]
            assert _text(rec["instruction"]) == row["instruction"]
            assert _text(rec["document"]) == row["pos_item_contents"][0]
            assert _text(rec["document_id"]) == row["pos_item_ids"][0]
            assert [_text(a) for a in rec["answers"]] == row["answers"]
            image_id = row["img_path"].rsplit("/", 1)[-1] if task == "Infoseek" else row["img_path"]
            assert _text(rec["image_id"]) == image_id
            assert rec["image"] == (manual / "images" / task / image_id).read_bytes()


def test_m2kr_passages(tmp_path, fixtures_dir):
    builder = builders.prepare("m2kr", config="Infoseek_passages", data_dir=tmp_path,
                               manual_dir=fixtures_dir / "m2kr")
    sources = builder.as_data_source()
    assert set(sources) == {"train_passages", "test_passages"}
    table = pq.read_table(fixtures_dir / "m2kr/Infoseek_passages/test_passages-00000-of-00001.parquet").to_pylist()
    got = {_text(r["passage_id"]): _text(r["passage_content"]) for r in sources["test_passages"]}
    assert got == {r["passage_id"]: r["passage_content"] for r in table}


def test_m2kr_from_save_to_disk(tmp_path, fixtures_dir):
    datasets = pytest.importorskip("datasets")
    manual = tmp_path / "manual"
    src = fixtures_dir / "m2kr" / "EVQA_data"
    dd = datasets.DatasetDict({split: datasets.Dataset.from_parquet(str(src / f"{split}-00000-of-00001.parquet"),
                                                                    cache_dir=str(tmp_path / "hf_cache"))
                               for split in ("train", "valid", "test")})
    dd.save_to_disk(str(manual / "EVQA_data"))
    image_root = fixtures_dir / "m2kr" / "images" / "EVQA"
    builder = builders.prepare("m2kr", config="EVQA_data", data_dir=tmp_path / "out", manual_dir=manual,
                               image_root=image_root)
    sources = builder.as_data_source()
    for split in ("train", "valid", "test"):
        table = pq.read_table(src / f"{split}-00000-of-00001.parquet").to_pylist()
        got = _by_id(sources[split])
        assert set(got) == {r["question_id"] for r in table}
        for row in table:
            assert _text(got[row["question_id"]]["document"]) == row["pos_item_contents"][0]
            assert got[row["question_id"]]["image"] == (image_root / row["img_path"]).read_bytes()


def test_missing_manual_files_are_listed(tmp_path, fixtures_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.txt").write_text("not the data")
    with pytest.raises(builders.ManualFilesMissingError) as err:
        builders.prepare("vid2r", data_dir=tmp_path / "a", manual_dir=empty)
    assert str(empty / "ViD2R.json") in str(err.value) and "ViD2R_all.json" in str(err.value)

    with pytest.raises(builders.ManualFilesMissingError, match="train.jsonl"):
        builders.prepare("image_question_jsonl", data_dir=tmp_path / "b", manual_dir=tmp_path / "does_not_exist")

    # M2KR with only the train split of EVQA and no images: every missing piece is named.
    partial = tmp_path / "m2kr"
    (partial / "EVQA_data").mkdir(parents=True)
    shutil.copy(fixtures_dir / "m2kr/EVQA_data/train-00000-of-00001.parquet", partial / "EVQA_data")
    with pytest.raises(builders.ManualFilesMissingError) as err:
        builders.prepare("m2kr", config="EVQA_data", data_dir=tmp_path / "c", manual_dir=partial)
    message = str(err.value)
    assert err.value.missing == [f"{partial}/EVQA_data/valid-*.parquet (or a save_to_disk split folder "
                                 f"{partial}/EVQA_data/valid/)",
                                 f"{partial}/EVQA_data/test-*.parquet (or a save_to_disk split folder "
                                 f"{partial}/EVQA_data/test/)",
                                 f"{partial}/images/EVQA/ (image root)"]
    assert "3 required file(s) missing" in message and str(partial) in message
