"""ViD2R construction: splitting, each filter rule, composition, determinism, errors, resumable stages, CLI."""
import json
import pathlib
import random

import pytest

from mire_jax.vid2r import __main__ as cli
from mire_jax.vid2r import conversion, dialogues, filtering, nouns, pipeline
from mire_jax.vid2r.dialogues import DialogueFormatError, Triple
from mire_jax.vid2r.filtering import FilterConfig, ResponseFilter
from mire_jax.vid2r.knowledge_base import KnowledgeBase, KnowledgeBaseError

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
LLAVA = [FIXTURES / "llava" / "llava_v1_5_mix665k.json", FIXTURES / "llava" / "lvis_instruct4v_220k.json"]
WIKI6M = FIXTURES / "wiki6m" / "Wiki6M_ver_1_0.jsonl"
# The hand-picked top-3 of each fixture response (fixtures README: ViD2R.json).
FIXTURE_HITS = {
    "000000000139_0": ["Q243", "Q20882", "Q90"],
    "000000000139_4": ["Q90", "Q243", "Q20882"],
    "2354786_0": ["Q15083", "Q7377", "Q847"],
    "000000000285_0": ["Q177", "Q1420", "Q90"],
    "000000000285_2": ["Q177", "Q243", "Q90"],
}


def _load(path):
    return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))


def _triple(response, question="What is shown here?", image="coco/train2017/000000000001.jpg", turn=0,
            record_id="1"):
    return Triple(record_id, turn, image, question, response)


def _keep(response, config=FilterConfig(), extractor=nouns.no_nouns, **kw):
    return ResponseFilter(config, extractor)(_triple(response, **kw))


LONG = "a man is riding a bicycle along a quiet street."


# --- splitting ----------------------------------------------------------------------------------------------

def test_split_walks_human_gpt_pairs_and_strips_image_tags():
    record = {"id": 7, "image": "a.jpg", "conversations": [
        {"from": "human", "value": "<image>\nFirst question?"}, {"from": "gpt", "value": "Answer one."},
        {"from": "human", "value": "Second <image>question?"}, {"from": "gpt", "value": "Answer two."},
        {"from": "gpt", "value": "out of turn"}, {"from": "human", "value": "never reached"},
        {"from": "gpt", "value": "never reached"}]}
    counts = dialogues.SplitCounts()
    triples = dialogues.split_record(record, 0, "x: record 0", counts)
    assert [(t.record_id, t.turn, t.question, t.response) for t in triples] == [
        ("7", 0, "First question?", "Answer one."), ("7", 2, "Second question?", "Answer two.")]
    assert counts.dialogues_cut_at_role_mismatch == 1 and counts.turns_after_role_mismatch == 3


