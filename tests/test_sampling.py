"""PruningNet training per step: the sandwich rule, in-place distillation and sampling inside a latency window."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hwprune as hp
from hwprune.data import load_dataset, make_loaders
from hwprune.errors import HwpruneError
from hwprune.supernet.pruningnet import PruningNet
from hwprune.supernet.sampling import LatencyWindow, step_encodings
from hwprune.supernet.train import sample_encoding, sampled_step, train_pruningnet
from hwprune.training import TrainConfig
from hwprune.training.distill import soft_target_loss

from latency_fakes import FakeProfiler


@pytest.fixture(scope="module")
def space():
    torch.manual_seed(0)
    return hp.SearchSpace.from_model(hp.create_model("resnet20", in_channels=1), (1, 1, 16, 16))


@pytest.fixture(scope="module")
def table(space, tmp_path_factory):
    return hp.profile(space, profiler=FakeProfiler(), cache_dir=tmp_path_factory.mktemp("kernels"), calibrate=2,
                      quiet=True)


def test_sandwich_trains_the_widest_the_narrowest_and_n_random(space):
    for step in range(5):
        encs = step_encodings(space, 0, step, "sandwich", 3)
        assert len(encs) == 5 and encs[0] == space.full() and encs[1] == space.narrowest()
        assert encs == step_encodings(space, 0, step, "sandwich", 3)  # every rank and a resume draw the same
    assert step_encodings(space, 0, 1, "sandwich", 3)[2:] != step_encodings(space, 0, 2, "sandwich", 3)[2:]
    assert step_encodings(space, 0, 7, "single") == [sample_encoding(space, 0, 7)]  # the paper's scheme, unchanged
    with pytest.raises(HwpruneError, match="sampling must be one of"):
        step_encodings(space, 0, 0, "all")
    with pytest.raises(HwpruneError, match="unknown sampling"):
        TrainConfig(sampling="both")


def test_window_sampling_covers_the_window_and_stays_in_it(space, table):
    window = LatencyWindow.from_fraction(table, space, 0.4)
    assert window.hi_ms == pytest.approx(table.predict(space.full()))
    assert window.lo_ms == pytest.approx(0.4 * window.hi_ms)
    ms = np.array([table.predict(step_encodings(space, 0, s, "single", window=window)[0]) for s in range(60)])
    span = window.hi_ms - window.lo_ms
    assert ((ms >= window.lo_ms - 0.05 * span) & (ms <= window.hi_ms + 0.05 * span)).all()
    # spread over the window, not piled in its middle: both outer thirds are drawn
    assert (ms < window.lo_ms + span / 3).sum() >= 10 and (ms > window.hi_ms - span / 3).sum() >= 10
    uniform = np.array([table.predict(sample_encoding(space, 0, s)) for s in range(60)])
    assert ms.std() > uniform.std()
    with pytest.raises(HwpruneError, match="fraction of the dense latency"):
        LatencyWindow.from_fraction(table, space, 1.5)


def _grads(pnet):
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in pnet.parameters()])


def test_a_sandwich_step_is_the_mean_of_every_sample_s_gradient(space):
    torch.manual_seed(0)
    pnet = PruningNet(space, hidden=4).eval()  # eval: BN statistics do not move between the passes compared
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    cfg = TrainConfig(distill=0.7)
    encs = step_encodings(space, 0, 3, "sandwich", 2)
    pnet.zero_grad()
    loss, out = sampled_step(pnet, x, y, encs, cfg)
    got = _grads(pnet)
    # by hand: the widest on the labels, the others on 0.7 x its soft outputs + 0.3 x the labels, averaged
    with torch.no_grad():
        widest = pnet(x, encs[0])
    expected, losses = torch.zeros_like(got), []
    for k, enc in enumerate(encs):
        pnet.zero_grad()
        o = pnet(x, enc)
        loss_k = F.cross_entropy(o, y, label_smoothing=0.1) if k == 0 else \
            0.7 * F.kl_div(F.log_softmax(o, 1), F.log_softmax(widest, 1), log_target=True, reduction="batchmean") \
            + 0.3 * F.cross_entropy(o, y, label_smoothing=0.1)
        loss_k.backward()
        g = _grads(pnet)
        assert g.abs().sum() > 0  # every sample reaches the generators
        expected += g / len(encs)
        losses.append(float(loss_k.detach()))
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-4)
    assert float(loss) == pytest.approx(np.mean(losses), rel=1e-5)
    assert torch.allclose(out, widest)
    # the narrowest network's gradient alone differs from the step's: it is not dropped nor counted twice
    assert not torch.allclose(got, g)


def test_distillation_weight_zero_is_the_labels_only(space):
    torch.manual_seed(0)
    pnet = PruningNet(space, hidden=4).eval()
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,))
    encs = step_encodings(space, 0, 0, "sandwich", 1)
    loss, _ = sampled_step(pnet, x, y, encs, TrainConfig(distill=0.0))
    with torch.no_grad():
        plain = np.mean([float(F.cross_entropy(pnet(x, e), y, label_smoothing=0.1)) for e in encs])
    assert float(loss) == pytest.approx(plain, rel=1e-5)


def test_soft_target_loss_is_zero_on_its_own_outputs_and_grows_away_from_them():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    y = torch.tensor([0, 2])
    assert float(soft_target_loss(logits, logits, y, alpha=1.0, temperature=1.0)) == pytest.approx(0, abs=1e-6)
    near = float(soft_target_loss(logits + torch.tensor([0.0, 0.3, 0.0]), logits, y, alpha=1.0, temperature=1.0))
    far = float(soft_target_loss(logits + torch.tensor([0.0, 3.0, 0.0]), logits, y, alpha=1.0, temperature=1.0))
    assert 0 < near < far
    mixed = soft_target_loss(logits, logits, y, alpha=0.6, temperature=1.0, label_smoothing=0.0)
    assert float(mixed) == pytest.approx(0.4 * float(F.cross_entropy(logits, y)), rel=1e-5)


def test_sandwich_training_trains_the_narrowest_network_every_step(space):
    data = load_dataset("bundled", image_size=16)
    data.train_idx = data.train_idx[:96]
    loaders = make_loaders(data, 32)
    torch.manual_seed(0)
    pnet = PruningNet(space, hidden=4)
    x, y = next(iter(loaders.train))

    def losses():  # on one training batch, BN in training mode (batch statistics)
        with torch.no_grad():
            return [float(F.cross_entropy(forward(x, e), y)) for e in (space.full(), space.narrowest())]

    seen = []
    forward = pnet.forward
    before = losses()
    pnet.forward = lambda x, enc: (seen.append(tuple(enc)), forward(x, enc))[1]
    train_pruningnet(pnet, loaders.train, config=TrainConfig(epochs=4, eval_ratios=(), random_samples=1, lr=0.02),
                     progress=False, log=lambda s: None)
    steps = len(seen) // 3
    assert steps == 4 * 3 and len(seen) == 3 * steps
    assert seen[0::3] == [space.full()] * steps and seen[1::3] == [space.narrowest()] * steps
    after = losses()
    assert after[0] < before[0] - 0.2 and after[1] < before[1] - 0.2  # both ends learned
