"""The conversion variants of the analyses: responses alone, fewer hits, the response's position, whole hits; the
pipeline with k=0 (no search), and `compose_variants` from a finished ViD2R work folder."""
import json
import pathlib

import pytest

from mire_jax.analyses.variants import PUBLISHED, VARIANTS, compose_variants, describe
from mire_jax.vid2r import conversion, pipeline

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
LLAVA = [FIXTURES / "llava" / "llava_v1_5_mix665k.json", FIXTURES / "llava" / "lvis_instruct4v_220k.json"]
WIKI6M = FIXTURES / "wiki6m" / "Wiki6M_ver_1_0.jsonl"
HITS = ["A one. A two. A three.", "B one. B two.", "C one. C two. C three."]
# The hand-picked top-3 of each fixture response (fixtures README: ViD2R.json), as test_vid2r.py has them.
FIXTURE_HITS = {
    "000000000139_0": ["Q243", "Q20882", "Q90"],
    "000000000139_4": ["Q90", "Q243", "Q20882"],
    "2354786_0": ["Q15083", "Q7377", "Q847"],
    "000000000285_0": ["Q177", "Q1420", "Q90"],
    "000000000285_2": ["Q177", "Q243", "Q90"],
}


@pytest.mark.parametrize("config, expected", [
    (conversion.ConversionConfig(), "A one. A two R. B one. B two C one. C two"),
    (conversion.ConversionConfig(k=0), "R."),
    (conversion.ConversionConfig(k=1), "A one. A two R."),
    (conversion.ConversionConfig(k=2), "A one. A two R. B one. B two"),
    (conversion.ConversionConfig(position=0), "R. A one. A two B one. B two C one. C two"),
    (conversion.ConversionConfig(position=3), "A one. A two B one. B two C one. C two R."),
    (conversion.ConversionConfig(position=0, cut="none"), "R. A one. A two. A three. B one. B two. C one. C two. "
                                                          "C three."),
])
def test_compose_variants_place_the_response_and_the_hits(config, expected):
    assert conversion.compose("R.", HITS, config) == (expected, "R.")


def test_variant_configs_are_checked_and_the_published_fingerprint_is_unchanged():
    assert conversion.ConversionConfig().to_json() == {"k": 3, "sentences": 2, "cut": "published",
                                                       "style": "published", "dedupe_periods": True,
                                                       "negatives": "response"}
    assert conversion.ConversionConfig(position=0).to_json()["position"] == 0
    with pytest.raises(ValueError, match="position applies to the 'published' style only"):
        conversion.ConversionConfig(style="title", position=0)
    with pytest.raises(ValueError, match="k=-1"):
        conversion.ConversionConfig(k=-1)
    assert describe(VARIANTS[PUBLISHED]) == "hit1 + response + hit2 + hit3 (first 2 sentences of each hit)"
    assert describe(VARIANTS["plain_concatenation"]) == "response + hit1 + hit2 + hit3 (whole hits)"
    assert describe(VARIANTS["response_only"]) == "response alone (no R2P)"


def _work_folder(tmp_path, hits):
    options = pipeline.PipelineOptions(dialogues=[str(p) for p in LLAVA], work_dir=str(tmp_path / "work"),
                                       kb=str(WIKI6M), hits_file=str(hits), progress=False, nouns="heuristic")
    return options, pipeline.run(options, log=lambda s: None)


def test_compose_variants_from_a_work_folder_and_the_pipeline_with_k0(tmp_path):
    hits = tmp_path / "hits.jsonl"
    hits.write_text("".join(json.dumps({"id": i, "pids": p}) + "\n" for i, p in FIXTURE_HITS.items()))
    options, result = _work_folder(tmp_path, hits)
    published = json.loads(pathlib.Path(result["outputs"]["compose"]).read_text())
    paths = compose_variants(options.work_dir, WIKI6M, tmp_path / "variants", progress=False)
    assert set(paths) == set(VARIANTS)
    read = {name: json.loads(pathlib.Path(p).read_text()) for name, p in paths.items()}
    assert read[PUBLISHED] == published  # the published variant is the pipeline's own output
    for record, alone in zip(published, read["response_only"]):
        assert alone["document"] == record["answer"] and alone["id"] == record["id"]
    for name in ("k1", "k2", "response_first", "response_last", "plain_concatenation"):
        assert all(r["answer"] in r["document"] for r in read[name]), name
    assert all(len(p["document"]) > len(r["document"]) for p, r in zip(read["plain_concatenation"], published))
    before = pathlib.Path(paths["k1"]).stat().st_mtime_ns
    compose_variants(options.work_dir, WIKI6M, tmp_path / "variants", progress=False)  # up to date: kept
    assert pathlib.Path(paths["k1"]).stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="rerun the search with -k 4"):
        compose_variants(options.work_dir, WIKI6M, tmp_path / "deeper",
                         {"k4": conversion.ConversionConfig(k=4)}, progress=False)
    # k=0 in the pipeline itself: no retriever, no knowledge base needed
    alone = pipeline.PipelineOptions(dialogues=[str(p) for p in LLAVA], work_dir=str(tmp_path / "alone"),
                                     progress=False, nouns="heuristic", conversion=conversion.ConversionConfig(k=0))
    out = json.loads(pathlib.Path(pipeline.run(alone, log=lambda s: None)["outputs"]["compose"]).read_text())
    assert [r["document"] for r in out] == [r["document"] for r in read["response_only"]]
