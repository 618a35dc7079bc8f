"""Every shipped config parses: experiments through the real CLI, fragments (models/, data/, trainer/) as used."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import cli
from depthadapt.models.card import DepthModelCard
from depthadapt.models.transforms import IMAGENET_MEAN, IMAGENET_STD

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "config_yaml"
EXPERIMENTS = sorted(p.relative_to(ROOT).as_posix() for p in CONFIGS.glob("*.yaml"))
FRAGMENT_DIRS = ("models", "data", "trainer")
# Experiments that state only what differs from others (repeated --config), and what they layer on, in order.
COMBINED = {"config_yaml/westar_kitti.yaml": ("config_yaml/trainer/westar_real.yaml",),
            "config_yaml/westar_nyu.yaml": ("config_yaml/trainer/westar_real.yaml",),
            "config_yaml/pretrain_foundation_140.yaml": ("config_yaml/pretrain_foundation.yaml",),
            "config_yaml/pretrain_da3_foundation_140.yaml": ("config_yaml/pretrain_foundation.yaml",),
            "config_yaml/chain_westar_kitti.yaml": ("config_yaml/trainer/westar_real.yaml",
                                                    "config_yaml/westar_kitti.yaml"),
            "config_yaml/chain_pseudo_label_kitti.yaml": ("config_yaml/pseudo_label_kitti.yaml",),
            "config_yaml/chain_student_kitti.yaml": ("config_yaml/student_kitti.yaml",)}
# Configs that are a part (the test of a trained student) of another experiment.
PART_OF = {"config_yaml/student_test.yaml": "config_yaml/student.yaml"}


def resolved(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *configs: str, extra=()) -> dict:
    """The full configuration `--print_config` shows for these config files (in order) and extra arguments."""
    monkeypatch.chdir(ROOT)
    args = [a for config in configs for a in ("--config", config)]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", *args, *extra, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_every_config_file_is_covered() -> None:
    fragments = {p.parent.name for p in CONFIGS.rglob("*.yaml") if p.parent != CONFIGS}
    assert fragments <= set(FRAGMENT_DIRS), fragments
    assert len(EXPERIMENTS) >= 10


@pytest.mark.parametrize("config", EXPERIMENTS)
def test_experiment_parses(config: str, monkeypatch, capsys) -> None:
    configs = [*COMBINED.get(config, ()), *([PART_OF[config]] if config in PART_OF else []), config]
    full = resolved(monkeypatch, capsys, *configs)
    assert full["model"]["class_path"].startswith("lightning_modules.")
    assert full["data"]["class_path"].startswith("datamodules.")


@pytest.mark.parametrize("card", sorted(p.name for p in (CONFIGS / "models").glob("*.yaml")))
def test_model_card_builds_a_valid_card(card: str) -> None:
    values = yaml.safe_load((CONFIGS / "models" / card).read_text())
    parsed = DepthModelCard(**values)
    assert parsed.checkpoint is not None and parsed.checkpoint.startswith("checkpoints/")
    official = "depth_anything_v2" in parsed.checkpoint or Path(parsed.checkpoint).name.startswith("DA3")
    assert (ROOT / parsed.checkpoint).exists() or official  # shipped, or an official file the user supplies
    if parsed.family == "da3":  # the DA3 cards name the official preprocessing's normalisation and the licence
        assert parsed.mean == IMAGENET_MEAN and parsed.std == IMAGENET_STD
        assert "Apache-2.0" in (CONFIGS / "models" / card).read_text()


DA3_CARDS = {"da3_small.yaml": ("da3-small", "depth"), "da3_base.yaml": ("da3-base", "depth"),
             "da3mono_large.yaml": ("da3mono-large", "depth"), "da3metric_large.yaml": ("da3metric-large", "metric"),
             "tiny_da3_140.yaml": ("da3-tiny", "depth")}


@pytest.mark.parametrize("card", sorted(DA3_CARDS))
def test_da3_cards_name_their_model_and_output(card: str) -> None:
    parsed = DepthModelCard(**yaml.safe_load((CONFIGS / "models" / card).read_text()))
    assert (parsed.family, parsed.encoder, parsed.output) == ("da3", *DA3_CARDS[card])
    assert parsed.alignment_space == ("depth" if parsed.output == "depth" else "disparity")


@pytest.mark.parametrize("fragment", sorted(p.name for p in (CONFIGS / "data").glob("*.yaml")))
def test_data_fragment_swaps_the_domain_of_an_experiment(fragment: str, monkeypatch, capsys) -> None:
    full = resolved(monkeypatch, capsys, "config_yaml/westar.yaml", extra=["--data", f"config_yaml/data/{fragment}"])
    expected = yaml.safe_load((CONFIGS / "data" / fragment).read_text())
    assert _holds(full["data"], expected)


def _holds(full: object, expected: object) -> bool:
    """Whether ``full`` (a resolved config, defaults filled in) holds every value ``expected`` states, at any depth."""
    if isinstance(expected, dict):
        return isinstance(full, dict) and all(k in full and _holds(full[k], v) for k, v in expected.items())
    return full == expected


def test_trainer_fragment_merges_with_the_experiment(monkeypatch, capsys) -> None:
    full = resolved(monkeypatch, capsys, "config_yaml/trainer/westar_real.yaml", "config_yaml/westar_kitti.yaml")
    trainer = full["trainer"]
    assert trainer["max_steps"] == 5000 and trainer["deterministic"] == "warn"  # fragment, CLI default
    assert trainer["default_root_dir"] == "outputs/westar_kitti"  # from the experiment
    assert [c["class_path"] for c in trainer["callbacks"]][-1] == "lightning_modules.ExportCallback"


def test_cards_carry_the_input_size_of_their_checkpoint(monkeypatch, capsys) -> None:
    full = resolved(monkeypatch, capsys, "config_yaml/pseudo_label.yaml")
    args = full["model"]["init_args"]
    assert (args["relative"]["input_size"], args["metric"]["input_size"]) == (140, 98)
    assert args["metric"]["head"] == "metric" and args["metric"]["checkpoint"] == "checkpoints/tiny_metric_street.pth"
