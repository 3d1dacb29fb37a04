"""The project's PyTorch oracle of MIRe, written from the model's specification (test-only).

Hugging Face `BertModel` and `CLIPVisionModel` (or `SiglipVisionModel`) for the towers plus the query-guided
attentive pooling head, laid out so that `state_dict()` has the published checkpoint's keys (model.bert.*,
model.linear.weight, vision_tower.vision_tower.* for CLIP or vision_tower.vision_tower.vision_model.* for SigLIP,
query_fusion.*).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel, CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel


def tiny_hf_configs(vocab_size: int = 128):
    bert = BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, max_position_embeddings=512)
    vision = CLIPVisionConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                              image_size=32, patch_size=8)
    return bert, vision, dict(dim=16, num_tokens=4, num_heads=3)


def tiny_hf_siglip_configs(vocab_size: int = 128):
    """`tiny_hf_configs` with a tiny SigLIP tower of odd sizes: width 42 over 3 heads (14 each), MLP 74, a 5 x 5
    patch grid (32 px in patches of 6: the convolution drops the last 2 pixels), as `MIReConfig.tiny_siglip`."""
    bert, _, head = tiny_hf_configs(vocab_size)
    vision = SiglipVisionConfig(hidden_size=42, intermediate_size=74, num_hidden_layers=2, num_attention_heads=3,
                                image_size=32, patch_size=6)
    return bert, vision, head


class PoolingHead(nn.Module):
    def __init__(self, v_dim: int, dim: int, num_tokens: int, num_heads: int, residual: bool = False):
        super().__init__()
        self.dim, self.num_tokens, self.num_heads, self.residual = dim, num_tokens, num_heads, residual
        wide = 2 * num_heads * dim
        self.proj = nn.Sequential(nn.LayerNorm(v_dim, eps=1e-5), nn.Linear(v_dim, wide), nn.GELU())
        self.k_state = nn.Linear(wide, num_heads * dim, bias=False)
        self.v_state = nn.Linear(wide, num_heads * dim, bias=False)
        self.o_proj = nn.Sequential(nn.LayerNorm(dim, eps=1e-5), nn.Linear(dim, dim))
        self.split_mlp = nn.Sequential(nn.Linear(v_dim, num_tokens * dim // 2), nn.Tanh(),
                                       nn.Linear(num_tokens * dim // 2, num_tokens * dim))

    def global_tokens(self, feats):
        return self.split_mlp(feats[:, 0]).reshape(feats.shape[0], self.num_tokens, self.dim)

    def pooled_tokens(self, text, feats, text_mask):
        b, s = feats.shape[0], feats.shape[1] - 1
        x = self.proj(feats[:, 1:])
        keys = self.k_state(x).reshape(b, s, self.num_heads, self.dim)
        values = self.v_state(x).reshape(b, s, self.num_heads, self.dim)
        logits = torch.einsum("bld,bshd->bhls", text, keys) / self.dim ** 0.5
        rows = text_mask.bool()[:, None, :, None]
        logits = torch.where(rows, logits, torch.full_like(logits, -9999.0))
        out = torch.einsum("bhls,bshd->bhld", logits.softmax(-1), values)
        if self.residual:
            out = out + text[:, None]
        # every row is summed (padded ones too), divided by the number of real rows
        out = out.sum(2) / (rows.sum(2).float() + 1e-15)
        return self.o_proj(out)


class TextTower(nn.Module):
    def __init__(self, bert_config, dim):
        super().__init__()
        self.bert = BertModel(bert_config)
        self.linear = nn.Linear(bert_config.hidden_size, dim, bias=False)


class VisionTower(nn.Module):
    def __init__(self, vision_config):
        super().__init__()
        self.vision_tower = CLIPVisionModel(vision_config)

    def forward(self, pixels_nchw):
        hidden = self.vision_tower(pixel_values=pixels_nchw, output_hidden_states=True).hidden_states
        return torch.cat([hidden[-1][:, :1], hidden[-2][:, 1:]], dim=1)


class SiglipVisionModule(nn.Module):
    """The published tower's `vision_tower` attribute: a SigLIP vision model whose transformer sits under
    `vision_model` (the published `SigLipVisionModel`, and Hugging Face's before transformers 5)."""

    def __init__(self, vision_config):
        super().__init__()
        model = SiglipVisionModel(vision_config)
        # transformers 5 dropped the `vision_model` level of SiglipVisionModel; older versions have it
        self.vision_model = model.vision_model if hasattr(model, "vision_model") else model

    def forward(self, pixels_nchw):
        return self.vision_model(pixel_values=pixels_nchw, output_hidden_states=True)


class SiglipTower(nn.Module):
    """The published SigLIP feature selection: the attention-pooling head's output as ONE token, then the last
    encoder layer's patch states before `post_layernorm` (`hidden_states[-1]`)."""

    def __init__(self, vision_config):
        super().__init__()
        self.vision_tower = SiglipVisionModule(vision_config)

    def forward(self, pixels_nchw):
        out = self.vision_tower(pixels_nchw)
        return torch.cat([out.pooler_output[:, None], out.hidden_states[-1]], dim=1)


def vision_tower(vision_config) -> nn.Module:
    """The oracle's vision tower for a Hugging Face CLIP or SigLIP vision config."""
    return SiglipTower(vision_config) if isinstance(vision_config, SiglipVisionConfig) else VisionTower(vision_config)


def _normalize(x):
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class Oracle(nn.Module):
    def __init__(self, bert_config, vision_config, head: dict):
        super().__init__()
        self.model = TextTower(bert_config, head["dim"])
        self.vision_tower = vision_tower(vision_config)
        self.query_fusion = PoolingHead(vision_config.hidden_size, head["dim"], head["num_tokens"],
                                        head["num_heads"], head.get("residual", False))

    def text(self, ids, mask):
        return self.model.linear(self.model.bert(input_ids=ids, attention_mask=mask).last_hidden_state)

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

    def encode_doc_with_image(self, prompt_ids, ids=None, mask=None, keep=None, pixels_nhwc=None, feats=None):
        """The published `MIRe.doc` with a passage image: the prompt repeated over the batch through the text tower
        and the projection (attention mask all ones, no masking), the image's global tokens and the tokens pooled
        under the prompt, then the passage text times its keep mask; image rows always kept. -> (D, keep)."""
        if feats is None:
            feats = self.vision_tower(pixels_nhwc.permute(0, 3, 1, 2))
        prompt = prompt_ids[None].repeat(feats.shape[0], 1)
        prompt_mask = torch.ones_like(prompt)
        t = self.text(prompt, prompt_mask)
        visual = torch.cat([self.query_fusion.global_tokens(feats),
                            self.query_fusion.pooled_tokens(t, feats, prompt_mask)], dim=1)
        visual_keep = torch.ones(visual.shape[:2], dtype=torch.bool)
        if ids is None:
            return _normalize(visual), visual_keep
        text = self.text(ids, mask) * keep[..., None].float()
        return _normalize(torch.cat([visual, text], dim=1)), torch.cat([visual_keep, keep.bool()], dim=1)


def maxsim(q, d, d_mask):
    sim = torch.einsum("and,bld->abnl", q, d)
    sim = torch.where(d_mask.bool()[None, :, None, :], sim, torch.full_like(sim, -9999.0))
    return sim.amax(-1).sum(-1)


@torch.no_grad()
def randomise_(model: nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Every parameter random, LayerNorm scales and biases included (a swapped LayerNorm must not pass)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g) * scale
        is_ln_scale = p.ndim == 1 and name.endswith("weight") and ("LayerNorm" in name or "norm" in name.lower()
                                                                   or ".0.weight" in name)
        p.copy_(noise + (1.0 if is_ln_scale else 0.0))
