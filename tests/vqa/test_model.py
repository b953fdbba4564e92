"""The nn.Modules: every parameter learns, padding is invisible, the paper's layers compute what they say."""

import pytest
import torch

from updown_vqa.vqa.model import GatedTanh, QuestionEncoder, TopDownAttention, UpDown, init_weights

B, T, K, D, V, A = 3, 5, 4, 12, 20, 7


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, V, (B, T), generator=g)
    lengths = torch.tensor([5, 3, 1])
    tokens[1, 3:] = 0
    tokens[2, 1:] = 0
    features = torch.randn(B, K, D, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    return tokens, lengths, features, mask


@pytest.mark.parametrize("nonlinearity", ["gated_tanh", "relu"])
@pytest.mark.parametrize("use_image", [True, False])
@pytest.mark.parametrize("weight_norm", [False, True])
@pytest.mark.parametrize("attention", ["concat", "product"])
def test_every_parameter_gets_a_gradient(nonlinearity, use_image, weight_norm, attention):
    model = UpDown(V, A, feature_dim=D, embed_dim=8, hidden_dim=16, nonlinearity=nonlinearity,
                   weight_norm=weight_norm, use_image=use_image, attention=attention)
    model.apply(init_weights)
    tokens, lengths, features, mask = inputs()
    logits = model(tokens, lengths, features, mask)
    assert logits.shape == (B, A)
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


def test_question_vector_ignores_padding():
    encoder = QuestionEncoder(V, 8, 16)
    tokens, lengths, _, _ = inputs()
    padded = torch.cat([tokens, torch.zeros(B, 6, dtype=torch.long)], dim=1)
    torch.testing.assert_close(encoder(tokens, lengths), encoder(padded, lengths))
    # and it is not the state after the padding: reading past the end would change the answer
    full = encoder(padded, torch.full((B,), padded.shape[1]))
    assert not torch.allclose(full[1], encoder(tokens, lengths)[1])


def test_padded_regions_get_no_attention_and_change_nothing():
    model = UpDown(V, A, feature_dim=D, embed_dim=8, hidden_dim=16).eval()
    tokens, lengths, features, mask = inputs()
    logits, attention = model(tokens, lengths, features, mask, return_attention=True)
    assert torch.all(attention[~mask] == 0)
    torch.testing.assert_close(attention.sum(1), torch.ones(B))
    noisy = features.clone()
    noisy[~mask] = 1e3 * torch.randn_like(noisy[~mask])
    extra = torch.cat([noisy, torch.randn(B, 2, D)], dim=1)
    extra_mask = torch.cat([mask, torch.zeros(B, 2, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(tokens, lengths, extra, extra_mask), logits)


def test_gated_tanh_is_tanh_times_sigmoid():
    layer = GatedTanh(4, 3)
    x = torch.randn(5, 4)
    w, b = layer.linear.weight, layer.linear.bias
    expected = torch.tanh(x @ w[:3].T + b[:3]) * torch.sigmoid(x @ w[3:].T + b[3:])
    torch.testing.assert_close(layer(x), expected)


def test_attention_follows_the_question():
    attention = TopDownAttention(D, 16, 16)
    _, _, features, mask = inputs()
    a1 = attention(features, torch.randn(B, 16), mask)
    a2 = attention(features, torch.randn(B, 16), mask)
    assert not torch.allclose(a1[0], a2[0])


def test_blind_model_ignores_the_image():
    model = UpDown(V, A, feature_dim=D, embed_dim=8, hidden_dim=16, use_image=False).eval()
    tokens, lengths, features, mask = inputs()
    torch.testing.assert_close(model(tokens, lengths, features, mask),
                               model(tokens, lengths, torch.randn_like(features), mask))


def test_unknown_nonlinearity_is_named():
    with pytest.raises(ValueError, match="tanh_gated"):
        UpDown(V, A, nonlinearity="tanh_gated")
