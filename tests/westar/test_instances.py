"""Instance masks: the 16-bit cache, SAM2 mask painting, superpixels, the SAM2 builder and the mask job."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

import cli
from depthadapt.westar import instances

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "configs" / "sam2_masks.yaml"


def box(height: int, width: int, top: int, left: int, bottom: int, right: int) -> dict[str, np.ndarray]:
    """A SAM2-like mask record: ``segmentation`` True inside rows top:bottom and columns left:right."""
    segmentation = np.zeros((height, width), dtype=bool)
    segmentation[top:bottom, left:right] = True
    return {"segmentation": segmentation, "area": int(segmentation.sum())}


def test_mask_cache_path_replaces_image_suffix_only(tmp_path: Path) -> None:
    assert instances.mask_cache_path(tmp_path, "street/target/003100") == tmp_path / "street/target/003100.png"
    kitti = "2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000005.png"
    assert instances.mask_cache_path(tmp_path, kitti) == tmp_path / kitti
    assert instances.mask_cache_path(str(tmp_path), "a/b.JPG") == tmp_path / "a/b.png"
    assert instances.mask_cache_path(tmp_path, "a/b.v2") == tmp_path / "a/b.v2.png"
    for bad in ("/etc/passwd", "../outside.png", ""):
        with pytest.raises(ValueError, match="relative path"):
            instances.mask_cache_path(tmp_path, bad)


def test_instance_map_round_trip_is_16_bit(tmp_path: Path) -> None:
    ids = np.arange(12 * 20, dtype=np.int64).reshape(12, 20) * 273  # up to 65247: needs 16 bits
    path = tmp_path / "deep" / "folder" / "000001.png"
    instances.write_instance_map(path, ids)
    loaded = instances.read_instance_map(path)
    assert loaded.dtype == np.int64 and loaded.shape == (12, 20)
    np.testing.assert_array_equal(loaded, ids)
    instances.write_instance_map(path, torch.from_numpy(ids[::-1].copy()))  # tensors too; overwrites atomically
    np.testing.assert_array_equal(instances.read_instance_map(path), ids[::-1])
    assert [p.name for p in path.parent.iterdir()] == ["000001.png"]  # no temporary file left


@pytest.mark.parametrize(
    ("ids", "message"),
    [(np.full((4, 4), 65536), "0..65535"), (np.full((4, 4), -1), "0..65535"), (np.zeros((4, 4), np.float32), "integer"),
     (np.zeros((2, 4, 4), np.int64), "H x W")],
)
def test_write_instance_map_refuses_what_a_16_bit_png_cannot_hold(tmp_path: Path, ids, message) -> None:
    path = tmp_path / "x.png"
    with pytest.raises(ValueError, match=message):
        instances.write_instance_map(path, ids)
    assert not list(tmp_path.iterdir())


def test_missing_cache_entry_says_how_to_build_it(tmp_path: Path) -> None:
    path = instances.mask_cache_path(tmp_path, "street/target/000007")
    with pytest.raises(instances.MissingMaskError) as info:
        instances.read_instance_map(path)
    message = str(info.value)
    assert str(path) in message
    assert "python cli.py predict --config config_yaml/sam2_masks.yaml" in message
    assert "ground_truth" in message and "superpixels" in message and "grid" in message
    assert isinstance(info.value, FileNotFoundError)


def test_nested_masks_stay_visible_and_ids_are_consecutive() -> None:
    height, width = 20, 30
    big = box(height, width, 0, 0, 20, 30)  # the whole image
    medium = box(height, width, 2, 2, 12, 12)  # 100 px inside big
    small = box(height, width, 4, 4, 8, 8)  # 16 px inside medium
    elsewhere = box(height, width, 14, 20, 18, 28)  # 32 px inside big
    instance_map = instances.masks_to_instance_map([small, elsewhere, big, medium], height, width, min_area=1)
    assert instance_map.dtype == np.int64
    # painted largest first: big 1, medium 2, elsewhere 3, small 4 on top
    assert set(np.unique(instance_map)) == {1, 2, 3, 4}
    assert (instance_map[small["segmentation"]] == 4).all()
    assert (instance_map[medium["segmentation"] & ~small["segmentation"]] == 2).all()
    assert (instance_map[elsewhere["segmentation"]] == 3).all()
    assert (instance_map == 1).sum() == 600 - 100 - 32


def test_min_area_counts_visible_pixels_and_renumbers() -> None:
    height, width = 20, 30
    big = box(height, width, 0, 0, 10, 30)  # 300 px
    tiny = box(height, width, 15, 0, 17, 2)  # 4 px: under min_area
    medium = box(height, width, 0, 0, 6, 10)  # 60 px, but only 12 stay visible above the two below
    cover_a = box(height, width, 0, 0, 6, 4)  # 24 px on top of medium
    cover_b = box(height, width, 0, 4, 6, 8)  # 24 px on top of medium
    masks = [big, tiny, medium, cover_a, cover_b]
    instance_map = instances.masks_to_instance_map(masks, height, width, min_area=20)
    # medium is dropped after overlap resolution; its uncovered pixels go back to big; ids stay 1..3
    assert set(np.unique(instance_map)) == {0, 1, 2, 3}
    assert (instance_map[15:17, 0:2] == 0).all()
    assert (instance_map[0:6, 8:10] == 1).all()
    assert (instance_map[0:6, 0:4] == 2).all() and (instance_map[0:6, 4:8] == 3).all()
    # a mask covered entirely by smaller ones never gets an id, even with min_area 0
    covered = instances.masks_to_instance_map([box(4, 4, 0, 0, 2, 2), box(4, 4, 0, 0, 2, 2)], 4, 4, 0)
    assert set(np.unique(covered)) == {0, 1}
    assert not instances.masks_to_instance_map([], height, width, min_area=20).any()
    with pytest.raises(ValueError, match="mask 0 has shape"):
        instances.masks_to_instance_map([big], height + 1, width, min_area=1)


def test_superpixels_are_deterministic_and_cover_every_pixel() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    image[:, 32:] = (200, 40, 40)
    image[24:, :32] = (30, 160, 30)
    image = np.clip(image.astype(np.int16) + rng.integers(-10, 10, image.shape), 0, 255).astype(np.uint8)
    labels = instances.superpixel_instances(image, n_segments=16)
    assert labels.shape == (48, 64) and labels.dtype == np.int64
    assert labels.min() == 1 and np.array_equal(np.unique(labels), np.arange(1, labels.max() + 1))
    assert 4 <= labels.max() <= 32
    np.testing.assert_array_equal(labels, instances.superpixel_instances(image, n_segments=16))
    # a 3 x H x W tensor in [0, 1] gives the same superpixels as the uint8 image
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    np.testing.assert_array_equal(instances.superpixel_instances(tensor, n_segments=16), labels)
    # superpixels follow the colour edges: none straddles the vertical edge at column 32
    for label in np.unique(labels):
        columns = np.nonzero(labels == label)[1]
        assert columns.max() < 32 or columns.min() >= 32


def test_sam2_without_checkpoint_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no SAM2 checkpoint given") as info:
        instances.build_sam2_mask_generator("configs/sam2.1/sam2.1_hiera_t.yaml", None)
    assert "sam2.1_hiera_tiny.pt" in str(info.value) and "superpixels" in str(info.value)
    missing = tmp_path / "sam2.1_hiera_tiny.pt"
    with pytest.raises(FileNotFoundError, match=f"SAM2 checkpoint not found: {missing}"):
        instances.build_sam2_mask_generator(checkpoint=missing)
    with pytest.raises(ValueError, match="unknown SAM2 model_config 'sam2_tiny'.*configs/sam2.1/sam2.1_hiera_t.yaml"):
        instances.build_sam2_mask_generator("sam2_tiny", None, allow_random_weights=True)


def test_sam2_foreign_checkpoint_is_named(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match=f"{path} is not a SAM2 checkpoint"):
        instances.build_sam2_mask_generator(checkpoint=path)
    torch.save({"model": {"image_encoder.bogus": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match=f"SAM2 checkpoint {path} does not fit model_config"):
        instances.build_sam2_mask_generator(checkpoint=path)


def test_sam2_random_weights_give_an_instance_map() -> None:
    with pytest.raises(ValueError, match="points_per_side must be >= 1, got 0"):
        instances.SAM2MaskSettings(points_per_side=0)
    settings = instances.SAM2MaskSettings(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    generator = instances.build_sam2_mask_generator(settings=settings, allow_random_weights=True)
    assert isinstance(generator, SAM2AutomaticMaskGenerator)
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    masks = generator.generate(image)
    assert masks  # thresholds 0: non-maximum suppression keeps at least one proposal
    for record in masks:
        assert record["segmentation"].shape == (32, 48) and record["segmentation"].dtype == bool
    instance_map = instances.masks_to_instance_map(masks, 32, 48, min_area=1)
    assert instance_map.shape == (32, 48)
    assert instance_map.max() == len(np.unique(instance_map[instance_map > 0]))


def test_mask_job_shards_writes_the_cache_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    inputs: list[tuple[tuple[int, ...], np.dtype]] = []
    generate = SAM2AutomaticMaskGenerator.generate

    def spy(self: SAM2AutomaticMaskGenerator, image: np.ndarray) -> list[dict]:
        inputs.append((image.shape, image.dtype))
        return generate(self, image)

    monkeypatch.setattr(SAM2AutomaticMaskGenerator, "generate", spy)
    cache = tmp_path / "sam2_masks"
    names = ["street/target/000000", "street/target/000001"]  # in shards 1 and 0 of 2 (sha1 of the name)
    args = ["predict", "--config", str(CONFIG)]
    with caplog.at_level(logging.INFO):
        cli.main([*args, "--model.num_shards", "2", "--model.shard", "0"])
    assert inputs == [((64, 64, 3), np.uint8)]
    assert not instances.mask_cache_path(cache, names[0]).exists()
    assert instances.mask_cache_path(cache, names[1]).is_file()
    assert "1 images masked" in caplog.text and "1 in other shards" in caplog.text

    cli.main([*args, "--model.num_shards", "2", "--model.shard", "1"])
    assert len(inputs) == 2
    for name in names:
        instance_map = instances.read_instance_map(instances.mask_cache_path(cache, name))
        assert instance_map.shape == (64, 64)
        assert instance_map.max() == len(np.unique(instance_map[instance_map > 0]))  # ids 1..N (or all 0)
    assert not [p for p in cache.rglob("*") if "tmp" in p.name]

    stamps = {p: p.stat().st_mtime_ns for p in cache.rglob("*.png")}
    caplog.clear()
    with caplog.at_level(logging.INFO):
        cli.main(args)
    assert len(inputs) == 2  # everything cached: SAM2 never ran
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.png")} == stamps
    assert "0 images masked" in caplog.text and "InstanceMaskWriter wrote 0 items" in caplog.text
    assert "(2 already done)" in caplog.text


def test_predictor_skips_other_shard_and_unreadable_images(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_modules.instance_masks import SAM2MaskPredictor

    module = SAM2MaskPredictor(settings=instances.SAM2MaskSettings(points_per_side=2), min_area=4,
                               allow_random_weights=True, num_shards=2, shard=0)
    seen: list[np.ndarray] = []

    def generate(image: np.ndarray) -> list[dict]:
        seen.append(image)
        return [box(6, 8, 0, 0, 6, 8), box(6, 8, 1, 1, 3, 3), box(6, 8, 4, 4, 5, 5)]  # 1 px: under min_area

    monkeypatch.setattr(module.generator, "generate", generate)
    names = ["street/target/000001", "street/target/000000"]  # shards 0, 1
    assert [module.in_shard(name) for name in names] == [True, False]
    image = torch.rand(2, 3, 6, 8)
    module.on_predict_start()
    batch = {"image": image, "name": names, "skipped": [("broken.png", "not an image")]}
    module.on_predict_batch_start(batch, 0)
    out = module.predict_step(batch, 0)
    assert out["name"] == [names[0]]
    np.testing.assert_array_equal(seen[0], (image[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    expected = np.ones((6, 8), np.int64)
    expected[1:3, 1:3] = 2
    np.testing.assert_array_equal(out["instances"][0].numpy(), expected)
    assert module.counts == {"masked": 1, "masks": 2, "other_shard": 1}
    assert list(module.skipped.entries) == [("broken.png", "not an image")]
    assert module.predict_step({"name": [], "skipped": [("a.png", "x")]}, 1) is None
