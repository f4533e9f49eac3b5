"""MSDNet architecture, cost model and exit-by-exit inference."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from model.config import PRESETS, MSDNetConfig, get_config
from model.flops import exit_costs
from model.msdnet import MSDNet

# msdnet.md's table: cumulative MFLOPs per exit and total params (CIFAR at 100 classes).
PUBLISHED = {
    "msdnet-cifar-anytime": ([15.14, 25.51, 37.10, 46.33, 57.34, 66.96, 75.94], 3.07e6),
    "msdnet-cifar-anytime-10": (
        [15.14, 25.51, 37.79, 52.06, 62.18, 74.07, 87.73, 100.04, 110.12, 121.68],
        4.96e6,
    ),
    "msdnet-cifar-budgeted": ([6.86, 14.35, 27.54, 41.71, 58.48], 2.08e6),
    "msdnet-imagenet-step4": ([340, 685, 1008, 1254, 1361], 23.96e6),
    "msdnet-imagenet-step7": ([616, 1436, 2283, 2967, 3254], 62.31e6),
}


def _classes(name: str) -> int:
    return 100 if "cifar" in name else 1000


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_flops_and_params_match_the_paper(name: str) -> None:
    model = MSDNet(get_config(name, _classes(name)))
    costs = exit_costs(model)
    mflops, params = PUBLISHED[name]
    assert [c.exit for c in costs] == list(range(1, len(mflops) + 1))
    for got, want in zip(costs, mflops):
        assert got.mflops == pytest.approx(want, rel=0.01)
    total = sum(p.numel() for p in model.parameters())
    assert total == pytest.approx(params, rel=0.01)
    assert costs[-1].params == total
    assert all(a.params < b.params and a.mflops < b.mflops for a, b in itertools.pairwise(costs))


def test_conv_and_linear_cost_agree_with_torch_flop_counter() -> None:
    """Our hook counter and PyTorch's differ only by convention (x2, and what they include)."""
    model = MSDNet(get_config("msdnet-cifar-anytime", 10)).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    torch_macs = counter.get_total_flops() / 2
    ours = 0.0
    hooks = []

    def hook(m, i, o):
        nonlocal ours
        if isinstance(m, torch.nn.Conv2d):
            ours += m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1] * o.shape[-2] * o.shape[-1]
        else:
            ours += m.in_features * m.out_features

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert ours == pytest.approx(torch_macs, rel=1e-6)
    # The official convention adds ReLUs, pooling and linear biases on top.
    assert exit_costs(model)[-1].mflops * 1e6 > torch_macs


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("batch", [1, 3])
def test_output_shapes(name: str, batch: int) -> None:
    config = get_config(name, 7)
    if config.variant == "imagenet" and batch > 1:
        pytest.skip("one ImageNet batch size is enough")
    model = MSDNet(config).eval()
    x = torch.randn(batch, 3, config.input_size, config.input_size)
    with torch.no_grad():
        outs = model(x)
    assert len(outs) == config.n_blocks == model.num_exits
    assert all(o.shape == (batch, 7) for o in outs)


@pytest.fixture(scope="module")
def cifar_model() -> MSDNet:
    torch.manual_seed(0)
    model = MSDNet(get_config("msdnet-cifar-anytime", 10))
    # Randomise BN statistics so eval mode is not an identity and the check means something.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_incremental_exits_equal_full_forward(cifar_model: MSDNet) -> None:
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        full = cifar_model(x)
    incremental = list(cifar_model.iter_exits(x))
    assert [o.exit for o in incremental] == list(range(1, 8))
    for a, b in zip(full, incremental):
        torch.testing.assert_close(b.logits, a, atol=1e-5, rtol=1e-5)


def test_cost_paid_matches_exits_taken(cifar_model: MSDNet) -> None:
    """A caller that stops after exit k runs exactly blocks 1..k (and heads 1..k)."""
    ran: list[str] = []
    hooks = []
    for k, (block, head) in enumerate(zip(cifar_model.blocks, cifar_model.exits)):
        for stage in block:
            hooks.append(stage.register_forward_hook(lambda m, i, o, k=k: ran.append(f"b{k}")))
        hooks.append(head.register_forward_hook(lambda m, i, o, k=k: ran.append(f"h{k}")))
    try:
        gen = cifar_model.iter_exits(torch.randn(1, 3, 32, 32))
        next(gen)
        next(gen)
        next(gen)
    finally:
        for h in hooks:
            h.remove()
    assert set(ran) == {"b0", "b1", "b2", "h0", "h1", "h2"}


