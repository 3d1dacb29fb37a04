"""What the demo's analyses take over from the demo: text features copied only where every record's text is the same,
and pre-training folders started afresh when what they were made from changed."""
import json
import types

from mire_jax.demo.analyses.shared import fresh_run, run_inputs, same_texts, seed_text_cache


def _vid2r(path, records):
    path.write_text(json.dumps([{"id": i, "question": q, "document": d} for i, q, d in records]))
    return str(path)


def test_text_features_are_copied_only_for_the_same_texts(tmp_path):
    a = _vid2r(tmp_path / "a.json", [("1", "q1", "d1"), ("2", "q2", "d2")])
    same_questions = _vid2r(tmp_path / "b.json", [("2", "q2 ", "other"), ("1", "q1", "d1")])
    other_question = _vid2r(tmp_path / "c.json", [("1", "q1", "d1"), ("2", "q-two", "d2")])
    repeated = _vid2r(tmp_path / "d.json", [("1", "q1", "d1"), ("1", "q1", "d1"), ("2", "q2", "d2")])
    assert same_texts(a, same_questions, "question") and not same_texts(a, same_questions, "document")
    assert not same_texts(a, other_question, "question") and not same_texts(a, repeated, "question")
    source = tmp_path / "cache"
    (source / "queries").mkdir(parents=True)
    (source / "queries" / "shard.npy").write_bytes(b"features")
    assert seed_text_cache(str(source), str(tmp_path / "t1"), "queries", a, same_questions)
    assert (tmp_path / "t1" / "queries" / "shard.npy").read_bytes() == b"features"
    assert not seed_text_cache(str(source), str(tmp_path / "t1"), "queries", a, same_questions)  # already there
    assert not seed_text_cache(str(source), str(tmp_path / "t2"), "queries", a, other_question)
    assert not seed_text_cache(str(source), str(tmp_path / "t3"), "passages", a, a)  # the source has no passages
    assert not (tmp_path / "t2").exists() and not (tmp_path / "t3").exists()


def test_a_pretraining_folder_starts_afresh_when_its_inputs_change(tmp_path):
    start = tmp_path / "init"
    start.mkdir()
    (start / "params.safetensors").write_bytes(b"p")
    run = types.SimpleNamespace(models={"text_only": str(start)}, seed=0,
                                plan=types.SimpleNamespace(pretrain_steps=4, batch_size=8, query_maxlen=32,
                                                           doc_maxlen=64))
    data = _vid2r(tmp_path / "ViD2R.json", [("1", "q", "d")])
    folder = fresh_run(str(tmp_path / "run"), run_inputs(data, run, length_bucket=16))
    (tmp_path / "run" / "checkpoint").write_text("step 4")
    assert fresh_run(folder, run_inputs(data, run, length_bucket=16)) == folder
    assert (tmp_path / "run" / "checkpoint").exists()  # the same inputs: kept
    _vid2r(tmp_path / "ViD2R.json", [("1", "q", "another passage")])
    fresh_run(folder, run_inputs(data, run, length_bucket=16))
    assert not (tmp_path / "run" / "checkpoint").exists()  # other data: emptied
    assert json.loads((tmp_path / "run" / "inputs.json").read_text())["length_bucket"] == 16
