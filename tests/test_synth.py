import math

import pytest
import torch

from datamodules.image_folder import HorizontalFlip
from datamodules.synthetic import SyntheticDataModule, SyntheticDataset
from depthadapt.synth import (
    FAMILIES,
    STYLES,
    Camera,
    SceneBuilder,
    Surface,
    apply_haze,
    render_sample,
    render_scene,
    sample_scene,
    sample_seed,
)

SH, SW = 98, 322  # street, half the default size
RH, RW = 133, 175  # room, half the default size
OBJECTS = {Surface.FACADE, Surface.CAR, Surface.GLASS, Surface.TYRE, Surface.POLE, Surface.TRUNK, Surface.FOLIAGE,
           Surface.FURNITURE, Surface.BALL}


@pytest.fixture(autouse=True)
def _one_thread():
    """Rendering is many small ops: one thread is about as fast, and immune to a busy second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _scene(family, style, index, h, w):
    """The scene that render_sample draws for these arguments (same generator, same order of draws)."""
    generator = torch.Generator().manual_seed(sample_seed(family, style, 0, index))
    return sample_scene(family, generator, h, w)


def test_exports():
    assert FAMILIES == ("street", "room")
    assert {"source", "target", "simulator"} <= set(STYLES)


def test_deterministic_per_sample():
    a = render_sample("street", "source", 0, 3, SH, SW)
    b = render_sample("street", "source", 0, 3, SH, SW)
    for key in ("image", "depth", "instances", "intrinsics"):
        assert torch.equal(a[key], b[key]), key
    c = render_sample("street", "source", 0, 4, SH, SW)
    d = render_sample("street", "source", 1, 3, SH, SW)
    assert not torch.equal(a["image"], c["image"]) and not torch.equal(a["depth"], c["depth"])
    assert not torch.equal(a["depth"], d["depth"])


def test_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    render_sample("room", "target", 0, 0, RH, RW)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_street_shapes_ranges_and_sky(index):
    s = render_sample("street", "source", 0, index, SH, SW)
    assert s["image"].shape == (3, SH, SW) and s["image"].dtype == torch.float32
    assert s["depth"].shape == (SH, SW) and s["depth"].dtype == torch.float32
    assert s["instances"].shape == (SH, SW) and s["instances"].dtype == torch.int64
    assert s["intrinsics"].shape == (4,) and s["intrinsics"].dtype == torch.float32
    assert 0 <= s["image"].min() and s["image"].max() <= 1
    depth = s["depth"]
    valid = depth > 0
    assert valid.float().mean() > 0.5
    assert depth[valid].max() <= 80.0 and depth[valid].min() > 0.5
    sky = _scene("street", "source", index, SH, SW).cast().prim < 0
    assert sky.any(), "a street image shows sky"
    assert (depth[sky] == 0).all() and (s["instances"][sky] == 0).all()
    assert sky[0].float().mean() > sky[-1].float().mean()  # sky above, ground below


@pytest.mark.parametrize("style", ["source", "target"])
def test_room_depth_range(style):
    s = render_sample("room", style, 0, 5, RH, RW)
    depth = s["depth"]
    valid = depth > 0
    assert valid.float().mean() > 0.95
    assert depth[valid].min() >= 0.5 and depth[valid].max() <= 10.0
    assert s["instances"].max() >= 1


@pytest.mark.parametrize("family, index", [("street", 0), ("street", 7), ("room", 1)])
def test_instances_match_objects(family, index):
    h, w = (SH, SW) if family == "street" else (RH, RW)
    s = render_sample(family, "source", 0, index, h, w)
    scene = _scene(family, "source", index, h, w)
    prim = scene.cast().prim
    surface = torch.where(prim >= 0, scene.surface[prim.clamp_min(0)], -1)
    is_object = torch.zeros_like(prim, dtype=torch.bool)
    for kind in OBJECTS:
        is_object |= surface == kind
    assert is_object.any()
    assert (s["instances"][is_object] >= 1).all()
    assert (s["instances"][~is_object] == 0).all()
    # Each id is one object: all its primitives share it and are of a kind that belongs together.
    for inst in s["instances"].unique().tolist():
        kinds = set(scene.surface[scene.instance == inst].tolist())
        assert inst == 0 or kinds <= {int(k) for k in OBJECTS}


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_objects_in_front_of_the_ground_behind_them(index):
    """Camera without roll over flat ground: ground seen beside or above an object's pixel is farther."""
    s = render_sample("street", "source", 0, index, SH, SW)
    depth, inst = s["depth"], s["instances"]
    checked = 0
    for obj, bg in (((slice(1, None), slice(None)), (slice(None, -1), slice(None))),  # ground above
                    ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),  # ground left
                    ((slice(None), slice(None, -1)), (slice(None), slice(1, None)))):  # ground right
        pair = (inst[obj] > 0) & (inst[bg] == 0) & (depth[bg] > 0) & (depth[obj] > 0)
        checked += int(pair.sum())
        assert (depth[bg][pair] >= depth[obj][pair] * 0.999).all()
    assert checked > 20


