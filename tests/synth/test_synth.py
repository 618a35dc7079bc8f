import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from checkpoints.pretrain import FOUNDATION_SIZES, load_config
from datamodules.base import HorizontalFlip, SizeGroupedBatches
from datamodules.synthetic import Augmented, SyntheticDataModule, SyntheticDataset
from datamodules.weak_labels import WeakLabelSources
from depthadapt.synth import (
    FAMILIES,
    HELD_OUT,
    RANDOM,
    STYLES,
    SUPPORT,
    Camera,
    SceneBuilder,
    Surface,
    apply_haze,
    in_support,
    random_style,
    render_sample,
    render_scene,
    sample_scene,
    sample_seed,
)
from depthadapt.synth.render import MIN_INSTANCE_FRACTION, drop_small

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

SH, SW = 98, 322  # street, half the default size
RH, RW = 133, 175  # room, half the default size
OBJECTS = {Surface.FACADE, Surface.CAR, Surface.GLASS, Surface.TYRE, Surface.POLE, Surface.TRUNK, Surface.FOLIAGE,
           Surface.FURNITURE, Surface.BALL}


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


def _min_area(h, w):
    return max(1, round(MIN_INSTANCE_FRACTION * h * w))


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
    objects = torch.where(prim >= 0, scene.instance[prim.clamp_min(0)], 0)
    assert (objects[is_object] >= 1).all() and (objects[~is_object] == 0).all()
    # The map keeps exactly the objects of at least the minimum area, with the scene's ids.
    ids, counts = objects.unique(return_counts=True)
    kept = {i for i, c in zip(ids.tolist(), counts.tolist(), strict=True) if i > 0 and c >= _min_area(h, w)}
    assert set(s["instances"].unique().tolist()) - {0} == kept
    assert torch.equal(s["instances"], torch.where(torch.isin(objects, torch.tensor(sorted(kept))), objects, 0))
    # Each id is one object: all its primitives share it and are of a kind that belongs together.
    for inst in s["instances"].unique().tolist():
        kinds = set(scene.surface[scene.instance == inst].tolist())
        assert inst == 0 or kinds <= {int(k) for k in OBJECTS}
    # The per-part map: one id per primitive (index + 1) on object pixels, 0 elsewhere.
    assert torch.equal(s["parts"], torch.where(is_object, prim + 1, 0))


def test_a_car_is_one_instance_of_several_parts_and_no_instance_is_a_sliver():
    merged_cars = 0
    for index in range(4):
        s = render_sample("street", "source", 0, index, SH, SW)
        scene = _scene("street", "source", index, SH, SW)
        parts, instances = s["parts"], s["instances"]
        ids, counts = instances.unique(return_counts=True)
        assert (counts[ids > 0] >= _min_area(SH, SW)).all()
        for part in parts.unique().tolist():
            if part:  # a part lies inside one instance (or is background when its object is a sliver)
                assert len(instances[parts == part].unique()) == 1
        for inst in ids.tolist():
            visible = parts[instances == inst].unique().tolist()
            surfaces = {int(scene.surface[p - 1]) for p in visible if p}
            if inst and Surface.CAR in surfaces and len(visible) >= 3:
                assert surfaces <= {Surface.CAR, Surface.GLASS, Surface.TYRE}  # body, cabin and wheels: one car
                merged_cars += 1
        assert (drop_small(parts, _min_area(SH, SW)) > 0).sum() < (parts > 0).sum()  # slivers of parts exist too
    assert merged_cars >= 3


def test_drop_small_by_hand():
    ids = torch.tensor([[0, 1, 1], [2, 1, 3], [3, 3, 3]])
    assert torch.equal(drop_small(ids, 3), torch.tensor([[0, 1, 1], [0, 1, 3], [3, 3, 3]]))
    assert torch.equal(drop_small(ids, 4), torch.tensor([[0, 0, 0], [0, 0, 3], [3, 3, 3]]))


