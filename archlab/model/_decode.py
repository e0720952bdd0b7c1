"""Text generation from a decoder-only language model, with a key/value cache.

Without a cache every new token runs the whole context through the model again: O(T^2)
work per token for attention and O(T) for everything else. With the cache, each attention
layer keeps the keys and values of earlier positions, so a new token costs one position's
work. `bench/generate.py` measures the difference.

    tokens = generate(net, prompt_ids, max_tokens=200, temperature=0.8, top_k=40, seed=0)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..core import ArchlabError
from ..layers import LayerCache, LearnedPositions, SelfAttention, SinusoidalPositions
from ._network import BuiltNetwork

# Layers that mix information across positions other than through attention cannot be
# decoded one position at a time.
_POSITION_MIXERS = ("rnn", "lstm", "gru", "conv1d", "seq_pool", "additive_attention", "maxpool",
                    "avgpool", "maxpool1d", "avgpool1d", "global_avgpool", "global_maxpool", "flatten")


class KVCache:
    """While active, attention layers append to a per-layer cache and positional layers
    offset their positions, so the model can be fed only the newest tokens."""

    def __init__(self, net: nn.Module):
        self.attention = [m for m in net.modules() if isinstance(m, SelfAttention)]
        self.positional = [m for m in net.modules() if isinstance(m, LearnedPositions | SinusoidalPositions)]
        self.length = 0

    def __enter__(self) -> KVCache:
        self.reset()
        return self

    def __exit__(self, *exc: object) -> None:
        for m in self.attention:
            m.cache = None
        for m in self.positional:
            m.offset = 0

    def reset(self) -> None:
        self.length = 0
        for m in self.attention:
            m.cache = LayerCache()
        for m in self.positional:
            m.offset = 0

    def forward(self, net: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """Run the new tokens (B, t) at positions length .. length+t-1; logits (B, t, V)."""
        for m in self.positional:
            m.offset = self.length
        out = net(tokens)
        self.length += tokens.shape[1]
        return out


def _built(net: nn.Module) -> BuiltNetwork:
    if not isinstance(net, BuiltNetwork):
        raise ArchlabError(f"generate: expects a network built by archlab (archlab.build). "
                           f"Received: {type(net).__name__}")
    return net


def context_length(net: nn.Module) -> int:
    """The longest sequence the model takes (its input length)."""
    shape = _built(net).input_shape
    if len(shape) != 1:
        raise ArchlabError("generate: the model does not take a sequence of token ids (T,)")
    return int(shape[0])


def check_decoder(net: nn.Module) -> None:
    layers = _built(net).layers
    out = _built(net).output_shape
    if len(out) != 2:
        raise ArchlabError(f"generate: the model's output {out} is not (T, vocab) next-token logits; "
                           f"only language models (task language_model) generate text")
    mixers = sorted({leaf.kind for leaf in layers if leaf.kind in _POSITION_MIXERS})
    if mixers:
        raise ArchlabError(f"generate: layers {', '.join(mixers)} mix positions outside attention, so the "
                           f"model cannot decode incrementally; use --no-cache")
    if any(not m.causal for m in net.modules() if isinstance(m, SelfAttention)):
        raise ArchlabError("generate: the model has non-causal (bidirectional) attention, so a token "
                           "sees the future during training; generation needs causal attention")


def sample(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> torch.Tensor:
    """One token id per row of logits (B, V); temperature 0 means greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def generate(net: nn.Module, prompt: Sequence[int], max_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0, use_cache: bool = True) -> Iterator[int]:
    """Yield `max_tokens` new token ids after `prompt`, one at a time (for streaming)."""
    if max_tokens < 0:
        raise ArchlabError(f"--max-tokens must be >= 0. Received: {max_tokens}")
    if not prompt:
        raise ArchlabError("generate: the prompt is empty after tokenisation; give at least one known character")
    window = context_length(net)
    if use_cache:
        check_decoder(net)
    net.eval()
    device = next(net.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    tokens = torch.tensor([list(prompt)], dtype=torch.long, device=device)[:, -window:]
    if not use_cache:
        for _ in range(max_tokens):
            logits = net(tokens[:, -window:])[:, -1]
            nxt = sample(logits, temperature, top_k, generator)
            tokens = torch.cat([tokens, nxt], dim=1)
            yield int(nxt)
        return
    with KVCache(net) as cache:
        logits = cache.forward(net, tokens)[:, -1]
        for _ in range(max_tokens):
            nxt = sample(logits, temperature, top_k, generator)
            tokens = torch.cat([tokens, nxt], dim=1)
            yield int(nxt)
            if cache.length >= window:
                # The window is full: start again from its newer half (amortised re-encoding).
                cache.reset()
                logits = cache.forward(net, tokens[:, -(window // 2):])[:, -1]
            else:
                logits = cache.forward(net, nxt)[:, -1]
