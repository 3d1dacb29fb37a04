"""The fine-tuning builders (okvqa_gs, remuq, aokvqa) on the fixtures: build, read back, compare with values
computed here from the fixture files; error cases; the input pipeline reads what they write."""
import base64
import io
import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from mire_jax.config import ImageProcessing
from mire_jax.data import builders
from mire_jax.data.pipeline import PipelineConfig, make_pipeline

GS_PASSAGES = "RAVQA_v2_data/okvqa/pre-extracted_features/passages"


def _text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else v


def _by_id(source):
    return {_text(r["id"]): r for r in (source[i] for i in range(len(source)))}


def _texts(values):
    return [_text(v) for v in values]


def _bare_question(rec):
    return rec["question"].replace(rec["caption"], "").strip() if "caption" in rec else rec["question"]


def _webqa_images(webqa_dir):
    """id -> decoded bytes, from the tsv alone (no lineidx)."""
    out = {}
    for line in (webqa_dir / "imgs.tsv").read_text().splitlines():
        image_id, b64 = line.split("\t")
        out[image_id] = base64.b64decode(b64)
    return out


# --- okvqa_gs --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gs_negs_manual(tmp_path_factory, fixtures_dir):
    """A manual dir that IS the passages folder, with the w_negs train file beside the published ones."""
    manual = tmp_path_factory.mktemp("gs_manual") / "passages"
    shutil.copytree(fixtures_dir / "okvqa_gs" / GS_PASSAGES, manual)
    shutil.copy(fixtures_dir / "okvqa_gs_negs" / "retriever_train_w_negs.json", manual)
    return manual


def _prepare_gs_negs(data_dir, manual, fixtures_dir, config=None):
    return builders.prepare("okvqa_gs", data_dir=data_dir, manual_dir=manual, config=config,
                            image_root=fixtures_dir / "okvqa_gs" / "images")


def test_okvqa_gs_published_files(tmp_path, fixtures_dir):
    manual = fixtures_dir / "okvqa_gs"
    sources = builders.prepare("okvqa_gs", data_dir=tmp_path, manual_dir=manual).as_data_source()
    assert {k: len(v) for k, v in sources.items()} == {"train": 2, "validation": 1}
    for split, name in (("train", "retriever_train.json"), ("validation", "retriever_testdev.json")):
        got = _by_id(sources[split])
        expected = json.loads((manual / GS_PASSAGES / name).read_text())
        assert set(got) == {str(r["question_id"]) for r in expected}
        for rec in expected:
            row = got[str(rec["question_id"])]
            question = _text(row["question"])
            assert question == rec["question"][: -len(rec["caption"])].strip() and rec["caption"] not in question
            (ctx,) = rec["ctxs"]
            assert _text(row["document"]) == ctx["text"] and _text(row["document_id"]) == ctx["id"]
            assert _texts(row["answers"]) == list(rec["answers"]) and list(row["negs"]) == []
            coco_split = rec["img_id"].split("_")[1]  # e.g. train2014
            image_id = f"coco/{coco_split}/{rec['img_id']}.jpg"
            assert _text(row["image_id"]) == image_id
            assert row["image"] == (manual / "images" / image_id).read_bytes()
            assert _text(row["instruction"]) == ""


def test_okvqa_gs_w_negs_random_positive(tmp_path, fixtures_dir, gs_negs_manual, caplog):
    with caplog.at_level(logging.INFO, logger="mire_jax.data.builders"):
        builder = _prepare_gs_negs(tmp_path / "a", gs_negs_manual, fixtures_dir)
    assert "train: dropped 1 of 4 records with empty ctxs" in caplog.text
    source = builder.as_data_source()["train"]
    records = json.loads((gs_negs_manual / "retriever_train_w_negs.json").read_text())
    kept = [(i, r) for i, r in enumerate(records) if r["ctxs"]]
    got = _by_id(source)
    assert len(source) == 3 and set(got) == {str(r["question_id"]) for _, r in kept}
    for index, rec in kept:
        row = got[str(rec["question_id"])]
        assert _text(row["question"]) == _bare_question(rec)
        assert _texts(row["negs"]) == rec["negs"]
        assert _texts(row["answers"]) == list(rec["answers"])
        chosen = {c["id"]: c["text"] for c in rec["ctxs"]}
        assert _text(row["document_id"]) in chosen and _text(row["document"]) == chosen[_text(row["document_id"])]
        # The documented draw: numpy's generator on SeedSequence([seed, index in the file]).
        pick = np.random.default_rng(np.random.SeedSequence([0, index])).integers(len(rec["ctxs"]))
        assert _text(row["document_id"]) == rec["ctxs"][pick]["id"]
    positives = {k: _text(r["document_id"]) for k, r in got.items()}

    rebuilt = _by_id(_prepare_gs_negs(tmp_path / "b", gs_negs_manual, fixtures_dir).as_data_source()["train"])
    assert {k: _text(r["document_id"]) for k, r in rebuilt.items()} == positives

    other = builders.OkvqaGsConfig.make(seed=1)
    reseeded = _by_id(_prepare_gs_negs(tmp_path / "c", gs_negs_manual, fixtures_dir, config=other)
                      .as_data_source()["train"])
    assert set(reseeded) == set(positives)
    assert any(_text(r["document_id"]) != positives[k] for k, r in reseeded.items())