def _ground_scene(pitch, height=1.6, size=(120, 160), f=150.0):
    b = SceneBuilder()
    b.plane((0.0, 1.0, 0.0), 0.0, Surface.ROAD)
    h, w = size
    camera = Camera((2.0, height, -3.0), 0.4, pitch, f, f, (w - 1) / 2 + 3.0, (h - 1) / 2 - 7.0, h, w)
    return b.build("street", camera, 1e-3, 80.0, layout={"road": 5.0, "sidewalk": 2.0})


@pytest.mark.parametrize("pitch", [0.0, 0.1])
def test_ground_plane_z_depth(pitch):
    """Depth of the ground at row v is fx * h / (v - cy) for a level camera (any yaw), and in general
    h / (cos(pitch) (v - cy) / fy + sin(pitch))."""
    height = 1.6
    scene = _ground_scene(pitch, height)
    out = render_scene(scene, STYLES["source"], torch.Generator().manual_seed(0))
    fx, fy, cx, cy = out["intrinsics"].tolist()
    v = torch.arange(scene.camera.height, dtype=torch.float64)
    if pitch == 0:
        expected = fx * height / (v - cy)
    else:
        expected = height / (math.cos(pitch) * (v - cy) / fy + math.sin(pitch))
    depth = out["depth"].double()
    below = (expected > 0.5) & (expected < 80)
    assert below.sum() > 20
    rel = (depth[below] - expected[below, None]).abs() / expected[below, None]
    assert rel.max() < 0.01
    above = (expected <= 0) | (expected > 80)
    assert (depth[above] == 0).all()
    assert (out["instances"] == 0).all()


def test_fronto_parallel_wall_has_constant_z_depth():
    """z-depth, not ray length: a wall 7 m ahead of a level camera is 7 m deep in every pixel, corners too."""
    b = SceneBuilder()
    b.plane((0.0, 1.0, 0.0), 0.0, Surface.FLOOR)
    b.box((0.0, 5.0, 12.0), (50.0, 5.0, 5.0), 0.0, Surface.FURNITURE, b.new_instance())  # front face at z = 7
    camera = Camera((0.0, 1.5, 0.0), 0.0, 0.0, 60.0, 60.0, 39.5, 29.5, 60, 80)
    out = render_scene(b.build("room", camera, 0.5, 10.0, lamp=(0.0, 3.0, 2.0), layout={"width": 5, "depth": 20}),
                       STYLES["source"], torch.Generator().manual_seed(0))
    wall = out["instances"] == 1
    assert wall[0].all() and wall[:, 0].any()
    assert torch.allclose(out["depth"][wall], torch.tensor(7.0), rtol=1e-5)


def _histogram(style, n=3, bins=8):
    hist = torch.zeros(3, bins)
    for index in range(n):
        image = render_sample("street", style, 0, index, SH, SW)["image"]
        for c in range(3):
            hist[c] += torch.histc(image[c], bins=bins, min=0, max=1) / image[c].numel()
    return hist / n


def test_styles_are_different_domains():
    source, target, simulator = _histogram("source"), _histogram("target"), _histogram("simulator")
    # L1 distance between colour histograms (0 identical, 6 disjoint).
    assert (source - target).abs().sum() > 1.0
    assert (source - simulator).abs().sum() > 0.5
    assert (target - simulator).abs().sum() > 1.0


def test_unknown_names():
    with pytest.raises(ValueError, match="street, room"):
        render_sample("forest", "source", 0, 0, SH, SW)
    with pytest.raises(ValueError, match="source, target, simulator"):
        render_sample("street", "sepia", 0, 0, SH, SW)