def test_record_without_id_gets_its_position_across_files(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.jsonl"
    turn = [{"from": "human", "value": "q?"}, {"from": "gpt", "value": "r"}]
    a.write_text(json.dumps([{"image": "x.jpg", "conversations": turn}, {"image": "y.jpg", "conversations": turn}]))
    b.write_text(json.dumps({"image": "z.jpg", "conversations": turn}) + "\n")
    ids = [t.record_id for t in dialogues.read_triples([a, b], progress=False)]
    assert ids == ["0", "1", "2"]


@pytest.mark.parametrize("record, message", [
    ({"id": "r1", "image": "a.jpg"}, "field 'conversations' must be a list"),
    ({"id": "r1", "image": "a.jpg", "conversations": [{"from": "human"}]}, r"conversations\[0\].value"),
    ({"id": "r1", "image": ["a.jpg"], "conversations": []}, "field 'image' must be a string"),
    ("not an object", "expected a JSON object"),
])
def test_malformed_record_names_file_and_record(tmp_path, record, message):
    good = {"id": "ok", "image": "a.jpg", "conversations": []}
    path = tmp_path / "dialogues.json"
    path.write_text(json.dumps([good, record]))
    with pytest.raises(DialogueFormatError, match=message) as info:
        list(dialogues.read_triples([path], progress=False))
    assert f"{path}: record 1" in str(info.value)


def test_malformed_jsonl_line_is_named_and_skip_policy_counts(tmp_path):
    path = tmp_path / "d.jsonl"
    turn = [{"from": "human", "value": "q?"}, {"from": "gpt", "value": "r"}]
    path.write_text(json.dumps({"id": "a", "image": "a.jpg", "conversations": turn}) + "\n"
                    + json.dumps({"id": "b", "image": "b.jpg", "conversations": "oops"}) + "\n")
    with pytest.raises(DialogueFormatError, match=f"{path}: line 2"):
        list(dialogues.read_triples([path], progress=False))
    counts = dialogues.SplitCounts()
    triples = list(dialogues.read_triples([path], on_error="skip", counts=counts, progress=False))
    assert [t.record_id for t in triples] == ["a"]
    assert counts.malformed_skipped == 1 and "line 2" in counts.malformed_examples[0]
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"id": 1}\n{not json\n')
    with pytest.raises(DialogueFormatError, match=f"{bad_json}: line 2: invalid JSON"):
        list(dialogues.read_triples([bad_json], on_error="skip", progress=False))


# --- the published filter on the fixtures ---------------------------------------------------------------------

def test_filter_reproduces_the_published_output_of_the_llava_fixtures():
    triples = list(dialogues.read_triples(LLAVA, progress=False))
    records, counts = filtering.filter_triples(triples, progress=False)
    expected = _load(FIXTURES / "vid2r" / "vid2r_wo_conversion.json")
    assert records == expected  # ids, questions, documents, key order
    assert counts["kept"] == 5 and counts["skipped_text_only"] == 1 and counts["skipped_image_substring"] == 1
    assert counts["dropped_short"] == 1  # "What color is the sky?" -> a 26-character answer


# --- each rule ------------------------------------------------------------------------------------------------

def test_rule_text_only_and_visual_genome_images():
    f = ResponseFilter()
    assert f(_triple(LONG, image=None)) is None and f.counts["skipped_text_only"] == 1
    assert f(_triple(LONG, image="vg/VG_100K_2/1.jpg")) is None and f.counts["skipped_image_substring"] == 1
    loose = FilterConfig(skip_text_only=False, skip_image_substrings=())
    assert _keep(LONG, loose, image=None)["image"] is None
    assert _keep(LONG, loose, image="vg/VG_100K/1.jpg") is not None


def test_rule_unanswerable_and_digits():
    assert _keep("Unanswerable. The text is too blurry to read anything at all.") is None
    assert _keep("Answering does not require reading text in the image.") is None
    assert _keep(" 1984. ") is None and _keep("42") is None
    assert _keep("42 people are waiting at the bus stop in the rain.") is not None
    off = FilterConfig(drop_digit_responses=False, unanswerable_markers=(), min_chars=0)
    assert _keep("42.", off)["document"] == "42."
    assert _keep("unanswerable.", off)["document"] == "Un"  # the boilerplate pattern eats "answerable."


def test_rule_boilerplate_published_deletes_anywhere_without_word_boundaries():
    out = _keep("Sure! In the image, the man plays the piano. the image shows a stage.")
    # "no." of "piano." is deleted too: the published patterns have no word boundaries.
    assert out["document"] == "The man plays the pia a stage."
    openers = FilterConfig(boilerplate="openers")
    out = _keep("Yes, in the image, the man plays the piano on a stage tonight.", openers)
    assert out["document"] == "The man plays the piano on a stage tonight."
    out = _keep("Yes, the man plays the piano on a stage.", FilterConfig(boilerplate="none"))
    assert out["document"] == "Yes, the man plays the piano on a stage."
    assert _keep("Certainly!") is None  # empty once cleaned


def test_rule_noun_hint_for_short_responses():
    extractor = lambda text: [w.strip("?") for w in text.split() if w[0].isupper() and w != "What"]  # noqa: E731
    question = "What is next to the Eiffel Tower in Paris?\nAnswer briefly."
    f = ResponseFilter(FilterConfig(), extractor)
    out = f(_triple("A large green park", question=question))
    assert out["document"] == "A large green park (Eiffel, Tower, Paris)"
    assert f.counts["noun_hints_added"] == 1
    # Five words: no hint, so it stays under the 30-character floor.
    assert ResponseFilter(FilterConfig(), extractor)(_triple("a big old green park", question=question)) is None
    assert _keep("A large green park", FilterConfig(noun_hint_max_words=0), extractor, question=question) is None
    assert nouns.heuristic_nouns("What is the man holding near the Eiffel Tower?") == ["man", "Eiffel", "Tower"]


def test_rule_length_floor_is_a_parameter():
    assert _keep("x" * 29) is None and _keep("x" * 30) is not None
    assert _keep("x" * 10, FilterConfig(min_chars=10)) is not None
    # The floor is measured before the final strip, as published: the space left by "sure!" counts.
    assert _keep("Sure! " + "x" * 29) is not None


@pytest.mark.parametrize("question", ["How many dogs are there?", "What color is the car?",
                                      "Please provide a short description for this region: [0.1, 0.2]."])
def test_rule_bad_questions(question):
    assert _keep(LONG, question=question) is None
    assert _keep(LONG, FilterConfig(bad_question_substrings=()), question=question) is not None


def test_rule_case_and_question_lead():
    shouted = _keep("THE MAN IS RIDING A BICYCLE DOWN THE STREET.")
    assert shouted["document"] == "The man is riding a bicycle down the street."
    kept = _keep("the man is riding a bicycle.", FilterConfig(lowercase=False, capitalize_first=False, min_chars=10))
    assert kept["document"] == "the man is riding a bicycle."
    question = "On the table, what food is there?"
    out = _keep("on the table, there is a bowl of fresh fruit and bread.", question=question)
    # Published: the (cased) lead only matches at the start, once the response is capitalised.
    assert out["document"] == ", there is a bowl of fresh fruit and bread."
    out = _keep("on the table, there is a bowl of fresh fruit and bread.", FilterConfig(remove_question_lead=False),
                question=question)
    assert out["document"] == "On the table, there is a bowl of fresh fruit and bread."


def test_published_mode_reads_the_carried_over_variables():
    sequence = [_triple("12."), _triple("a response that never ends with a full stop")]
    plain, published = ResponseFilter(), ResponseFilter(FilterConfig(published=True))
    assert [plain(t) is None for t in sequence] == [True, False]
    assert [published(t) is None for t in sequence] == [True, True]  # the 2nd sees ref = "12"
    assert published.carry_over.ref == "12" and plain.carry_over is None
    extractor = lambda text: text.split()[-1:]  # noqa: E731
    first = _triple("an enormous sleepy tabby.", question="Which pet sleeps on the sofa?\nAnswer with a phrase.")
    second = _triple("an enormous sleepy tabby.", question="What animal is near the fence?")
    f = ResponseFilter(FilterConfig(published=True), extractor)
    assert [f(first)["document"], f(second)["document"]] == ["An enormous sleepy tabby. (sofa?)"] * 2
    f = ResponseFilter(FilterConfig(), extractor)
    assert [f(first)["document"], f(second)["document"]] == ["An enormous sleepy tabby. (sofa?)",
                                                             "An enormous sleepy tabby. (fence?)"]


def test_unique_ids_follow_the_published_rule_and_are_deterministic_for_a_seed():
    def records():
        return [{"image": "a.jpg", "id": "x_0"}, {"image": "a.jpg", "id": "x_0"}, {"image": "a.jpg", "id": "x_2"},
                {"image": "b.jpg", "id": "x_0"}]
    first, second, other = records(), records(), records()
    assert filtering.assign_unique_ids(first, random.Random(3)) == 1
    filtering.assign_unique_ids(second, random.Random(3))
    assert first == second
    assert first[0]["id"].startswith("x_0_") and first[0]["id"][-2] in "abcdefghijkl"
    assert [r["id"] for r in first[1:]] == ["x_0", "x_2", "x_0"]  # other images are not compared
    outcomes = set()
    for seed in range(20):
        other = records()
        filtering.assign_unique_ids(other, random.Random(seed))
        outcomes.add(other[0]["id"])
    assert len(outcomes) > 1
    # The published check is per image group, so a unique id is renamed while its group still has a repeat.
    group = [{"image": "a.jpg", "id": "y"}, {"image": "a.jpg", "id": "x"}, {"image": "a.jpg", "id": "x"}]
    assert filtering.assign_unique_ids(group, random.Random(0)) == 2
    assert group[0]["id"] != "y" and group[1]["id"] != "x" and group[2]["id"] == "x"


def test_filter_output_is_deterministic_for_a_seed_with_negatives(tmp_path):
    data = _load(LLAVA[0]) + _load(LLAVA[1])
    data.append(dict(data[0]))  # the same COCO dialogue again: its ids repeat within the image
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(data))
    runs = [filtering.filter_triples(dialogues.read_triples([path], progress=False), seed=5, save_negative=True,
                                     progress=False) for _ in range(2)]
    assert runs[0] == runs[1]
    records, counts = runs[0]
    assert counts["ids_renamed"] >= 2 and len({r["id"] for r in records}) == len(records)
    by_question = {r["question"]: r for r in records if r["image"].endswith("000000000139.jpg")}
    negs = by_question["Why might tourists visit this place?"]["negs"]
    assert {n["question"] for n in negs} == {"What is the tall structure in the background of this photo?"}
    assert all("negs" not in n for n in negs) and len(negs) == 2


