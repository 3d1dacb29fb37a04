"""Checkpoints with a SigLIP vision tower: the published layout both ways (exact round trip, strict loading into
the PyTorch oracle), Hugging Face SigLIP folders (vision-only and full), the vision config from Hugging Face's
dicts, and a checkpoint of one vision tower given as the other refused in one line."""
import json
import re

import numpy as np
import pytest
import torch
from torch_oracle import Oracle, randomise_, tiny_hf_configs, tiny_hf_siglip_configs
from transformers import BertModel, SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel

import mire_jax
from mire_jax import convert
from mire_jax.config import MIReConfig, VisionConfig
from mire_jax.convert.__main__ import main as convert_main
from mire_jax.retrieval.model_folder import load_model

SIGLIP_PREFIX = "vision_tower.vision_tower.vision_model."


def _state_dict(module):
    return {k: v.numpy().copy() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def published():
    bert_cfg, vis_cfg, head = tiny_hf_siglip_configs()
    oracle = Oracle(bert_cfg, vis_cfg, head).eval()
    randomise_(oracle, seed=3)
    return oracle, _state_dict(oracle), bert_cfg.to_dict(), vis_cfg.to_dict(), head


@pytest.fixture(scope="module")
def published_clip():
    bert_cfg, vis_cfg, head = tiny_hf_configs()
    return _state_dict(Oracle(bert_cfg, vis_cfg, head)), vis_cfg.to_dict()


def _assert_same_state_dict(got, want):
    assert set(got) == set(want), sorted(set(got) ^ set(want))
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_published_keys_of_the_siglip_tower(published):
    """The published tower's state_dict: its own SigLipVisionModel under `vision_tower.vision_tower`, the attention
    pooling head included; no CLS embedding, no pre-LayerNorm, no position_ids buffer (not persistent)."""
    _, sd, *_ = published
    vision = {k[len(SIGLIP_PREFIX):] for k in sd if k.startswith("vision_tower.")}
    assert all(k.startswith(SIGLIP_PREFIX) for k in sd if k.startswith("vision_tower."))
    assert {"embeddings.patch_embedding.bias", "post_layernorm.weight", "head.probe", "head.attention.in_proj_weight",
            "head.attention.in_proj_bias", "head.attention.out_proj.weight", "head.layernorm.bias",
            "head.mlp.fc2.weight"} <= vision
    assert not any("class_embedding" in k or "pre_layrnorm" in k or "position_ids" in k for k in vision)
    assert len(vision) == 3 + 2 * 16 + 2 + 11


def test_round_trip_is_exact(published):
    _, sd, bert_cfg, vis_cfg, head = published
    config, params = convert.from_torch(sd, bert_cfg, vis_cfg, head)
    assert config.vision.model_type == "siglip" and "head" in params["vision"]
    _assert_same_state_dict(convert.to_torch(config, params), sd)


def test_export_loads_strictly_and_gives_the_same_embeddings(published, tmp_path):
    oracle, sd, bert_cfg, vis_cfg, head = published
    config, params = convert.from_torch(sd, bert_cfg, vis_cfg, head)
    path = tmp_path / "export.pth"
    convert.save_state_dict(convert.to_torch(config, params), path)
    fresh = Oracle(*tiny_hf_siglip_configs()[:2], head).eval()
    fresh.load_state_dict(torch.load(path, weights_only=True)["model"], strict=True)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 128, (2, 7)).astype(np.int32)
    pixels = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want = fresh.encode_query(torch.from_numpy(ids).long(), torch.ones(2, 7).long(), torch.from_numpy(pixels))
    got = np.asarray(mire_jax.encode_query(config, params, ids, np.ones_like(ids), pixels))
    assert np.abs(got - want.numpy()).max() <= 1e-5


