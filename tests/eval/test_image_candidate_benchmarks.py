"""The benchmarks whose published loaders read image candidates or image queries over facts (FashionIQ, WebQA,
FVQA, WIT's VL-ICT), each on its fixture in the real download layout: queries, corpus (with its images), gold ids,
the published relevance, and errors that name the file and the record."""
import json
import shutil

import pytest

from mire_jax.eval import metrics
from mire_jax.eval.benchmarks import BenchmarkFormatError, load_benchmark
from mire_jax.eval.benchmarks.fashioniq import join_captions
from mire_jax.eval.benchmarks.wit import entity_image_path, inverse_cloze


def _items(bench):
    return {item[0]: item for item in bench.corpus.items()}


def test_fashioniq_release_layout(fixtures_dir):
    bench = load_benchmark("FashionIQ", fixtures_dir / "fashioniq")
    assert (bench.name, bench.split, bench.relevance) == ("fashioniq", "val", metrics.GOLD_ID)
    assert [q.qid for q in bench.queries] == ["B000DRS001_0", "B000DRS003_1", "B000SHT001_2", "B000TOP001_3"]
    first = bench.queries[0]
    assert first.question == "Is shorter and red and has no sleeves" and first.gold_pids == ["B000DRS002"]
    assert first.image.key == "B000DRS001.png" and first.image.load().size == (32, 32)
    items = _items(bench)
    assert len(items) == len(bench.corpus) == 10 and bench.corpus.has_images
    assert all(len(item) == 3 and item[1] == "" for item in items.values())  # image-only passages
    assert items["B000SHT002"][2].key == "B000SHT002.jpg"  # a .jpg where the others are .png
    assert "B000TOP404" not in items  # in the split, no image: left out, and its query dropped
    assert any("left 1 image" in n for n in bench.notes) and any("target is not in the corpus" in n
                                                                 for n in bench.notes)
    dress = load_benchmark("fashioniq_dress", fixtures_dir / "fashioniq")
    assert dress.name == "fashioniq_dress" and len(dress.queries) == 2 and len(dress.corpus) == 4
    run = {q.qid: {q.gold_pids[0]: 2.0, "B000DRS001": 1.0} for q in bench.queries}
    assert bench.evaluate_published(run).metrics["P@1"] == 1.0


def test_fashioniq_caption_join():
    assert join_captions(["is blue, ", "has a logo."]) == "Is blue and has a logo"
    assert join_captions(["Is More RED", "Has A Logo"]) == "Is more red and Has A Logo"  # str.capitalize, as CLIP4Cir
    assert join_captions(["?", "darker"]) == "Darker"
    assert join_captions([]) == ""


def test_fashioniq_as_the_published_loader_reads_it(fixtures_dir):
    bench = load_benchmark("fashioniq", fixtures_dir / "fashioniq_vista")
    assert [q.qid for q in bench.queries] == ["B000DRS001_0", "B000SHT001_1"]
    assert bench.queries[1].question == "is blue and has a logo" and bench.queries[1].gold_pids == ["B000SHT003"]
    items = _items(bench)
    assert list(items) == ["B000DRS001", "B000DRS002", "B000SHT001", "B000SHT003"]
    assert items["B000SHT003"][2].path.endswith("fashioniq_vista/images/B000SHT003.png")  # basename under images/


def test_fashioniq_errors_name_the_file_and_record(fixtures_dir, tmp_path):
    with pytest.raises(BenchmarkFormatError, match=r"cap\.dress\.test\.json: record 0: missing field 'target'"):
        load_benchmark("fashioniq_dress", fixtures_dir / "fashioniq", split="test")
    root = tmp_path / "fiq"
    shutil.copytree(fixtures_dir / "fashioniq", root)
    (root / "captions" / "cap.shirt.val.json").write_text(json.dumps([{"target": "B000SHT003",
                                                                        "candidate": "B000SHT001"}]))
    with pytest.raises(BenchmarkFormatError, match=r"cap\.shirt\.val\.json: record 0: missing field 'captions'"):
        load_benchmark("fashioniq", root)
    shutil.rmtree(root / "images")
    with pytest.raises(FileNotFoundError, match="no image folder"):
        load_benchmark("fashioniq", root)
    with pytest.raises(ValueError, match="unknown category"):
        load_benchmark("fashioniq", fixtures_dir / "fashioniq", category="shoes")


def test_webqa_release_layout(fixtures_dir):
    bench = load_benchmark("webqa", fixtures_dir / "webqa")
    assert (bench.name, bench.split) == ("webqa", "val")
    opera, seine = bench.queries
    assert opera.question == "What color is the roof of the Sydney Opera House?"  # quotes removed, as published
    assert opera.image is None and opera.answers == ["The roof is white."] and opera.gold_pids == ["30000000"]
    assert seine.gold_pids == ["d5bbd8ca0dba11ecb1e81171463288e9_1", "d5bbd8ca0dba11ecb1e81171463288e9_2"]
    items = _items(bench)
    assert len(items) == 9  # every source of train and val, the repeated harbour-bridge image once
    assert items["30000000"][1] == "The Sydney Opera House at dusk." and len(items["30000000"]) == 3
    assert items["d5bbc6d80dba11ecb1e81171463288e9_0"] == ("d5bbc6d80dba11ecb1e81171463288e9_0",
                                                           "Opera is a form of theatre.")
    assert items["30000003"][2].load().size == (32, 32)  # a train source, its image read from imgs.tsv
    split_only = load_benchmark("webqa", fixtures_dir / "webqa", pool="split")
    assert len(split_only.corpus) == 7 and "30000003" not in _items(split_only)
    run = {opera.qid: {"30000001": 3.0, "30000000": 2.0}, seine.qid: {seine.gold_pids[1]: 1.0}}
    published = bench.evaluate_published(run).metrics
    assert published["R@1"] == 0.5 and published["MRR@5"] == 0.75
    assert bench.evaluate_textbook(run).metrics["R@5"] == 0.75  # recall over all positive sources