# --- composition ----------------------------------------------------------------------------------------------

def test_cut_passage_published_and_sentence_modes():
    text = "It is 3.5 m tall. It is red. It is old."
    assert conversion.cut_passage(text) == "It is 3.5 m tall"  # a decimal point counts, no final period
    assert conversion.cut_passage("One. Two. Three.") == "One. Two"
    assert conversion.cut_passage(text, mode="sentences") == "It is 3.5 m tall. It is red."
    assert conversion.cut_passage("No period here") == "No period here"


def test_compose_order_and_styles():
    hits = ["A one. A two. A three.", "B one. B two.", "C one.", "D one. D two."]
    doc, answer = conversion.compose("The response.", hits)
    assert doc == "A one. A two The response. B one. B two C one."
    assert answer == "The response."
    doc, answer = conversion.compose("A dog (animal, fence)", hits[:2], conversion.ConversionConfig(style="title"))
    assert doc == "Title: A dog content: A one. A two B one. B two" and answer == "A dog"
    assert conversion.compose("End..", ["X. Y."])[0] == "X. Y End."  # one .replace("..", ".") pass
    assert conversion.compose("End...", ["X"])[0] == "X End.."
    assert conversion.compose("End..", ["X"], conversion.ConversionConfig(dedupe_periods=False))[0] == "X End.."
    assert conversion.compose("Alone.", [])[0] == "Alone."


