"""SentMIRe checkpoints: the published layout (model.*, dense.*, vision_tower.*, query_fusion.*) imported and exported
exactly, a PyLate ModernColBERT folder imported as a SentMIRe text tower (weights, config, tokenizer conventions),
the model folder served by the Searcher with the oracle's embeddings, and a checkpoint of one text tower given as
the other refused in one line naming the keys."""
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from sentmire_oracle import SentMIReOracle, tiny_modernbert_config, write_tiny_pylate_tokenizer
from torch_oracle import Oracle, randomise_, tiny_hf_configs

from mire_jax import convert
from mire_jax.convert.__main__ import main as convert_main
from mire_jax.retrieval.model_folder import load_model, load_tokenizer
from mire_jax.retrieval.searcher import Searcher
from mire_jax.tokenization.pylate import FRAMING_PYLATE, FRAMING_SENTMIRE, PylateTokenizer

HEAD = ["--head-dim", "16", "--head-tokens", "4", "--head-heads", "3"]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A published-layout SentMIRe checkpoint of random weights whose vocabulary is the tiny BPE tokenizer's, with
    the folder a published run saves beside it (config.json, tokenizer files, ColBERT's artifact.metadata)."""
    folder = tmp_path_factory.mktemp("sentmire_ckpt")
    vocab = write_tiny_pylate_tokenizer(folder)
    (folder / "config_sentence_transformers.json").unlink()  # a published checkpoint folder has ColBERT's record
    (folder / "artifact.metadata").write_text(json.dumps({"query_token_id": "[Q] ", "doc_token_id": "[D] "}))
    _, vision, head = tiny_hf_configs()
    torch.manual_seed(0)
    oracle = SentMIReOracle(tiny_modernbert_config(vocab_size=vocab), vision, head).eval()
    randomise_(oracle, seed=5)
    sd = {k: v.numpy().copy() for k, v in oracle.state_dict().items()}
    (folder / "config.json").write_text(json.dumps(dict(oracle.model.config.to_dict(), num_tokens=4, num_heads=3)))
    (folder / "vision.json").write_text(json.dumps(vision.to_dict()))
    torch.save({"model": {k: torch.from_numpy(v) for k, v in sd.items()}}, folder / "sent_mire_epoch_4.pth")
    return oracle, sd, folder


def _convert(*argv):
    convert_main([str(a) for a in argv])


def _refused(capsys, *argv) -> str:
    capsys.readouterr()  # what came before (Hugging Face's progress bars)
    with pytest.raises(SystemExit) as exit_info:
        _convert(*argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_round_trip_through_the_command_line_is_exact(published, tmp_path):
    _, sd, folder = published
    _convert("import", folder / "sent_mire_epoch_4.pth", "--modernbert-config", folder, "--vision-config",
             folder / "vision.json", *HEAD, "--out", tmp_path / "model")
    config, _ = load_model(tmp_path / "model")
    assert config.text_tower == "modernbert" and config.modernbert.num_hidden_layers == 3
    tok = load_tokenizer(tmp_path / "model")  # the checkpoint folder's tokenizer, with its ColBERT markers
    assert isinstance(tok, PylateTokenizer) and tok.conventions.framing == FRAMING_SENTMIRE
    assert tok.q_marker_id == tok._wp.token_to_id("[Q] ")
    for suffix in (".safetensors", ".pth"):
        _convert("export", tmp_path / "model", "--out", tmp_path / f"back{suffix}")
        back = convert.load_state_dict(tmp_path / f"back{suffix}")
        assert sorted(back) == sorted(sd)
        if suffix == ".pth":  # the text tower and the head in the published order (safetensors sorts its keys)
            published_order = lambda keys: [k for k in keys if not k.startswith("vision_tower.")]
            assert published_order(back) == published_order(sd)
        for key in sd:
            np.testing.assert_array_equal(back[key], sd[key], err_msg=key)
    fresh = SentMIReOracle(tiny_modernbert_config(vocab_size=sd["model.embeddings.tok_embeddings.weight"].shape[0]),
                           tiny_hf_configs()[1], tiny_hf_configs()[2])
    fresh.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True)["model"], strict=True)


def test_a_sentmire_checkpoint_needs_its_modernbert_config(published, capsys, tmp_path):
    _, _, folder = published
    err = _refused(capsys, "import", folder / "sent_mire_epoch_4.pth", "--vision-config", folder / "vision.json",
                   *HEAD, "--out", tmp_path / "m")
    assert "--modernbert-config" in err


def test_cross_variant_checkpoints_are_refused_in_one_line(published, capsys, tmp_path):
    """MIRe's checkpoint given as SentMIRe's (command line) and SentMIRe's given as MIRe's (API): one line each,
    naming the keys that do not fit."""
    _, sd, folder = published
    bert, vision, head = tiny_hf_configs()
    mire = Oracle(bert, vision, head)
    save_file({k: v.numpy() for k, v in mire.state_dict().items()}, str(tmp_path / "mire.safetensors"))
    err = _refused(capsys, "import", tmp_path / "mire.safetensors", "--modernbert-config", folder, "--vision-config",
                   folder / "vision.json", *HEAD, "--out", tmp_path / "m")
    assert "MIRe (BERT text tower) checkpoint given as a SentMIRe" in err
    # every key that does not fit, grouped by module so that the line stays short
    assert "keys model.bert.*, model.linear.weight (" in err
    assert "has dense.weight, model.embeddings.*, model.final_norm.weight, model.layers.* instead" in err
    with pytest.raises(convert.CheckpointError) as refusal:
        convert.from_torch(sd, bert.to_dict(), vision.to_dict(), head)
    message = str(refusal.value)
    assert "\n" not in message and "SentMIRe (ModernBERT text tower) checkpoint given as a MIRe" in message
    assert "keys dense.weight, model.embeddings.*, model.final_norm.weight, model.layers.* (" in message


