"""Restoring a preprocessed-grid prediction onto the original grid."""

import numpy as np
import pytest

from nnunet_ray.preprocessing.case import pad_widths
from nnunet_ray.preprocessing.crop import crop_to_box
from nnunet_ray.preprocessing.inverse import restore_prediction, unpad
from nnunet_ray.preprocessing.record import CaseProperties
from nnunet_ray.preprocessing.resample import anisotropic_axis, resample_image, resample_label, resampled_shape


def _label(shape) -> np.ndarray:
    """(1, Z, Y, X): a block (1) holding a smaller block (2), inside a zero margin."""
    label = np.zeros(shape, np.uint8)
    z, y, x = shape
    label[2 : z - 3, 4 : y - 4, 5 : x - 6] = 1
    label[z // 4 : 3 * z // 4, y // 4 : 3 * y // 4, x // 4 : 3 * x // 4] = 2
    return label[None]


def _forward(label, spacing, target, patch):
    """What preprocess_case does to a label, with the props it records."""
    box = [[1, label.shape[1] - 1], [2, label.shape[2] - 1], [2, label.shape[3] - 2]]
    cropped = crop_to_box(label, box)
    new_shape = resampled_shape(cropped.shape[1:], spacing, target)
    axis = anisotropic_axis(spacing, target)
    moved = resample_label(cropped, new_shape, n_classes=3, aniso_axis=axis)
    pad = pad_widths(new_shape, patch)
    padded = np.pad(moved, [[0, 0], *pad])
    record = {"original_shape": list(label.shape[1:]), "original_spacing": list(spacing), "crop_box": box,
              "affine": np.eye(4).tolist(), "target_spacing": list(target), "anisotropic_axis": axis,
              "resampled_shape": list(new_shape), "pad": pad, "shape": list(padded.shape[1:])}
    return padded, record


def _props(record: dict) -> CaseProperties:
    return CaseProperties.from_json(record, source="case.json")


def test_unpad_hand_checked():
    array = np.arange(2 * 5 * 4 * 3).reshape(2, 5, 4, 3)
    out = unpad(array, [[1, 2], [0, 0], [1, 0]])
    np.testing.assert_array_equal(out, array[:, 1:3, :, 1:])


@pytest.mark.parametrize(
    "spacing, target, patch",
    [
        ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), [64, 64, 64]),  # no resampling, only pad + crop undone
        ((1.0, 0.8, 0.8), (1.3, 1.1, 1.2), [48, 48, 48]),
        ((4.0, 0.8, 0.8), (2.0, 1.2, 1.2), [16, 64, 64]),  # anisotropic axis 0
    ],
)
def test_one_hot_round_trip_restores_label(spacing, target, patch):
    label = _label((20, 50, 52) if spacing[0] == 4.0 else (40, 50, 52))
    padded, props = _forward(label, spacing, target, patch)
    probs = np.eye(3, dtype=np.float32)[padded[0]].transpose(3, 0, 1, 2)  # (K, Z, Y, X) one-hot
    restored = restore_prediction(probs, _props(props))
    assert restored.shape == label.shape[1:] and restored.dtype == np.uint8
    for c in (1, 2):
        a, b = restored == c, label[0] == c
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.95


def test_outside_crop_box_is_background():
    label = _label((40, 50, 52))
    padded, props = _forward(label, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), [8, 8, 8])
    probs = np.zeros((3, *padded.shape[1:]), np.float32)
    probs[1] = 1.0  # everything class 1
    restored = restore_prediction(probs, _props(props))
    assert restored[1:-1, 2:-1, 2:-2].min() == 1
    assert restored[0].max() == 0 and restored[:, :, -2:].max() == 0


def test_wrong_shape_raises():
    _, props = _forward(_label((40, 50, 52)), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), [8, 8, 8])
    with pytest.raises(ValueError, match="probs shape"):
        restore_prediction(np.zeros((3, 4, 4, 4), np.float32), _props(props))


def test_inverse_uses_the_stored_axis_near_the_threshold():
    # Source 2 mm -> target 3 mm on z: ratio 3.0, so z was resampled separately (axis 0). The cropped 10 slices
    # became round(10 * 2 / 3) = 7, and re-deriving the target from the shapes gives 2 * 10 / 7 = 2.86 mm:
    # ratio < 3, a plain 3D resample. The stored axis keeps the inverse on the forward path.
    label = _label((12, 50, 52))
    padded, props = _forward(label, (2.0, 1.0, 1.0), (3.0, 1.0, 1.0), [8, 8, 8])
    assert props["anisotropic_axis"] == 0 and props["resampled_shape"][0] == 7
    older = _props({k: v for k, v in props.items() if k != "anisotropic_axis"})  # a record from before the key
    assert older.anisotropic_axis is None  # re-derived from the shapes: the wrong path near the threshold
    probs = np.random.default_rng(0).random((3, *padded.shape[1:]), dtype=np.float32)
    box = props["crop_box"]
    cropped_shape = [b - a for a, b in box]
    expected = np.argmax(resample_image(unpad(probs, props["pad"]), cropped_shape, aniso_axis=0, order=1), axis=0)
    restored = restore_prediction(probs, _props(props))
    (z0, z1), (y0, y1), (x0, x1) = box
    np.testing.assert_array_equal(restored[z0:z1, y0:y1, x0:x1], expected)