def test_conversion_reproduces_the_fixture_given_its_hits():
    records = _load(FIXTURES / "vid2r" / "vid2r_wo_conversion.json")
    texts = dict(KnowledgeBase(WIKI6M))
    converted = conversion.convert_records(records, [FIXTURE_HITS[r["id"]] for r in records], texts)
    assert converted == _load(FIXTURES / "vid2r" / "ViD2R.json")
    assert records == _load(FIXTURES / "vid2r" / "vid2r_wo_conversion.json")  # input untouched


def test_converted_negatives_mode():
    records = [{"image": "a", "id": "1", "question": "q1", "document": "R one.", "negs": []},
               {"image": "a", "id": "2", "question": "q2", "document": "R two."}]
    records[0]["negs"] = [dict(records[1])]
    texts = {"p": "P one. P two. P three."}
    keep = conversion.convert_records(records, [["p"], ["p"]], texts)
    assert keep[0]["negs"][0]["document"] == "R two."
    converted = conversion.ConversionConfig(negatives="converted")
    conv = conversion.convert_records(records, [["p"], ["p"]], texts, converted)
    assert conv[0]["negs"][0]["document"] == "P one. P two R two." and conv[0]["negs"][0]["answer"] == "R two."


# --- knowledge base -------------------------------------------------------------------------------------------

