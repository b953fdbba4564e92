"""Up-Down captioner: fused LSTM cell, attention masking, teacher forcing, greedy and beam decoding."""

import math

import pytest
import torch
from torch import nn

from updown_vqa.captioning.lstm import FusedLSTMCell
from updown_vqa.captioning.model import UpDownCaptioner, caption_loss, init_weights

VOCAB, FEATURES, PAD, BOS, EOS = 11, 6, 0, 2, 3


def tiny_captioner(**kwargs) -> UpDownCaptioner:
    torch.manual_seed(0)
    sizes = dict(feature_dim=FEATURES, embed_dim=5, hidden_dim=7, attention_dim=4)
    return UpDownCaptioner(VOCAB, **{**sizes, **kwargs})


def batch(batch_size=3, regions=4, length=5, seed=1):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch_size, regions, FEATURES, generator=generator)  # [B, K, D]
    mask = torch.ones(batch_size, regions, dtype=torch.bool)
    mask[0, -1] = False  # one padded region in the first image
    tokens = torch.randint(4, VOCAB, (batch_size, length), generator=generator)  # [B, T]
    tokens[:, 0] = BOS
    tokens[0, -1] = PAD
    return features, mask, tokens


def test_fused_cell_equals_two_products_and_lstm_cell():
    torch.manual_seed(0)
    cell = nn.LSTMCell(5, 7)
    fused = FusedLSTMCell.from_lstm_cell(cell)
    x, h, c = torch.randn(4, 5), torch.randn(4, 7), torch.randn(4, 7)
    # Two products: x W_xh + h W_hh + b, sliced out of the stacked weight.
    gates = x @ fused.weight[:5] + h @ fused.weight[5:] + fused.bias
    i, f, g, o = gates.chunk(4, 1)
    c_two = f.sigmoid() * c + i.sigmoid() * g.tanh()
    h_two = o.sigmoid() * c_two.tanh()
    h_fused, c_fused = fused(x, (h, c))
    h_ref, c_ref = cell(x, (h, c))
    torch.testing.assert_close(h_fused, h_two, atol=1e-6, rtol=0)
    torch.testing.assert_close(c_fused, c_two, atol=1e-6, rtol=0)
    torch.testing.assert_close(h_fused, h_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(c_fused, c_ref, atol=1e-6, rtol=0)
    assert fused.weight.shape == (5 + 7, 4 * 7)


def test_init_weights_sets_forget_bias_and_zero_pad_embedding():
    model = tiny_captioner()
    model.apply(init_weights)
    bias = model.attention_lstm.bias.detach()
    assert torch.equal(bias[7:14], torch.ones(7)) and not bias[:7].any() and not bias[14:].any()
    assert not model.embedding.weight[PAD].any()


@pytest.mark.parametrize("use_image", [True, False])
def test_forward_backward_reaches_every_parameter(use_image):
    model = tiny_captioner(use_image=use_image)
    features, mask, tokens = batch()
    logits, attention = model(features, mask, tokens, return_attention=True)
    assert logits.shape == (3, 4, VOCAB)
    assert attention.shape == (3, 4, 4)
    caption_loss(logits, tokens[:, 1:], PAD).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_caption_loss_ignores_padding():
    logits = torch.randn(2, 3, VOCAB)
    targets = torch.tensor([[5, 3, PAD], [4, 6, 3]])
    real = targets != PAD
    expected = -logits.log_softmax(2).gather(2, targets.unsqueeze(2)).squeeze(2)[real].mean()
    torch.testing.assert_close(caption_loss(logits, targets, PAD), expected)


def test_padded_regions_get_zero_attention():
    model = tiny_captioner().eval()
    features, mask, tokens = batch()
    _, attention = model(features, mask, tokens, return_attention=True)
    assert torch.all(attention[0, :, -1] == 0)
    assert torch.all(attention[1:] > 0)
    torch.testing.assert_close(attention.sum(2), torch.ones(3, 4))


def test_extra_padded_regions_do_not_change_outputs():
    model = tiny_captioner().eval()
    features, mask, tokens = batch()
    padded_features = torch.cat([features, 100 * torch.randn(3, 2, FEATURES)], 1)  # [B, K + 2, D]
    padded_mask = torch.cat([mask, torch.zeros(3, 2, dtype=torch.bool)], 1)
    logits, attention = model(features, mask, tokens, return_attention=True)
    padded_logits, padded_attention = model(
        padded_features, padded_mask, tokens, return_attention=True
    )
    torch.testing.assert_close(padded_logits, logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(padded_attention[:, :, :4], attention, atol=1e-6, rtol=0)
    assert torch.all(padded_attention[:, :, 4:] == 0)
    assert torch.equal(
        model.greedy(padded_features, padded_mask)[0], model.greedy(features, mask)[0]
    )


def test_blind_captioner_ignores_features():
    features, mask, tokens = batch()
    other = torch.randn_like(features)
    blind = tiny_captioner(use_image=False).eval()
    torch.testing.assert_close(
        blind(other, mask, tokens), blind(features, mask, tokens), atol=0, rtol=0
    )
    assert torch.equal(blind.greedy(other, mask)[0], blind.greedy(features, mask)[0])
    sighted = tiny_captioner().eval()
    assert not torch.allclose(sighted(other, mask, tokens), sighted(features, mask, tokens))


@pytest.mark.parametrize("seed", range(5))
def test_beam_size_one_equals_greedy(seed):
    model = tiny_captioner(dropout=0.0).eval()
    with torch.no_grad():
        model.output.bias[EOS] += 1.0  # make some captions end before max_length
    features, mask, _ = batch(batch_size=6, seed=seed)
    greedy_tokens, _ = model.greedy(features, mask, max_length=8)
    beam_tokens = model.beam_search(features, mask, beam_size=1, max_length=8)
    assert torch.equal(beam_tokens, greedy_tokens)


class MarkovCaptioner(UpDownCaptioner):
    """Decoder stub: the next-word logits of image b are row `previous word` of features[b] ([V, V])."""

    def _step(self, word, state, image):
        logits = image.features[torch.arange(word.size(0)), word]  # [B, V]
        return logits, image.mask.float(), state


def markov(transitions: dict[int, dict[int, float]]) -> torch.Tensor:
    """[V, V] log-probability table from {previous: {next: probability}}; unlisted words impossible."""
    table = torch.full((VOCAB, VOCAB), -1e9)
    for previous, following in transitions.items():
        for word, probability in following.items():
            table[previous, word] = math.log(probability)
    return table


def markov_captioner_inputs(*tables):
    features = torch.stack(
        tables
    )  # [B, V, V]: "regions" are previous words, "features" next-word logits
    model = MarkovCaptioner(
        VOCAB, feature_dim=VOCAB, embed_dim=2, hidden_dim=2, attention_dim=2
    ).eval()
    return model, features, torch.ones(features.shape[:2], dtype=torch.bool)


def test_greedy_stops_each_caption_at_eos_and_pads_after():
    early = markov(
        {BOS: {5: 1.0}, 5: {EOS: 1.0}, EOS: {9: 1.0}}
    )  # a decoder ignoring EOS would go on
    late = markov({BOS: {6: 1.0}, 6: {7: 1.0}, 7: {8: 1.0}, 8: {EOS: 1.0}})
    model, features, mask = markov_captioner_inputs(early, late)
    tokens, attention = model.greedy(features, mask, max_length=10)
    assert tokens.tolist() == [[5, EOS, PAD, PAD], [6, 7, 8, EOS]]
    assert attention.shape == (2, 4, VOCAB)
    assert torch.all(attention[0, 2:] == 0)
    assert torch.equal(model.beam_search(features, mask, beam_size=1, max_length=10), tokens)


def test_greedy_and_beam_respect_max_length():
    endless = markov({BOS: {5: 1.0}, 5: {5: 0.9, EOS: 0.1}})
    model, features, mask = markov_captioner_inputs(endless)
    tokens, attention = model.greedy(features, mask, max_length=3)
    assert tokens.tolist() == [[5, 5, 5]]
    assert attention.shape == (1, 3, VOCAB)
    assert model.beam_search(features, mask, beam_size=1, max_length=3).tolist() == [[5, 5, 5]]


def test_beam_search_finds_likelier_caption_than_greedy():
    # Greedy takes 4 (0.6) and then some word of 0.2; the beam keeps 5 (0.4) whose EOS has 0.9.
    trap = markov({BOS: {4: 0.6, 5: 0.4}, 4: {6: 0.2, 7: 0.2, 8: 0.2, 9: 0.2, 10: 0.2}, 5: {EOS: 0.9, 6: 0.1},
                   6: {EOS: 1.0}, 7: {EOS: 1.0}, 8: {EOS: 1.0}, 9: {EOS: 1.0}, 10: {EOS: 1.0}})  # fmt: skip
    plain = markov({BOS: {6: 0.7, 7: 0.3}, 6: {EOS: 1.0}, 7: {EOS: 1.0}})
    model, features, mask = markov_captioner_inputs(trap, plain)
    assert model.greedy(features, mask)[0].tolist() == [[4, 6, EOS], [6, EOS, PAD]]
    assert model.beam_search(features, mask, beam_size=2).tolist() == [[5, EOS], [6, EOS]]


def test_length_penalty_favours_longer_captions():
    short = markov({BOS: {5: 0.5, 6: 0.5}, 5: {EOS: 0.9, 9: 0.1}, 9: {EOS: 1.0},
                    6: {7: 0.8, 10: 0.2}, 7: {8: 0.8, 10: 0.2}, 8: {EOS: 0.8, 10: 0.2}, 10: {EOS: 1.0}})  # fmt: skip
    model, features, mask = markov_captioner_inputs(short)
    # Raw: 5 EOS (0.45) beats 6 7 8 EOS (0.5 * 0.8^3 = 0.256); per token (penalty 1) the long one wins:
    # log 0.45 / 2 = -0.40 < log 0.256 / 4 = -0.34.
    assert model.beam_search(features, mask, beam_size=3, length_penalty=0.0).tolist() == [[5, EOS]]
    assert model.beam_search(features, mask, beam_size=3, length_penalty=1.0).tolist() == [
        [6, 7, 8, EOS]
    ]