# Image and depth sums and sums of squares (float64) and intrinsics of scenes rendered before the split of scene.py
# (commit 8ee228f). They were sha256 digests, which this code matched bit for bit on the CPU that recorded them but
# not on one with AVX-512, where torch's vectorised kernels round ~1 % of the pixels differently (by ~1e-7, measured;
# the sums move by ~1e-9 relative): these figures are this code's on such a CPU. A pixel changed by 0.002 moves an
# image sum by ~1e-7 relative.
BEFORE_SPLIT = {
    ('street', 'source', 0): (
        15603.74483, 8958.377474, 176466.7845, 5174897.447, [139.733292, 139.733292, 90.861008, 27.813313],
    ),
    ('street', 'source', 1): (
        13063.27917, 6807.592147, 142400.7066, 3808204.201, [111.91893, 111.91893, 92.317818, 27.921335],
    ),
    ('street', 'target', 0): (
        11422.90719, 4566.38373, 186641.4101, 5420573.371, [134.740601, 134.740601, 87.863556, 27.832718],
    ),
    ('street', 'target', 1): (
        12156.52359, 5083.155232, 162764.3714, 5444221.017, [105.778183, 105.778183, 93.978882, 30.17918],
    ),
    ('street', 'simulator', 0): (
        16556.67708, 9519.110755, 129555.952, 3442865.205, [108.922195, 108.922195, 90.665123, 24.775391],
    ),
    ('street', 'simulator', 1): (
        15453.60158, 8614.538854, 123651.6283, 3168564.924, [102.814621, 102.814621, 91.110313, 28.657072],
    ),
    ('room', 'source', 0): (
        11339.0163, 7180.313948, 24909.60463, 120107.862, [62.393044, 62.393044, 46.369354, 33.802193],
    ),
    ('room', 'source', 1): (
        11864.11799, 7758.341654, 19500.05005, 65152.69304, [58.768284, 58.768284, 44.813953, 32.508537],
    ),
    ('room', 'target', 0): (
        8861.369571, 4235.354068, 21586.17222, 89277.20472, [52.697144, 52.697144, 46.303066, 32.535187],
    ),
    ('room', 'target', 1): (
        8977.020771, 4388.977443, 22778.26289, 97374.68156, [51.4482, 51.4482, 46.240582, 34.754936],
    ),
    ('room', 'simulator', 0): (
        12902.11249, 8863.356842, 30694.2712, 168627.7339, [65.469955, 65.469955, 44.689716, 35.065716],
    ),
    ('room', 'simulator', 1): (
        13459.3601, 9644.094868, 22526.3047, 85967.20594, [58.677689, 58.677689, 46.221027, 33.490803],
    ),
}


@pytest.mark.parametrize("key", list(BEFORE_SPLIT))
def test_split_modules_render_what_the_code_before_the_split_rendered(key):
    family, style, index = key
    h, w = (56, 182) if family == "street" else (70, 91)
    s = render_sample(family, style, 0, index, h, w)
    image, depth = s["image"].double(), s["depth"].double()
    *sums, intrinsics = BEFORE_SPLIT[key]
    measured = [image.sum().item(), image.square().sum().item(), depth.sum().item(), depth.square().sum().item()]
    assert measured == pytest.approx(sums, rel=1e-7, abs=0)
    assert s["intrinsics"].tolist() == pytest.approx(intrinsics, rel=1e-6, abs=0)


def test_no_synth_module_over_400_lines():
    for path in (ROOT / "depthadapt" / "synth").rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path


@pytest.mark.parametrize("family", FAMILIES)
def test_random_styles_are_deterministic_and_vary(family):
    assert random_style(family, 0, 5) == random_style(family, 0, 5)
    others = [random_style(family, 0, 6), random_style(family, 1, 5), random_style(FAMILIES[family == "street"], 0, 5)]
    assert all(other != random_style(family, 0, 5) for other in others)
    a = render_sample(family, RANDOM, 0, 5, 28, 56)
    b = render_sample(family, RANDOM, 0, 5, 28, 56)
    for key in ("image", "depth", "instances"):
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["image"], render_sample(family, RANDOM, 0, 6, 28, 56)["image"])
    # The same scene index draws a different scene in the random family than in a named style.
    assert not torch.equal(a["depth"], render_sample(family, "source", 0, 5, 28, 56)["depth"])


def test_random_family_spans_its_support_and_excludes_the_held_out_styles():
    draws = [random_style(family, 0, i) for family in FAMILIES for i in range(150)]
    assert all(in_support(style) for style in draws)
    # Every axis is really randomised: the draws cover most of each range.
    for name, get in (("exposure", lambda s: s.exposure), ("contrast", lambda s: s.contrast),
                      ("saturation", lambda s: s.saturation), ("vignette", lambda s: s.vignette)):
        values = torch.tensor([get(s) for s in draws])
        lo, hi = SUPPORT[name]
        assert values.max() - values.min() > 0.8 * (hi - lo), name
    assert len({s.palette[Surface.FACADE][0] for s in draws}) == len(draws)
    assert {t.kind for s in draws for t in s.textures.values()} == {"plain", "noise", "checker", "stripes", "bricks"}
    assert 4 >= len(HELD_OUT) >= 3 and set(HELD_OUT.values()) == set(FAMILIES) and "sintel" in HELD_OUT
    for name in HELD_OUT:
        assert not in_support(STYLES[name]), name
    # The check itself: one axis moved out of range takes a training style out of the support.
    assert not in_support(replace(draws[0], saturation=SUPPORT["saturation"][1] + 0.1))
    assert not in_support(replace(draws[0], sun_colour=(3.0, 0.5, 3.0)))


