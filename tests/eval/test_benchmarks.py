"""Benchmark loaders on the fixtures (expected contents from tests/fixtures/README.md) and malformed copies."""
import gzip
import json
import os
import pathlib
import re
import shutil
import stat

import pyarrow.parquet as pq
import pytest

from mire_jax.eval import metrics
from mire_jax.eval.benchmarks import BENCHMARK_NAMES, BenchmarkFormatError, ImageFile, load_benchmark

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
GS_PASSAGES = pathlib.Path("RAVQA_v2_data", "okvqa", "pre-extracted_features", "passages")


def writable_copy(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of a fixture folder that the test may modify (the fixtures themselves are read-only)."""
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target, copy_function=shutil.copyfile)
    for folder, _, files in os.walk(target):
        os.chmod(folder, stat.S_IRWXU)
        for f in files:
            os.chmod(os.path.join(folder, f), stat.S_IRUSR | stat.S_IWUSR)
    return target


def full_corpus_run(bench):
    """Every passage retrieved for every query (so the published qrels list all relevant passages)."""
    pids = [pid for pid, _ in bench.corpus]
    return {q.qid: {pid: float(len(pids) - i) for i, pid in enumerate(pids)} for q in bench.queries}


def relevant_sets(bench):
    return {qid: set(rel) for qid, rel in bench.published_qrels(full_corpus_run(bench)).items()}


# -------------------------------------------------------------------------------- OK-VQA Google Search

def test_okvqa_gs_test_split():
    bench = load_benchmark("okvqa_gs", FIXTURES / "okvqa_gs")
    assert (bench.name, bench.split, bench.relevance) == ("okvqa_gs", "test", metrics.WHOLE_WORD_OR_SUBSTRING)
    # 1390525 has empty ctxs: dropped, as MIRe does.
    assert [q.qid for q in bench.queries] == ["2971475", "3310575"]
    assert [q.question for q in bench.queries] == ["What sport can you use this for?",
                                                   "What color are these usually painted?"]
    assert bench.queries[0].answers == ["surfing", "surf"]
    assert bench.queries[0].gold_pids == ["0"]
    assert any("empty ctxs" in note for note in bench.notes)
    passages = list(bench.corpus)
    assert len(bench.corpus) == 10 and [pid for pid, _ in passages] == [str(i) for i in range(10)]
    assert passages[2][1].startswith('The "Margherita" pizza is topped with tomato, mozzarella and basil;')
    images = [q.image.load() for q in bench.queries]
    assert all(im.mode == "RGB" and im.size == (32, 32) for im in images)
    assert images[0].tobytes() != images[1].tobytes()


def test_okvqa_gs_pseudo_relevance_is_whole_word():
    bench = load_benchmark("okvqa_gs", FIXTURES / "okvqa_gs")
    assert relevant_sets(bench) == {"2971475": {"0"}, "3310575": {"1", "4", "6"}}
    # A substring test would also take kid 8 ("surfers"): the rule matters.
    texts = dict(bench.corpus)
    relevant = lambda rule: metrics.answer_qrels({"q": {"8": 1.0}}, {"q": ["surf"]}, texts, rule)["q"]
    assert relevant(metrics.SUBSTRING) and not relevant(metrics.WHOLE_WORD)


def test_okvqa_gs_other_splits_and_overrides(tmp_path):
    assert [q.qid for q in load_benchmark("okvqa_gs", FIXTURES / "okvqa_gs", split="testdev").queries] == ["4440305"]
    train = load_benchmark("okvqa_gs", FIXTURES / "okvqa_gs", split="train")
    assert [q.image.key for q in train.queries] == ["coco/train2014/COCO_train2014_000000516391.jpg",
                                                    "coco/train2014/COCO_train2014_000000155383.jpg"]
    assert train.queries[1].image.load().size == (32, 32)
    moved = tmp_path / "elsewhere.json"
    shutil.copyfile(FIXTURES / "okvqa_gs" / GS_PASSAGES / "retriever_testdev.json", moved)
    bench = load_benchmark("OKVQA-GS", FIXTURES / "okvqa_gs", queries_file=moved)
    assert [q.qid for q in bench.queries] == ["4440305"]


def test_okvqa_gs_evaluate_published_end_to_end():
    bench = load_benchmark("okvqa_gs", FIXTURES / "okvqa_gs")
    run = {"2971475": {"8": 3.0, "0": 2.0, "5": 1.0}, "3310575": {"3": 3.0, "2": 2.0, "9": 1.0}}
    result = bench.evaluate_published(run, ks=(1, 5))
    assert result.as_dict() == {"protocol": "published", "relevance": "whole_word_or_substring", "num_queries": 2,
                                "P@1": 0.0, "MRR@5": 0.25, "P@5": 0.1, "R@1": 0.0, "R@5": 0.5}
    textbook = bench.evaluate_textbook(run, ks=(1, 5))  # gold = the ctxs ids
    assert textbook.protocol == "textbook" and textbook.metrics["R@5"] == 0.5
    with pytest.raises(ValueError, match="missing from the run"):
        bench.evaluate_published({"2971475": {"0": 1.0}})


# -------------------------------------------------------------------------------- OK-VQA Wiki-11M

def test_okvqa_wk11m_test_split():
    bench = load_benchmark("okvqa_wk11m", FIXTURES / "okvqa_wiki")
    assert bench.relevance == metrics.WHOLE_WORD
    assert [q.qid for q in bench.queries] == ["2971475", "3310575", "1390525"]
    # Answers from the val annotation: lowercased, empty dropped, each once.
    assert bench.queries[0].answers == ["surfing", "surf"]
    assert bench.queries[1].answers == ["red", "yellow"]
    assert bench.queries[0].image.key == "coco/val2014/COCO_val2014_000000297147.jpg"
    assert bench.queries[2].image.load().size == (32, 32)
    assert len(bench.corpus) == 10
    assert [pid for pid, _ in bench.corpus][:3] == ["8791@0", "8791@1", "40122@0"]
    assert relevant_sets(bench) == {"2971475": {"8791@0"}, "3310575": {"40122@0", "27001@5"},
                                    "1390525": {"1203@2"}}


def test_okvqa_wk11m_train_split_uses_train_images():
    bench = load_benchmark("okvqa_wk11m", FIXTURES / "okvqa_wiki", split="train")
    assert bench.queries[0].image.key == "coco/train2014/COCO_train2014_000000516391.jpg"
    assert bench.queries[0].answers == ["wetsuit", "wetsuits"]  # no train annotation file: the record's own


def test_okvqa_wk11m_gzipped_blocks_and_repeated_ids(tmp_path):
    root = writable_copy("okvqa_wiki", tmp_path)
    blocks = (root / "all_blocks.txt").read_bytes()
    (root / "all_blocks.txt").unlink()
    with gzip.open(root / "all_blocks.txt.gz", "wb") as f:
        f.write(blocks)
    bench = load_benchmark("okvqa_wk11m", root)
    assert len(bench.corpus) == 10
    assert bench.corpus.texts_for(["7765@4"])["7765@4"].startswith("St. Louis")
    # A repeated id: the line map says which line MIRe reads.
    lines = blocks.decode().splitlines()
    lines.append(json.dumps({"id": "8791@0", "text": "A later duplicate block."}))
    (root / "all_blocks.txt").write_text("\n".join(lines) + "\n")
    bench = load_benchmark("okvqa_wk11m", root)
    assert bench.corpus.texts_for(["8791@0"])["8791@0"].startswith("Surfing is")
    line_map = json.loads((root / "passage_id_to_line_id.json").read_text())
    line_map["8791@0"] = 11
    (root / "passage_id_to_line_id.json").write_text(json.dumps(line_map))
    assert bench.corpus.texts_for(["8791@0"]) == {"8791@0": "A later duplicate block."}
    with pytest.raises(KeyError, match="nope"):
        bench.corpus.texts_for(["nope"])


def test_okvqa_wk11m_invalid_answer_pattern_raises(tmp_path):
    root = writable_copy("okvqa_wiki", tmp_path)
    annotations = json.loads((root / "mscoco_val2014_annotations.json").read_text())
    annotations["annotations"][0]["answers"][0]["answer"] = "surf (board"
    (root / "mscoco_val2014_annotations.json").write_text(json.dumps(annotations))
    bench = load_benchmark("okvqa_wk11m", root)
    with pytest.raises(re.error, match="2971475"):
        bench.published_qrels(full_corpus_run(bench))


# -------------------------------------------------------------------------------- ReMuQ

def test_remuq_test_split_and_webqa_images():
    bench = load_benchmark("remuq", FIXTURES / "remuq")
    assert bench.relevance == metrics.GOLD_ID
    assert {q.qid: q.gold_pids for q in bench.queries} == {"0": ["5012"], "1": ["7741"], "2": ["5020"]}
    assert [q.image.key for q in bench.queries] == ["30000001", "30000003", "30000004"]
    pixels = [q.image.load().tobytes() for q in bench.queries]
    assert len(set(pixels)) == 3
    assert [pid for pid, _ in bench.corpus] == ["5012", "5013", "5020", "6100", "7741", "7742", "8803", "9150"]
    assert relevant_sets(bench) == {"0": {"5012"}, "1": {"7741"}, "2": {"5020"}}
    train = load_benchmark("remuq", FIXTURES / "remuq", split="train")
    assert train.queries[1].image.key == "30000002" and train.queries[1].image.load().size == (32, 32)


def test_remuq_corpus_collapses_duplicate_kids(tmp_path):
    root = writable_copy("remuq", tmp_path)
    with open(root / "open_corpus_195837.csv", "a") as f:
        f.write('5012,"A second text for kid 5012."\n')
    bench = load_benchmark("remuq", root)
    assert len(bench.corpus) == 8
    assert [pid for pid, _ in bench.corpus][0] == "5012"
    assert bench.corpus.texts_for(["5012"]) == {"5012": "A second text for kid 5012."}
    assert any("duplicate kid" in note for note in bench.notes)


# -------------------------------------------------------------------------------- M2KR

def test_m2kr_evqa():
    bench = load_benchmark("m2kr_evqa", FIXTURES / "m2kr")
    assert bench.relevance == metrics.SUBSTRING
    assert [q.qid for q in bench.queries] == ["EVQA_test_0", "EVQA_test_1", "EVQA_test_2"]
    assert bench.queries[0].answers == ["20 cm", "up to 20 cm"] and bench.queries[0].gold_pids == ["evqa_p0"]
    assert bench.queries[1].image.key == "google-landmark/train/3/a/7/3a7c9e1f2b4d6a80.jpg"
    assert all(q.image.load().size == (32, 32) for q in bench.queries)
    assert len(bench.corpus) == 6
    assert relevant_sets(bench) == {"EVQA_test_0": {"evqa_p0", "evqa_p5"}, "EVQA_test_1": {"evqa_p1"},
                                    "EVQA_test_2": {"evqa_p2"}}
    with_instruction = load_benchmark("evqa", FIXTURES / "m2kr", use_instruction=True)
    assert with_instruction.queries[0].question == ("Obtain documents that correspond to the inquiry alongside "
                                                    "the provided image: How tall can this plant grow?")


def test_m2kr_infoseek_uses_image_basenames():
    bench = load_benchmark("m2kr_infoseek", FIXTURES / "m2kr")
    assert [q.image.key for q in bench.queries] == ["oven_05000001.jpg", "oven_05000002.jpg", "oven_05000003.jpg"]
    assert bench.queries[1].image.load().size == (32, 32)
    assert relevant_sets(bench) == {"infoseek_val_00000000": {"infoseek_p0"},
                                    "infoseek_val_00000001": {"infoseek_p0"},
                                    "infoseek_val_00000002": {"infoseek_p1"}}
    with pytest.raises(FileNotFoundError, match="valid"):
        load_benchmark("m2kr_infoseek", FIXTURES / "m2kr", split="valid")


def test_m2kr_okvqa_substring_relevance():
    bench = load_benchmark("m2kr_okvqa", FIXTURES / "m2kr")
    assert relevant_sets(bench)["OKVQA_3310575"] == {"okvqa_p1", "okvqa_p3"}


def test_m2kr_save_to_disk_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    for table in ("EVQA_data", "EVQA_passages"):
        splits = {p.name.split("-")[0]: str(p) for p in (FIXTURES / "m2kr" / table).glob("*.parquet")}
        dd = datasets.DatasetDict({s: datasets.Dataset.from_parquet(f) for s, f in splits.items()})
        dd.save_to_disk(str(tmp_path / table))
    shutil.copytree(FIXTURES / "m2kr" / "images", tmp_path / "images")
    from_disk = load_benchmark("m2kr_evqa", tmp_path)
    from_parquet = load_benchmark("m2kr_evqa", FIXTURES / "m2kr")
    assert [(q.qid, q.question, q.answers, q.gold_pids, q.image.key) for q in from_disk.queries] == \
           [(q.qid, q.question, q.answers, q.gold_pids, q.image.key) for q in from_parquet.queries]
    assert list(from_disk.corpus) == list(from_parquet.corpus)


# -------------------------------------------------------------------------------- A-OKVQA, ViD2R val

def test_aokvqa_val():
    bench = load_benchmark("aokvqa", FIXTURES / "aokvqa")
    assert bench.split == "val" and bench.relevance == metrics.GOLD_ID
    qids = ["22jbM6gDxdaMaunuzgrsBB", "2ZbhKLa3xDZbpAxpFnAPvR", "2vtBLhuSzsDpLW3WfiHxEe"]
    assert [q.qid for q in bench.queries] == qids
    assert [pid for pid, _ in bench.corpus] == qids
    assert dict(bench.corpus)[qids[0]] == ("He is standing on a court about to hit a ball. The man is playing tennis "
                                           "so he holds a racket. Tennis players swing rackets at the ball.")
    assert bench.queries[0].image.key == "000000461751.jpg" and bench.queries[0].image.load().size == (32, 32)
    assert relevant_sets(bench) == {q: {q} for q in qids}
    train = load_benchmark("aokvqa", FIXTURES / "aokvqa", split="train")
    assert train.queries[0].image.load().size == (32, 32)


def test_vid2r_val_rules(tmp_path):
    bench = load_benchmark("vid2r_val", FIXTURES / "vid2r")
    assert [q.qid for q in bench.queries] == ["0", "1", "2", "3", "4"]
    assert bench.queries[2].image.key == "gqa/images/2354786.jpg" and bench.queries[2].image.load().size == (32, 32)
    assert relevant_sets(bench) == {str(i): {str(i)} for i in range(5)}
    records = json.loads((FIXTURES / "vid2r" / "ViD2R.json").read_text())
    records[1]["question"] = "Too short a question?"  # 21 chars: skipped, but index 1 stays used
    records[3]["document"] = "  padded document  "
    path = tmp_path / "held_out.json"
    path.write_text(json.dumps(records))
    bench = load_benchmark("vid2r", FIXTURES / "vid2r", anno_file=path, max_queries=3)
    assert [q.qid for q in bench.queries] == ["0", "2", "3"]
    assert dict(bench.corpus)["3"] == "padded document"


def test_registry_names_and_errors():
    assert set(BENCHMARK_NAMES) >= {"okvqa_gs", "okvqa_wk11m", "remuq", "m2kr_evqa", "m2kr_infoseek", "aokvqa",
                                    "vid2r_val"}
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        load_benchmark("nope", FIXTURES)
    with pytest.raises(ValueError, match="unknown split"):
        load_benchmark("remuq", FIXTURES / "remuq", split="valid")


def test_image_file_falls_back_from_jpeg_to_jpg(tmp_path):
    jpeg = FIXTURES / "infoseek" / "images" / "oven_05000001.JPEG"
    assert not jpeg.exists()
    assert ImageFile(str(jpeg), "oven_05000001.JPEG").load().size == (32, 32)
    with pytest.raises(FileNotFoundError, match="missing.JPEG"):
        ImageFile(str(tmp_path / "missing.JPEG"), "missing.JPEG").read_bytes()


# -------------------------------------------------------------------------------- malformed files

def _edit_text(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data, indent=2))


def _null_parquet_cell(path, column, row):
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[row] = None
    index = table.schema.get_field_index(column)
    import pyarrow as pa
    pq.write_table(table.set_column(index, column, pa.array(values, type=table.schema.field(column).type)), path)


def _drop_parquet_column(path, column):
    pq.write_table(pq.read_table(path).drop_columns([column]), path)


def _consume(bench):
    list(bench.corpus)
    for q in bench.queries:
        q.image.read_bytes()


MALFORMED = [
    # (fixture, file, edit, benchmark, expected message)
    ("okvqa_gs", GS_PASSAGES / "retriever_test.json",
     lambda p: _edit_json(p, lambda d: d[1].pop("question")),
     "okvqa_gs", r"retriever_test\.json: record 1: missing field 'question'"),
    ("okvqa_gs", GS_PASSAGES / "retriever_test.json",
     lambda p: _edit_text(p, '"question_id": 3310575,', '"question_id": 3310575'),
     "okvqa_gs", r"retriever_test\.json: line \d+ column \d+: invalid JSON"),
    ("okvqa_gs", GS_PASSAGES / "okvqa_full_clean_corpus.csv",
     lambda p: _edit_text(p, "\n4,", "\n4,extra field,"),
     "okvqa_gs", r"okvqa_full_clean_corpus\.csv: row 5 \(line 6\): 3 fields, the header has 2"),
    ("okvqa_wiki", "test2014_pairs_cap_combine_sum.txt",
     lambda p: _edit_text(p, '{"question_id": 3310575,', '{"question_id": 3310575'),
     "okvqa_wk11m", r"test2014_pairs_cap_combine_sum\.txt: line 2: invalid JSON"),
    ("okvqa_wiki", "test2014_pairs_cap_combine_sum.txt",
     lambda p: _edit_text(p, '"image_id": 139052, ', ""),
     "okvqa_wk11m", r"test2014_pairs_cap_combine_sum\.txt: line 3: missing field 'image_id'"),
    ("okvqa_wiki", "all_blocks.txt",
     lambda p: _edit_text(p, '{"id": "40122@0", "text":', '{"id": "40122@0", "txt":'),
     "okvqa_wk11m", r"all_blocks\.txt: line 3: expected an object with 'id' and 'text'"),
    ("okvqa_wiki", "mscoco_val2014_annotations.json",
     lambda p: _edit_json(p, lambda d: d["annotations"][1]["answers"][4].pop("answer")),
     "okvqa_wk11m", r"mscoco_val2014_annotations\.json: annotations\[1\]\.answers\[4\]: missing field 'answer'"),
    ("remuq", "test.json",
     lambda p: _edit_json(p, lambda d: d[2]["ctxs"][0].pop("id")),
     "remuq", r"test\.json: record 2: ctxs\[0\]: missing field 'id'"),
    ("remuq", "test.json",
     lambda p: _edit_json(p, lambda d: d[1].update(img_id="img-3")),
     "remuq", r"test\.json: record 1: img_id 'img-3' is not a WebQA image number"),
    ("remuq", "open_corpus_195837.csv",
     lambda p: _edit_text(p, "\n7741,", "\n,"),
     "remuq", r"open_corpus_195837\.csv: row 5 \(line 6\): empty kid"),
    ("remuq", "webqa/imgs.lineidx",
     lambda p: _edit_text(p, "\n978\n", "\n97x\n"),
     "remuq", r"imgs\.lineidx: line 2: expected a byte offset"),
    ("remuq", "webqa/imgs.lineidx",
     lambda p: _edit_text(p, "\n978\n", "\n0\n"),
     "remuq", r"imgs\.tsv: byte offset 0 \(lineidx line 2\): holds image '30000000', expected '30000001'"),
    ("m2kr", "EVQA_data/test-00000-of-00001.parquet",
     lambda p: _null_parquet_cell(p, "question", 1),
     "m2kr_evqa", r"EVQA_data/test-00000-of-00001\.parquet: row 1: null value in \['question'\]"),
    ("m2kr", "Infoseek_data/test-00000-of-00001.parquet",
     lambda p: _drop_parquet_column(p, "answers"),
     "m2kr_infoseek", r"test-00000-of-00001\.parquet: missing column\(s\) \['answers'\]"),
    ("m2kr", "EVQA_passages/test_passages-00000-of-00001.parquet",
     lambda p: _null_parquet_cell(p, "passage_content", 4),
     "m2kr_evqa", r"test_passages-00000-of-00001\.parquet: row 4: null value in \['passage_content'\]"),
    ("aokvqa", "aokvqa_v1p0_val.json",
     lambda p: _edit_json(p, lambda d: d[2].update(image_id="95786")),
     "aokvqa", r"aokvqa_v1p0_val\.json: record 2: field 'image_id' should be int, found str"),
    ("vid2r", "ViD2R.json",
     lambda p: _edit_json(p, lambda d: d[3].pop("document")),
     "vid2r_val", r"ViD2R\.json: record 3: missing field 'document'"),
]


@pytest.mark.parametrize("fixture,relpath,edit,name,message", MALFORMED,
                         ids=[f"{m[3]}-{pathlib.Path(m[1]).name}-{i}" for i, m in enumerate(MALFORMED)])
def test_malformed_rows_name_the_file_and_row(tmp_path, fixture, relpath, edit, name, message):
    root = writable_copy(fixture, tmp_path)
    edit(root / relpath)
    with pytest.raises(BenchmarkFormatError, match=message):
        _consume(load_benchmark(name, root))


def test_aokvqa_test_split_without_rationales_is_explained(tmp_path):
    root = writable_copy("aokvqa", tmp_path)
    records = json.loads((root / "aokvqa_v1p0_val.json").read_text())
    for r in records:
        r.pop("rationales")
    (root / "aokvqa_v1p0_test.json").write_text(json.dumps(records))
    with pytest.raises(BenchmarkFormatError, match=r"aokvqa_v1p0_test\.json: record 0: .*test split has none"):
        load_benchmark("aokvqa", root, split="test")
