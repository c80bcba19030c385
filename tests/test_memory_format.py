"""How the CPU trains and scores: channels-last memory (converted for the block, given back as it came, the same
function) and evaluation in chunks."""
import pytest
import torch
import torch.nn as nn

import hwprune as hp
from hwprune.data import load_dataset, make_loaders
from hwprune.supernet.evaluate import InheritEvaluator
from hwprune.training.loop import fit
from hwprune.training.memory_format import CHANNELS_LAST_ENV, channels_last, wants_channels_last
from hwprune.training.metrics import CPU_CHUNK, accuracy

CL = torch.channels_last


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4))


def layouts(model):
    """Whether each 4-D weight is channels last (of those whose shape tells the two formats apart)."""
    return [p.is_contiguous(memory_format=CL) for p in model.parameters()
            if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1]


def test_the_block_runs_channels_last_and_gives_the_module_back_as_it_came():
    m = net().eval()
    params = list(m.parameters())
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        plain = m(x)
        with channels_last(m):
            assert layouts(m) == [True, True]
            assert [id(p) for p in m.parameters()] == [id(p) for p in params]  # an optimizer made before still works
            fast = m(x)
    assert layouts(m) == [False, False] and all(p.is_contiguous() for p in m.parameters())
    torch.testing.assert_close(fast, plain)
    # one already channels last stays so; the same module twice is converted once
    m.to(memory_format=CL)
    with channels_last(m, m):
        pass
    assert layouts(m) == [True, True]


def test_a_block_inside_another_keeps_a_network_of_pointwise_and_depthwise_convolutions_channels_last():
    """Such weights are contiguous in both formats (mobilenet_v2's): only the outputs show the format they ran in."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8)).eval()
    ran = []
    handle = m[3].register_forward_hook(lambda mod, args, out: ran.append(
        out.is_contiguous(memory_format=CL) and not out.is_contiguous()))
    x = torch.randn(2, 1, 9, 9)
    try:
        with torch.no_grad():
            m(x)
            with channels_last(m):
                m(x)
                with channels_last(m[0], m):  # (a part of it, and it again)
                    m(x)
                m(x)
            m(x)
    finally:
        handle.remove()
    assert ran == [False, True, True, True, False]


def test_declined_where_it_does_not_apply(monkeypatch):
    m = net()
    with channels_last(m, enabled=False):
        assert layouts(m) == [False, False]
    mlp = nn.Sequential(nn.Linear(3, 4))
    assert not wants_channels_last(mlp) and not wants_channels_last(None)
    with channels_last(None, mlp):  # nothing to convert
        pass
    monkeypatch.setenv(CHANNELS_LAST_ENV, "0")
    assert not wants_channels_last(m) and wants_channels_last(m, enabled=True)
    with channels_last(m):
        assert layouts(m) == [False, False]


def _conv_layouts(seen):
    """A hook that records, for every convolution run, whether its weight was channels last."""
    def hook(module, args):
        if isinstance(module, nn.Conv2d) and layouts(module):
            seen.append(layouts(module)[0])
    return torch.nn.modules.module.register_module_forward_pre_hook(hook)


@pytest.mark.parametrize("flag", [None, False])
def test_fit_trains_channels_last_on_the_cpu_unless_told_not_to(flag):
    torch.manual_seed(0)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(24, 3, 9, 9),
                                                                      torch.randint(0, 4, (24,))), batch_size=8)
    m, seen = net(), []
    handle = _conv_layouts(seen)
    try:
        hist = fit(m, data, hp.TrainConfig(epochs=1, seed=0, channels_last=flag), payload=dict, fmt="t",
                   fingerprint="t", forward=lambda model, x, step: model(x), progress=False, log=lambda s: None)
    finally:
        handle.remove()
    assert len(hist) == 1 and seen and set(seen) == {flag is None}
    assert all(p.is_contiguous() for p in m.parameters())  # given back as it came
    # the same training either way, to float rounding
    other = net()
    fit(other, data, hp.TrainConfig(epochs=1, seed=0, channels_last=flag is not None), payload=dict, fmt="t",
        fingerprint="t", forward=lambda model, x, step: model(x), progress=False, log=lambda s: None)
    for a, b in zip(m.parameters(), other.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_the_inherit_evaluator_scores_channels_last_and_leaves_the_dense_model_alone():
    ds = load_dataset("bundled").limit_train(256)
    loaders = make_loaders(ds, 16, eval_batch_size=64)
    model = hp.create_model("resnet20", num_classes=ds.num_classes, in_channels=ds.input_shape[0]).eval()
    space = hp.SearchSpace.from_model(model, (1, *ds.input_shape), round_to=4)
    ev = InheritEvaluator(space, model, tune_steps=2)
    seen = []
    handle = _conv_layouts(seen)
    try:
        score = ev.score(space.uniform(0.5), loaders.val, loaders.calib, calib_batches=1)
    finally:
        handle.remove()
    assert 0 <= score <= 1 and seen and all(seen)  # BN statistics, tuning and the score: all channels last
    assert all(p.is_contiguous() for p in model.parameters())


def test_accuracy_runs_a_large_batch_in_chunks_on_the_cpu_and_counts_every_image():
    m = net().eval()
    sizes = []
    handle = m[0].register_forward_pre_hook(lambda mod, args: sizes.append(len(args[0])))
    torch.manual_seed(1)
    x, y = torch.randn(2 * CPU_CHUNK + 5, 3, 9, 9), torch.randint(0, 4, (2 * CPU_CHUNK + 5,))
    try:
        got = accuracy(m, [(x, y)])
    finally:
        handle.remove()
    assert sizes == [CPU_CHUNK, CPU_CHUNK, 5]
    with torch.no_grad():
        assert got == pytest.approx(float((m(x).argmax(1) == y).float().mean()))