@pytest.mark.parametrize("style", list(HELD_OUT))
def test_held_out_styles_render_their_family(style):
    family = HELD_OUT[style]
    h, w = (SH, SW) if family == "street" else (RH, RW)
    s = render_sample(family, style, 0, 2, h, w)
    reference = render_sample(family, "source", 0, 2, h, w)
    assert torch.equal(s["depth"], render_sample(family, style, 0, 2, h, w)["depth"])
    assert (s["image"] - reference["image"]).abs().mean() > 0.05  # another look
    assert s["image"].std() > 0.03  # not a blank frame


def test_sintel_is_saturated():
    def saturation(image):
        return (image.amax(0) - image.amin(0)).mean()
    sintel = render_sample("street", "sintel", 0, 0, SH, SW)["image"]
    randomised = [render_sample("street", RANDOM, 0, i, SH, SW)["image"] for i in range(4)]
    assert saturation(sintel) > max(saturation(image) for image in randomised)


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_objects_in_front_of_the_ground_behind_them(index):
    """Camera without roll over flat ground: ground seen beside or above an object's pixel is farther."""
    s = render_sample("street", "source", 0, index, SH, SW)
    depth, inst = s["depth"], s["parts"]  # every object, slivers included
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
    with pytest.raises(ValueError, match="source, target, simulator, sintel, sepia, neon, pastel, random"):
        render_sample("street", "watercolour", 0, 0, SH, SW)


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
    assert room.sizes == [(266, 350)]
    assert SyntheticDataModule().sizes == [(196, 644)]


def test_datamodule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="street, room"):
        SyntheticDataModule(family="forest")
    with pytest.raises(ValueError, match="source, target, simulator"):
        SyntheticDataModule(style="watercolour")
    with pytest.raises(ValueError, match=r"data.width must be one value or one per family \(street, room\)"):
        SyntheticDataModule(family=["street", "room"], width=[56, 42, 28])
    with pytest.raises(ValueError, match="distinct families"):
        SyntheticDataModule(family=["street", "street"], height=14, width=28)
    with pytest.raises(ValueError, match="train_corruptions"):
        SyntheticDataModule(corruption_p=0.5)
    with pytest.raises(ValueError, match="unknown corruption 'smog'"):
        SyntheticDataModule(train_corruptions=["smog"], corruption_p=0.5)
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


def test_datamodule_mixes_both_families_in_random_styles():
    dm = SyntheticDataModule(family=["street", "room"], style=RANDOM, height=28, width=56, train_range=(0, 3),
                             val_range=(3, 5), test_range=(5, 7), batch_size=2)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 6
    val = [dm.datasets["val"][i]["name"] for i in range(4)]
    assert val == ["street/random/000003", "street/random/000004", "room/random/000003", "room/random/000004"]
    dm.setup("test")
    sample = dm.datasets["test"][2]
    assert torch.equal(sample["image"], SyntheticDataset("room", RANDOM, 5, 6, 28, 56)[0]["image"])


def test_families_of_different_sizes_come_in_batches_of_one_family():
    dm = SyntheticDataModule(family=["street", "room"], style=RANDOM, height=28, width=[84, 42], train_range=(0, 5),
                             val_range=(5, 8), test_range=(8, 9), batch_size=2, hflip=True)
    assert dm.sizes == [(28, 84), (28, 42)]
    assert SyntheticDataModule(family=["room", "street"]).sizes == [(266, 350), (196, 644)]  # each its default
    dm.setup("fit")
    seen = []
    for epoch in (0, 1):
        loader = dm.train_dataloader()
        loader.batch_sampler.sampler.set_epoch(epoch)  # as Lightning does
        batches = list(loader)
        assert len(batches) == len(loader) == 6  # 3 per family of 5: 2 + 2 + 1
        for batch in batches:
            family = {name.split("/")[0] for name in batch["name"]}
            assert len(family) == 1
            assert batch["image"].shape[-1] == {"street": 84, "room": 42}[family.pop()]
        names = sorted(name for batch in batches for name in batch["name"])
        assert names == sorted(f"{f}/random/{i:06d}" for f in ("street", "room") for i in range(5))
        seen.append([name for batch in batches for name in batch["name"]])
    assert seen[0] != seen[1]  # a new order each epoch
    val = [batch["name"] for batch in dm.val_dataloader()]
    assert val == [["street/random/000005", "street/random/000006"], ["room/random/000005", "room/random/000006"],
                   ["street/random/000007"], ["room/random/000007"]]


