"""The project's PyTorch oracle of SentMIRe, written from the published model's specification (test-only).

The published `SentMIRe` (public repository yeongjoonJu/MIRe, `retrievers/mire.py`) is MIRe on a PyLate
ModernColBERT: its text tower is the sentence-transformers model's Hugging Face `ModernBertModel` (module `model`),
its projection PyLate's Dense layer's `linear` (module `dense`), and the vision tower and pooling head are MIRe's
(`torch_oracle`). `state_dict()` therefore has the published keys: model.*, dense.weight (dense.bias),
vision_tower.vision_tower.*, query_fusion.*. Paths, as `SentMIRe.query` / `SentMIRe.doc` compute them:

- text tokens: `dense(model(ids, mask)[0]).float()`, times the mask;
- query with an image: `[E_g ; E_m ; T]` (`[E_g ; E_m]` in pre-training), L2-normalised per token;
- query without an image: `T`, normalised;
- passage: `dense(H) * keep`, normalised (keep: the skiplist mask in training, the attention mask at evaluation).
"""
from __future__ import annotations

import torch
from torch import nn
from torch_oracle import PoolingHead, VisionTower, _normalize
from transformers import ModernBertConfig, ModernBertModel


def tiny_modernbert_config(vocab_size: int = 128, dropout: float = 0.0,
                           attn_implementation: str = "eager") -> ModernBertConfig:
    """The Hugging Face twin of `MIReConfig.tiny(text="modernbert").modernbert`: odd widths, layers global, local,
    local, a local window of 2 either way (local_attention 4), rotary bases far from the defaults."""
    config = ModernBertConfig(vocab_size=vocab_size, hidden_size=70, intermediate_size=45, num_hidden_layers=3,
                              num_attention_heads=5, local_attention=4, global_rope_theta=1000.0,
                              local_rope_theta=50.0, max_position_embeddings=512, pad_token_id=0, bos_token_id=1,
                              eos_token_id=2, cls_token_id=1, sep_token_id=2, attention_dropout=dropout,
                              embedding_dropout=dropout, mlp_dropout=dropout)
    config._attn_implementation = attn_implementation
    return config


class SentMIReOracle(nn.Module):
    def __init__(self, text_config: ModernBertConfig, vision_config, head: dict, projection_bias: bool = False):
        super().__init__()
        self.model = ModernBertModel(text_config)
        self.dense = nn.Linear(text_config.hidden_size, head["dim"], bias=projection_bias)
        self.vision_tower = VisionTower(vision_config)
        self.query_fusion = PoolingHead(vision_config.hidden_size, head["dim"], head["num_tokens"], head["num_heads"],
                                        head.get("residual", False))

    def text(self, ids, mask):
        return self.dense(self.model(input_ids=ids, attention_mask=mask).last_hidden_state).float()

    def encode_query(self, ids, mask, pixels_nhwc=None, feats=None, pretraining=False):
        text = self.text(ids, mask) * mask[..., None].float()
        if pixels_nhwc is None and feats is None:
            return _normalize(text)
        if feats is None:
            feats = self.vision_tower(pixels_nhwc.permute(0, 3, 1, 2))
        visual = [self.query_fusion.global_tokens(feats), self.query_fusion.pooled_tokens(text, feats, mask)]
        return _normalize(torch.cat(visual if pretraining else visual + [text], dim=1))

    def encode_doc(self, ids, mask, keep):
        return _normalize(self.text(ids, mask) * keep[..., None].float())


SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
CORPUS = ("What is the capital of France? Paris is the capital and largest city of France.",
          "The Eiffel Tower, built in 1889, stands in Paris; it is 330 metres tall!",
          "Which animal is shown in the picture: a cat, a dog or a bird?",
          "ModernBERT uses rotary position embeddings (RoPE) and alternating local-global attention.",
          "Late interaction scores every query token against every passage token -- MaxSim.")


def write_tiny_pylate_tokenizer(folder, vocab_size: int = 330, query_prefix: str = "[Q] ",
                                document_prefix: str = "[D] ", skiplist_words=None, do_lower_case: bool = False):
    """A small byte-level BPE tokenizer laid out as a PyLate ModernColBERT folder has it (no download): ModernBERT's
    kind of tokenizer.json (byte-level pre-tokenizer without a prefix space, `[CLS] $A [SEP]` post-processor,
    BERT's special token names), PyLate's prefixes added as tokens, tokenizer_config.json, special_tokens_map.json,
    config_sentence_transformers.json and sentence_bert_config.json. Returns the vocabulary size."""
    import json
    import os
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")),
                                                 ("[SEP]", tok.token_to_id("[SEP]"))])
    tok.add_tokens([query_prefix, document_prefix])
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    names = {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
             "mask_token": "[MASK]"}
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(names, f)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(dict(names, tokenizer_class="PreTrainedTokenizerFast", model_max_length=512), f)
    with open(os.path.join(folder, "config_sentence_transformers.json"), "w") as f:
        json.dump({"query_prefix": query_prefix, "document_prefix": document_prefix, "query_length": 12,
                   "document_length": 20, "attend_to_expansion_tokens": False,
                   "skiplist_words": list(skiplist_words or string.punctuation)}, f)
    with open(os.path.join(folder, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": 19, "do_lower_case": do_lower_case}, f)
    return tok.get_vocab_size(with_added_tokens=True)