def test_cancel_between_layers_and_resume(cifar_model: MSDNet) -> None:
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = cifar_model(x)
    stepper = cifar_model.stepper(x)
    checks = 0

    def stop_after_two_layers() -> bool:
        nonlocal checks
        checks += 1
        return checks > 2

    assert stepper.advance(stop_after_two_layers) is None
    assert stepper.in_progress and stepper.exits_done == 0
    # Resuming finishes the interrupted block without redoing (or skipping) a layer.
    out = stepper.advance()
    assert out is not None and out.exit == 1
    torch.testing.assert_close(out.logits, full[0], atol=1e-5, rtol=1e-5)
    assert list(cifar_model.iter_exits(x, should_stop=lambda: True)) == []


def test_continue_a_subset_of_the_batch(cifar_model: MSDNet) -> None:
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        full = cifar_model(x)
    stepper = cifar_model.stepper(x)
    stepper.advance()
    stepper.keep(torch.tensor([1, 4, 5]))
    out = stepper.advance()
    assert out is not None
    assert out.sample_ids.tolist() == [1, 4, 5]
    torch.testing.assert_close(out.logits, full[1][[1, 4, 5]], atol=1e-5, rtol=1e-5)
    stepper.keep(torch.tensor([2]))
    out = stepper.advance()
    assert out is not None and out.sample_ids.tolist() == [5]
    torch.testing.assert_close(out.logits, full[2][[5]], atol=1e-5, rtol=1e-5)


def test_stepper_refuses_to_run_past_the_last_exit(cifar_model: MSDNet) -> None:
    stepper = cifar_model.stepper(torch.randn(1, 3, 32, 32))
    while not stepper.finished:
        stepper.advance()
    with pytest.raises(RuntimeError, match="all exits"):
        stepper.advance()


def test_config_round_trip_and_validation() -> None:
    config = get_config("msdnet-cifar-budgeted", 10)
    assert MSDNetConfig.from_dict(config.to_dict()) == config
    assert config.block_layers == (1, 2, 3, 4, 5)
    assert config.exit_layers == (1, 3, 6, 10, 15)
    with pytest.raises(KeyError, match="unknown preset"):
        get_config("resnet-50")
    with pytest.raises(ValueError, match="unknown MSDNet config keys"):
        MSDNetConfig.from_dict({**config.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="one entry per scale"):
        MSDNetConfig.from_dict({**config.to_dict(), "bn_factor": [1, 2]})


def test_continue_a_subset_with_row_numbers_from_the_cpu_and_features_on_a_gpu(cifar_model: MSDNet) -> None:
    """The engine builds its row lists on the CPU while a GPU holds the feature maps (an H100 run found
    keep() mixing the two). FakeTensorMode stands in for a CUDA device on this CPU-only build and
    checks devices as CUDA would."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    stepper = cifar_model.stepper(torch.randn(4, 3, 32, 32))
    with FakeTensorMode(allow_non_fake_inputs=True):
        stepper._features = [torch.empty(4, 6, 32, 32, device="cuda"), torch.empty(4, 12, 16, 16, device="cuda")]
        stepper.keep(torch.tensor([1, 3]))
        assert [(f.shape[0], f.device.type) for f in stepper._features] == [(2, "cuda"), (2, "cuda")]
        assert stepper.sample_ids.shape == (2,) and stepper.sample_ids.device.type == "cpu"


def test_folding_batchnorm_keeps_every_exit(cifar_model: MSDNet) -> None:
    import copy

    from model.fuse import fold_batchnorm

    torch.manual_seed(1)
    model = copy.deepcopy(cifar_model)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # trained-like statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    folded = fold_batchnorm(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        for a, b in zip(model(x), folded(x), strict=True):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    assert [o.exit for o in folded.iter_exits(x)] == list(range(1, model.num_exits + 1))