def _pylate_folder(path, oracle):
    """A PyLate model folder as sentence-transformers saves one: the ModernBERT at the root, 1_Dense beside it."""
    oracle.model.save_pretrained(path)
    (path / "1_Dense").mkdir()
    (path / "1_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 70, "out_features": 16, "bias": False, "activation_function": "torch.nn.modules.linear.Identity"}))
    save_file({"linear.weight": oracle.dense.weight.detach().numpy().copy()}, str(path / "1_Dense" / "model.safetensors"))
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]))


@pytest.fixture(scope="module")
def pylate_model(tmp_path_factory, published):
    """import-hf of a PyLate folder (the oracle's text tower) and a CLIP folder (the oracle's vision tower)."""
    oracle, _, _ = published
    root = tmp_path_factory.mktemp("pylate_import")
    write_tiny_pylate_tokenizer(root / "pylate")
    _pylate_folder(root / "pylate", oracle)
    oracle.vision_tower.vision_tower.save_pretrained(root / "clip")
    _convert("import-hf", "--text", root / "pylate", "--vision", root / "clip", *HEAD, "--framing", FRAMING_PYLATE,
             "--out", root / "model")
    return root


def test_pylate_folder_imports_as_the_text_tower(published, pylate_model):
    oracle, sd, _ = published
    config, params = load_model(pylate_model / "model")
    assert config.text_tower == "modernbert" and not config.modernbert.projection_bias
    back = convert.to_torch(config, params)
    for key in [k for k in sd if k.startswith(("model.", "dense.", "vision_tower."))]:
        np.testing.assert_array_equal(back[key], sd[key], err_msg=key)
    tok = load_tokenizer(pylate_model / "model")
    assert isinstance(tok, PylateTokenizer) and tok.conventions.framing == FRAMING_PYLATE


def test_searcher_serves_a_sentmire_folder_with_the_oracles_embeddings(published, pylate_model):
    """Queries with and without an image and passages, through the one path evaluation and the server use; the
    pooling head (initialised by import-hf) is copied into the oracle first."""
    oracle, _, _ = published
    config, params = load_model(pylate_model / "model")
    head_sd = {k: torch.from_numpy(np.array(v)) for k, v in convert.to_torch(config, params).items()
               if k.startswith("query_fusion.")}
    oracle.load_state_dict({**oracle.state_dict(), **head_sd})
    searcher = Searcher.load(pylate_model / "model", settings={"query_maxlen": 12, "doc_maxlen": 20})
    questions = ["What is the capital of France?", "Which animal is shown?"]
    pixels = np.random.default_rng(0).normal(size=(32, 32, 3)).astype(np.float32)
    embs, mask = searcher.encode_queries(questions, [pixels, None])
    ids, text_mask = searcher.tokenize_queries(questions)
    with torch.no_grad():
        with_image = oracle.encode_query(torch.from_numpy(ids[:1]).long(), torch.from_numpy(text_mask[:1]).long(),
                                         torch.from_numpy(pixels[None]))
        text_only = oracle.encode_query(torch.from_numpy(ids[1:]).long(), torch.from_numpy(text_mask[1:]).long())
    np.testing.assert_allclose(embs[0], with_image[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(embs[1, searcher.num_visual:], text_only[0].numpy(), atol=1e-5)
    assert mask[1, :searcher.num_visual].sum() == 0
    passages = ["Paris is the capital of France.", "The Eiffel Tower, built in 1889, is 330 metres tall!"]
    got = searcher.encode_passages(passages)
    d_ids, d_mask, keep = searcher.tokenizer.encode_docs(passages, max_len=20, keep_policy="padding_only")
    with torch.no_grad():
        want = oracle.encode_doc(torch.from_numpy(d_ids).long(), torch.from_numpy(d_mask).long(),
                                 torch.from_numpy(keep)).numpy()
    for i, emb in enumerate(got):
        np.testing.assert_allclose(emb.astype(np.float32), want[i][keep[i]], atol=2e-3)  # stored as float16


def test_pylate_folders_that_do_not_fit_are_refused_in_one_line(published, capsys, tmp_path):
    oracle, _, _ = published
    write_tiny_pylate_tokenizer(tmp_path / "p")
    _pylate_folder(tmp_path / "p", oracle)
    clip = tmp_path / "clip"
    oracle.vision_tower.vision_tower.save_pretrained(clip)
    err = _refused(capsys, "import-hf", "--text", tmp_path / "p", "--vision", clip, "--out", tmp_path / "m")
    assert "makes 16-d embeddings, the head is 128-d" in err
    modules = json.loads((tmp_path / "p" / "modules.json").read_text())
    (tmp_path / "p" / "modules.json").write_text(json.dumps(modules + [dict(modules[1], idx=2, path="2_Dense")]))
    err = _refused(capsys, "import-hf", "--text", tmp_path / "p", "--vision", clip, *HEAD, "--out", tmp_path / "m")
    assert "not PyLate's Transformer + one Dense layer" in err
