"""Encoder-decoder (seq2seq) networks: a spec with `encoder:` and `decoder:` sections.

    input: {shape: [13], dtype: long}        # source token ids
    encoder: [embedding: {...}, gru: {hidden: 128, returns: sequence}]
    decoder: [embedding: {...}, additive_decoder: {hidden: 128}, linear: $vocab_size]

The decoder reads the target so far (teacher forcing in training: the target shifted
right, starting with <bos>) and, through `cross_attention`, `cross_decoder_block` or
`additive_decoder`, the encoder's output. Token conventions follow archlab.text's
sequence tasks: 0 = <pad>, 1 = <bos>, 2 = <eos>.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..core import FrozenDict, SpecError
from ..layers import MemoryUser, TensorType
from ..spec import Spec, check_shape
from ._builder import Serial, _Builder
from ._network import BuiltNetwork, LeafInfo, Node, Section, is_meta

PAD, BOS, EOS = 0, 1, 2


class Seq2SeqNetwork(BuiltNetwork, nn.Module):
    """encoder(src) -> memory; decoder(tgt_in) attends to memory. A plain nn.Module."""

    kind = "seq2seq"

    def __init__(self, encoder: nn.Module, decoder: nn.Module, spec: Spec, input_type: TensorType,
                 target_type: TensorType, output_type: TensorType, layers: list[LeafInfo],
                 trees: tuple[Node, Node] | None = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.spec, self.input_type, self.target_type = spec, input_type, target_type
        self.output_type, self.layers = output_type, layers
        enc, dec = trees or (Node("serial", "encoder", input_type, input_type),
                             Node("serial", "decoder", target_type, output_type))
        # The decoder reads target tokens and attends to the encoder's output (the memory).
        self.sections = (Section("encoder", input_type, enc.output, enc, "source", "memory → decoder"),
                         Section("decoder", target_type, output_type, dec, "target", "output"))
        self._users = tuple(m for m in decoder.modules() if isinstance(m, MemoryUser))

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        memory = self.encoder(src)  # (B, S, Dm)
        # Padding is masked only where the encoder keeps one position per source token.
        mask = (src != PAD) if memory.shape[1] == src.shape[1] else None
        return memory, mask

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for m in self._users:
            m.memory, m.memory_mask = memory, mask
        try:
            return self.decoder(tgt_in)  # (B, T, V)
        finally:
            for m in self._users:
                m.memory = m.memory_mask = None

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor | None = None) -> torch.Tensor:
        if tgt_in is None:  # a plain call (e.g. the inspector): decode a <bos>-only target
            tgt_in = torch.full((src.shape[0], self.target_type.shape[0]), BOS, dtype=torch.long, device=src.device)
        memory, mask = self.encode(src)
        return self.decode(tgt_in, memory, mask)

    def example_input(self, batch: int = 2, device: Any = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        shape = (batch, *self.input_shape)
        if is_meta(device):
            return torch.empty(shape, dtype=torch.long, device=device)
        vocab = min((m.num_embeddings for m in self.encoder.modules() if isinstance(m, nn.Embedding)), default=4)
        return torch.randint(3, max(vocab, 4), shape, device=device)

    @torch.no_grad()
    def greedy(self, src: torch.Tensor, max_len: int) -> torch.Tensor:
        """Greedy decoding: (B, max_len) token ids after <bos>, <pad> after <eos>."""
        memory, mask = self.encode(src)
        out = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            nxt = self.decode(out, memory, mask)[:, -1].argmax(dim=-1)
            nxt = nxt.masked_fill(done, PAD)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if done.all():
                break
        return _pad_to(out[:, 1:], max_len)

    @torch.no_grad()
    def beam(self, src: torch.Tensor, max_len: int, width: int = 4, length_penalty: float = 1.0) -> torch.Tensor:
        """Beam search (log-probabilities, length-normalised); returns (B, max_len) ids."""
        b = src.shape[0]
        memory, mask = self.encode(src)
        memory = memory.repeat_interleave(width, dim=0)
        mask = None if mask is None else mask.repeat_interleave(width, dim=0)
        seqs = torch.full((b * width, 1), BOS, dtype=torch.long, device=src.device)
        scores = torch.full((b, width), float("-inf"), device=src.device)
        scores[:, 0] = 0.0  # all beams start identical: keep one alive at first
        finished = torch.zeros(b * width, dtype=torch.bool, device=src.device)
        lengths = torch.zeros(b * width, device=src.device)
        for _ in range(max_len):
            logp = self.decode(seqs, memory, mask)[:, -1].log_softmax(dim=-1)  # (B*W, V)
            v = logp.shape[-1]
            # A finished beam only extends with <pad> at no cost.
            logp = torch.where(finished[:, None], torch.full_like(logp, float("-inf")), logp)
            logp[finished, PAD] = 0.0
            total = (scores.view(-1, 1) + logp).view(b, width * v)
            scores, idx = total.topk(width, dim=-1)  # (B, W)
            beam_idx = (idx // v) + torch.arange(b, device=src.device)[:, None] * width
            tokens = idx % v
            seqs = torch.cat([seqs[beam_idx.view(-1)], tokens.view(-1, 1)], dim=1)
            finished = finished[beam_idx.view(-1)] | (tokens.view(-1) == EOS) | (tokens.view(-1) == PAD)
            lengths = lengths[beam_idx.view(-1)] + (~finished | (tokens.view(-1) == EOS)).float()
            if finished.all():
                break
        normalised = scores.view(-1) / lengths.clamp(min=1) ** length_penalty
        best = normalised.view(b, width).argmax(dim=-1) + torch.arange(b, device=src.device) * width
        return _pad_to(seqs[best, 1:], max_len)


def _pad_to(x: torch.Tensor, length: int) -> torch.Tensor:
    if x.shape[1] >= length:
        return x[:, :length]
    return torch.cat([x, x.new_full((x.shape[0], length - x.shape[1]), PAD)], dim=1)


def build_seq2seq(spec: Spec, x: TensorType, env: Mapping[str, Any], device: Any, seed: int) -> Seq2SeqNetwork:
    """Build both halves with shape inference; the decoder's layers see the encoder's output."""
    if x.dtype != "long" or x.rank != 1:
        raise SpecError(f"input: a seq2seq spec takes token ids (S,) with dtype long. Received: {x.describe()}")
    target_len = env.get("target_len", x.shape[0])
    check_shape([target_len], "vars.target_len")
    builder = _Builder(spec)
    with torch.device(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder, memory, enc_tree = builder.section(spec.encoder, x, "encoder", "encoder", FrozenDict(dict(env)))
        if memory.rank != 2:
            raise SpecError(f"encoder: must output a sequence (S, D) for the decoder to attend to; it gives "
                            f"{memory.describe()} from {memory.source} (use returns: sequence on recurrent layers)")
        builder.memory = memory
        target = TensorType((int(target_len),), "long", "tokens", "target")
        decoder, out, dec_tree = builder.section(spec.decoder, target, "decoder", "decoder", FrozenDict(dict(env)))
    if out.rank != 2:
        raise SpecError(f"decoder: must output (T, vocab) logits per target position; it gives {out.describe()}")
    if not any(isinstance(m, MemoryUser) for m in decoder.modules()):
        raise SpecError("decoder: no layer reads the encoder (cross_attention, cross_decoder_block or "
                        "additive_decoder), so the output cannot depend on the source")
    return Seq2SeqNetwork(encoder, decoder if isinstance(decoder, Serial) else Serial(decoder), spec, x, target,
                          out, builder.leaves, (enc_tree, dec_tree))
