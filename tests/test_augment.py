"""Augmentation statistics: crop positions, flips, PCA colour noise, and the mean at the patch's place."""
import numpy as np
import pytest
import torch

from paper_repro.augment import CentrePatch, TrainPatch, batch_generator


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
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)


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
    from paper_repro.augment import one_thread

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"):
        with one_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
