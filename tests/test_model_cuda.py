"""AlexNet on CUDA (issue 2): same function as on the CPU in every layout; bf16 autocast stays close to fp32."""
import pytest
import torch
from test_model import SMALL, canonical_grads, exercising_state, images, link_bytes, reference

import paper_repro.nets.alexnet as model_mod
from paper_repro.nets.alexnet import AlexNet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


def cpu_reference(sd, x):
    """Logits and canonical gradients of sum(logits * r) from the independent CPU computation (float64)."""
    sd = {k: v.detach().cpu().clone().requires_grad_(True) for k, v in sd.items()}
    logits, _ = reference(sd, x)
    r = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1), dtype=logits.dtype)
    (logits * r).sum().backward()
    return logits.detach(), {k: v.grad for k, v in sd.items()}, r


@pytest.mark.parametrize("devices", [("cuda:0", "cuda:0"), ("cuda:0",),
                                     pytest.param(("cuda:0", "cuda:1"), marks=TWO_GPUS),
                                     ("cuda:0", "cpu")],
                         ids=["two-columns-one-gpu", "one-device", "two-gpus", "gpu-and-cpu"])
def test_cuda_layouts_match_the_cpu_computation(devices):
    # float64 keeps TF32 and reduced-precision kernels out of the comparison.
    net = AlexNet(devices=devices, dropout=0.0, **SMALL).double().train()
    sd = exercising_state(net)
    net.load_state_dict(sd)
    x = images(2, dtype=torch.float64)
    want, want_grads, r = cpu_reference(sd, x)
    got = net(x.to(devices[0]))
    assert got.device == torch.device(devices[0])
    torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-9)
    (got * r.to(devices[0])).sum().backward()
    for key, grad in canonical_grads(net).items():
        torch.testing.assert_close(grad.cpu(), want_grads[key], rtol=1e-7, atol=1e-12, msg=key)


def test_columns_on_different_devices_move_data_only_through_transfer(monkeypatch):
    # A column on the CPU next to one on the GPU fails loudly if any tensor crosses outside transfer().
    links = []
    real = model_mod.transfer
    monkeypatch.setattr(model_mod, "transfer", lambda t, d, link, *a: links.append(link) or real(t, d, link, *a))
    net = AlexNet(devices=("cuda:0", "cpu"), **SMALL)
    assert [net.columns[0].conv1.weight.device.type, net.columns[1].fc7.weight.device.type,
            net.fc8.weight.device.type] == ["cuda", "cpu", "cuda"]
    net(images(2).cuda()).sum().backward()
    assert links == ["input", "conv3", "conv3", "fc6", "fc6", "fc7", "fc7", "fc8"]
    want = link_bytes(2, net)  # the same bytes as the CPU's cpu,cpu count, now really moved
    assert net.traffic.forward == want and net.traffic.backward == {**want, "input": 0}


@pytest.mark.parametrize("devices", [("cuda:0", "cuda:0"), ("cuda:0",),
                                     pytest.param(("cuda:0", "cuda:1"), marks=TWO_GPUS)])
def test_no_host_synchronisation_in_a_training_step(devices):
    # The columns may only wait for each other at the links, on the devices; a host sync would
    # serialise the two GPUs' work.
    net = AlexNet(devices=devices, **SMALL).train()
    x = images(8).to(devices[0])
    net(x).sum().backward()  # warm-up: lazy CUDA/cuDNN initialisation may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        net(x).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.parametrize("devices", [("cuda:0", "cuda:0"), ("cuda:0",)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_autocast_stays_close_to_fp32(devices, channels_last):
    torch.manual_seed(0)
    net = AlexNet(devices=devices, num_classes=10, width=0.25).eval()
    net.load_state_dict(exercising_state(net))
    x = images(4).to(devices[0])
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = net(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = net(x)
    assert torch.isfinite(got).all()
    # Stated tolerance: relative L2 error of the logits below 3 % (about 0.5 % on the CPU).
    assert ((got.float() - want).norm() / want.norm()).item() < 0.03
