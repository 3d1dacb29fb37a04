"""Import/export of the published PyTorch layout: exact round trips, strict loading, clear errors."""
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch_oracle import Oracle, randomise_, tiny_hf_configs

import mire_jax
from mire_jax import convert
from mire_jax.retrieval.model_folder import load_model


@pytest.fixture(scope="module")
def published():
    bert_cfg, vis_cfg, head = tiny_hf_configs()
    oracle = Oracle(bert_cfg, vis_cfg, head).eval()
    randomise_(oracle, seed=2)
    sd = {k: v.numpy().copy() for k, v in oracle.state_dict().items()}
    return oracle, sd, bert_cfg.to_dict(), vis_cfg.to_dict(), head


def _assert_same_state_dict(got, want):
    assert list(got) == list(want) or set(got) == set(want), sorted(set(got) ^ set(want))
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _with_transformers4_names(sd):
    """The spelling of transformers < 5: CLIP keys under `vision_model.`, plus position_ids buffers."""
    out = {k.replace("vision_tower.vision_tower.", "vision_tower.vision_tower.vision_model."): v for k, v in sd.items()}
    out["model.bert.embeddings.position_ids"] = np.arange(512, dtype=np.int64)[None]
    out["vision_tower.vision_tower.vision_model.embeddings.position_ids"] = np.arange(17, dtype=np.int64)[None]
    return out


@pytest.mark.parametrize("spelling", ["transformers5", "transformers4"])
def test_round_trip_is_exact(published, spelling):
    _, sd, bert_cfg, vis_cfg, head = published
    sd = sd if spelling == "transformers5" else _with_transformers4_names(sd)
    config, params = convert.from_torch(sd, bert_cfg, vis_cfg, head)
    back = convert.to_torch(config, params)
    _assert_same_state_dict(back, sd)
    assert "model.bert.pooler.dense.weight" in back  # unused by MIRe, carried unchanged


def test_export_loads_strictly_and_gives_the_same_embeddings(published, tmp_path):
    oracle, sd, bert_cfg, vis_cfg, head = published
    config, params = convert.from_torch(sd, bert_cfg, vis_cfg, head)
    params = {**params, "pooling": {**params["pooling"]}}  # a "trained" change must travel through export
    params["pooling"]["o_proj_1"] = {"kernel": params["pooling"]["o_proj_1"]["kernel"] * 1.5,
                                     "bias": params["pooling"]["o_proj_1"]["bias"]}
    for suffix in (".safetensors", ".pth"):
        path = tmp_path / f"export{suffix}"
        convert.save_state_dict(convert.to_torch(config, params), path)
        fresh = Oracle(*tiny_hf_configs()[:2], head).eval()
        if suffix == ".pth":
            fresh.load_state_dict(torch.load(path, weights_only=True)["model"], strict=True)
        else:
            fresh.load_state_dict({k: torch.from_numpy(v) for k, v in convert.load_state_dict(path).items()},
                                  strict=True)
        rng = np.random.default_rng(0)
        ids = rng.integers(5, 128, (2, 7)).astype(np.int32)
        mask = np.ones_like(ids)
        pixels = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
        with torch.no_grad():
            want = fresh.encode_query(torch.from_numpy(ids).long(), torch.from_numpy(mask).long(),
                                      torch.from_numpy(pixels)).numpy()
        got = np.asarray(mire_jax.encode_query(config, params, ids, mask, pixels))
        assert np.abs(got - want).max() <= 1e-5


def test_missing_key_is_named_with_its_shape(published):
    _, sd, bert_cfg, vis_cfg, head = published
    broken = {k: v for k, v in sd.items() if k != "query_fusion.k_state.weight"}
    with pytest.raises(convert.CheckpointError,
                       match=r": 1 missing key \[query_fusion\.k_state\.weight \(expected shape \(48, 96\)\)\]$"):
        convert.from_torch(broken, bert_cfg, vis_cfg, head)


def test_wrong_shape_is_named_with_both_shapes(published):
    _, sd, bert_cfg, vis_cfg, head = published
    broken = dict(sd, **{"model.linear.weight": np.zeros((8, 64), np.float32)})
    with pytest.raises(convert.CheckpointError,
                       match=r"1 wrong shape \[model\.linear\.weight: checkpoint shape \(8, 64\), config expects "
                             r"\(16, 64\)\]"):
        convert.from_torch(broken, bert_cfg, vis_cfg, head)


def _one_line_error(*args) -> str:
    with pytest.raises(convert.CheckpointError) as error:
        convert.from_torch(*args)
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_config_checkpoint_mismatch(published):
    """One line: the count of each kind of problem and its first three keys."""
    _, sd, bert_cfg, vis_cfg, head = published
    message = _one_line_error(sd, dict(bert_cfg, num_hidden_layers=3), vis_cfg, head)
    assert re.search(r"\(CLIP vision tower\): 16 missing keys \[model\.bert\.encoder\.layer\.2\.attention\.self"
                     r"\.query\.weight \(expected shape \(64, 64\)\), [^,]+ \(expected shape \(64,\)\), .* "
                     r"\+13 more\]$", message), message
    message = _one_line_error(sd, bert_cfg, dict(vis_cfg, num_hidden_layers=2), head)
    assert re.search(r": 16 unexpected keys \[vision_tower\.vision_tower\.encoder\.layers\.2\.[^ ]+, "
                     r"vision_tower\.vision_tower\.encoder\.layers\.2\.[^ ]+, vision_tower\.vision_tower\.encoder\."
                     r"layers\.2\.[^ ]+, \+13 more\]$", message), message
    with pytest.raises(convert.CheckpointError, match=r"query_fusion\.split_mlp\.0\.weight: checkpoint shape \(32, 48\), config expects \(48, 48\)"):
        convert.from_torch(sd, bert_cfg, vis_cfg, dict(head, num_tokens=6))


def test_command_line_import_and_export(published, tmp_path):
    import json
    _, sd, bert_cfg, vis_cfg, head = published
    torch.save({"model": {k: torch.from_numpy(v) for k, v in sd.items()}}, tmp_path / "mire.pth")
    (tmp_path / "bert.json").write_text(json.dumps(bert_cfg))
    (tmp_path / "vision.json").write_text(json.dumps(vis_cfg))
    run = lambda *a: subprocess.run([sys.executable, "-m", "mire_jax.convert", *a], check=True, capture_output=True,
                                    text=True)
    assert "export" in run("--help").stdout
    run("import", str(tmp_path / "mire.pth"), "--bert-config", str(tmp_path / "bert.json"), "--vision-config",
        str(tmp_path / "vision.json"), "--head-dim", "16", "--head-tokens", "4", "--head-heads", "3",
        "--out", str(tmp_path / "model"))
    config, _ = load_model(tmp_path / "model")
    assert config.head.dim == 16 and config.vision.num_hidden_layers == 3
    run("export", str(tmp_path / "model"), "--out", str(tmp_path / "out.safetensors"))
    _assert_same_state_dict(convert.load_state_dict(tmp_path / "out.safetensors"), sd)
    run("export", str(tmp_path / "model"), "--out", str(tmp_path / "out4.safetensors"), "--layout", "transformers4")
    assert any(".vision_model." in k for k in convert.load_state_dict(tmp_path / "out4.safetensors"))