def _refusal(*args) -> str:
    with pytest.raises(convert.CheckpointError) as error:
        convert.from_torch(*args)
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_a_clip_checkpoint_with_a_siglip_config_is_refused_in_one_line(published, published_clip):
    _, _, bert_cfg, vis_cfg, head = published
    clip_sd, _ = published_clip
    message = _refusal(clip_sd, bert_cfg, vis_cfg, head)
    assert message.startswith("checkpoint does not match the config (the checkpoint holds a CLIP vision tower, "
                              "vision_tower.vision_tower.embeddings.class_embedding, the config a SigLIP one: give "
                              "the checkpoint's own vision config): "), message
    assert re.search(r"\b48 missing keys \[vision_tower\.vision_tower\.vision_model\.embeddings\.patch_embedding\."
                     r"weight \(expected shape \(42, 3, 6, 6\)\), [^\]]*, \+45 more\]", message), message
    assert re.search(r"\b55 unexpected keys \[vision_tower\.vision_tower\.embeddings\.class_embedding, [^\]]*, "
                     r"\+52 more\]", message), message
    assert re.search(r"\b4 wrong shapes \[query_fusion\.proj\.0\.weight: checkpoint shape \(48,\), config expects "
                     r"\(42,\), ", message), message  # the head reads the tower's width


def test_a_siglip_checkpoint_with_a_clip_config_is_refused_in_one_line(published, published_clip):
    _, sd, bert_cfg, _, head = published
    _, clip_cfg = published_clip
    message = _refusal(sd, bert_cfg, clip_cfg, head)
    assert message.startswith("checkpoint does not match the config (the checkpoint holds a SigLIP vision tower, "
                              f"{SIGLIP_PREFIX}head.probe, the config a CLIP one: "), message
    assert re.search(rf"\b19 missing keys \[{re.escape(SIGLIP_PREFIX)}embeddings\.class_embedding \(expected shape "
                     r"\(48,\)\), ", message), message
    assert re.search(rf"\b12 unexpected keys \[{re.escape(SIGLIP_PREFIX)}embeddings\.patch_embedding\.bias, ",
                     message), message


def test_a_siglip_config_with_a_different_size_names_the_keys(published):
    _, sd, bert_cfg, vis_cfg, head = published
    message = _refusal(sd, bert_cfg, dict(vis_cfg, num_hidden_layers=1), head)
    assert re.search(r"\(SigLIP vision tower\): 16 unexpected keys \[vision_tower\.vision_tower\.vision_model\.encoder"
                     r"\.layers\.1\.", message), message


def test_vision_config_from_hugging_face_dicts():
    siglip = VisionConfig.from_dict(SiglipVisionConfig(hidden_size=42, num_attention_heads=3).to_dict())
    assert siglip.model_type == "siglip" and siglip.hidden_act == "gelu_pytorch_tanh" and siglip.layer_norm_eps == 1e-6
    assert siglip.image_processing() == mire_jax.config.ImageProcessing(size=224, mean=(0.5,) * 3, std=(0.5,) * 3,
                                                                        resize="square")
    # a config.json that leaves fields out gets the published SigLipVisionConfig defaults (so400m/14 at 384 px)
    sparse = VisionConfig.from_dict({"model_type": "siglip_vision_model", "hidden_size": 1152, "patch_size": 14})
    assert sparse == VisionConfig.siglip() and sparse.num_patches == 27 * 27 and sparse.image_size == 384
    # the full model's config names the tower on the outside only in old files: make_config carries it in
    full = {"model_type": "siglip", "vision_config": {"hidden_size": 42, "num_attention_heads": 3}}
    assert convert.make_config({}, full, {}).vision.model_type == "siglip"
    # model folders written before the field load as CLIP, unchanged
    old = {k: v for k, v in MIReConfig().to_dict().items()}
    old["vision"] = {k: v for k, v in old["vision"].items() if k != "model_type"}
    assert MIReConfig.from_dict(old) == MIReConfig()
    with pytest.raises(ValueError, match=r"unsupported vision model_type 'vit'"):
        VisionConfig.from_dict({"model_type": "vit"})
    with pytest.raises(ValueError, match="vision_use_head false"):
        VisionConfig.from_dict(SiglipVisionConfig(vision_use_head=False).to_dict())


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """A plain BERT folder, a SiglipVisionModel folder and a full SiglipModel folder, as save_pretrained writes
    them, with the tiny configs."""
    root = tmp_path_factory.mktemp("hf")
    bert_cfg, vis_cfg, _ = tiny_hf_siglip_configs()
    torch.manual_seed(0)
    BertModel(bert_cfg).save_pretrained(root / "bert")
    vision = SiglipVisionModel(vis_cfg)
    vision.save_pretrained(root / "siglip_vision")
    full = SiglipModel(SiglipConfig(vision_config=vis_cfg.to_dict(), text_config=dict(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)))
    full.save_pretrained(root / "siglip")
    return root, vision, full.vision_model


