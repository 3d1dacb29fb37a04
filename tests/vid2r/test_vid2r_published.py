"""ViD2R `--published`: the published filter's carried-over `ref`/`phrase`, its crashes, and the spaCy noun path.

The expected records below are derived by hand, turn by turn, from the rules of `runs/data_filtering.py`
(yeongjoonJu/MIRe) over `tests/fixtures/vid2r_published/dialogues.json` (its README walks through each turn),
with the fake tagger's NOUN/PROPN words standing in for en_core_web_sm's.
"""
import json
import pathlib
import re
import sys
import types

import pytest

from mire_jax.vid2r import __main__ as cli
from mire_jax.vid2r import nouns
from mire_jax.vid2r.dialogues import read_triples
from mire_jax.vid2r.filtering import FilterConfig, PublishedScriptCrash, ResponseFilter, filter_triples

FIXTURE = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "vid2r_published" / "dialogues.json"
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
IMAGES = {"harbor": "coco/train2017/000000000601.jpg", "market": "coco/train2017/000000000602.jpg",
          "sign": "coco/train2017/000000000603.jpg"}

# The fake tagger's parts of speech; every other token is tagged "X" (so dropped by the NOUN/PROPN test).
FAKE_POS = {**dict.fromkeys("pier boats harbor weather fisherman dock flag stern boat animal roof cabin fruit stall "
                            "bunch bananas market sign number print question word phrase gulls mast bird capital "
                            "poles street lamps road pole".split(), "NOUN"),
            "Camden": "PROPN", "Market": "PROPN", "Norway": "PROPN", "flies": "VERB", "What": "PRON"}

FLAG_QUESTION = "Which flag flies on the stern of the boat?"
BUNCH_QUESTION = "How much does one bunch of ripe bananas cost at the market stall?"
POLES_QUESTION = "How many poles and street lamps line the road?"


def _record(record_id, turn, question, document):
    return {"image": IMAGES[record_id], "id": f"{record_id}_{turn}", "question": question, "document": document}


HARBOR_4 = _record("harbor", 4, "What is the fisherman doing on the dock?",
                   "The fisherman is mending a large green net on the dock.")
HARBOR_6 = _record("harbor", 6, FLAG_QUESTION + SHORT_ANSWER, "Red and white (flag, stern, boat)")

EXPECTED_PUBLISHED = [
    HARBOR_4,
    HARBOR_6,
    # No line break in the question: the nouns of harbor 6's first line (phrase), not of this question.
    _record("harbor", 8, "What animal sits on the roof of the cabin?", "A grey seagull (flag, stern, boat)"),
    # phrase carries over across records (the VG_100K and text-only records in between never reach the loop).
    _record("market", 0, "What fruit is sold at the nearest stall of Camden Market?",
            "Bright yellow bananas (flag, stern, boat)"),
    # "3" has no final ".", so the digit test reads ref = harbor 4's response: not digits, kept.
    _record("market", 2, BUNCH_QUESTION + SHORT_ANSWER, "3 (bunch, bananas, market, stall)"),
    # phrase was assigned by sign 6, which was then dropped as a counting question.
    _record("sign", 8, "What is attached to the pole?", "A faded poster (poles, street, lamps, road)"),
]

EXPECTED_CLEAN = [
    _record("harbor", 2, "Describe the weather over the harbor.", "The sky is overcast and grey above the calm water"),
    HARBOR_4,
    HARBOR_6,
    _record("harbor", 8, "What animal sits on the roof of the cabin?", "A grey seagull (animal, roof, cabin)"),
    _record("market", 0, "What fruit is sold at the nearest stall of Camden Market?",
            "Bright yellow bananas (fruit, stall, Camden, Market)"),
    _record("sign", 4, "Where is the sign mounted?", "The sign is mounted on a tall metal pole beside the road"),
]

# What each mode feeds the tagger: the first line of the question, or (published) the carried-over one.
TAGGED_PUBLISHED = [FLAG_QUESTION, FLAG_QUESTION, FLAG_QUESTION, BUNCH_QUESTION, POLES_QUESTION, POLES_QUESTION]
TAGGED_CLEAN = [FLAG_QUESTION, "What animal sits on the roof of the cabin?",
                "What fruit is sold at the nearest stall of Camden Market?", POLES_QUESTION,
                "What is attached to the pole?"]


