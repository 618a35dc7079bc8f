import logging

import cv2
import numpy as np
import pytest
import torch

from datamodules.base import HorizontalFlip, collate_samples, read_split_file
from datamodules.image_folder import ImageFolderDataModule, ImageFolderDataset
from depthadapt.io import write_depth_png16

pytestmark = pytest.mark.unit

H, W = 6, 8


def _write_image(path, seed, h=H, w=W):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rgb


def _depth(seed, h=H, w=W):
    depth = np.random.default_rng(seed).uniform(1, 50, (h, w)).astype(np.float32)
    depth[0, 0] = 0.0  # invalid pixel
    return depth


@pytest.fixture
def folder(tmp_path):
    """images/{a,b,c}.png and images/sub/d.png with 16-bit depth in depth/ (KITTI scale)."""
    images, depths = tmp_path / "images", tmp_path / "depth"
    for i, name in enumerate(["a", "b", "c", "sub/d"]):
        _write_image(images / f"{name}.png", i)
        write_depth_png16(depths / f"{name}.png", _depth(i))
    return images, depths


def test_lists_images_recursively_sorted(folder, tmp_path):
    images, _ = folder
    (images / "notes.txt").write_text("not an image")
    _write_image(images / ".hidden" / "x.png", 9)
    _write_image(images / "e.JPEG", 9)
    ds = ImageFolderDataset(images)
    assert ds.files == ["a.png", "b.png", "c.png", "e.JPEG", "sub/d.png"]
    sample = ds[4]
    assert sample["name"] == "sub/d.png" and sample["index"] == 4 and "depth" not in sample
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, H, W)
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0


def test_depth_folder_inside_image_folder_is_not_listed(tmp_path):
    _write_image(tmp_path / "a.png", 0)
    write_depth_png16(tmp_path / "gt" / "a.png", _depth(0))
    assert ImageFolderDataset(tmp_path, depth_dir=tmp_path / "gt").files == ["a.png"]


