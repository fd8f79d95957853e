"""Parity with the official ``dasheng`` pip package (0.0.9); skipped when it is not installed.

The official model is built with random weights, saved in both official layouts, loaded through
the s3prl entry, and every hidden state is compared with the official modules' outputs (forward
hooks on ``pos_drop``, ``blocks.i`` and ``norm``, concatenated over the 10.08 s chunks).
"""
from __future__ import annotations

import math

import pytest
import torch

dasheng_pretrained = pytest.importorskip("dasheng.pretrained.pretrained")

from s3prl_plugins.upstreams.dasheng import hubconf  # noqa: E402
from s3prl_plugins.upstreams.dasheng.config import DashengConfig  # noqa: E402
from s3prl_plugins.upstreams.dasheng.testing import random_encoder, write_hf_checkpoint  # noqa: E402


def official_states(model, wav, x_length=None):
    captured = {"emb": [], "norm": [], **{i: [] for i in range(len(model.blocks))}}
    hooks = [model.pos_drop.register_forward_hook(lambda m, a, o: captured["emb"].append(o)),
             model.norm.register_forward_hook(lambda m, a, o: captured["norm"].append(o))]
    hooks += [b.register_forward_hook(lambda m, a, o, i=i: captured[i].append(o)) for i, b in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            final = model(wav) if x_length is None else model(wav, x_length=x_length)
    finally:
        for hook in hooks:
            hook.remove()
    keys = ["emb", *range(len(model.blocks) - 1), "norm"]
    states = [torch.cat(captured[k], dim=1) for k in keys]
    assert torch.equal(states[-1], final)
    return states


def max_rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    torch.manual_seed(0)
    model = dasheng_pretrained.Dasheng(embed_dim=128, depth=3, num_heads=2).eval()
    ours = random_encoder(DashengConfig(embed_dim=128, depth=3, num_heads=2, mlp_hidden_dim=512), seed=1)
    with torch.no_grad():  # realistic BatchNorm statistics and non-zero biases, shared by both
        for name, tensor in model.state_dict().items():
            if name.startswith("init_bn.1.") and name != "init_bn.1.num_batches_tracked":
                tensor.copy_(ours.front_end.bn.state_dict()[name[len("init_bn.1."):]])
            elif name.endswith("bias"):
                tensor.normal_(0, 0.02)
    directory = tmp_path_factory.mktemp("dasheng_official")
    pip = directory / "dasheng_tiny.pt"
    torch.save({"model": model.state_dict(), "config": {"embed_dim": 64, "num_heads": 8}}, pip)
    # the Hugging Face layout of the same weights, via our loader (strict checks on the way)
    write_hf_checkpoint(hubconf.dasheng_local(ckpt=str(pip)).model, directory / "hf")
    return model, str(pip), str(directory / "hf")


@pytest.mark.parametrize("layout", ["pip", "hf"])
def test_single_utterances_match_the_official_package(official, layout):
    model, pip, hf = official
    up = hubconf.dasheng_local(ckpt=pip if layout == "pip" else hf).eval()
    generator = torch.Generator().manual_seed(0)
    for seconds in (0.3, 1.0, 3.7, 10.08, 12.0, 20.15):
        wav = torch.randn(int(seconds * 16000), generator=generator) * 0.1
        ref = official_states(model, wav[None])
        with torch.no_grad():
            ours = up([wav])["hidden_states"]
        assert len(ours) == len(ref) == 4
        t = ref[0].shape[1]
        assert ours[0].shape[1] == math.ceil(len(wav) / 640) >= t
        for i, (a, b) in enumerate(zip(ours, ref)):
            assert max_rel(a[:, :t], b) < 1e-4, f"{seconds} s, hidden state {i}"


def test_batches_match_the_official_package(official):
    model, pip, _ = official
    generator = torch.Generator().manual_seed(1)
    wavs = [torch.randn(int(s * 16000), generator=generator) * a for s, a in ((3.0, 0.8), (12.0, 0.1), (0.3, 1e-5))]
    wavs[2][:1000] = 0
    with torch.no_grad():
        batched = hubconf.dasheng_local(ckpt=pip).eval()(wavs)["hidden_states"]
    for index, wav in enumerate(wavs):  # default: every utterance as if alone
        ref = official_states(model, wav[None])
        t = ref[0].shape[1]
        for a, b in zip(batched, ref):
            assert max_rel(a[index, :t], b[0]) < 1e-4
    # batch_mode="official": the package's own batched call (batch-wide top_db floor, N // 640 mask)
    padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    lengths = torch.tensor([len(w) for w in wavs])
    ref = official_states(model, padded, x_length=lengths)
    with torch.no_grad():
        ours = hubconf.dasheng_local(ckpt=pip, batch_mode="official").eval()(wavs)["hidden_states"]
    for index, n in enumerate(lengths.tolist()):
        own = (1 + n // 160) // 4  # the utterance's own frames (later ones are zeroed by the upstream)
        for a, b in zip(ours, ref):
            assert max_rel(a[index, :own], b[index, :own]) < 1e-4
            assert not a[index, own:].any()


def test_train_batchnorm_official_is_the_packages_batchnorm_in_train_mode(official):
    """``train_batchnorm: official``: in train mode the log-mel BatchNorm uses batch statistics and
    updates its running ones as the package's BatchNorm2d does; the default keeps them fixed."""
    import copy

    model, pip, _ = official
    reference = copy.deepcopy(model).train()
    generator = torch.Generator().manual_seed(3)
    batch = torch.randn(3, 32000, generator=generator) * torch.tensor([[0.5], [0.05], [0.2]])
    lengths = torch.full((3,), 32000)
    expected = reference.forward_to_spec(batch)[:, 0]  # [B, mels, T]
    official_bn = reference.init_bn[1]
    upstream = hubconf.dasheng_local(ckpt=pip, train_batchnorm="official").train()
    front = upstream.model.front_end
    features = front(batch, lengths)
    assert max_rel(features, expected) < 1e-4
    assert max_rel(front.bn.running_mean, official_bn.running_mean) < 1e-5
    assert max_rel(front.bn.running_var, official_bn.running_var) < 1e-5
    fixed = hubconf.dasheng_local(ckpt=pip).train()
    before = fixed.model.front_end.bn.running_mean.clone()
    fixed.model.front_end(batch, lengths)
    assert torch.equal(fixed.model.front_end.bn.running_mean, before)