def test_size_grouped_batches_follow_the_sampler_within_each_group():
    keys = [7, 0, 12, 3, 5, 1, 9, 4]  # epoch keys of a dataset of 10: groups [0, 6) and [6, 10)
    batches = list(SizeGroupedBatches(keys, [6, 4], batch_size=3))
    assert batches == [[0, 12, 3], [5, 1, 4], [7, 9]]  # 12 is index 2 (epoch 1); 7 and 9: the second group
    assert len(SizeGroupedBatches(range(10), [6, 4], batch_size=3)) == 4 == len(list(SizeGroupedBatches(
        range(10), [6, 4], batch_size=3)))
    assert list(SizeGroupedBatches(range(5), [5], batch_size=2)) == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match="batch_size >= 1"):
        SizeGroupedBatches(keys, [6, 4], batch_size=0)


def test_augmentation_is_seeded_per_sample_and_changes_images():
    base = SyntheticDataset("street", "source", 0, 4, 28, 56)
    settings = dict(photometric={"brightness": 0.4, "jitter_p": 1.0}, corruptions=["jpeg_compression", "pixelate"],
                    corruption_p=1.0, max_severity=2)
    augmented, again = Augmented(base, **settings), Augmented(base, **settings)
    other_seed = Augmented(base, **settings, seed=1)
    for i in range(len(base)):
        image = augmented[i]["image"]
        assert torch.equal(image, again[i]["image"])  # the same in every run and worker
        assert not torch.equal(image, base[i]["image"])
        assert not torch.equal(image, other_seed[i]["image"])
        assert image.shape == base[i]["image"].shape and 0 <= image.min() and image.max() <= 1
        assert torch.equal(augmented[i]["depth"], base[i]["depth"])  # photometric only: labels untouched
    assert not torch.equal(augmented[0]["image"] - base[0]["image"], augmented[1]["image"] - base[1]["image"])
    dm = SyntheticDataModule(height=28, width=56, train_range=(0, 2), val_range=(2, 3), test_range=(3, 4),
                             photometric=settings["photometric"])
    dm.setup("fit")
    assert isinstance(dm.datasets["train"], Augmented)


@pytest.mark.parametrize("path", sorted((ROOT / "config_yaml" / "data").glob("ood_*.yaml")), ids=lambda p: p.stem)
def test_out_of_domain_fragments(path):
    data = yaml.safe_load(path.read_text())  # a data fragment: `data: data/ood_x.yaml` or `--data <file>`
    assert data["class_path"] == "datamodules.SyntheticDataModule"
    args = data["init_args"]
    style = path.stem.removeprefix("ood_")
    assert args["style"] == style and args["family"] == HELD_OUT[style]
    assert args["weak_labels"]["instance_source"] == "ground_truth"
    dm = SyntheticDataModule(**{**args, "weak_labels": WeakLabelSources("ground_truth")})
    dm.setup("test")
    assert dm.datasets["test"][0]["name"].startswith(f"{HELD_OUT[style]}/{style}/")


@pytest.mark.parametrize("path", sorted((ROOT / "config_yaml" / "data").glob("ood_*.yaml")), ids=lambda p: p.stem)
def test_out_of_domain_fragments_are_at_the_source_models_training_size(path):
    """Each family at the size the experiment's source model was pretrained on (its last pretraining config)."""
    experiment = yaml.safe_load((ROOT / "config_yaml" / "westar.yaml").read_text())
    card = yaml.safe_load((ROOT / "config_yaml" / experiment["model"]["init_args"]["model"]).read_text())
    pretraining = load_config("foundation_140")["data"]["init_args"]
    assert card["checkpoint"] == "checkpoints/tiny_foundation_140.pth"
    args = yaml.safe_load(path.read_text())["init_args"]
    assert args["height"] == pretraining["height"] == card["input_size"]
    assert args["width"] == pretraining["width"][pretraining["family"].index(args["family"])]
    assert (args["height"], args["width"]) == FOUNDATION_SIZES["foundation_140"][args["family"]]


def test_every_held_out_style_has_a_fragment():
    assert {p.stem.removeprefix("ood_") for p in (ROOT / "config_yaml" / "data").glob("ood_*.yaml")} == set(HELD_OUT)