def test_sample_with_depth(folder):
    images, depths = folder
    ds = ImageFolderDataset(images, depths, depth_scale=1 / 256)
    sample = ds[0]
    rgb = cv2.cvtColor(cv2.imread(str(images / "a.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_allclose(sample["image"].permute(1, 2, 0).numpy() * 255, rgb, atol=1e-3)
    assert sample["depth"].dtype == torch.float32 and sample["depth"].shape == (H, W)
    np.testing.assert_allclose(sample["depth"].numpy(), _depth(0), atol=1 / 512)
    assert sample["valid"].dtype == torch.bool
    assert not sample["valid"][0, 0] and sample["valid"].sum() == H * W - 1


def test_image_size_resizes_image_and_depth(folder):
    images, depths = folder
    sample = ImageFolderDataset(images, depths, depth_scale=1 / 256, image_size=(3, 4))[0]
    assert sample["image"].shape == (3, 3, 4) and sample["depth"].shape == (3, 4)
    # nearest neighbour: every resized depth is one of the original depths
    assert np.isin(sample["depth"].numpy(), np.round(_depth(0) * 256) / 256).all()
    big = ImageFolderDataset(images, image_size=(12, 20))[0]
    assert big["image"].shape == (3, 12, 20)
    with pytest.raises(ValueError, match="image_size"):
        ImageFolderDataset(images, image_size=(0, 4))


def test_missing_depth_counted_and_named(folder, caplog):
    images, depths = folder
    (depths / "b.png").unlink()
    (depths / "sub" / "d.png").unlink()
    with caplog.at_level(logging.WARNING):
        ds = ImageFolderDataset(images, depths)
    assert ds.missing_depth == ["b.png", "sub/d.png"]
    assert ds.files == ["a.png", "c.png"]
    assert "2 of 4" in caplog.text and "b.png" in caplog.text and "sub/d.png" in caplog.text


def test_depth_suffix_and_no_depth_at_all(folder, tmp_path):
    images, _ = folder
    npy = tmp_path / "npy"
    (npy / "sub").mkdir(parents=True)
    for name in ["a", "b", "c", "sub/d"]:
        np.save(npy / f"{name}_depth.npy", np.full((H, W), 2.5, np.float32))
    ds = ImageFolderDataset(images, npy, depth_suffix="_depth.npy")
    assert len(ds) == 4 and ds[3]["depth"].eq(2.5).all()
    with pytest.raises(ValueError, match="none of the images"):
        ImageFolderDataset(images, npy)


def test_missing_or_empty_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolderDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        ImageFolderDataset(tmp_path / "empty")
    _write_image(tmp_path / "a.png", 0)
    with pytest.raises(FileNotFoundError, match="nodepth"):
        ImageFolderDataset(tmp_path, tmp_path / "nodepth")


def test_unreadable_image_is_skipped_and_batch_still_stacks(folder):
    images, depths = folder
    (images / "b.png").write_bytes(b"garbage, not a png")
    ds = ImageFolderDataset(images, depths)
    bad = ds[1]
    assert bad["name"] == "b.png" and bad["index"] == 1 and "b.png" in bad["error"] and "image" not in bad
    batch = collate_samples([ds[i] for i in range(len(ds))])
    assert batch["name"] == ["a.png", "c.png", "sub/d.png"]
    assert batch["index"].tolist() == [0, 2, 3]
    assert batch["image"].shape == (3, 3, H, W)
    assert batch["depth"].shape == (3, H, W) and batch["valid"].dtype == torch.bool
    assert [name for name, _ in batch["skipped"]] == ["b.png"]
    assert collate_samples([bad]) == {"skipped": [("b.png", bad["error"])], "name": []}


def test_depth_of_other_size_is_an_error_sample(folder):
    images, depths = folder
    write_depth_png16(depths / "a.png", np.ones((2, 2)))
    assert "2 x 2" in ImageFolderDataset(images, depths)[0]["error"]


def test_collate_refuses_mixed_sizes(folder):
    images, _ = folder
    _write_image(images / "b.png", 1, h=10)
    ds = ImageFolderDataset(images)
    with pytest.raises(ValueError, match="batch_size 1 or set image_size"):
        collate_samples([ds[0], ds[1]])


def test_files_and_exclude(folder):
    images, _ = folder
    ds = ImageFolderDataset(images, files=["sub/d.png", "a.png"])
    assert ds.files == ["sub/d.png", "a.png"]
    with pytest.raises(FileNotFoundError, match="nope.png"):
        ImageFolderDataset(images, files=["a.png", "nope.png"])
    full = ImageFolderDataset(images)
    assert full.exclude({"a.png", "sub/d.png", "unknown.png"}) == 2
    assert full.files == ["b.png", "c.png"] and full[0]["name"] == "b.png"


def test_split_file_selects_exactly_its_images(folder, tmp_path):
    images, depths = folder
    split = tmp_path / "split.txt"
    split.write_text("# test split\n\nsub/d.png\n./b.png  \n")
    assert read_split_file(split) == ["sub/d.png", "b.png"]
    dm = ImageFolderDataModule(str(images), str(depths), split_file=str(split))
    dm.setup("test")
    assert dm.test_dataset.files == ["sub/d.png", "b.png"]
    assert [n for batch in dm.test_dataloader() for n in batch["name"]] == ["sub/d.png", "b.png"]

    with pytest.raises(FileNotFoundError, match="missing_split.txt"):
        ImageFolderDataModule(str(images), split_file=str(tmp_path / "missing_split.txt")).setup("predict")
    split.write_text("a.png\ngone.png\n")
    with pytest.raises(FileNotFoundError, match="split.txt.*gone.png"):
        ImageFolderDataModule(str(images), split_file=str(split)).setup("predict")


def test_datamodule_batches(folder):
    images, depths = folder
    dm = ImageFolderDataModule(
        str(images), str(depths), depth_scale=1 / 256, image_size=(4, 6), val_fraction=0.25, batch_size=2
    )
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert sorted(n for b in train for n in b["name"]) == ["a.png", "b.png", "c.png"]
    assert train[0]["image"].shape == (2, 3, 4, 6)
    assert train[0]["depth"].shape == (2, 4, 6) and train[0]["valid"].shape == (2, 4, 6)
    (val,) = list(dm.val_dataloader())
    assert val["name"] == ["sub/d.png"] and val["image"].shape == (1, 3, 4, 6)

    dm.setup("predict")
    assert len(dm.predict_dataset) == 4
    batches = list(dm.predict_dataloader())
    assert [b["name"] for b in batches] == [["a.png", "b.png"], ["c.png", "sub/d.png"]]
    assert batches[0]["image"].shape == (2, 3, 4, 6) and "depth" not in batches[0]


def test_datamodule_without_validation_split(folder):
    images, depths = folder
    dm = ImageFolderDataModule(str(images), str(depths))
    dm.setup("fit")
    assert len(dm.train_dataset) == 4 and dm.val_dataloader() == []
    dm.setup("validate")
    assert len(dm.val_dataset) == 4


def test_datamodule_argument_errors(folder):
    images, _ = folder
    for stage in ("fit", "test"):
        with pytest.raises(ValueError, match="data.depth_dir"):
            ImageFolderDataModule(str(images)).setup(stage)
    with pytest.raises(ValueError, match="data.image_dir"):
        ImageFolderDataModule().setup("predict")
    with pytest.raises(ValueError, match="data.val_fraction"):
        ImageFolderDataModule(str(images), val_fraction=1.0)
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        ImageFolderDataModule(str(images.parent / "no_such_dir")).setup("predict")


def test_hflip_flips_image_and_depth_together(folder):
    images, depths = folder
    ds = ImageFolderDataset(images, depths, depth_scale=1 / 256)
    plain, flipped = ds[0], HorizontalFlip(ds, p=1.0)[0]
    for key in ("image", "depth", "valid"):
        assert torch.equal(flipped[key][..., 2, W - 1 - 3], plain[key][..., 2, 3])
    assert not flipped["valid"][0, W - 1]  # the invalid corner pixel moved with the depth
    assert torch.equal(HorizontalFlip(ds, p=0.0)[0]["image"], plain["image"])

    dm = ImageFolderDataModule(str(images), str(depths), depth_scale=1 / 256, hflip=True)
    dm.setup("fit")
    seen = set()
    n = len(dm.train_dataset)
    for epoch in range(20):
        sample = dm.train_dataset[epoch * n]  # sample 0 in each epoch (the EpochShuffle key)
        assert torch.equal(dm.train_dataset[epoch * n]["image"], sample["image"])  # one coin per (sample, epoch)
        is_flipped = torch.equal(sample["image"], plain["image"].flip(-1))
        assert is_flipped or torch.equal(sample["image"], plain["image"])
        assert torch.equal(sample["depth"], plain["depth"].flip(-1) if is_flipped else plain["depth"])
        seen.add(is_flipped)
    assert seen == {True, False}


def test_epoch_shuffle_depends_on_seed_and_epoch_only():
    from datamodules.base import EpochShuffle

    first, again = EpochShuffle(50, seed=3), EpochShuffle(50, seed=3)
    orders = []
    for epoch in range(3):
        first.set_epoch(epoch)
        again.set_epoch(epoch)
        orders.append(list(first))
        assert orders[-1] == list(again) and sorted(orders[-1]) == list(range(50))
    assert orders[0] != orders[1] != orders[2]
    other = EpochShuffle(50, seed=4)
    assert list(other) != orders[0]
    keyed = EpochShuffle(50, seed=3, epoch_keys=True)
    keyed.set_epoch(2)
    assert list(keyed) == [k + 100 for k in orders[2]]


def test_listing_survives_symlink_loops_and_refuses_extension_collisions(tmp_path):
    from datamodules.base import list_image_files
    from depthadapt.io import MANIFEST_NAME

    _write_image(tmp_path / "a" / "x.png", 0)
    (tmp_path / "a" / "loop").symlink_to(tmp_path)  # a loop back to the root
    (tmp_path / "b").symlink_to(tmp_path / "a")  # a second way into the same folder
    outputs = tmp_path / "a" / "outputs"
    _write_image(outputs / "x_color.png", 1)
    (outputs / MANIFEST_NAME).write_text("{}")  # a prediction job's output folder: never listed as input
    assert list_image_files(tmp_path) == ["a/x.png"]
    _write_image(tmp_path / "a" / "x.jpg", 2)
    with pytest.raises(ValueError, match=r"a/x.jpg and a/x.png differ only by their extension"):
        list_image_files(tmp_path)
