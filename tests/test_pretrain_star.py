"""STaR distillation losses (pretrain/star.py): math, padding, gradients, configuration errors."""
from __future__ import annotations

import itertools

import pytest
import torch

from s3prl_plugins.pretrain.config import ConfigError
from s3prl_plugins.pretrain.star import DISTANCES, NORMALIZATIONS, StarLossConfig, star_loss, temporal_gram

LAYERS = 3


def make_states(batch=2, frames=7, dim=6, layers=LAYERS, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = [torch.randn(batch, frames, dim, generator=gen) for _ in range(layers)]
    zeroth = torch.randn(batch, frames, dim, generator=gen)
    return hidden, zeroth


def make_attention(batch, frames, heads, layers, valid, seed):
    gen = torch.Generator().manual_seed(seed)
    maps = []
    for _ in range(layers):
        logits = torch.randn(batch, heads, frames, frames, generator=gen)
        logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))  # key padding mask
        maps.append(logits.softmax(-1))
    return maps


def all_valid(batch, frames):
    return torch.ones(batch, frames, dtype=torch.bool)


CONFIGS = [StarLossConfig(normalization=n, distance=d) for n, d in itertools.product(NORMALIZATIONS, DISTANCES)]
CONFIG_IDS = [f"{c.normalization}-{c.distance}" for c in CONFIGS]


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_zero_for_identical_models_and_positive_otherwise(cfg):
    hidden, zeroth = make_states()
    valid = all_valid(2, 7)
    loss, logs = star_loss(hidden, hidden, zeroth, zeroth, valid, cfg)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert abs(loss.item()) < 1e-5
    other, other_zeroth = make_states(seed=1)
    loss, logs = star_loss(other, hidden, other_zeroth, zeroth, valid, cfg)
    assert loss.item() > 1e-3
    assert logs["layer_wise"].item() > 0 and logs["intra_layer"].item() > 0
    assert torch.allclose(logs["loss"], logs["layer_wise"] + logs["intra_layer"])


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_invariant_to_an_orthogonal_rotation_of_the_student_features(cfg):
    """G = H H^T and H^{l-1} (H^l)^T do not change when every layer's features are rotated by one Q."""
    student, student_zeroth = make_states(dim=5, seed=3)
    teacher, teacher_zeroth = make_states(dim=8, seed=4)
    valid = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(5)))
    base, _ = star_loss(student, teacher, student_zeroth, teacher_zeroth, valid, cfg)
    rotated, _ = star_loss([h @ rotation for h in student], teacher, student_zeroth @ rotation, teacher_zeroth,
                           valid, cfg)
    assert torch.allclose(base, rotated, rtol=1e-4, atol=1e-6)
    # a rotation of one layer only changes the intra-layer Grams of its neighbours, so it must matter
    mixed = [student[0] @ rotation] + student[1:]
    changed, _ = star_loss(mixed, teacher, student_zeroth, teacher_zeroth, valid, cfg)
    assert not torch.allclose(base, changed, rtol=1e-3)


def test_student_and_teacher_widths_may_differ():
    student, student_zeroth = make_states(dim=4)
    teacher, teacher_zeroth = make_states(dim=12, seed=2)
    student = [h.requires_grad_() for h in student]
    loss, _ = star_loss(student, teacher, student_zeroth, teacher_zeroth, all_valid(2, 7))
    loss.backward()
    assert torch.isfinite(loss) and all(h.grad.shape == h.shape for h in student)


@pytest.mark.parametrize("cfg", CONFIGS + [StarLossConfig(avg_attn_weight=0.5, layer_wise_include_input=True,
                                                          input_weight=0.3, layer_weights=[1.0, 0.0, 2.0])],
                         ids=CONFIG_IDS + ["attention-weighted"])
def test_padded_batch_equals_mean_of_single_utterances(cfg):
    """Padding is batch invariant: each utterance's loss is normalised by its own valid frames."""
    lengths = [9, 5, 2]
    frames, batch = max(lengths), len(lengths)
    valid = torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None]
    student, student_zeroth = make_states(batch, frames, dim=4, seed=6)
    teacher, teacher_zeroth = make_states(batch, frames, dim=7, seed=7)
    student_attn = make_attention(batch, frames, 2, LAYERS, valid, seed=8)
    teacher_attn = make_attention(batch, frames, 3, LAYERS, valid, seed=9)
    # garbage in the padded frames must not matter
    student = [h.masked_fill(~valid[..., None], 1e3) for h in student]
    teacher = [h.masked_fill(~valid[..., None], -7.0) for h in teacher]
    batched, _ = star_loss(student, teacher, student_zeroth, teacher_zeroth, valid, cfg,
                           student_attention=student_attn, teacher_attention=teacher_attn)
    singles = []
    for b, n in enumerate(lengths):
        cut = lambda xs: [x[b:b + 1, :n] for x in xs]  # noqa: E731
        cut_attn = lambda xs: [x[b:b + 1, :, :n, :n] for x in xs]  # noqa: E731
        loss, _ = star_loss(cut(student), cut(teacher), student_zeroth[b:b + 1, :n], teacher_zeroth[b:b + 1, :n],
                            all_valid(1, n), cfg, student_attention=cut_attn(student_attn),
                            teacher_attention=cut_attn(teacher_attn))
        singles.append(loss)
    assert torch.allclose(batched, torch.stack(singles).mean(), rtol=1e-5, atol=1e-6)