def test_okvqa_gs_missing_files_are_listed(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(builders.ManualFilesMissingError) as err:
        builders.prepare("okvqa_gs", data_dir=tmp_path / "out", manual_dir=empty)
    assert err.value.missing == [f"{empty}/retriever_train_w_negs.json (or retriever_train.json)",
                                 f"{empty}/retriever_testdev.json", f"{empty}/images"]


def test_okvqa_gs_bad_record_names_file_and_index(tmp_path, fixtures_dir):
    manual = tmp_path / "passages"
    shutil.copytree(fixtures_dir / "okvqa_gs" / GS_PASSAGES, manual)
    records = json.loads((manual / "retriever_train.json").read_text())
    del records[1]["question"]
    (manual / "retriever_train.json").write_text(json.dumps(records))
    with pytest.raises(builders.RecordError, match=r"retriever_train\.json record 1: missing required field "
                                                   r"'question'"):
        builders.prepare("okvqa_gs", data_dir=tmp_path / "out", manual_dir=manual,
                         image_root=fixtures_dir / "okvqa_gs" / "images")


# --- remuq -----------------------------------------------------------------------------------------------------

def test_remuq(tmp_path, fixtures_dir):
    manual = fixtures_dir / "remuq"
    sources = builders.prepare("remuq", data_dir=tmp_path, manual_dir=manual).as_data_source()
    assert {k: len(v) for k, v in sources.items()} == {"train": 2, "test": 3}
    images = _webqa_images(manual / "webqa")
    for split in ("train", "test"):
        got = _by_id(sources[split])
        for rec in json.loads((manual / f"{split}.json").read_text()):
            row = got[str(rec["question_id"])]
            assert _text(row["question"]) == rec["question"]
            assert _text(row["document"]) == rec["ctxs"][0]["text"]
            assert _text(row["document_id"]) == rec["ctxs"][0]["id"]
            assert _texts(row["answers"]) == list(rec["answers"]) and list(row["negs"]) == []
            assert _text(row["image_id"]) == f"webqa/{rec['img_id']}.jpg"
            assert row["image"] == images[str(rec["img_id"])]
            assert Image.open(io.BytesIO(row["image"])).convert("RGB").size == (32, 32)
    # Each image is its own: no two records of different img_id share bytes.
    assert len({bytes(r["image"]) for r in sources["test"]}) == 3


def _remuq_layout(tmp_path, fixtures_dir, train_records):
    """MIRe's layout: data/remuq/train.json beside data/webqa/."""
    data = tmp_path / "data"
    (data / "remuq").mkdir(parents=True)
    shutil.copytree(fixtures_dir / "remuq" / "webqa", data / "webqa")
    (data / "remuq" / "train.json").write_text(json.dumps(train_records))
    return data


def test_remuq_caption_empty_ctxs_and_webqa_beside(tmp_path, fixtures_dir):
    records = json.loads((fixtures_dir / "remuq" / "train.json").read_text())
    records[0]["caption"] = "a bridge over the bay"
    records[0]["question"] = records[0]["question"] + " " + records[0]["caption"]
    records.append(dict(records[1], question_id=2, ctxs=[]))
    records[1]["ctxs"].append({"id": "9999", "text": "Another passage that is not the first."})
    data = _remuq_layout(tmp_path, fixtures_dir, records)
    got = _by_id(builders.prepare("remuq", data_dir=tmp_path / "out", manual_dir=data / "remuq")
                 .as_data_source()["train"])
    assert set(got) == {"0", "1"}
    assert _text(got["0"]["question"]) == "When did this bridge open to traffic?"
    assert _text(got["1"]["document_id"]) == records[1]["ctxs"][0]["id"]  # the first ctx, not a random one

    # An explicit webqa_dir, with the manual dir elsewhere.
    manual = tmp_path / "elsewhere"
    manual.mkdir()
    shutil.copy(data / "remuq" / "train.json", manual)
    got = _by_id(builders.prepare("remuq", data_dir=tmp_path / "out2", manual_dir=manual,
                                  webqa_dir=data / "webqa").as_data_source()["train"])
    assert got["1"]["image"] == _webqa_images(data / "webqa")[str(records[1]["img_id"])]


def test_remuq_lineidx_pointing_at_another_image_is_refused(tmp_path, fixtures_dir):
    data = _remuq_layout(tmp_path, fixtures_dir, json.loads((fixtures_dir / "remuq" / "train.json").read_text()))
    offsets = (data / "webqa" / "imgs.lineidx").read_text().split()
    offsets[0], offsets[1] = offsets[1], offsets[0]
    (data / "webqa" / "imgs.lineidx").write_text("\n".join(offsets) + "\n")
    with pytest.raises(builders.RecordError, match=r"train\.json record 0: img_id 30000000: .*imgs\.tsv line 0 .* "
                                                   r"holds image 30000001, not 30000000"):
        builders.prepare("remuq", data_dir=tmp_path / "out", manual_dir=data / "remuq")


def test_remuq_missing_files_and_bad_record(tmp_path, fixtures_dir):
    manual = tmp_path / "remuq"
    manual.mkdir()
    with pytest.raises(builders.ManualFilesMissingError) as err:
        builders.prepare("remuq", data_dir=tmp_path / "out", manual_dir=manual)
    assert err.value.missing == [f"{manual}/train.json",
                                 f"{manual}/webqa/imgs.tsv or {tmp_path}/webqa/imgs.tsv",
                                 f"{manual}/webqa/imgs.lineidx or {tmp_path}/webqa/imgs.lineidx"]

    records = json.loads((fixtures_dir / "remuq" / "train.json").read_text())
    records[1]["ctxs"] = "6100"
    data = _remuq_layout(tmp_path / "bad", fixtures_dir, records)
    with pytest.raises(builders.RecordError, match=r"train\.json record 1: field 'ctxs' must be a list"):
        builders.prepare("remuq", data_dir=tmp_path / "out2", manual_dir=data / "remuq")


# --- aokvqa ----------------------------------------------------------------------------------------------------

def test_aokvqa(tmp_path, fixtures_dir):
    manual = fixtures_dir / "aokvqa"
    sources = builders.prepare("aokvqa", data_dir=tmp_path, manual_dir=manual).as_data_source()
    assert {k: len(v) for k, v in sources.items()} == {"train": 1, "validation": 3}
    for split, name, folder in (("train", "train", "train2017"), ("validation", "val", "val2017")):
        got = _by_id(sources[split])
        expected = json.loads((manual / f"aokvqa_v1p0_{name}.json").read_text())
        assert set(got) == {r["question_id"] for r in expected}
        for rec in expected:
            row = got[rec["question_id"]]
            assert _text(row["question"]) == rec["question"]
            assert _text(row["document"]) == " ".join(rec["rationales"])
            assert _text(row["document_id"]) == rec["question_id"]
            assert _texts(row["answers"]) == rec["direct_answers"]
            image_id = "coco/%s/%s.jpg" % (folder, str(rec["image_id"]).rjust(12, "0"))
            assert _text(row["image_id"]) == image_id
            assert row["image"] == (manual / "images" / image_id).read_bytes()


def test_aokvqa_missing_files_and_bad_record(tmp_path, fixtures_dir):
    manual = tmp_path / "aokvqa"
    manual.mkdir()
    shutil.copy(fixtures_dir / "aokvqa" / "aokvqa_v1p0_train.json", manual)
    with pytest.raises(builders.ManualFilesMissingError) as err:
        builders.prepare("aokvqa", data_dir=tmp_path / "out", manual_dir=manual)
    assert err.value.missing == [f"{manual}/aokvqa_v1p0_val.json", f"{manual}/images"]

    records = json.loads((fixtures_dir / "aokvqa" / "aokvqa_v1p0_val.json").read_text())
    del records[2]["rationales"]
    (manual / "aokvqa_v1p0_val.json").write_text(json.dumps(records))
    with pytest.raises(builders.RecordError, match=r"aokvqa_v1p0_val\.json record 2: field 'rationales'"):
        builders.prepare("aokvqa", data_dir=tmp_path / "out", manual_dir=manual,
                         image_root=fixtures_dir / "aokvqa" / "images")


# --- the input pipeline reads them -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["okvqa_gs", "remuq", "aokvqa"])
def test_pipeline_reads_train_split(tmp_path, fixtures_dir, tokenizer, name):
    source = builders.prepare(name, data_dir=tmp_path, manual_dir=fixtures_dir / name).as_data_source()["train"]
    config = PipelineConfig(batch_size=len(source), image=ImageProcessing(size=32), query_maxlen=16, doc_maxlen=32, shuffle=False,
                            num_epochs=1, read_threads=1, batch_prefetch=0, with_record_ids=True)
    batches = list(make_pipeline(source, tokenizer, config, process_index=0, process_count=1))
    assert len(batches) == 1
    (batch,) = batches
    assert sorted(batch["id"].tolist()) == sorted(_by_id(source))
    assert batch["pixels"].shape == (len(source), 32, 32, 3) and batch["q_ids"].shape == (len(source), 16)
    assert batch["d_mask"].sum(axis=1).min() > 2  # every passage has tokens besides [CLS] [D]
