"""rsport.sliding: the original sliding-window grid and probability averaging."""
import numpy as np
import pytest

from rsport.sliding import pad_to_multiple, predict_scene, windows


@pytest.mark.parametrize("size, window, stride, rows, cols", [
    # worked by hand from the original rule: starts at multiples of stride, the last one moved
    # back to end at the border, the window clipped to the image when larger
    ((1000, 1000), 896, 512, [0, 104], [0, 104]),
    ((300, 412), 896, 512, [0], [0]),                 # smaller than the window: one clipped window
    ((896, 896), 896, 512, [0], [0]),                 # exactly one window
    ((1408, 897), 896, 512, [0, 512], [0, 1]),        # 512 + 896 == 1408 ends on the border
    ((2000, 896), 896, 512, [0, 512, 1024, 1104], [0]),
    ((10, 7), 4, 3, [0, 3, 6], [0, 3]),
    ((11, 7), 4, 3, [0, 3, 6, 7], [0, 3]),
    ((11, 9), (4, 2), (3, 5), [0, 3, 6, 7], [0, 5, 7]),
])
def test_windows_hand_worked(size, window, stride, rows, cols):
    h, w = size
    kh, kw = (window, window) if isinstance(window, int) else window
    kh, kw = min(kh, h), min(kw, w)
    expected = [(y, x, y + kh, x + kw) for y in rows for x in cols]
    assert windows(h, w, window, stride) == expected


@pytest.mark.parametrize("seed", range(20))
def test_windows_cover_every_pixel_once_per_distinct_box(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 300, 2)
    window = int(rng.integers(1, 120))
    stride = int(rng.integers(1, window + 1))
    boxes = windows(int(h), int(w), window, stride)
    cover = np.zeros((h, w), int)
    for y0, x0, y1, x1 in boxes:
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        assert (y1 - y0, x1 - x0) == (min(window, h), min(window, w))
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    assert len(set(boxes)) == len(boxes)
    # no window beyond the last one that reaches the border
    assert max(b[2] for b in boxes) == h and max(b[3] for b in boxes) == w


@pytest.mark.parametrize("bad", [dict(window=0), dict(stride=0), dict(window=(3, 2, 1)), dict(stride=1.5)])
def test_windows_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        windows(10, 10, **{**dict(window=4, stride=2), **bad})


def test_pad_to_multiple():
    x = np.arange(2 * 3 * 33 * 40, dtype=np.float32).reshape(2, 3, 33, 40) + 1
    padded, size = pad_to_multiple(x, 32)
    assert size == (33, 40) and padded.shape == (2, 3, 64, 64)
    np.testing.assert_array_equal(padded[:, :, :33, :40], x)
    assert not padded[:, :, 33:].any() and not padded[:, :, :, 40:].any()
    same, size = pad_to_multiple(x[:, :, :32, :32], 32)
    assert same.shape == (2, 3, 32, 32) and size == (32, 32)


def test_predict_scene_identity_returns_the_scene():
    """A predict that echoes its input averages identical values: the scene comes back."""
    rng = np.random.default_rng(0)
    image = rng.random((3, 70, 45)).astype(np.float32)
    out = predict_scene(image, lambda x: x, 3, window=32, stride=20, divisor=16)
    np.testing.assert_array_equal(out, image)


