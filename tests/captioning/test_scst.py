"""Self-critical sequence training: sampling, rewards, baselines, the sign of the update, the reward
rising on a tiny set, and `stage=scst init=CKPT` as a command (its own run folder, init checks)."""

import pytest
import torch
from conftest import compose_config, tiny_overrides
from hydra.utils import instantiate

from updown_vqa.captioning.metrics import sentence_bleu
from updown_vqa.captioning.model import UpDownCaptioner
from updown_vqa.captioning.scst import (
    check_scst,
    mean_of_others,
    reward_scorer,
    reward_strings,
    scst_loss,
)
from updown_vqa.core.checkpointing import load_init_weights
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.training import build_model

VOCAB = ["<pad>", "<unk>", "<bos>", "<eos>", "a", "red", "circle"]


def sequence_log_prob(model: UpDownCaptioner, features, mask, tokens) -> torch.Tensor:
    """Teacher-forced log p of each sampled caption [N, L] up to and including its EOS -> [N]."""
    bos = tokens.new_full((tokens.size(0), 1), model.bos_index)
    logits = model(features, mask, torch.cat([bos, tokens], 1))  # [N, L, V]
    chosen = logits.log_softmax(2).gather(2, tokens.unsqueeze(2)).squeeze(2)
    is_eos = (tokens == model.eos_index).long()
    return (chosen * ((is_eos.cumsum(1) - is_eos) == 0)).sum(1)


def tiny_model(seed=0) -> UpDownCaptioner:
    torch.manual_seed(seed)
    return UpDownCaptioner(len(VOCAB), feature_dim=6, embed_dim=8, hidden_dim=16, attention_dim=8, dropout=0.0)


def test_sampling_gives_the_log_probabilities_of_the_drawn_words():
    model = tiny_model()
    features, mask = torch.randn(2, 3, 6), torch.tensor([[True, True, False], [True, True, True]])
    tokens, log_probs = model.sample(features, mask, samples=4, max_length=7)
    assert tokens.shape == log_probs.shape and tokens.shape[0] == 8 and tokens.shape[1] <= 7
    assert log_probs.requires_grad and torch.all(log_probs <= 0)
    forced = sequence_log_prob(model, features.repeat_interleave(4, 0), mask.repeat_interleave(4, 0), tokens)
    torch.testing.assert_close(log_probs.sum(1), forced)  # zero after EOS, the model's own probabilities
    for row in tokens.tolist():  # nothing but padding after an EOS
        if 3 in row:
            assert set(row[row.index(3) + 1:]) <= {0}
    again = model.sample(features, mask, samples=4, max_length=7)[0]
    assert not torch.equal(again, tokens) or tokens.numel() < 4  # drawn, not argmax


def test_reward_strings_append_the_end_token_only_to_captions_that_ended():
    tokens = torch.tensor([[4, 5, 6, 3, 0], [4, 6, 6, 6, 6]])
    assert reward_strings(tokens, VOCAB, eos_index=3) == ["a red circle <eos>", "a circle circle circle circle"]
    scorer = reward_scorer([1, 2], [["a red circle"], ["two blue squares"]])  # idf needs two images
    ended, cut = scorer.score("a red circle <eos>", 1), scorer.score("a red circle", 1)
    assert ended > cut > 0  # the references end with <eos> too


def test_a_bleu_weight_adds_the_captions_own_bleu4_to_its_cider_d():
    image_ids, references = [1, 2], [["a red circle above a blue square", "a red circle"], ["two blue squares"]]
    cider_only = reward_scorer(image_ids, references)
    mixed = reward_scorer(image_ids, references, cider_weight=0.5, bleu_weight=3.0)
    caption = "a red circle above a green square <eos>"
    refs = ["a red circle above a blue square <eos>", "a red circle <eos>"]
    bleu4 = sentence_bleu(caption, refs)[3]
    assert 0.3 < bleu4 < 1  # some 4-grams match, not all
    assert mixed.score(caption, 1) == pytest.approx(0.5 * cider_only.score(caption, 1) + 3.0 * bleu4)
    bleu_only = reward_scorer(image_ids, references, cider_weight=0.0, bleu_weight=1.0)
    assert bleu_only.score(caption, 1) == pytest.approx(bleu4)


@pytest.mark.parametrize("weights, message", [
    ({"bleu_weight": -1.0}, r"model.scst.bleu_weight=-1.0: use a finite number >= 0"),
    ({"cider_weight": float("nan")}, r"model.scst.cider_weight=nan: use a finite number >= 0"),
    ({"cider_weight": 0.0}, r"model.scst.cider_weight=0 and model.scst.bleu_weight=0: the reward would be 0"),
])
def test_reward_weights_that_cannot_train_are_refused(weights, message):
    with pytest.raises(UpdownError, match=message):
        check_scst(weights)