class _FakeToken:
    def __init__(self, text):
        self.text, self.pos_ = text, FAKE_POS.get(text, "X")


class FakeSpacy:
    """Stands in for `spacy` with an en_core_web_sm whose tagger is `FAKE_POS`; records every call."""

    def __init__(self):
        self.loads, self.tagged = [], []
        self.module = types.ModuleType("spacy")
        self.module.load = self.load

    def load(self, name, **kwargs):
        self.loads.append((name, kwargs))
        return self.nlp

    def nlp(self, text):
        self.tagged.append(text)
        return [_FakeToken(t) for t in re.findall(r"\w+|[^\w\s]", text)]


@pytest.fixture(autouse=True)
def fresh_spacy_cache():
    nouns._spacy_pipeline.cache_clear()
    yield
    nouns._spacy_pipeline.cache_clear()


@pytest.fixture
def fake_spacy(monkeypatch):
    fake = FakeSpacy()
    monkeypatch.setitem(sys.modules, "spacy", fake.module)
    return fake


@pytest.fixture
def no_spacy(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)  # `import spacy` raises ImportError, installed or not


def _run_filter(tmp_path, *flags, dialogues=FIXTURE):
    work = tmp_path / "work"
    code = cli.main([str(dialogues), "--work-dir", str(work), "--until", "filter", "--no-progress", *flags])
    if code != 0:
        return code, None, None
    records = json.loads((work / "vid2r_wo_conversion.json").read_text(encoding="utf-8"))
    counts = json.loads((work / "filter_counts.json").read_text(encoding="utf-8"))
    return code, records, counts


def _write_dialogue(tmp_path, turns, record_id="first"):
    path = tmp_path / "one.json"
    conversations = []
    for question, response in turns:
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": response}]
    path.write_text(json.dumps([{"id": record_id, "image": "coco/a.jpg", "conversations": conversations}]))
    return path


# --- the carried-over values -------------------------------------------------------------------------------

def test_published_cli_equals_the_hand_derived_records(tmp_path, fake_spacy, capsys):
    code, records, counts = _run_filter(tmp_path, "--published")
    assert code == 0
    assert records == EXPECTED_PUBLISHED
    assert counts["published"] is True and counts["noun_extractor"] == "spacy:en_core_web_sm"
    assert counts["published_stale_ref_reads"] == 7 and counts["published_stale_phrase_reads"] == 3
    assert counts["dropped_digits"] == 4 and counts["dropped_bad_question"] == 1 and counts["kept"] == 6
    assert "notes" not in counts and "heuristic" not in capsys.readouterr().out


def test_default_differs_from_published_in_exactly_the_carried_over_records(tmp_path, fake_spacy):
    code, records, counts = _run_filter(tmp_path)
    assert code == 0 and records == EXPECTED_CLEAN
    assert counts["published"] is False and "published_stale_ref_reads" not in counts
    published = {r["id"]: r["document"] for r in EXPECTED_PUBLISHED}
    clean = {r["id"]: r["document"] for r in records}
    assert sorted(published.keys() - clean.keys()) == ["market_2", "sign_8"]
    assert sorted(clean.keys() - published.keys()) == ["harbor_2", "sign_4"]
    assert sorted(i for i in clean.keys() & published.keys() if clean[i] != published[i]) == ["harbor_8", "market_0"]


def test_carry_over_is_state_of_one_filter_and_starts_empty():
    extractor = nouns.heuristic_nouns
    triples = list(read_triples([FIXTURE], progress=False))
    config = FilterConfig(published=True)
    first, _ = filter_triples(triples, config, extractor, progress=False)
    second, _ = filter_triples(triples, config, extractor, progress=False)
    assert first == second  # nothing leaks from one run into the next
    fresh = ResponseFilter(config, extractor)
    assert (fresh.carry_over.ref, fresh.carry_over.phrase) == (None, None)
    for triple in triples:
        fresh(triple)
    assert fresh.carry_over.ref == "two poles" and fresh.carry_over.phrase == POLES_QUESTION


