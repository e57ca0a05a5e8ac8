"""Augmentation statistics: crop positions, flips, PCA colour noise, and the mean at the patch's place."""
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from paper_repro.data.augment import (CentrePatch, TrainPatch, batch_generator, draws_to, one_thread, pack_draws,
                                      unpack_draws)
from paper_repro.data.views import TenViews


def _random_orthogonal(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q


EIGVAL = np.array([4000.0, 250.0, 30.0])   # ImageNet-like variances on the 0-255 scale (descending)
EIGVEC = _random_orthogonal(0)              # eigenvectors as columns


def _transform(size=224, hw=256, **kw):
    return TrainPatch(np.zeros((hw, hw, 3), np.float32), EIGVAL, EIGVEC, size=size, **kw)


def test_crop_offsets_cover_all_33x33_and_flips_are_half():
    oy, ox, flip, _ = _transform().draw(20000, torch.Generator().manual_seed(0))
    seen = set(zip(oy.tolist(), ox.tolist()))
    assert seen == {(y, x) for y in range(33) for x in range(33)}
    assert abs(flip.float().mean().item() - 0.5) < 0.02
    oy, ox, _, _ = _transform(size=227).draw(5000, torch.Generator().manual_seed(0))
    assert set(oy.tolist()) == set(range(30)) and set(ox.tolist()) == set(range(30))


def test_patch_is_the_drawn_crop_and_flip_minus_the_mean_there():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (12, 256, 256, 3), dtype=torch.uint8, generator=g)
    mean = torch.rand(256, 256, 3, generator=g) * 255
    t = TrainPatch(mean.numpy(), EIGVAL, EIGVEC, colour_noise=None)
    out = t(images, torch.Generator().manual_seed(5))
    oy, ox, flip, _ = t.draw(12, torch.Generator().manual_seed(5))  # the same draws, replayed
    assert flip.any() and not flip.all()
    for n in range(12):
        y, x = int(oy[n]), int(ox[n])
        expect = images[n, y:y + 224, x:x + 224].float() - mean[y:y + 224, x:x + 224]
        if flip[n]:
            expect = expect.flip(1)  # flip the patch and the mean under it together
        assert torch.equal(out[n], expect.permute(2, 0, 1))


def _shifts(colour_noise, n=20000):
    """The colour shift each image got: constant images and a zero mean make the output the shift."""
    t = _transform(size=4, hw=8, colour_noise=colour_noise)
    out = t(torch.zeros(n, 8, 8, 3, dtype=torch.uint8), torch.Generator().manual_seed(3))
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))  # one shift per image, every pixel
    return out[:, :, 0, 0].double().numpy()


@pytest.mark.parametrize("mode,power", [("sqrt", 1), ("eigval", 2)])
def test_colour_noise_covariance_is_the_eigen_decomposition(mode, power):
    shifts = _shifts(mode)
    # a_i ~ N(0, 0.1): shift = sum_i a_i s_i p_i, s_i = sqrt(lambda_i) (code) or lambda_i (paper text)
    expect = EIGVEC @ np.diag(0.01 * EIGVAL ** power) @ EIGVEC.T
    got = np.cov(shifts, rowvar=False)
    assert np.abs(got - expect).max() < 0.04 * np.abs(expect).max()
    assert np.abs(shifts.mean(0)).max() < 0.05 * np.sqrt(np.abs(expect).max())


def test_colour_noise_is_new_for_each_image_and_can_be_off():
    shifts = _shifts("sqrt", n=4)
    assert len({tuple(s) for s in shifts.round(6)}) == 4
    assert np.all(_shifts(None, n=4) == 0)


def test_same_generator_same_batch_different_step_different_batch():
    images = torch.randint(0, 256, (4, 256, 256, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    t = _transform()
    a, b = t(images, batch_generator(7, 2, 5)), t(images, batch_generator(7, 2, 5))
    assert torch.equal(a, b)
    assert not torch.equal(a, t(images, batch_generator(7, 2, 6)))
    assert not torch.equal(a, t(images, batch_generator(7, 3, 5)))
    assert not torch.equal(a, t(images, batch_generator(7, 2, 5, rank=1)))


def test_centre_patch_and_channels_last():
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (3, 256, 256, 3), dtype=torch.uint8, generator=g)
    mean = torch.rand(256, 256, 3, generator=g) * 255
    out = CentrePatch(mean.numpy())(images)
    assert torch.equal(out, (images[:, 16:240, 16:240].float() - mean[16:240, 16:240]).permute(0, 3, 1, 2))
    cl = CentrePatch(mean.numpy(), channels_last=True)(images)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, out)
    assert CentrePatch(mean.numpy(), size=227)(images).shape == (3, 3, 227, 227)
    t = TrainPatch(mean.numpy(), EIGVAL, EIGVEC, channels_last=True)
    x = t(images, batch_generator(0, 0, 0))
    assert x.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.float32