def test_haze_by_hand():
    image = torch.full((2, 3, 2, 2), 0.2)
    depth = torch.tensor([[[0.0, 10.0], [20.0, 5.0]]]).repeat(2, 1, 1)
    out = apply_haze(image, depth, 0.1, 0.9)
    t10, t20, t5 = math.exp(-1.0), math.exp(-2.0), math.exp(-0.5)
    expected = torch.tensor([[0.9, 0.2 * t10 + 0.9 * (1 - t10)],
                             [0.2 * t20 + 0.9 * (1 - t20), 0.2 * t5 + 0.9 * (1 - t5)]])
    assert torch.allclose(out, expected.expand_as(out), atol=1e-6)
    # beta 0: unchanged where valid, airlight where invalid; per-image beta and colour airlight.
    out = apply_haze(image, depth, torch.tensor([0.0, 0.1]), torch.tensor([[1.0, 0.5, 0.0], [0.9, 0.9, 0.9]]))
    assert torch.allclose(out[0, :, 0, 1], torch.tensor(0.2))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, 0.5, 0.0]))
    assert torch.allclose(out[1, 0], expected)
    with pytest.raises(ValueError, match="airlight"):
        apply_haze(image, depth, 0.1, torch.ones(4))
    with pytest.raises(ValueError, match="beta"):
        apply_haze(image, depth, -0.1, 0.9)


def test_datamodule_batches():
    dm = SyntheticDataModule(height=42, width=70, train_range=(0, 3), val_range=(3, 5), test_range=(5, 7),
                             batch_size=2, hflip=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 42, 70) and batch["image"].dtype == torch.float32
    assert batch["depth"].shape == (2, 42, 70) and batch["valid"].dtype == torch.bool
    assert batch["instances"].shape == (2, 42, 70) and batch["instances"].dtype == torch.int64
    assert batch["intrinsics"].shape == (2, 4) and batch["skipped"] == []
    assert torch.equal(batch["valid"], batch["depth"] > 0)
    val = next(iter(dm.val_dataloader()))
    assert val["name"] == ["street/source/000003", "street/source/000004"] and val["index"].tolist() == [3, 4]
    dm.setup("test")
    assert len(dm.test_dataloader().dataset) == 2
    room = SyntheticDataModule(family="room", style="target")
    assert (room.height, room.width) == (266, 350)
    assert (SyntheticDataModule().height, SyntheticDataModule().width) == (196, 644)


def test_datamodule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="street, room"):
        SyntheticDataModule(family="forest")
    with pytest.raises(ValueError, match="source, target, simulator"):
        SyntheticDataModule(style="sepia")
    with pytest.raises(ValueError, match="overlaps data.test_range"):
        SyntheticDataModule(train_range=(0, 100), test_range=(50, 150))
    with pytest.raises(ValueError, match="start < stop"):
        SyntheticDataModule(val_range=(10, 10))


def test_flip_keeps_labels_aligned():
    ds = SyntheticDataset("street", "source", 0, 1, 28, 56)
    sample, flipped = ds[0], HorizontalFlip(ds, p=1.0)[0]
    for key in ("image", "depth", "valid", "instances"):
        assert torch.equal(flipped[key], sample[key].flip(-1))
    assert flipped["intrinsics"][2] == pytest.approx(55 - sample["intrinsics"][2].item())


def test_cache_round_trip(tmp_path):
    cached = SyntheticDataset("room", "simulator", 10, 12, 28, 42, haze_beta=0.1, cache_dir=tmp_path)
    fresh = SyntheticDataset("room", "simulator", 10, 12, 28, 42, haze_beta=0.1)
    first = cached[1]
    files = list(tmp_path.rglob("*"))
    assert [f.name for f in files if f.is_file()] == ["000011.pt"]
    again = SyntheticDataset("room", "simulator", 10, 12, 28, 42, haze_beta=0.1, cache_dir=tmp_path)[1]
    reference = fresh[1]
    for key in ("image", "depth", "valid", "instances", "intrinsics"):
        assert torch.equal(first[key], reference[key]) and torch.equal(again[key], reference[key]), key
        assert again[key].dtype == reference[key].dtype
    assert again["name"] == "room/simulator/000011" and again["index"] == 11


def test_predict_range_may_cover_the_training_images() -> None:
    data = SyntheticDataModule(height=14, width=28, train_range=(0, 4), val_range=(4, 5), test_range=(5, 6),
                               predict_range=(0, 3), batch_size=3)
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    assert batch["index"].tolist() == [0, 1, 2]
    data.setup("test")
    assert next(iter(data.test_dataloader()))["index"].tolist() == [5]