def test_gradients_reach_the_student_only_and_not_its_padded_frames():
    valid = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    student, student_zeroth = make_states(2, 6, dim=4)
    teacher, teacher_zeroth = make_states(2, 6, dim=5, seed=1)
    student = [h.requires_grad_() for h in student]
    student_zeroth.requires_grad_()
    teacher = [h.requires_grad_() for h in teacher]
    teacher_zeroth.requires_grad_()
    loss, logs = star_loss(student, teacher, student_zeroth, teacher_zeroth, valid)
    loss.backward()
    assert all(h.grad is None for h in teacher) and teacher_zeroth.grad is None
    assert all(h.grad[valid].abs().sum() > 0 for h in student) and student_zeroth.grad[valid].abs().sum() > 0
    assert all(h.grad[~valid].abs().sum() == 0 for h in student)
    assert all(not v.requires_grad for v in logs.values())


def test_layer_wise_and_intra_layer_terms_against_hand_written_sums():
    """B = 1, T = 3, d = 2, L = 2: eqs. (3)-(4) written out with loops, MSE over the T^2 entries."""
    gen = torch.Generator().manual_seed(11)
    s = [torch.randn(1, 3, 2, generator=gen) for _ in range(3)]  # H^0, H^1, H^2 of the student
    t = [torch.randn(1, 3, 4, generator=gen) for _ in range(3)]

    def gram(a, b):
        return [[sum(a[0, i, k].item() * b[0, j, k].item() for k in range(a.shape[-1])) for j in range(3)]
                for i in range(3)]

    def mse(x, y):
        return sum((x[i][j] - y[i][j]) ** 2 for i in range(3) for j in range(3)) / 9

    layer_wise = sum(mse(gram(s[l], s[l]), gram(t[l], t[l])) for l in (1, 2))
    intra = sum(mse(gram(s[l - 1], s[l]), gram(t[l - 1], t[l])) for l in (1, 2))
    loss, logs = star_loss(s[1:], t[1:], s[0], t[0], all_valid(1, 3))
    assert logs["layer_wise"].item() == pytest.approx(layer_wise, rel=1e-5)
    assert logs["intra_layer"].item() == pytest.approx(intra, rel=1e-5)
    assert loss.item() == pytest.approx(layer_wise + intra, rel=1e-5)
    # "sse" is the literal squared Frobenius norm; weights scale the terms
    cfg = StarLossConfig(distance="sse", layer_wise_weight=2.0, intra_layer_weight=0.5)
    loss, _ = star_loss(s[1:], t[1:], s[0], t[0], all_valid(1, 3), cfg)
    assert loss.item() == pytest.approx(9 * (2.0 * layer_wise + 0.5 * intra), rel=1e-5)
    # without H^0 the intra-layer sum starts at layer 2
    _, logs = star_loss(s[1:], t[1:], None, None, all_valid(1, 3), StarLossConfig(zeroth_input="none"))
    assert logs["intra_layer"].item() == pytest.approx(mse(gram(s[1], s[2]), gram(t[1], t[2])), rel=1e-5)


def test_kl_distance_and_attention_term_against_hand_written_formulas():
    gen = torch.Generator().manual_seed(12)
    s = [torch.randn(1, 3, 2, generator=gen) for _ in range(2)]
    t = [torch.randn(1, 3, 5, generator=gen) for _ in range(2)]
    cfg = StarLossConfig(distance="kl", normalization="sqrt_dim", kl_temperature=2.0, intra_layer_weight=0.0)
    _, logs = star_loss(s[1:], t[1:], s[0], t[0], all_valid(1, 3), cfg)
    p_s = (temporal_gram(s[1]) / 2 ** 0.5 / 2.0).softmax(-1)
    p_t = (temporal_gram(t[1]) / 5 ** 0.5 / 2.0).softmax(-1)
    expected = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    assert logs["layer_wise"].item() == pytest.approx(expected.item(), rel=1e-5)

    valid = all_valid(1, 3)
    a_s = make_attention(1, 3, 2, 1, valid, seed=1)
    a_t = make_attention(1, 3, 4, 1, valid, seed=2)
    cfg = StarLossConfig(layer_wise_weight=0.0, intra_layer_weight=0.0, avg_attn_weight=1.0)
    loss, logs = star_loss(s[1:], t[1:], s[0], t[0], valid, cfg, student_attention=a_s, teacher_attention=a_t)
    mean_s, mean_t = a_s[0].mean(1), a_t[0].mean(1)
    expected = (mean_t * (mean_t.log() - mean_s.log())).sum(-1).mean()  # eq. (2) per query frame, averaged
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and logs["avg_attn"].item() > 0
    # head-averaged [B, T, T] maps give the same value
    loss_avg, _ = star_loss(s[1:], t[1:], s[0], t[0], valid, cfg, student_attention=[mean_s],
                            teacher_attention=[mean_t])
    assert torch.allclose(loss, loss_avg)