def test_wrong_input_is_a_clear_error():
    with pytest.raises(ValueError, match="expected a uint8 batch N x H x W x 3, got torch.float32"):
        _transform()(torch.zeros(2, 256, 256, 3), torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_result():
    images = torch.randint(0, 256, (8, 256, 256, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean = np.random.default_rng(0).uniform(0, 255, (256, 256, 3)).astype(np.float32)
    t = TrainPatch(mean, EIGVAL, EIGVEC)
    cpu = t(images, batch_generator(1, 2, 3))
    gpu = t(images.cuda(), batch_generator(1, 2, 3))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)
    # The colour shift is computed on the CPU for both paths, so the numbers are the same bit for bit.
    assert torch.equal(gpu.cpu(), cpu)


def _gather_reference(t, images, generator):
    """The augmentation computed as one advanced-indexing gather (the GPU path's formula), in float32."""
    oy, ox, flip, a = t.draw(images.shape[0], generator)
    ramp = torch.arange(t.size)
    rows = oy[:, None] + ramp
    cols = torch.where(flip[:, None], ox[:, None] + (t.size - 1) - ramp, ox[:, None] + ramp)
    n = torch.arange(images.shape[0])[:, None, None]
    x = images[n, rows[:, :, None], cols[:, None, :]].float() - t.mean_image[rows[:, :, None], cols[:, None, :]]
    if t.colour_noise is not None:
        x += (a @ t.noise_matrix.T)[:, None, None, :]
    return x.permute(0, 3, 1, 2)


@pytest.mark.parametrize("size,channels_last,planar", [(224, False, True), (227, True, False), (224, True, True)])
def test_cpu_slicing_path_equals_the_gather_bit_for_bit(size, channels_last, planar):
    g = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (10, 3, 256, 256), dtype=torch.uint8, generator=g).permute(0, 2, 3, 1)
    if not planar:  # BatchLoader's CPU batches are stored channel by channel; GPU ones are contiguous
        images = images.contiguous()
    t = TrainPatch((torch.rand(256, 256, 3, generator=g) * 255).numpy(), EIGVAL, EIGVEC, size=size,
                   channels_last=channels_last)
    out = t(images, batch_generator(3, 1, 4))
    assert torch.equal(out, _gather_reference(t, images, batch_generator(3, 1, 4)))  # exact, not close
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=layout) and out.shape == (10, 3, size, size)


def test_one_thread_restores_the_thread_count_even_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"):
        with one_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before


