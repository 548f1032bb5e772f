"""The text side of a CLIP model: open_clip's tokenizer and text transformer, and caption masking.

open_clip is imported inside the functions: it takes seconds to import, and only CLIP runs need it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

# open_clip's byte-pair vocabulary: start and end of text, and the padding id.
VOCAB_SIZE, START, END, PAD = 49408, 49406, 49407, 0


@lru_cache(maxsize=4)
def _tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer  # seconds to import: only CLIP runs pay for it

    return SimpleTokenizer(context_length=context_length)


def tokenize(captions, context_length: int) -> np.ndarray:
    """int64 (N, context_length) token ids of ``captions`` (start, words, end, zero padding; cut to fit).

    Example:
        >>> tokenize(["a red disc"], 8)[0].tolist()[:2]
        [49406, 320]
    """
    captions = [str(caption) for caption in captions]
    if not captions:
        return np.zeros((0, context_length), dtype=np.int64)
    return _tokenizer(context_length)(captions).numpy().astype(np.int64)


def mask_tokens(tokens: torch.Tensor, probability: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Caption masking: each word token dropped with ``probability``, the kept ones closed up in order (the
    start and end tokens always kept), so the model sees a shorter caption, as open_clip's random-mask tokenizer.

    Example:
        >>> mask_tokens(torch.tensor([[START, 5, 6, END, 0]]), 0.0).tolist()
        [[49406, 5, 6, 49407, 0]]
    """
    if probability <= 0:
        return tokens
    words = (tokens != PAD) & (tokens != START) & (tokens != END)
    draws = torch.rand(tokens.shape, generator=generator, device="cpu").to(tokens.device)
    keep = (tokens != PAD) & ~(words & (draws < probability))
    # Kept tokens first, in their order (a stable sort on "dropped"), then padding.
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    return torch.where(torch.gather(keep, 1, order), torch.gather(tokens, 1, order), torch.zeros_like(tokens))


class TextEncoder(nn.Module):
    """open_clip's causal text transformer, pooled at the end token and projected to ``out_dim`` (the image
    encoder's output width: the joint space), with CLIP's learnable log inverse temperature beside it."""

    def __init__(self, out_dim: int, width: int, layers: int, heads: int, context_length: int, temperature: float,
                 learn_temperature: bool = True):
        super().__init__()
        from open_clip.transformer import TextTransformer  # seconds to import: only CLIP runs pay for it

        self.transformer = TextTransformer(context_length=context_length, vocab_size=VOCAB_SIZE, width=width,
                                           heads=heads, layers=layers, output_dim=out_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / temperature))), requires_grad=learn_temperature)
        self.context_length = context_length

    @property
    def output_dim(self) -> int:
        return self.transformer.output_dim

    def tokenize(self, captions) -> np.ndarray:
        """int64 (N, context_length) token ids of ``captions`` for this encoder."""
        return tokenize(captions, self.context_length)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.transformer(tokens)


def build_text_encoder(clip_config, out_dim: int) -> TextEncoder:
    """The text encoder of a :class:`dejavu.config.methods.ClipConfig`, projecting to ``out_dim``."""
    c = clip_config
    return TextEncoder(out_dim, c.text_width, c.text_layers, c.text_heads, c.context_length, c.temperature,
                       c.learn_temperature)