def test_knowledge_base_formats_and_errors(tmp_path):
    kb = KnowledgeBase(WIKI6M)
    passages = list(kb)
    assert passages[0][0] == "Q243" and passages[0][1].startswith("The Eiffel Tower")
    assert [p for p, _ in KnowledgeBase(WIKI6M, id_field="")][:2] == ["0", "1"]
    csv_path = tmp_path / "corpus.csv"
    csv_path.write_text('kid,text\n5,"Hello, world"\n9," padded "\n')
    assert list(KnowledgeBase(csv_path)) == [("5", "Hello, world"), ("9", "padded")]
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    pq.write_table(pa.table({"passage_id": ["p0", "p1"], "passage_content": ["First.", "Second."]}),
                   tmp_path / "passages.parquet")
    assert list(KnowledgeBase(tmp_path / "passages.parquet")) == [("p0", "First."), ("p1", "Second.")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"wikidata_id": "Q1", "wikipedia_content": "x"}\n{"wikidata_id": "Q2"}\n')
    with pytest.raises(KnowledgeBaseError, match=f"{bad}: line 2: missing field 'wikipedia_content'"):
        list(KnowledgeBase(bad))
    with pytest.raises(KeyError, match="Q999"):
        kb.texts_for(["Q243", "Q999"], progress=False)


# --- pipeline: resumable stages, CLI, the builder reads the output --------------------------------------------

class _CountingRetriever:
    """Fixed hits by response text; counts calls; can fail after some calls (an interrupted run)."""

    name = "counting"

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after
        records = _load(FIXTURES / "vid2r" / "vid2r_wo_conversion.json")
        self.by_text = {r["document"]: FIXTURE_HITS[r["id"]] for r in records}

    def search(self, texts, k):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("interrupted")
        self.calls += 1
        return [self.by_text[t][:k] for t in texts]


def test_pipeline_stages_resume_and_rerun_on_changed_options(tmp_path):
    options = pipeline.PipelineOptions(dialogues=[str(p) for p in LLAVA], work_dir=str(tmp_path / "work"),
                                       kb=str(WIKI6M), chunk_size=2, progress=False, nouns="heuristic")
    logs = []
    with pytest.raises(RuntimeError, match="interrupted"):
        pipeline.run(options, _CountingRetriever(fail_after=2), log=logs.append)
    chunks = sorted((tmp_path / "work" / "search_chunks").glob("chunk_*.jsonl"))
    assert [c.name for c in chunks] == ["chunk_000000.jsonl", "chunk_000001.jsonl"]
    resumed = _CountingRetriever()
    result = pipeline.run(options, resumed, log=logs.append)
    assert resumed.calls == 1  # only the third chunk (5 records, 2 per chunk) was searched
    assert _load(result["outputs"]["compose"]) == _load(FIXTURES / "vid2r" / "ViD2R.json")
    counts = _load(tmp_path / "work" / "filter_counts.json")
    assert counts["kept"] == 5 and counts["noun_extractor"] == "heuristic"
    again, logs = _CountingRetriever(), []
    pipeline.run(options, again, log=logs.append)
    assert again.calls == 0 and sum("up to date" in line for line in logs) == 4  # no index stage here
    stricter = pipeline.PipelineOptions(**{**options.__dict__, "filter": FilterConfig(min_chars=120)})
    fresh, logs = _CountingRetriever(), []
    result = pipeline.run(stricter, fresh, log=logs.append)
    assert fresh.calls == 1 and sum("up to date" in line for line in logs) == 1  # only "split" is reused
    assert [r["id"] for r in _load(result["outputs"]["compose"])] == ["000000000139_4", "000000000285_2"]