def test_mean_baseline_is_the_mean_of_the_other_samples_of_the_same_image():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 40.0])
    assert mean_of_others(rewards, 3).tolist() == [2.5, 2.0, 1.5, 25.0, 25.0, 10.0]
    with pytest.raises(UpdownError, match="model.scst.samples=1: the mean baseline needs"):
        check_scst({"samples": 1, "baseline": "mean"})
    with pytest.raises(UpdownError, match="model.scst.baseline=beam: use greedy or mean"):
        check_scst({"baseline": "beam"})


@pytest.mark.parametrize("advantage", [2.0, -2.0])
def test_one_step_raises_a_sample_above_the_baseline_and_lowers_one_below(advantage):
    model = tiny_model()
    features, mask = torch.randn(1, 3, 6), torch.ones(1, 3, dtype=torch.bool)
    torch.manual_seed(1)
    tokens, log_probs = model.sample(features, mask, samples=1, max_length=6)
    before = sequence_log_prob(model, features, mask, tokens).item()
    loss = scst_loss(log_probs, tokens, torch.tensor([advantage]), eos_index=3)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.05).step()
    with torch.no_grad():
        after = sequence_log_prob(model, features, mask, tokens).item()
    assert (after - before) * advantage > 0 and abs(after - before) > 1e-4


@pytest.fixture(scope="module")
def scst_setup(data_dir, tmp_path_factory):
    """A tiny captioner with stage=scst settings and its data, built as train.py builds them."""
    out = str(tmp_path_factory.mktemp("out"))
    cfg = compose_config(tiny_overrides(data_dir, out) + ["task=caption", "stage=scst", "model.max_decode_length=8",
                                                          "model.dropout=0"], out)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    torch.manual_seed(0)
    return cfg, build_model(cfg, datamodule), datamodule


def test_scst_rewards_rise_on_a_tiny_set(scst_setup):
    cfg, module, datamodule = scst_setup
    train = datamodule.datasets["train"]
    module.reward_scorer = reward_scorer(train.image_ids.tolist(), train.references)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    module.train()
    mean_rewards = []
    for _ in range(4):
        for batch in datamodule.train_dataloader():  # 120 images, 32 per batch
            terms = module.scst_terms(batch)
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
            mean_rewards.append(terms["rewards"].mean().item())
    assert len(terms["rewards"]) == 5 * len(batch["image_ids"])  # model.scst.samples per image
    first, last = sum(mean_rewards[:4]) / 4, sum(mean_rewards[-4:]) / 4
    assert last > 1.3 * first, mean_rewards  # from about 0.07 to 0.12 here (an untrained model)


def test_init_from_another_task_or_vocabulary_is_refused(scst_setup, tmp_path):
    _, module, _ = scst_setup
    vqa = tmp_path / "vqa.ckpt"
    torch.save({"task": "vqa", "state_dict": {}, "hyper_parameters": {"answers": ["yes"]}}, vqa)
    with pytest.raises(UpdownError, match=r"init=.*vqa.ckpt: a vqa checkpoint, not a caption one"):
        load_init_weights(module, str(vqa))
    other = tmp_path / "other.ckpt"
    hparams = dict(module.hparams, vocab=list(module.hparams.vocab) + ["hexagon"])
    torch.save({"task": "caption", "state_dict": module.state_dict(), "hyper_parameters": hparams}, other)
    words = len(module.hparams.vocab)
    with pytest.raises(UpdownError, match=rf"other.ckpt: the checkpoint's word vocabulary \({words + 1}\) "
                                          rf"differs from this data's \({words}\)"):
        load_init_weights(module, str(other))
    same = tmp_path / "same.ckpt"
    torch.save({"task": "caption", "state_dict": {k: v + 1 for k, v in module.state_dict().items()},
                "hyper_parameters": dict(module.hparams)}, same)
    weight = module.model.output.weight.detach().clone()
    load_init_weights(module, str(same))
    torch.testing.assert_close(module.model.output.weight.detach(), weight + 1)


def test_stage_scst_runs_in_its_own_folder_and_trains_on_images(scst_setup):
    cfg, module, datamodule = scst_setup
    assert cfg.stage == "scst" and cfg.run_name == "shapes_caption_scst" and cfg.name == "shapes_caption"
    # experiment_stage/shapes_caption_scst: the mean baseline, the paper's CIDEr-D reward
    assert module.hparams.scst == {"samples": 5, "baseline": "mean", "cider_weight": 1.0, "bleu_weight": 0.0}
    batch = next(iter(datamodule.train_dataloader()))
    assert len(batch["references"]) == len(batch["image_ids"]) == 32  # one row per image, all its captions
