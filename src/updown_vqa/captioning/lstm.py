"""An LSTM cell that computes its four gates with one matrix product: the captioner's two LSTMs step
once per word, so a step's kernel launches and products are what its speed is made of."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class FusedLSTMCell(nn.Module):
    """nn.LSTMCell with all four gates from one product [x; h] @ cat(W_xh, W_hh) (gate order i, f, g, o)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight = nn.Parameter(torch.empty(input_size + hidden_size, 4 * hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)), as nn.LSTMCell."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """One step: x [B, input_size], (h, c) each [B, H] (zeros when None) -> (h, c)."""
        if state is None:
            zeros = x.new_zeros(x.size(0), self.hidden_size)
            state = (zeros, zeros)
        h, c = state
        gates = torch.addmm(self.bias, torch.cat([x, h], 1), self.weight)  # [B, 4H]
        i, f, g, o = gates.chunk(4, 1)  # each [B, H]
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    @classmethod
    def from_lstm_cell(cls, cell: nn.LSTMCell) -> FusedLSTMCell:
        """A fused cell computing exactly what `cell` computes (weights copied, biases summed)."""
        fused = cls(cell.input_size, cell.hidden_size).to(cell.weight_ih)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([cell.weight_ih, cell.weight_hh], 1).t())
            fused.bias.zero_()
            if cell.bias:
                fused.bias.copy_(cell.bias_ih + cell.bias_hh)
        return fused

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"