def test_predict_scene_is_the_per_pixel_average():
    """Each window predicts a constant (its call index): the result is, per pixel, the exact
    mean of the indices of the windows covering it; padding is zero and divisible."""
    image = np.ones((1, 5, 7), np.float32)
    seen = []

    def predict(x):
        assert x.shape[2] % 4 == 0 and x.shape[3] % 4 == 0
        assert not x[:, :, 3:].any() and not x[:, :, :, 3:].any()   # windows are 3x3, padded to 4x4
        out = np.empty((x.shape[0], 2) + x.shape[2:], np.float32)
        for i in range(x.shape[0]):
            out[i, 0] = len(seen)
            out[i, 1] = 1.0
            seen.append(len(seen))
        return out

    out = predict_scene(image, predict, 2, window=3, stride=2, divisor=4)
    boxes = windows(5, 7, 3, 2)
    assert boxes == [(y, x, y + 3, x + 3) for y in (0, 2) for x in (0, 2, 4)]
    total, count = np.zeros((5, 7)), np.zeros((5, 7))
    for index, (y0, x0, y1, x1) in enumerate(boxes):
        total[y0:y1, x0:x1] += index
        count[y0:y1, x0:x1] += 1
    np.testing.assert_array_equal(out[0], (total / count).astype(np.float32))
    np.testing.assert_array_equal(out[1], 1.0)
    # hand-checked pixels: (0,0) only window 0; (2,2) windows 0,1,3,4; (4,6) only window 5
    assert out[0, 0, 0] == 0 and out[0, 2, 2] == 2.0 and out[0, 4, 6] == 5


def _softmax_of_position(x):
    """A per-sample deterministic, position-dependent 'model' (like a real network)."""
    h, w = x.shape[2:]
    ramp = np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)
    logits = np.stack([x[:, 0] * ramp, x[:, 1] - ramp, x.sum(1) * 0.1], axis=1)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("batch", [2, 3, 100])
def test_predict_scene_batch_equals_batch_one(batch):
    rng = np.random.default_rng(1)
    image = rng.standard_normal((2, 90, 61)).astype(np.float32)
    one = predict_scene(image, _softmax_of_position, 3, window=40, stride=25, divisor=32)
    calls = []
    many = predict_scene(image, _softmax_of_position, 3, window=40, stride=25, divisor=32, batch=batch,
                         progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_array_equal(one, many)
    assert one.dtype == np.float32 and one.shape == (3, 90, 61)
    np.testing.assert_allclose(one.sum(0), 1.0, atol=1e-6)
    n = len(windows(90, 61, 40, 25))
    assert calls[-1] == (n, n) and len(calls) == -(-n // batch)


def test_predict_scene_rejects_wrong_prediction_shape():
    with pytest.raises(ValueError, match="predict returned shape"):
        predict_scene(np.zeros((3, 10, 10), np.float32), lambda x: x[:, :2], 3, window=8, stride=4, divisor=8)


def test_flip_averages_the_mirror_images_prediction():
    """flip=True (mmseg's MultiScaleFlipAug): each window's prediction is the mean of its own and of
    its mirror image's, mirrored back."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 32, 64)).astype(np.float32)  # one window, no padding

    def predict(x):  # column-dependent: not mirror-symmetric
        score = x.sum(axis=1, keepdims=True) * np.linspace(0.1, 1.0, x.shape[-1], dtype=np.float32)
        return np.concatenate([score, -score], axis=1)

    plain = predict_scene(image, predict, 2, window=64, stride=32)
    flipped = predict_scene(image, predict, 2, window=64, stride=32, flip=True)
    mirror = predict(np.ascontiguousarray(image[None, ..., ::-1]))[0][..., ::-1]
    np.testing.assert_allclose(flipped, (plain + mirror) / 2, rtol=1e-6)
    assert not np.allclose(flipped, plain)


@pytest.mark.parametrize("name,window,stride,flip", [
    ("factseg50", 896, 512, False), ("upernet_r50", 512, 384, True), ("deeplabv3p_r50", None, None, False)])
def test_each_model_evaluates_with_its_own_protocol(name, window, stride, flip):
    from rsport import evaluation

    args = evaluation.build_parser("paddle").parse_args(["--model", name])
    cfg = evaluation.resolve_config("paddle", args)
    assert cfg.flip is flip
    if window is None:  # whole: one window clipped to the scene
        assert cfg.window == cfg.stride == evaluation.WHOLE
    else:
        assert (cfg.window, cfg.stride) == (window, stride)
