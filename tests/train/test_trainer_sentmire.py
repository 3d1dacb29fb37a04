"""The training loop on a SentMIRe model folder, unchanged: its tokenizer (tokenizer.json + PyLate's conventions) is
picked from the folder, the pipeline frames the tiny world's texts with it, the published SentMIRe pre-training
trains the head and the projection only, and the trained model folder keeps the tokenizer and its conventions."""
import flax
import jax
import numpy as np
from sentmire_oracle import write_tiny_pylate_tokenizer
from tiny_setup import tiny_config

import mire_jax
from mire_jax.retrieval.model_folder import load_model, load_tokenizer, save_model
from mire_jax.tokenization.pylate import PylateTokenizer
from mire_jax.train.loop import train


def test_a_sentmire_folder_trains_as_published(tiny_world, tmp_path):
    tok_dir = tmp_path / "pylate"
    vocab = write_tiny_pylate_tokenizer(tok_dir)
    config = mire_jax.MIReConfig.tiny(vocab_size=vocab, text="modernbert")
    params = jax.device_get(mire_jax.init_params(config, jax.random.PRNGKey(0)))
    model_dir = tmp_path / "sentmire_init"
    save_model(model_dir, config, params, tokenizer=str(tok_dir))
    PylateTokenizer.from_pretrained(tok_dir).save_conventions(model_dir)
    cfg = tiny_config(tiny_world, total_steps=3, checkpoint_every=3, log_every=1, batch_size=8, phase="pretrain",
                      temperature=0.3, trainable=("pooling", "linear"), tokenizer=str(model_dir),
                      **{"model.dir": str(model_dir)})
    workdir = tmp_path / "run"
    metrics = train(cfg, str(workdir))
    assert np.isfinite(metrics["loss"])
    trained_config, trained = load_model(workdir / "model")
    assert trained_config.modernbert == config.modernbert
    before, after = (flax.traverse_util.flatten_dict(p, sep="/") for p in (params, trained))
    moved = {name.split("/")[0] for name in before if not np.array_equal(before[name], after[name])}
    assert moved == {"pooling", "linear"}
    tok = load_tokenizer(workdir / "model")
    assert isinstance(tok, PylateTokenizer) and tok.fingerprint() == load_tokenizer(model_dir).fingerprint()
