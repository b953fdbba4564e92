"""Up-Down image captioner: attention LSTM, top-down attention, language LSTM (Anderson et al. 2018, sec. 3.2).

Dimensions: B batch, K regions, T tokens, D feature, E embedding, H hidden, A attention, V vocab.
Training uses teacher forcing with cross-entropy that ignores padding (`caption_loss`).
One decoder step (`_step`) serves teacher forcing, greedy, beam and sampled decoding (SCST); its two
LSTMs are `captioning.lstm.FusedLSTMCell`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from updown_vqa.captioning.lstm import FusedLSTMCell

State = tuple[Tensor, Tensor, Tensor, Tensor]  # h1, c1, h2, c2, each [B, H]


class CaptionAttention(nn.Module):
    """a_{i,t} = w_a^T tanh(W_va v_i + W_ha h1_t), softmax over real regions (eq. 3-5)."""

    def __init__(
        self, feature_dim: int = 2048, hidden_dim: int = 1000, attention_dim: int = 512
    ) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, attention_dim, bias=False)  # W_va
        self.hidden_proj = nn.Linear(hidden_dim, attention_dim, bias=False)  # W_ha
        self.score = nn.Linear(attention_dim, 1, bias=False)  # w_a

    def forward(
        self, projected: Tensor, features: Tensor, mask: Tensor, hidden: Tensor
    ) -> tuple[Tensor, Tensor]:
        """projected [B, K, A] (= feature_proj(features), computed once per image), features [B, K, D],
        mask [B, K] (True = real region), hidden [B, H] -> attended [B, D], weights [B, K]."""
        query = self.hidden_proj(hidden).unsqueeze(1)  # [B, 1, A]
        scores = self.score(torch.tanh(projected + query)).squeeze(2)  # [B, K]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=1)  # [B, K], exactly 0 on padded regions
        attended = torch.bmm(weights.unsqueeze(1), features).squeeze(1)  # [B, D]
        return attended, weights


class _Image(NamedTuple):
    """Per-image tensors reused at every decoding step."""

    features: Tensor  # [B, K, D] (D = 0 for the blind captioner), padded regions zeroed
    projected: Tensor  # [B, K, A] (A = 0 for the blind captioner)
    mean: Tensor  # [B, D] mean over real regions (v-bar)
    mask: Tensor  # [B, K] bool

    def repeat(self, times: int) -> _Image:
        """Each image `times` times in a row ([B, ...] -> [B * times, ...]), for beam search."""
        return _Image(*(tensor.repeat_interleave(times, dim=0) for tensor in self))


def init_weights(module: nn.Module) -> None:
    """Xavier linear maps, uniform embeddings, forget-gate bias 1 (Jozefowicz et al. 2015); use via model.apply."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.uniform_(module.weight, -0.1, 0.1)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, FusedLSTMCell):
        module.reset_parameters()
        with torch.no_grad():
            module.bias.zero_()
            module.bias[module.hidden_size : 2 * module.hidden_size] = 1.0