def test_cli_with_precomputed_hits_writes_the_fixture_and_reports_bad_records(tmp_path, capsys):
    hits = tmp_path / "hits.jsonl"
    hits.write_text("".join(json.dumps({"id": i, "pids": p}) + "\n" for i, p in FIXTURE_HITS.items()))
    out = tmp_path / "ViD2R.json"
    argv = [*map(str, LLAVA), "--kb", str(WIKI6M), "--hits", str(hits), "--work-dir", str(tmp_path / "w"),
            "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    assert _load(out) == _load(FIXTURES / "vid2r" / "ViD2R.json")
    assert "[filter] 8 turn pairs -> 5 kept" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "r0", "image": "a.jpg", "conversations": {"from": "human"}}]))
    assert cli.main([str(bad), "--work-dir", str(tmp_path / "w2"), "--until", "filter", "--no-progress"]) == 1
    assert f"{bad}: record 0" in capsys.readouterr().err
    assert cli.main([str(bad), "--work-dir", str(tmp_path / "w3"), "--until", "filter", "--on-error", "skip",
                     "--no-progress"]) == 0
    assert _load(tmp_path / "w3" / "split_counts.json")["malformed_skipped"] == 1
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["--help"])
    assert info.value.code == 0


def test_vid2r_builder_reads_the_output(tmp_path):
    builders = pytest.importorskip("mire_jax.data.builders")
    options = pipeline.PipelineOptions(dialogues=[str(p) for p in LLAVA], work_dir=str(tmp_path / "work"),
                                       out=str(tmp_path / "manual" / "ViD2R.json"), kb=str(WIKI6M),
                                       save_negative=True, progress=False, nouns="none")
    pipeline.run(options, _CountingRetriever(), log=lambda _: None)
    builder = builders.prepare("vid2r", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "manual",
                               embed_images=False)
    rows = list(builder.as_data_source(split="train"))
    assert len(rows) == 5
    by_id = {r["id"].decode() if isinstance(r["id"], bytes) else r["id"]: r for r in rows}
    row = by_id["000000000139_4"]
    assert len(row["negs"]) == 1 and len(row["answers"]) == 1


def test_hits_of_records_sharing_an_id_are_never_mixed(tmp_path, capsys):
    """The published filter numbers records per image, so records `x` on two images both become `x_0`: each must
    compose its passage from its own hits (found by the hits row's image), and a hits file that cannot tell them apart
    is refused, naming the id."""
    turn = lambda response: [{"from": "human", "value": "<image>\nWhat can you tell me about this place?"},
                             {"from": "gpt", "value": response}]
    dialogue_file = tmp_path / "dialogues.json"
    dialogue_file.write_text(json.dumps([
        {"id": "x", "image": "coco/a.jpg", "conversations": turn("This is a famous tower of iron that stands in a "
                                                                 "large city and draws many visitors each year.")},
        {"id": "x", "image": "coco/b.jpg", "conversations": turn("This is a wide river flowing through the middle "
                                                                 "of an old city with many bridges across it.")}]))
    base = [str(dialogue_file), "--kb", str(WIKI6M), "--no-progress", "--nouns", "none"]
    ambiguous = tmp_path / "ambiguous.jsonl"
    ambiguous.write_text(json.dumps({"id": "x_0", "pids": ["Q243"]}) + "\n")
    assert cli.main([*base, "--hits", str(ambiguous), "--work-dir", str(tmp_path / "w1"),
                     "--out", str(tmp_path / "a.json")]) == 1
    err = capsys.readouterr().err
    assert "record id 'x_0' is shared by 2 filtered records" in err and "coco/a.jpg" in err and "coco/b.jpg" in err
    by_image = tmp_path / "by_image.jsonl"
    by_image.write_text(json.dumps({"id": "x_0", "image": "coco/b.jpg", "pids": ["Q90"]}) + "\n"
                        + json.dumps({"id": "x_0", "image": "coco/a.jpg", "pids": ["Q243"]}) + "\n")
    out = tmp_path / "ViD2R.json"
    assert cli.main([*base, "--hits", str(by_image), "--work-dir", str(tmp_path / "w2"), "--out", str(out)]) == 0
    records = {r["image"]: r for r in _load(out)}
    assert [r["id"] for r in records.values()] == ["x_0", "x_0"]
    assert records["coco/a.jpg"]["document"].startswith("The Eiffel Tower is")
    assert records["coco/b.jpg"]["document"].startswith("Paris is the capital")
