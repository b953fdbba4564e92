"""The bottom-up/top-down VQA model (Anderson et al. 2018, https://arxiv.org/abs/1707.07998), with the
design choices of Teney et al. 2018 (https://arxiv.org/abs/1708.02711).

Dimensions: B batch, T tokens, K regions, D region feature, E word embedding, H hidden, A answers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

NONLINEARITIES = ("gated_tanh", "relu")
ATTENTION_FORMS = ("concat", "product")


class GatedTanh(nn.Module):
    """y = tanh(W x + b) * sigmoid(W' x + b'), the paper's non-linear layer (Teney et al., eq. 3)."""

    def __init__(self, in_dim: int, out_dim: int, weight_norm: bool = False):
        super().__init__()
        self.linear = _linear(in_dim, 2 * out_dim, weight_norm)  # both halves in one product

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, gate = self.linear(x).chunk(2, dim=-1)
        return torch.tanh(y) * torch.sigmoid(gate)


def _linear(in_dim: int, out_dim: int, weight_norm: bool, bias: bool = True) -> nn.Module:
    linear = nn.Linear(in_dim, out_dim, bias=bias)
    return _weight_norm(linear, dim=None) if weight_norm else linear


def nonlinear_layer(in_dim: int, out_dim: int, nonlinearity: str = "gated_tanh",
                    weight_norm: bool = False) -> nn.Module:
    """f(x): gated tanh (the paper) or Linear+ReLU (the popular reimplementations)."""
    if nonlinearity == "gated_tanh":
        return GatedTanh(in_dim, out_dim, weight_norm)
    if nonlinearity == "relu":
        return nn.Sequential(_linear(in_dim, out_dim, weight_norm), nn.ReLU())
    raise ValueError(f"model.nonlinearity must be one of {NONLINEARITIES}, not {nonlinearity!r}")


class QuestionEncoder(nn.Module):
    """Word embedding and a GRU; the question vector is the GRU state at each question's last token."""

    def __init__(self, vocab_size: int, embed_dim: int = 300, hidden_dim: int = 1024, padding_idx: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.gru = nn.GRU(embed_dim, hidden_dim, batch_first=True)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)  # [B, T, E]
        states, _ = self.gru(x)  # [B, T, H]; right padding comes after the true last token
        last = (lengths - 1).clamp(min=0).to(states.device)  # [B]
        return states[torch.arange(len(tokens), device=states.device), last]  # [B, H]


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax with masked-out (False) entries at exactly zero weight."""
    logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=dim) * mask


class TopDownAttention(nn.Module):
    """Top-down attention over regions, padded regions masked (Teney et al., eq. 4).

    `form="concat"`: a_i = w^T f([v_i; q]) (the paper); `form="product"`: a_i = w^T (f(v_i) * g(q)),
    the multiplicative variant (Kim et al. 2017, "Hadamard product for low-rank bilinear pooling").
    """

    def __init__(self, feature_dim: int, question_dim: int, hidden_dim: int,
                 nonlinearity: str = "gated_tanh", weight_norm: bool = False, form: str = "concat"):
        super().__init__()
        if form not in ATTENTION_FORMS:
            raise ValueError(f"model.attention must be one of {ATTENTION_FORMS}, not {form!r}")
        self.form = form
        if form == "concat":
            self.project = nonlinear_layer(feature_dim + question_dim, hidden_dim, nonlinearity, weight_norm)
        else:
            self.project = nonlinear_layer(feature_dim, hidden_dim, nonlinearity, weight_norm)
            self.project_question = nonlinear_layer(question_dim, hidden_dim, nonlinearity, weight_norm)
        self.score = _linear(hidden_dim, 1, weight_norm, bias=False)  # softmax ignores a shared bias

    def forward(self, features: torch.Tensor, question: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.form == "concat":
            q = question[:, None, :].expand(-1, features.shape[1], -1)  # [B, K, H]
            joint = self.project(torch.cat([features, q], dim=-1))  # [B, K, H]
        else:
            joint = self.project(features) * self.project_question(question)[:, None, :]  # [B, K, H]
        return masked_softmax(self.score(joint).squeeze(-1), mask)  # [B, K]


class UpDown(nn.Module):
    """Question encoder, top-down attention over regions, multiplicative fusion, sigmoid classifier.

    Code defaults are the VQA v2 settings: 36 regions of 2048-d features, hidden 1024, gated tanh.
    With `use_image=False` it is the question-only (blind) baseline: h = f_q(q).
    """

    def __init__(self, vocab_size: int, num_answers: int, feature_dim: int = 2048, embed_dim: int = 300,
                 hidden_dim: int = 1024, nonlinearity: str = "gated_tanh", weight_norm: bool = False,
                 dropout: float = 0.5, use_image: bool = True, attention: str = "concat"):
        super().__init__()
        self.use_image = use_image
        self.question = QuestionEncoder(vocab_size, embed_dim, hidden_dim)
        self.question_net = nonlinear_layer(hidden_dim, hidden_dim, nonlinearity, weight_norm)  # f_q
        if use_image:
            self.attention = TopDownAttention(feature_dim, hidden_dim, hidden_dim, nonlinearity, weight_norm,
                                              attention)
            self.image_net = nonlinear_layer(feature_dim, hidden_dim, nonlinearity, weight_norm)  # f_v
        self.classifier = nn.Sequential(  # f_o, then one logit per answer (sigmoid in the loss)
            nonlinear_layer(hidden_dim, 2 * hidden_dim, nonlinearity, weight_norm),
            nn.Dropout(dropout),
            _linear(2 * hidden_dim, num_answers, weight_norm),
        )

    def forward(self, tokens, lengths, features=None, mask=None, return_attention: bool = False):
        """Answer logits [B, A] (and attention weights [B, K] when asked)."""
        q = self.question(tokens, lengths)  # [B, H]
        h = self.question_net(q)  # [B, H]
        attention = None
        if self.use_image:
            features = features.to(q.dtype)  # float16 stores are converted here, on the device
            attention = self.attention(features, q, mask)  # [B, K]
            attended = torch.einsum("bk,bkd->bd", attention, features)  # [B, D]
            h = h * self.image_net(attended)  # [B, H]
        logits = self.classifier(h)  # [B, A]
        return (logits, attention) if return_attention else logits


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform linear weights (the direction, under weight norm) and zero biases; N(0, 0.1)
    word embeddings with a zero padding row; the GRU keeps PyTorch's default init."""
    if isinstance(module, nn.Linear):
        with torch.no_grad():
            if parametrize.is_parametrized(module, "weight"):
                direction = module.parametrizations.weight.original1
                nn.init.xavier_uniform_(direction)
                module.parametrizations.weight.original0.copy_(direction.norm())
            else:
                nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.1)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
