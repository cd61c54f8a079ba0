"""--image-weights: class weights from label counts and last mAPs, per-image weights, the seeded sampler."""
from pathlib import Path

import numpy as np
import pytest

from utils.data.dataset import create_dataloader
from utils.data.sampling import ImageWeightSampler, class_frequency_weights, epoch_class_weights, per_image_weights


COCO8_TRAIN = Path(__file__).resolve().parents[3] / "data/coco8/images/train"


def labels(*classes_per_image):
    return [np.array([[c, 0.5, 0.5, 0.1, 0.1] for c in cs], dtype=np.float32).reshape(-1, 5)
            for cs in classes_per_image]


def test_class_weights_are_inverse_label_counts():
    w = class_frequency_weights(labels([0, 0, 0], [0, 1], []), nc=3)  # counts 4, 1, 0 (→ 1)
    assert np.allclose(w, np.array([0.25, 1.0, 1.0]) / 2.25)


def test_image_weight_sums_its_labels_and_background_keeps_the_smallest_weight():
    lbs = labels([0, 0], [1], [])
    w = per_image_weights(lbs, np.array([0.1, 0.8]))
    assert np.allclose(w, [0.2, 0.8, 0.2])


def test_epoch_weights_favour_classes_the_last_validation_scored_low():
    w = epoch_class_weights(np.array([0.5, 0.5]), maps=np.array([0.9, 0.0]))
    assert np.allclose(w, [0.5 * 0.01 / 2, 0.5 / 2])


def test_sampler_draws_rare_class_images_more_often_and_is_seeded():
    lbs = labels(*([[0]] * 9), [1])  # nine images of class 0, one of class 1
    weights = per_image_weights(lbs, class_frequency_weights(lbs, 2))
    sampler = ImageWeightSampler(weights, seed=3)
    draws = [i for _ in range(200) for i in sampler]  # one sampler: each epoch draws anew
    assert len(list(ImageWeightSampler(weights))) == 10
    assert 0.4 < draws.count(9) / len(draws) < 0.6  # half the weight sits on the one class-1 image
    assert list(ImageWeightSampler(weights, seed=1)) == list(ImageWeightSampler(weights, seed=1))


@pytest.mark.parametrize("bad", [[], [0.0, 0.0], [1.0, float("nan")], [1.0, -1.0]])
def test_sampler_rejects_unusable_weights(bad):
    with pytest.raises(ValueError, match="image weights must be"):
        ImageWeightSampler(np.array(bad))


def test_ranks_share_one_draw_and_set_epoch_reproduces_it():
    weights = np.arange(1.0, 8.0)  # 7 images: 2 ranks get 4 indices each, the draw padded by wrapping
    whole = ImageWeightSampler(weights, seed=5)
    shards = [ImageWeightSampler(weights, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for s in [whole, *shards]:
        s.set_epoch(3)
    drawn = list(whole)
    parts = [list(s) for s in shards]
    assert [len(s) for s in shards] == [4, 4] and [len(p) for p in parts] == [4, 4]
    padded = drawn + drawn[:1]
    assert parts[0] == padded[0::2] and parts[1] == padded[1::2]
    whole.set_epoch(3)
    assert list(whole) == drawn  # a resumed run redraws the same epoch
    whole.set_epoch(4)
    assert list(whole) != drawn
    with pytest.raises(ValueError, match="rank 2 does not fit world size 2"):
        ImageWeightSampler(weights, rank=2, world_size=2)


def test_loader_uses_the_sampler():
    loader, dataset = create_dataloader(str(COCO8_TRAIN), 64, 2, 32, workers=0, shuffle=True, image_weights=True)
    assert isinstance(loader.sampler, ImageWeightSampler) and len(loader.sampler) == len(dataset)