def test_runs_in_float32_under_autocast():
    student, student_zeroth = make_states(dim=4)
    teacher, teacher_zeroth = make_states(dim=6, seed=1)
    low = [h.bfloat16() for h in student]
    reference, _ = star_loss([h.float() for h in low], teacher, student_zeroth.bfloat16().float(), teacher_zeroth,
                             all_valid(2, 7))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = star_loss(low, teacher, student_zeroth.bfloat16(), teacher_zeroth, all_valid(2, 7))
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, reference, rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(distance="frobenius"), "distance='frobenius' is not supported; use one of mse, sse, l1, kl"),
    (dict(normalization="layer"), "normalization='layer' is not supported"),
    (dict(zeroth_input="cnn"), "zeroth_input='cnn' is not supported; use one of pre_trf, post_cnn, none"),
    (dict(intra_layer_weight=-1.0), "intra_layer_weight must be a finite number >= 0"),
    (dict(layer_wise_weight=float("nan")), "layer_wise_weight must be a finite number >= 0"),
    (dict(kl_temperature=0.0), "kl_temperature must be a finite number > 0"),
    (dict(layer_weights=[1.0, 1.0]), "layer_weights has 2 entries but the models have 3 transformer layers"),
    (dict(layer_weights="1,1,1"), "layer_weights must be a list"),
    (dict(layer_weights=[1.0, -1.0, 1.0]), "layer_weights must be finite numbers >= 0"),
    (dict(layer_wise_include_input=True, zeroth_input="none"), "needs an H^0"),
    (dict(layer_wise_weight=0.0, intra_layer_weight=0.0), "every term has weight 0"),
])
def test_configuration_errors_name_the_field_and_the_fix(kwargs, message):
    hidden, zeroth = make_states()
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("^", r"\^")):
        star_loss(hidden, hidden, zeroth, zeroth, all_valid(2, 7), StarLossConfig(**kwargs))


def test_input_errors_are_clear():
    hidden, zeroth = make_states()
    valid = all_valid(2, 7)
    with pytest.raises(ValueError, match="student has 3 transformer layers and the teacher 2"):
        star_loss(hidden, hidden[:2], zeroth, zeroth, valid)
    with pytest.raises(ValueError, match="valid must be a bool tensor"):
        star_loss(hidden, hidden, zeroth, zeroth, valid.float())
    with pytest.raises(ValueError, match=r"teacher_layers\[1\] has shape \(2, 6, 6\); expected \[B=2, T=7, D\]"):
        star_loss(hidden, [hidden[0], hidden[1][:, :6], hidden[2]], zeroth, zeroth, valid)
    with pytest.raises(ValueError, match="student_input is None but zeroth_input='pre_trf'"):
        star_loss(hidden, hidden, None, zeroth, valid)
    with pytest.raises(ValueError, match="teacher_input has D=3 but the layers have D=6"):
        star_loss(hidden, hidden, zeroth, zeroth[..., :3], valid)
    with pytest.raises(ValueError, match="avg_attn_weight > 0 needs student_attention"):
        star_loss(hidden, hidden, zeroth, zeroth, valid, StarLossConfig(avg_attn_weight=1.0))


def test_config_builds_from_a_yaml_section():
    from s3prl_plugins.pretrain.config import from_dict

    cfg = from_dict(StarLossConfig, {"layer_weights": [1, 0.5, 2], "distance": "l1", "kl_temperature": "1e-1"}, "star")
    hidden, zeroth = make_states()
    other, other_zeroth = make_states(seed=1)
    loss, _ = star_loss(other, hidden, other_zeroth, zeroth, all_valid(2, 7), cfg)
    assert cfg.kl_temperature == pytest.approx(0.1) and loss.item() > 0
    with pytest.raises(ConfigError, match="did you mean 'distance'"):
        from_dict(StarLossConfig, {"distanse": "mse"}, "star")