# --- where the published script would crash ------------------------------------------------------------------

@pytest.mark.parametrize("turns, variable", [
    ([("What is on the sofa?", "A dog is sleeping on the sofa near the window")], "UnboundLocalError: `ref`"),
    ([("What is on the sofa?", "A sleepy dog.")], "UnboundLocalError: `phrase`"),
    ([("What is on the sofa?", "A large dog sleeps on a sofa."), ("And now?", "   ")], "IndexError"),
])
def test_published_stops_naming_the_record_where_the_script_would_crash(tmp_path, no_spacy, capsys, turns,
                                                                         variable):
    path = _write_dialogue(tmp_path, turns)
    turn = 2 * (len(turns) - 1)
    with pytest.raises(PublishedScriptCrash, match=f"record 'first', turn {turn} .*{re.escape(variable)}"):
        filter_triples(read_triples([path], progress=False), FilterConfig(published=True), nouns.heuristic_nouns,
                       progress=False)
    code, _, _ = _run_filter(tmp_path, "--published", dialogues=path)
    err = capsys.readouterr().err
    assert code == 1 and f"record 'first', turn {turn}" in err and variable in err
    assert _run_filter(tmp_path, dialogues=path)[0] == 0  # the clean rules have no such crash


def test_published_refuses_rules_the_script_does_not_have(tmp_path, capsys):
    with pytest.raises(ValueError, match="min_chars=10"):
        FilterConfig(published=True, min_chars=10)
    assert _run_filter(tmp_path, "--published", "--boilerplate", "openers")[0] == 1
    assert "boilerplate='openers'" in capsys.readouterr().err
    assert _run_filter(tmp_path, "--published", "--nouns", "heuristic")[0] == 1
    assert "--nouns heuristic cannot" in capsys.readouterr().err


# --- spaCy or the heuristic ----------------------------------------------------------------------------------

def test_spacy_path_tags_the_first_line_and_keeps_noun_and_propn_in_order(tmp_path, fake_spacy):
    _run_filter(tmp_path / "published", "--published")
    assert fake_spacy.tagged == TAGGED_PUBLISHED
    assert fake_spacy.loads == [("en_core_web_sm", {})]  # the published call: the whole pipeline
    fake_spacy.tagged.clear()
    nouns._spacy_pipeline.cache_clear()
    _run_filter(tmp_path / "clean")
    assert fake_spacy.tagged == TAGGED_CLEAN
    assert fake_spacy.loads[-1] == ("en_core_web_sm", {"disable": ["parser", "ner", "lemmatizer"]})
    extract = nouns.spacy_nouns_extractor()
    assert extract("What fruit flies over Camden Market?") == ["fruit", "Camden", "Market"]


def test_heuristic_notice_is_printed_once_and_recorded_when_spacy_is_absent(tmp_path, no_spacy, capsys):
    code, records, counts = _run_filter(tmp_path)
    out = capsys.readouterr().out
    assert code == 0 and counts["noun_extractor"] == "heuristic"
    notices = [line for line in out.splitlines() if "came from a heuristic" in line]
    assert len(notices) == 1
    assert "en_core_web_sm is not importable" in notices[0]
    assert "pip install -r requirements-vid2r.txt" in notices[0]
    assert counts["notes"] == [notices[0]]
    assert {r["id"] for r in records} == {r["id"] for r in EXPECTED_CLEAN}


def test_published_without_spacy_warns_loudly_but_runs(tmp_path, no_spacy, capsys):
    code, records, counts = _run_filter(tmp_path, "--published")
    out = capsys.readouterr().out
    assert code == 0 and records
    warnings = [line for line in out.splitlines() if line.startswith("WARNING: --published without spaCy")]
    assert len(warnings) == 1 and "CANNOT equal the released ViD2R" in warnings[0]
    assert counts["notes"] == warnings and counts["noun_extractor"] == "heuristic"
    assert _run_filter(tmp_path / "strict", "--published", "--nouns", "spacy")[0] == 1
    assert "requirements-vid2r.txt" in capsys.readouterr().err