def caption_loss(logits: Tensor, targets: Tensor, pad_index: int = 0) -> Tensor:
    """Mean cross-entropy over non-pad targets: logits [B, T-1, V], targets [B, T-1] (= tokens[:, 1:])."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_index)


class UpDownCaptioner(nn.Module):
    """Two-layer LSTM captioner with top-down attention over region features (Anderson et al. 2018, sec. 3.2).

    use_image=False builds the blind baseline: the same LSTMs without the image inputs, features ignored.
    """

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int = 2048,
        embed_dim: int = 1000,
        hidden_dim: int = 1000,
        attention_dim: int = 512,
        dropout: float = 0.5,
        use_image: bool = True,
        pad_index: int = 0,
        bos_index: int = 2,
        eos_index: int = 3,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.hidden_dim = hidden_dim
        self.use_image = use_image
        self.pad_index, self.bos_index, self.eos_index = pad_index, bos_index, eos_index
        image_dim = feature_dim if use_image else 0
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_index)
        # Attention LSTM input: [h2_{t-1}; v-bar; W_e Pi_t] (eq. 2).
        self.attention_lstm = FusedLSTMCell(hidden_dim + image_dim + embed_dim, hidden_dim)
        self.attention = (
            CaptionAttention(feature_dim, hidden_dim, attention_dim) if use_image else None
        )
        # Language LSTM input: [v-hat_t; h1_t] (eq. 6).
        self.language_lstm = FusedLSTMCell(image_dim + hidden_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, vocab_size)
        self.apply(init_weights)

    def forward(
        self, features: Tensor, mask: Tensor, tokens: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher forcing: features [B, K, D], mask [B, K], tokens [B, T] starting with BOS
        -> logits [B, T-1, V] predicting tokens[:, 1:] (and attention weights [B, T-1, K])."""
        image = self._prepare(features, mask)
        state = self._initial_state(tokens.size(0), image.mean)
        logits, attention = [], []
        for t in range(tokens.size(1) - 1):
            step_logits, weights, state = self._step(tokens[:, t], state, image)
            logits.append(step_logits)
            attention.append(weights)
        logits = torch.stack(logits, 1)  # [B, T-1, V]
        return (logits, torch.stack(attention, 1)) if return_attention else logits

    @torch.no_grad()
    def greedy(self, features: Tensor, mask: Tensor, max_length: int = 20) -> tuple[Tensor, Tensor]:
        """Argmax decoding -> tokens [B, L] (EOS included, then pad; L <= max_length), attention [B, L, K]."""
        batch_size = features.size(0)
        image = self._prepare(features, mask)
        state = self._initial_state(batch_size, image.mean)
        word = mask.new_full((batch_size,), self.bos_index, dtype=torch.long)
        finished = torch.zeros_like(word, dtype=torch.bool)
        tokens, attention = [], []
        for _ in range(max_length):
            logits, weights, state = self._step(word, state, image)
            word = logits.argmax(1).masked_fill(finished, self.pad_index)  # [B]
            tokens.append(word)
            attention.append(weights.masked_fill(finished.unsqueeze(1), 0.0))
            finished = finished | (word == self.eos_index)
            if finished.all():
                break
        return torch.stack(tokens, 1), torch.stack(attention, 1)

    def sample(
        self, features: Tensor, mask: Tensor, samples: int = 5, max_length: int = 20
    ) -> tuple[Tensor, Tensor]:
        """Captions drawn word by word from the model's distribution (multinomial), `samples` per image,
        with gradients -> tokens [B * samples, L] (each image's rows together; EOS included, then pad)
        and the log-probability of each drawn word [B * samples, L] (0 after EOS)."""
        image = self._prepare(features, mask).repeat(samples)
        rows = features.size(0) * samples
        state = self._initial_state(rows, image.mean)
        word = mask.new_full((rows,), self.bos_index, dtype=torch.long)
        finished = torch.zeros_like(word, dtype=torch.bool)
        tokens, log_probs = [], []
        for _ in range(max_length):
            logits, _, state = self._step(word, state, image)
            step_log_probs = logits.float().log_softmax(1)  # [B * samples, V]
            word = torch.multinomial(step_log_probs.detach().exp(), 1).squeeze(1)
            chosen = step_log_probs.gather(1, word.unsqueeze(1)).squeeze(1)  # [B * samples]
            word = word.masked_fill(finished, self.pad_index)
            tokens.append(word)
            log_probs.append(chosen.masked_fill(finished, 0.0))
            finished = finished | (word == self.eos_index)
            if finished.all():
                break
        return torch.stack(tokens, 1), torch.stack(log_probs, 1)

    @torch.no_grad()
    def beam_search(
        self,
        features: Tensor,
        mask: Tensor,
        beam_size: int = 3,
        max_length: int = 20,
        length_penalty: float = 0.0,
    ) -> Tensor:
        """Beam search on summed log-probabilities -> best tokens [B, L] (EOS included, then pad).

        Finished hypotheses stay in the beam; the winner maximises score / length**length_penalty
        (0 = raw log-probability). beam_size=1 reproduces `greedy`.
        """
        batch_size, vocab = features.size(0), self.vocab_size
        if not 1 <= beam_size <= vocab:
            raise ValueError(f"beam_size must be in [1, vocab_size={vocab}], got {beam_size}")
        image = self._prepare(features, mask).repeat(beam_size)
        state = self._initial_state(batch_size * beam_size, image.mean)
        word = mask.new_full((batch_size * beam_size,), self.bos_index, dtype=torch.long)
        scores = torch.full((batch_size, beam_size), -math.inf, device=mask.device)
        scores[:, 0] = 0.0  # all beams start identical: expand only the first
        finished = torch.zeros_like(word, dtype=torch.bool)  # [B * beam]
        lengths = torch.zeros_like(word)  # [B * beam]
        history = word.new_empty(batch_size * beam_size, 0)  # [B * beam, t]
        offsets = torch.arange(batch_size, device=word.device).unsqueeze(1) * beam_size  # [B, 1]
        for _ in range(max_length):
            logits, _, state = self._step(word, state, image)
            log_probs = self._continuations(
                logits.float().log_softmax(1), finished
            )  # [B * beam, V]
            candidates = scores.unsqueeze(2) + log_probs.view(
                batch_size, beam_size, vocab
            )  # [B, beam, V]
            scores, flat = candidates.view(batch_size, -1).topk(beam_size, dim=1)  # [B, beam]
            rows = (
                flat // vocab + offsets
            ).flatten()  # [B * beam], the hypothesis each one extends
            word = (flat % vocab).flatten()  # [B * beam]
            state = tuple(tensor[rows] for tensor in state)
            lengths = lengths[rows] + (~finished[rows]).long()
            finished = finished[rows] | (word == self.eos_index)
            history = torch.cat([history[rows], word.unsqueeze(1)], 1)
            if finished.all():
                break
        return self._best(history, scores, lengths, length_penalty)

    def _continuations(self, log_probs: Tensor, finished: Tensor) -> Tensor:
        """Finished hypotheses may only continue with pad, at no cost: log_probs [N, V] -> [N, V]."""
        padded = torch.full_like(log_probs, -math.inf)
        padded[:, self.pad_index] = 0.0
        return torch.where(finished.unsqueeze(1), padded, log_probs)

    def _best(
        self, history: Tensor, scores: Tensor, lengths: Tensor, length_penalty: float
    ) -> Tensor:
        """Highest (length-normalised) hypothesis per image, trimmed to the longest kept: [B * beam, L] -> [B, L']."""
        batch_size, beam_size = scores.shape
        normalised = (
            scores / lengths.view(batch_size, beam_size).clamp(min=1).float() ** length_penalty
        )
        best = (
            normalised.argmax(1) + torch.arange(batch_size, device=scores.device) * beam_size
        )  # [B]
        tokens = history[best]  # [B, L]
        return tokens[:, : int(lengths[best].max())]

    def _prepare(self, features: Tensor, mask: Tensor) -> _Image:
        """Zero padded regions, mean-pool real ones and project once for attention."""
        mask = mask.bool()
        if self.attention is None:
            features = features.new_zeros(*mask.shape, 0)  # the blind captioner sees nothing
        features = features.masked_fill(~mask.unsqueeze(2), 0.0)  # [B, K, D]
        count = mask.sum(1, keepdim=True).clamp(min=1).to(features.dtype)  # [B, 1]
        mean = features.sum(1) / count  # [B, D]
        projected = (
            self.attention.feature_proj(features) if self.attention is not None else features
        )  # [B, K, A]
        return _Image(features, projected, mean, mask)

    def _initial_state(self, batch_size: int, reference: Tensor) -> State:
        """Zero hidden and cell states of both LSTMs."""
        zeros = reference.new_zeros(batch_size, self.hidden_dim)  # [B, H]
        return zeros, zeros, zeros, zeros

    def _step(self, word: Tensor, state: State, image: _Image) -> tuple[Tensor, Tensor, State]:
        """One decoding step: previous word [B] -> logits [B, V], attention weights [B, K], new state."""
        h1, c1, h2, c2 = state
        x1 = torch.cat([h2, image.mean, self.embedding(word)], 1)  # [B, H + D + E]
        h1, c1 = self.attention_lstm(x1, (h1, c1))
        if self.attention is None:
            attended, weights = (
                image.mean,
                image.mask.new_zeros(image.mask.shape, dtype=h1.dtype),
            )  # [B, 0], [B, K]
        else:
            attended, weights = self.attention(
                image.projected, image.features, image.mask, h1
            )  # [B, D], [B, K]
        h2, c2 = self.language_lstm(torch.cat([attended, h1], 1), (h2, c2))  # [B, H]
        logits = self.output(self.dropout(h2))  # [B, V]
        return logits, weights, (h1, c1, h2, c2)
