"""CIFAR-10 data paths against a port of cuda-convnet's CroppedCIFARDataProvider (convdata.py r561)."""
import numpy as np
import pytest
import torch
from test_augment import _Copies

from paper_repro.data.cifar_views import ConvnetCrops, ConvnetViews, WholeImage, eval_views, train_transforms


def _batch(n, seed=0):
    g = np.random.default_rng(seed)
    images = g.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    mean = g.uniform(0, 255, (32, 32, 3)).astype(np.float32)
    return images, mean


def trim_borders_train(images, mean, starts, flips, border=4):
    """cuda-convnet's __trim_borders for training (l.117-121) then `cropped -= data_mean` (l.85), in numpy, NHWC."""
    inner = 32 - 2 * border
    centre_mean = mean[border:border + inner, border:border + inner]
    out = []
    for img, (sy, sx), flip in zip(images, starts, flips):
        pic = img[sy:sy + inner, sx:sx + inner].astype(np.float32)
        if flip:
            pic = pic[:, ::-1]  # pic[:,:,::-1] on (channel, row, column): the columns
        out.append(pic - centre_mean)
    return np.stack(out).transpose(0, 3, 1, 2)


def test_training_crops_are_the_providers_crops():
    images, mean = _batch(16)
    crops = ConvnetCrops(mean)
    g = torch.Generator().manual_seed(5)
    top, left, flip = crops.draw(16, torch.Generator().manual_seed(5))
    got = crops(torch.from_numpy(images), g)
    want = trim_borders_train(images, mean, zip(top.tolist(), left.tolist()), flip.tolist())
    np.testing.assert_array_equal(got.numpy(), want)
    assert got.shape == (16, 3, 24, 24) and got.is_contiguous()


def test_draws_cover_every_offset_and_both_flips():
    crops = ConvnetCrops(np.zeros((32, 32, 3), np.float32))
    top, left, flip = crops.draw(4000, torch.Generator().manual_seed(0))
    assert sorted(set(top.tolist())) == list(range(9)) == sorted(set(left.tolist()))
    assert 0.45 < flip.float().mean() < 0.55


def test_ten_views_are_the_multiview_test_centre_first():
    images, mean = _batch(3, seed=1)
    views = ConvnetViews(mean, views=10)
    got = views(torch.from_numpy(images)).numpy().reshape(3, 10, 3, 24, 24)
    # convdata.py l.104-111: starts (0,0), (0,8), (4,4), (8,0), (8,8); views 5-9 their reflections
    starts = [(0, 0), (0, 8), (4, 4), (8, 0), (8, 8)]
    for i in range(3):
        want = {trim_borders_train(images[i:i + 1], mean, [s], [f])[0].tobytes() for f in (False, True) for s in starts}
        assert {v.tobytes() for v in got[i]} == want
        np.testing.assert_array_equal(got[i, 0], trim_borders_train(images[i:i + 1], mean, [(4, 4)], [False])[0])
    one = ConvnetViews(mean, views=1)(torch.from_numpy(images))
    np.testing.assert_array_equal(one.numpy(), got[:, 0])
    out = torch.empty(30, 3, 24, 24)
    assert views(torch.from_numpy(images), out=out) is out
    assert torch.equal(out, torch.from_numpy(got.reshape(30, 3, 24, 24)))


def test_whole_images_and_the_per_path_choices():
    images, mean = _batch(4, seed=2)
    whole = WholeImage(mean)
    np.testing.assert_array_equal(whole(torch.from_numpy(images)).numpy(),
                                  (images.astype(np.float32) - mean).transpose(0, 3, 1, 2))
    stats = {"mean_image": mean, "pca_eigval": np.array([3.0, 2.0, 1.0]), "pca_eigvec": np.eye(3)}
    train, val = train_transforms("convnet-crops", stats, 24)
    assert isinstance(train, ConvnetCrops) and val.views == 1
    assert eval_views("convnet-crops", mean, 24)[1] == 10 and eval_views("whole", mean, 32)[1] == 1
    assert eval_views("paper", mean, 28)[1] == 10
    with pytest.raises(ValueError, match="one test view, not 10"):
        eval_views("whole", mean, 32, 10)
    with pytest.raises(ValueError, match=r"images are 28x28 but the mean image is 32x32"):
        whole(torch.zeros(1, 28, 28, 3, dtype=torch.uint8))


def test_crops_and_views_send_their_draws_to_the_device_without_blocking():
    # On a GPU a blocking host-to-device copy waits for the device every batch; the meta device stands in.
    images = torch.empty(4, 32, 32, 3, dtype=torch.uint8, device="meta")
    mean = np.zeros((32, 32, 3), np.float32)
    for transform in (ConvnetCrops(mean), ConvnetViews(mean)):
        transform(images, torch.Generator().manual_seed(0))  # the first batch copies the mean image there, once
        with _Copies() as mode:
            out = transform(images, torch.Generator().manual_seed(0))
        assert out.device.type == "meta"
        assert mode.non_blocking and all(mode.non_blocking), mode.copies