class _ThreadsSeen(TorchDispatchMode):
    """Records torch's intra-op thread count at every op run under it."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(torch.get_num_threads())
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("channels_last,pad", [(False, 0), (True, 3)])
def test_all_threads_cuts_with_every_thread_and_gives_the_one_threads_numbers(channels_last, pad):
    images = torch.randint(0, 256, (6, 40, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mean = np.random.default_rng(2).uniform(0, 255, (40, 40, 3)).astype(np.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = {}
        for all_threads in (False, True):
            patch = TrainPatch(mean, EIGVAL, EIGVEC, size=32, channels_last=channels_last, pad=pad,
                               all_threads=all_threads)
            with _ThreadsSeen() as mode:
                out[all_threads] = patch(images, batch_generator(0, 0, 3))
            assert mode.seen == ({2} if all_threads else {1, 2})  # one thread only around the per-image cuts
        assert torch.equal(out[True], out[False])
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- the gather path, run on CPU tensors


def _batch(n, seed, planar=False):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 256, 256), dtype=torch.uint8, generator=g).permute(0, 2, 3, 1)
    mean = (torch.rand(256, 256, 3, generator=g) * 255).numpy()
    return (images if planar else images.contiguous()), mean


@pytest.mark.parametrize("size,channels_last,noise", [(224, False, "sqrt"), (227, True, "eigval"),
                                                      (224, True, None)])
def test_train_patch_gather_path_equals_the_slices_bit_for_bit(size, channels_last, noise):
    images, mean = _batch(9, seed=size)
    out = {}
    for path in ("gather", "slices"):
        t = TrainPatch(mean, EIGVAL, EIGVEC, size=size, colour_noise=noise, channels_last=channels_last, path=path)
        out[path] = t(images, batch_generator(2, 0, 7))
    assert torch.equal(out["gather"], out["slices"])
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert all(x.is_contiguous(memory_format=layout) and x.shape == (9, 3, size, size) for x in out.values())
    auto = TrainPatch(mean, EIGVAL, EIGVEC, size=size, colour_noise=noise, channels_last=channels_last)
    assert torch.equal(auto(images, batch_generator(2, 0, 7)), out["slices"])


@pytest.mark.parametrize("size,channels_last", [(224, False), (227, True)])
def test_centre_patch_gather_path_equals_the_slices_bit_for_bit(size, channels_last):
    images, mean = _batch(3, seed=1)
    gather = CentrePatch(mean, size=size, channels_last=channels_last, path="gather")(images)
    slices = CentrePatch(mean, size=size, channels_last=channels_last, path="slices")(images)
    assert torch.equal(gather, slices) and gather.is_contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("channels_last,rescale", [(True, True), (False, False)])
def test_patches_with_padding_are_the_patches_then_zeros_on_both_paths(channels_last, rescale):
    images, mean = _batch(5, seed=4)
    kw = dict(colour_noise="sqrt", channels_last=channels_last, rescale=rescale)
    want = torch.nn.functional.pad(TrainPatch(mean, EIGVAL, EIGVEC, **kw)(images, batch_generator(1, 2, 3)), (0, 3, 0, 3))
    want_centre = torch.nn.functional.pad(CentrePatch(mean, channels_last=channels_last)(images), (0, 3, 0, 3))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for path in ("gather", "slices"):
        got = TrainPatch(mean, EIGVAL, EIGVEC, path=path, pad=3, **kw)(images, batch_generator(1, 2, 3))
        assert got.shape == (5, 3, 227, 227) and torch.equal(got, want)
        centre = CentrePatch(mean, channels_last=channels_last, path=path, pad=3)(images)
        assert centre.shape == (5, 3, 227, 227) and torch.equal(centre, want_centre)
        if path == "slices":  # written in place: the layout asked for
            assert got.is_contiguous(memory_format=layout) and centre.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("cls,args", [(TrainPatch, (EIGVAL, EIGVEC)), (CentrePatch, ())])
def test_bad_pad_is_a_clear_error(cls, args):
    with pytest.raises(ValueError) as info:
        cls(np.zeros((256, 256, 3), np.float32), *args, pad=-1)
    assert str(info.value) == (f"{cls.__name__}: pad must be an integer >= 0 (zero rows and columns at the bottom "
                               "and right); got -1")


@pytest.mark.parametrize("views,size", [(10, 224), (1, 227)])
def test_ten_views_gather_path_equals_the_slices_bit_for_bit(views, size):
    images, mean = _batch(3, seed=2, planar=True)
    gather = TenViews(mean, size, views, path="gather")(images)
    slices = TenViews(mean, size, views, path="slices")(images)
    assert gather.shape == (3 * views, 3, size, size) and torch.equal(gather, slices)
    with pytest.raises(ValueError, match="out= is for the slices path"):
        TenViews(mean, size, views, path="gather")(images, out=torch.empty_like(slices))


def test_draws_pack_into_one_tensor_and_unpack_unchanged():
    t = _transform(size=224)
    oy, ox, flip, a = t.draw(64, torch.Generator().manual_seed(9))
    shift = t.shift(a)
    packed = pack_draws(oy, ox, flip, shift)
    assert packed.shape == (64, 6) and packed.dtype == torch.float32
    got = unpack_draws(draws_to(packed, "cpu"))
    for want, have in zip((oy, ox, flip, shift), got):
        assert have.dtype == want.dtype and torch.equal(have, want)
    big = torch.tensor([2 ** 24 - 1])  # offsets stay exact up to float32's 24-bit mantissa
    assert torch.equal(unpack_draws(pack_draws(big, big, torch.tensor([True]), torch.zeros(1, 3)))[0], big)


class _Copies(TorchDispatchMode):
    """Records the devices of every _to_copy (CPU -> device copies show up here, not as copy_), and apart, whether
    each copy to another device was asked not to block the host."""

    def __init__(self):
        super().__init__()
        self.copies, self.non_blocking = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default:
            self.copies.append((str(args[0].device), str(out.device), tuple(args[0].shape)))
            if args[0].device != out.device:
                self.non_blocking.append(bool((kwargs or {}).get("non_blocking", False)))
        return out


def test_gather_path_sends_the_draws_to_the_device_in_one_copy():
    # "meta" stands in for a GPU: images there take the gather path, and every host-to-device
    # copy is visible to a dispatch mode. After the first batch (mean image cached) one copy remains.
    t = TrainPatch(np.zeros((256, 256, 3), np.float32), EIGVAL, EIGVEC)
    images = torch.empty(5, 256, 256, 3, dtype=torch.uint8, device="meta")
    with _Copies() as first:
        out = t(images, batch_generator(0, 0, 0))
    assert out.device.type == "meta" and out.shape == (5, 3, 224, 224)
    assert ("cpu", "meta", (256, 256, 3)) in first.copies  # the mean image, once
    with _Copies() as second:
        t(images, batch_generator(0, 0, 1))
    assert [c for c in second.copies if c[:2] == ("cpu", "meta")] == [("cpu", "meta", (5, 6))]


@pytest.mark.parametrize("cls,args", [(TrainPatch, (EIGVAL, EIGVEC)), (CentrePatch, ())])
def test_bad_path_is_a_clear_error(cls, args):
    mean = np.zeros((256, 256, 3), np.float32)
    with pytest.raises(ValueError) as info:
        cls(mean, *args, path="gpu")
    assert str(info.value) == f"{cls.__name__}: path must be one of ('auto', 'gather', 'slices'); got 'gpu'"
    images = torch.empty(2, 256, 256, 3, dtype=torch.uint8, device="meta")
    with pytest.raises(ValueError) as info:
        cls(mean, *args, path="slices")(images, batch_generator(0, 0, 0))
    assert str(info.value) == (f"{cls.__name__}: path='slices' cuts CPU batches; this batch is on meta "
                               "(pass path='auto' or 'gather')")
