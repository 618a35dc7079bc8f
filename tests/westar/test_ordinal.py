"""Ordinal pair simulation (the exact oracle and the simulated annotator's limits) and weak-label JSON Lines files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from depthadapt.io import UnreadableFileError
from depthadapt.losses import ordinal_loss
from depthadapt.westar import (
    EXACT_LABELS,
    OrdinalFileError,
    OrdinalSimulation,
    labelled_images,
    pad_pairs,
    read_ordinal_jsonl,
    simulate_ordinal_pairs,
    write_ordinal_jsonl,
)

pytestmark = pytest.mark.unit


def _scene() -> tuple[torch.Tensor, torch.Tensor]:
    depth = 1.0 + 9.0 * torch.rand(20, 24)
    valid = torch.rand(20, 24) > 0.2
    return torch.where(valid, depth, 0.0), valid


def _at(depth: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return depth[y.long(), x.long()]


def _simulate(depth: torch.Tensor, valid: torch.Tensor, seed: int = 0, instances: torch.Tensor | None = None,
              **options) -> torch.Tensor:
    simulation = replace(EXACT_LABELS, **options)
    return simulate_ordinal_pairs(depth, valid, simulation, instances, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("margin", [0.05, 0.3])
def test_exact_pairs_agree_with_depth_and_are_transitive(margin: float) -> None:
    depth, valid = _scene()
    pairs = _simulate(depth, valid, relative_margin=margin)
    assert pairs.shape == (15, 5) and pairs.dtype == torch.float32
    y1, x1, y2, x2, label = pairs.T
    assert valid[y1.long(), x1.long()].all() and valid[y2.long(), x2.long()].all()
    d1, d2 = _at(depth, y1, x1), _at(depth, y2, x2)
    assert (torch.sign(d1 - d2) == label).all()  # +1 exactly when point 1 is farther
    anchor_far, anchor_close, far_close = pairs.view(5, 3, 5).unbind(1)
    # each triplet: (anchor, far, -1), (anchor, close, +1), (far, close, +1) over the same three points
    assert (anchor_far[:, :2] == anchor_close[:, :2]).all()
    assert (far_close[:, :2] == anchor_far[:, 2:4]).all() and (far_close[:, 2:4] == anchor_close[:, 2:4]).all()
    assert (anchor_far[:, 4] == -1).all() and (anchor_close[:, 4] == 1).all() and (far_close[:, 4] == 1).all()
    anchor = _at(depth, anchor_far[:, 0], anchor_far[:, 1])
    assert (_at(depth, anchor_far[:, 2], anchor_far[:, 3]) > anchor * (1 + margin)).all()
    assert (_at(depth, anchor_close[:, 2], anchor_close[:, 3]) < anchor * (1 - margin)).all()
    assert len({tuple(a) for a in anchor_far[:, :2].tolist()}) == 5  # distinct anchors
    # a disparity that is exactly 1 / depth satisfies every simulated pair
    disparity = torch.where(valid, 1.0 / depth.clamp_min(1e-6), 0.0)
    assert ordinal_loss(disparity[None], pairs[None]).item() == 0.0


def test_simulation_is_deterministic_per_seed() -> None:
    depth, valid = _scene()
    torch.testing.assert_close(_simulate(depth, valid, 3), _simulate(depth, valid, 3))
    assert not torch.equal(_simulate(depth, valid, 3), _simulate(depth, valid, 4))


def test_simulation_returns_fewer_rows_when_few_pixels_can_be_anchors() -> None:
    assert _simulate(torch.ones(5, 5), torch.ones(5, 5, dtype=torch.bool)).shape == (0, 5)
    # Only the two 2.0 pixels have a farther and a closer point; 1.04 is farther than 1.0 by less than the
    # 5 % margin, so it is no anchor.
    depth = torch.tensor([[1.0, 2.0, 4.0], [1.0, 2.0, 1.04], [0.0, 4.0, 4.0]])
    valid = depth > 0
    pairs = _simulate(depth, valid)
    assert pairs.shape == (6, 5)
    assert {tuple(a) for a in pairs[0::3, :2].long().tolist()} == {(0, 1), (1, 1)}
    # with a 50 % margin no point is closer than 2.0 * 0.5
    assert _simulate(depth, valid, relative_margin=0.5).shape == (0, 5)


def test_the_annotator_answers_equal_below_the_tolerance_and_nowhere_else() -> None:
    depth, valid = _scene()
    for seed in range(5):
        pairs = _simulate(depth, valid, seed, anchors=8, relative_margin=0.0, equal_tolerance=0.1)
        y1, x1, y2, x2, label = pairs.T
        d1, d2 = _at(depth, y1, x1), _at(depth, y2, x2)
        close = (d1 - d2).abs() < 0.1 * torch.minimum(d1, d2)
        assert torch.equal(label == 0, close)
        assert (torch.sign(d1 - d2)[~close] == label[~close]).all()
    assert (_simulate(depth, valid, 0, anchors=8, relative_margin=0.0, equal_tolerance=0.0)[:, 4] != 0).all()


def test_the_annotator_reverses_the_flip_rate_share_of_ordered_answers() -> None:
    depth, valid = _scene()
    exact = torch.cat([_simulate(depth, valid, seed, anchors=10) for seed in range(40)])
    noisy = torch.cat([_simulate(depth, valid, seed, anchors=10, flip_rate=0.2) for seed in range(40)])
    assert torch.equal(noisy[:, :4], exact[:, :4])  # the same clicks, only answers change
    reversed_share = float((noisy[:, 4] == -exact[:, 4]).float().mean())
    assert 0.15 < reversed_share < 0.25, reversed_share  # 1200 answers: 0.2 +- 3.5 standard errors
    assert set(noisy[:, 4].tolist()) == {-1.0, 1.0}


def test_click_jitter_moves_the_recorded_points_by_about_its_size_within_the_image() -> None:
    depth, valid = _scene()
    exact = torch.cat([_simulate(depth, valid, seed) for seed in range(40)])
    jittered = torch.cat([_simulate(depth, valid, seed, click_jitter=1.5) for seed in range(40)])
    assert torch.equal(jittered[:, 4], exact[:, 4])  # labels as the person meant them
    offset = (jittered[:, :4] - exact[:, :4]).abs()
    assert 0.8 < float(offset.mean()) < 1.6, float(offset.mean())  # E|round(N(0, 1.5))| ~ 1.2, less at the borders
    assert (jittered[:, [0, 2]] <= 19).all() and (jittered[:, [1, 3]] <= 23).all() and (jittered[:, :4] >= 0).all()


def test_object_clicks_give_every_object_the_same_share_whatever_its_size() -> None:
    depth = torch.linspace(1, 10, 40 * 40).reshape(40, 40)[torch.randperm(40)]  # every row a different depth
    valid = torch.ones_like(depth, dtype=torch.bool)
    instances = torch.zeros(40, 40, dtype=torch.long)
    instances[:, :4] = 1  # a small object: 10 % of the image
    share = {}
    for clicks in ("uniform", "objects"):
        pairs = torch.cat([_simulate(depth, valid, seed, instances, clicks=clicks, relative_margin=0.0)
                           for seed in range(60)])
        points = torch.cat([pairs[:, :2], pairs[:, 2:4]]).long()
        share[clicks] = float((instances[points[:, 0], points[:, 1]] == 1).float().mean())
    assert 0.05 < share["uniform"] < 0.16, share
    assert 0.38 < share["objects"] < 0.62, share
    with pytest.raises(ValueError, match="instance map"):
        _simulate(depth, valid, clicks="objects")


@pytest.mark.parametrize(("field", "value"), [("label_fraction", 0.0), ("flip_rate", 0.7), ("anchors", 0),
                                              ("click_jitter", -1.0), ("clicks", "edges")])
def test_bad_simulation_options_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"data.weak_labels.ordinal_simulation.{field}"):
        OrdinalSimulation(**{field: value})


def test_pad_pairs() -> None:
    padded = pad_pairs([torch.ones(2, 5), torch.zeros(0, 5)], length=3)
    assert padded.shape == (2, 3, 5)
    assert (padded[0, :2] == 1).all() and (padded[0, 2, 0] == -1) and (padded[1, :, 0] == -1).all()
    with pytest.raises(ValueError, match="shorter"):
        pad_pairs([torch.ones(4, 5)], length=3)


def test_jsonl_round_trip_drops_padding_rows(tmp_path: Path) -> None:
    depth, valid = _scene()
    batch = pad_pairs([_simulate(depth, valid), torch.zeros(0, 5)], 15)
    records = {"scene/a.png": batch[0], "scene/b.png": batch[1], "c.png": [[0, 1, 2, 3, 0]]}
    path = write_ordinal_jsonl(tmp_path / "labels" / "weak.jsonl", records)
    assert [p.name for p in path.parent.iterdir()] == ["weak.jsonl"]  # no temporary file left behind
    first = json.loads(path.read_text().splitlines()[0])
    assert first["image"] == "scene/a.png" and all(isinstance(v, int) for v in first["pairs"][0])
    loaded = read_ordinal_jsonl(path)
    assert list(loaded) == list(records)
    torch.testing.assert_close(loaded["scene/a.png"], batch[0])
    assert loaded["scene/b.png"].shape == (0, 5)
    torch.testing.assert_close(loaded["c.png"], torch.tensor([[0.0, 1, 2, 3, 0]]))
    with pytest.raises(ValueError, match="'bad.png'.*label"):
        write_ordinal_jsonl(tmp_path / "bad.jsonl", {"bad.png": [[0, 0, 1, 1, 3]]})
    assert not (tmp_path / "bad.jsonl").exists()


GOOD = '{"image": "a.png", "pairs": [[0, 1, 2, 3, 1]]}'


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"image": "b.png", "pairs": [[0, 1, 2, 3, 1]', "Expecting"),
        ('{"image": "b.png", "pairs": [[0, 1, 2, 3]]}', "pair 0: expected"),
        ('{"image": "b.png", "pairs": [[0, 1, 2, 3, 1], [0, 1, 2, 3, 2]]}', "pair 1: label 2"),
        ('{"image": "b.png", "pairs": [[0, 1.5, 2, 3, 1]]}', "integers"),
        ('{"image": "b.png", "pairs": [[0, -1, 2, 3, 1]]}', "negative"),
        ('{"image": "b.png"}', 'no "pairs"'),
        ("[[0, 1, 2, 3, 1]]", "expected an object"),
        (GOOD, "duplicate image 'a.png' \\(first on line 1\\)"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "weak.jsonl"
    path.write_text(f"{GOOD}\n\n{line}\n")
    with pytest.raises(OrdinalFileError, match=f"weak.jsonl, line 3: .*{reason}"):
        read_ordinal_jsonl(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFileError, match="does not exist"):
        read_ordinal_jsonl(tmp_path / "missing.jsonl")


def test_labelled_images_are_a_fixed_share_chosen_by_index() -> None:
    index = torch.arange(20_000)
    for fraction in (0.05, 0.1, 0.5):
        labelled = labelled_images(index, fraction)
        assert abs(labelled.double().mean().item() - fraction) < 0.01, fraction
        assert abs(labelled[:1000].double().mean().item() - fraction) < 0.04  # spread, not one block
        assert torch.equal(labelled_images(index.flip(0), fraction), labelled.flip(0))  # by index, not position
    assert (labelled_images(index, 0.1) <= labelled_images(index, 0.5)).all()  # a larger share keeps the smaller
    assert labelled_images(index, 1.0).all()
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="labelled fraction"):
            labelled_images(index, fraction)
