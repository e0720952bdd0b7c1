"""Recurrent layers over (T, F) sequences: rnn, lstm, gru (`bias: single` counts as Keras does)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..core import SpecError
from ._registry import Built, TensorType, positive, probability, register_layer


class Recurrent(nn.Module):
    """Wraps nn.RNN/LSTM/GRU (batch first) and returns the last state or the full sequence."""

    def __init__(self, kind: str, features: int, hidden: int, layers: int, bidirectional: bool,
                 dropout: float, returns: str, nonlinearity: str = "tanh", bias: bool | str = True):
        super().__init__()
        cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
        extra = {"nonlinearity": nonlinearity} if kind == "rnn" else {}
        self.rnn = cls(features, hidden, num_layers=layers, batch_first=True, bias=bias is not False,
                       bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0, **extra)
        if bias == "single":
            _single_bias(self.rnn)
        self.kind, self.returns, self.bidirectional = kind, returns, bidirectional

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, F)
        out, state = self.rnn(x)  # out: (B, T, H * dirs); state: (layers * dirs, B, H)
        if self.returns == "sequence":
            return out
        h = state[0] if self.kind == "lstm" else state
        if self.bidirectional:  # final forward state and final backward state of the top layer
            return torch.cat([h[-2], h[-1]], dim=-1)  # (B, 2H)
        return h[-1]  # (B, H)

    def extra_repr(self) -> str:
        return f"returns={self.returns}"


def _single_bias(rnn: nn.RNNBase) -> None:
    """One bias per gate, as Keras has, instead of PyTorch's two (b_ih + b_hh, whose sum is all
    that matters for an RNN or LSTM): each b_hh becomes a constant zero buffer, so the layer
    computes the same function family with Keras's parameter count."""
    for name in [n for n in rnn._flat_weights_names if n.startswith("bias_hh")]:
        zero = torch.zeros_like(getattr(rnn, name)).detach()
        del rnn._parameters[name]
        rnn.register_buffer(name, zero, persistent=False)  # not a weight: nothing to save
    rnn._init_flat_weights()  # the kernel reads weights through this list: point it at the buffers


def _recurrent(kind: str, doc: str) -> None:
    def fn(x: TensorType, hidden: int, layers: int = 1, bidirectional: bool = False,
           returns: Literal["last", "sequence"] = "last", dropout: float = 0.0,
           nonlinearity: Literal["tanh", "relu"] = "tanh", bias: bool | Literal["single"] = True) -> Built:
        t, f = x.expect(rank=2, what="a sequence (T, F)")
        positive(hidden, "hidden")
        positive(layers, "layers")
        if bias == "single" and kind == "gru":
            raise SpecError("gru cannot have bias: single: its b_hn is applied inside the reset gate, so "
                            "its two biases do not add up to one (Keras's default GRU has two as well); "
                            "use bias: true or false")
        module = Recurrent(kind, f, hidden, layers, bidirectional, probability(dropout, "dropout"),
                           returns, nonlinearity, bias)
        width = hidden * (2 if bidirectional else 1)
        shape = (t, width) if returns == "sequence" else (width,)
        return module, x.derive(shape, layout="sequence" if returns == "sequence" else "flat")

    fn.__doc__ = doc
    fn.__name__ = kind
    register_layer(kind)(fn)


_recurrent("rnn", "Elman RNN over (T, F); returns the last state (H,) or the sequence (T, H).")
_recurrent("lstm", "LSTM over (T, F); returns the last state (H,) or the sequence (T, H).")
_recurrent("gru", "GRU over (T, F); returns the last state (H,) or the sequence (T, H).")
