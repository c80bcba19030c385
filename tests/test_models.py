import pytest
import torch

import hwprune as hp
from hwprune.models import model_input_shape

from conftest import small_input


@pytest.mark.parametrize("name", hp.list_models())
def test_forward_shape_and_kwargs(name):
    model = hp.create_model(name, num_classes=7, in_channels=1).eval()
    x = torch.randn(2, 1, *small_input(name)[2:])
    assert model(x).shape == (2, 7)


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2_cifar", "resnet18", "mobilenet_v1"])
def test_width_mult_scales_parameters(name):
    full = sum(p.numel() for p in hp.create_model(name).parameters())
    half = sum(p.numel() for p in hp.create_model(name, width_mult=0.5).parameters())
    assert 0.15 * full < half < 0.45 * full  # conv params scale with width squared, classifier linearly


def test_known_parameter_counts():
    # the standard definitions' well-known sizes (ImageNet, 1000 classes)
    counts = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
              "mobilenet_v2": 3_504_872, "mobilenet_v1": 4_231_976}
    for name, n in counts.items():
        assert sum(p.numel() for p in hp.create_model(name).parameters()) == n, name


def test_cifar_models_default_to_ten_classes_and_32px():
    for name in ("resnet20", "resnet56", "mobilenet_v2_cifar"):
        assert model_input_shape(name) == (3, 32, 32)
        assert hp.create_model(name).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_unknown_model_lists_available():
    with pytest.raises(hp.HwpruneError, match="unknown model 'resnet9000'; available: .*resnet20"):
        hp.create_model("resnet9000")