def test_webqa_errors_name_the_file_and_record(fixtures_dir, tmp_path):
    root = tmp_path / "webqa"
    shutil.copytree(fixtures_dir / "webqa", root)
    data = json.loads((root / "WebQA_train_val.json").read_text())
    guid = next(iter(data))
    data[guid]["img_posFacts"][0].pop("caption")
    (root / "WebQA_train_val.json").write_text(json.dumps(data))
    with pytest.raises(BenchmarkFormatError, match=rf"WebQA_train_val.json: record '{guid}': img_posFacts\[0\]: "
                                                    "missing field 'caption'"):
        load_benchmark("webqa", root)
    (root / "imgs.lineidx").unlink()
    with pytest.raises(FileNotFoundError, match="imgs.lineidx not found"):
        load_benchmark("webqa", root)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        load_benchmark("webqa", fixtures_dir / "webqa", split="test")


def test_fvqa_release_layout(fixtures_dir):
    bench = load_benchmark("fvqa", fixtures_dir / "fvqa")
    assert (bench.split, [q.qid for q in bench.queries]) == ("all", ["270", "999", "1003"])
    q = bench.queries[2]
    assert q.gold_pids == ["conceptnet/e/1002", "dbpedia/e/3001"] and q.answers == ["cat"]
    assert q.image.key == "COCO_val2014_000000000139.jpg" and q.image.load().size == (32, 32)
    items = _items(bench)
    assert items["conceptnet/e/1001"] == ("conceptnet/e/1001", "You are likely to find a trumpet in a jazz club")
    assert not bench.corpus.has_images
    assert [q.qid for q in load_benchmark("fvqa", fixtures_dir / "fvqa", split="test0").queries] == ["999"]
    assert [q.qid for q in load_benchmark("fvqa", fixtures_dir / "fvqa", split="train0").queries] == ["270", "1003"]
    run = {"270": {"conceptnet/e/1001": 1.0}, "999": {"conceptnet/e/1001": 1.0},
           "1003": {"webchild/e/2001": 2.0, "dbpedia/e/3001": 1.0}}
    assert bench.evaluate_published(run).metrics["R@5"] == pytest.approx(2 / 3)


def test_fvqa_errors_name_the_file_and_record(fixtures_dir, tmp_path):
    root = tmp_path / "fvqa"
    shutil.copytree(fixtures_dir / "fvqa", root)
    path = root / "new_dataset_release" / "all_qs_dict_release.json"
    data = json.loads(path.read_text())
    data["999"]["fact"] = "webchild/e/2001"
    path.write_text(json.dumps(data))
    with pytest.raises(BenchmarkFormatError, match=r"all_qs_dict_release.json: question '999': field 'fact' should "
                                                    "be list, found str"):
        load_benchmark("fvqa", root)
    with pytest.raises(FileNotFoundError, match="test_list_3.txt"):
        load_benchmark("fvqa", fixtures_dir / "fvqa", split="test3")


def test_wit_vl_ict_from_the_release_shards(fixtures_dir, tmp_path):
    bench = load_benchmark("vl_ict", fixtures_dir / "wit")
    assert (bench.name, bench.split) == ("wit", "val")
    questions = [q.question for q in bench.queries]
    assert questions == ["The _ is a wrought-iron lattice tower in Paris.",
                         "_ is the smallest planet in the Solar System.", "_ clock tower is its usual name."]
    assert [q.image.key for q in bench.queries] == ["Q243/Q243.jpg", "Q308/Q308.jpg", "Q412/Q41225.jpg"]
    items = _items(bench)
    assert items["0"][1] == "It was designed by Gustave Eiffel's company. It opened in 1889."
    assert [q.gold_pids for q in bench.queries] == [["0"], ["1"], ["2"]]
    assert any("dropped 1 pair" in n for n in bench.notes)  # the Great Wall's entity image is not shipped
    # the published conversion's own output file is read the same way
    converted = tmp_path / "wit"
    converted.mkdir()
    (converted / "vl_ict_val.json").write_text(json.dumps([
        {"question": "_ is a planet.", "document": " It is small. ", "image_id": "Q308"},
        {"question": "_ is far away.", "document": "Very far.", "image_id": "Q9999999"}]))
    from_file = load_benchmark("wit", converted, image_root=fixtures_dir / "wit" / "wikipedia_images_full")
    assert [(q.qid, q.question) for q in from_file.queries] == [("0", "_ is a planet.")]
    assert _items(from_file)["0"][1] == "It is small."


def test_wit_inverse_cloze_rules():
    assert entity_image_path("Q42") == "Q42/Q42.jpg" and entity_image_path("Q41225") == "Q412/Q41225.jpg"
    assert inverse_cloze("Paris (city)", "Paris is big. Paris is old. It is in France.", "") == \
        ("_ is big.", "Paris is old. It is in France.")
    # the caption stands in for an absent title; a cloze sentence with nothing after it gives no pair
    assert inverse_cloze("X", "None here. Then more.", "None") == ("_ here.", "Then more.")
    assert inverse_cloze("X", "No mention. None at all.", "None") is None
    assert inverse_cloze("Nowhere", "Nothing here. Nor there.", "Elsewhere") is None
    assert inverse_cloze("Alone", "Alone in one sentence.", "") is None