@pytest.mark.parametrize("folder", ["siglip_vision", "siglip"])
def test_import_hf_from_a_siglip_folder(hf_folders, folder, recwarn):
    root, vision_only, full_vision = hf_folders
    hf = vision_only if folder == "siglip_vision" else full_vision
    config, params = convert.from_hf_parts(str(root / "bert"), str(root / folder), dict(dim=16, num_tokens=4,
                                                                                          num_heads=3))
    assert config.vision == MIReConfig.tiny_siglip().vision
    sd = convert.to_torch(config, params)
    want = {SIGLIP_PREFIX + k.removeprefix("vision_model."): v.numpy() for k, v in hf.state_dict().items()}
    assert set(k for k in sd if k.startswith("vision_tower.")) == set(want)
    for key, value in want.items():
        np.testing.assert_array_equal(sd[key], value, err_msg=key)
    # the export is the published layout: it loads strictly into the oracle
    Oracle(*tiny_hf_siglip_configs()).load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)


def test_command_line_import_and_export(published, tmp_path, capsys):
    _, sd, bert_cfg, vis_cfg, head = published
    torch.save({"model": {k: torch.from_numpy(v) for k, v in sd.items()}}, tmp_path / "mire.pth")
    (tmp_path / "bert.json").write_text(json.dumps(bert_cfg))
    (tmp_path / "vision.json").write_text(json.dumps(vis_cfg))
    convert_main(["import", str(tmp_path / "mire.pth"), "--bert-config", str(tmp_path / "bert.json"),
                  "--vision-config", str(tmp_path / "vision.json"), "--head-dim", "16", "--head-tokens", "4",
                  "--head-heads", "3", "--out", str(tmp_path / "model")])
    config, _ = load_model(tmp_path / "model")
    assert config.vision.model_type == "siglip"
    for layout in ("keep", "transformers5"):  # SigLIP's keys keep their `vision_model.` level either way
        convert_main(["export", str(tmp_path / "model"), "--out", str(tmp_path / "out.safetensors"),
                      "--layout", layout])
        _assert_same_state_dict(convert.load_state_dict(tmp_path / "out.safetensors"), sd)
    # the same checkpoint with the CLIP vision config: one line, exit status 2
    with pytest.raises(SystemExit) as exit_:
        convert_main(["import", str(tmp_path / "mire.pth"), "--bert-config", str(tmp_path / "bert.json"),
                      "--out", str(tmp_path / "wrong")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "holds a SigLIP vision tower" in err, err


def test_fingerprints_of_clip_models_are_those_of_before_the_field():
    """Indexes and caches record the model's fingerprint: a CLIP + BERT model keeps the one it had before
    `model_type` and `modernbert` existed (its config hashed without them); a SigLIP tower of the same sizes, or a
    ModernBERT text tower, gives another."""
    import hashlib

    from mire_jax.retrieval.model_folder import params_fingerprint
    config = MIReConfig.tiny()
    params = {"w": np.arange(6, dtype=np.float32)}
    old = config.to_dict()
    del old["vision"]["model_type"], old["modernbert"]
    h = hashlib.sha256(json.dumps(old, sort_keys=True).encode())
    h.update(params["w"].tobytes())
    assert params_fingerprint(config, params) == h.hexdigest()[:16]
    siglip = config.replace(vision=VisionConfig(**{**config.vision.__dict__, "model_type": "siglip"}))
    assert params_fingerprint(siglip, params) != params_fingerprint(config, params)
    assert params_fingerprint(MIReConfig.tiny(text="modernbert"), params) != params_fingerprint(config, params)
