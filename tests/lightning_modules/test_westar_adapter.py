"""WeSTAR: augmentation views, LoRA wiring and export, EMA teacher, loss switches, CLI fit / test / resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from builders import randomise_lora_b, synthetic_batch

import cli
from depthadapt.augmentation import STRONG_AUGMENTATION, PhotometricAugmentation
from depthadapt.models import build_depth_model, load_checkpoint
from depthadapt.models.card import DepthModelCard
from depthadapt.models.lora import LoraSettings, add_lora, save_lora_adapter
from depthadapt.westar import WeSTARLossSettings
from lightning_modules import WeSTARAdapter

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "configs" / "westar.yaml"
TINY = DepthModelCard("vitt", input_size=28)


def lora_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_augmentation_with_every_step_off_is_the_identity() -> None:
    images = torch.rand(2, 3, 16, 16)
    assert PhotometricAugmentation()(images) is images
    with pytest.raises(ValueError, match="blur_p"):
        PhotometricAugmentation(blur_p=1.5)


def test_strong_view_changes_colours_but_not_geometry() -> None:
    torch.manual_seed(0)
    images = torch.zeros(8, 3, 32, 32)
    images[..., 13:] = 0.9  # a vertical edge between columns 12 and 13
    views = PhotometricAugmentation(**STRONG_AUGMENTATION)(images)
    assert views.shape == images.shape and views.min() >= 0 and views.max() <= 1
    assert (views - images).abs().mean() > 0.02  # colours do change
    edge_column = (views[..., 1:] - views[..., :-1]).abs().mean(dim=(1, 2)).argmax(dim=1)
    assert (edge_column == 12).all()  # the edge stays where it was in every view


def test_add_lora_trains_only_adapters_on_qkv() -> None:
    model = add_lora(build_depth_model("vitt"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".attn.qkv." in n for n in trainable)
    assert len(trainable) == 2 * 4  # A and B in each of vitt's 4 blocks
    with pytest.raises(ValueError, match="not found"):
        add_lora(build_depth_model("vitt"), LoraSettings(targets=("to_q",)))


def test_lora_adapter_export_reloads_with_peft(tmp_path: Path) -> None:
    from peft import PeftModel

    source = build_depth_model("vitt")
    source_state = {k: v.clone() for k, v in source.state_dict().items()}
    model = add_lora(source)
    randomise_lora_b(model, std=0.05)
    save_lora_adapter(model, tmp_path / "adapter")
    save_lora_adapter(model, tmp_path / "adapter")  # replacing an existing export works
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    base = build_depth_model("vitt")
    base.load_state_dict(source_state)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    x = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model.eval()(x))


def test_teacher_is_the_ema_of_the_student() -> None:
    module = WeSTARAdapter(TINY, ema_decay=0.9)
    student = dict(module.model.named_parameters())
    teacher = dict(module.teacher.module.named_parameters())
    name = next(n for n in student if "lora_B" in n)
    with torch.no_grad():
        student[name].fill_(1.0)
    module.on_train_batch_end(None, None, 0)  # the first update copies the student
    torch.testing.assert_close(teacher[name], student[name])
    with torch.no_grad():
        student[name].fill_(2.0)
    module.on_train_batch_end(None, None, 1)
    torch.testing.assert_close(teacher[name], torch.full_like(teacher[name], 0.9 * 1.0 + 0.1 * 2.0))
    assert not any(p.requires_grad for p in module.teacher.parameters())


@pytest.mark.parametrize("context", ["instances", "grid", "depth_range", "global"])
def test_training_step_sends_gradients_to_lora_only(context: str) -> None:
    module = WeSTARAdapter(TINY, loss=WeSTARLossSettings(context=context, weak_weight=0.5))
    loss = module.training_step(synthetic_batch(), 0)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n and not n.startswith("teacher") for n in grads)


def test_zero_weights_switch_terms_off() -> None:
    torch.manual_seed(0)
    module = WeSTARAdapter(TINY, loss=WeSTARLossSettings(self_training_weight=0.0, weak_weight=0.0,
                                                          regularizer_weight=0.0))
    loss = module.training_step(synthetic_batch(), 0)
    assert loss.item() == 0.0
    batch = synthetic_batch()
    del batch["instances"], batch["ordinal"]  # terms that are off need no input
    assert module.training_step(batch, 0).item() == 0.0


def test_the_weak_term_settings_reach_the_objective() -> None:
    settings = WeSTARLossSettings(ordinal_form="disparity", ordinal_margin=0.3, ordinal_equal="squared",
                                  weak_weight=2.0, self_training_weight=0.5, regularizer_weight=0.25,
                                  context="grid", hdn_levels=[1, 3], min_instance_fraction=0.01)
    objective = WeSTARAdapter(TINY, loss=settings).objective
    assert objective.settings == settings and objective.settings.hdn_levels == (1, 3)
    assert objective.weights == {"self_training": 0.5, "ordinal": 2.0, "lora_regularizer": 0.25}


def test_missing_weak_labels_fail_with_the_setting_to_change() -> None:
    batch = synthetic_batch()
    del batch["instances"], batch["ordinal"]
    with pytest.raises(ValueError, match="data.weak_labels.instance_source"):
        WeSTARAdapter(TINY, loss=WeSTARLossSettings(weak_weight=0.0)).training_step(batch, 0)
    with pytest.raises(ValueError, match="data.weak_labels.ordinal_file .* data.weak_labels.ordinal_simulation"):
        WeSTARAdapter(TINY, loss=WeSTARLossSettings(context="grid")).training_step(batch, 0)
    with pytest.raises(ValueError, match="model.loss.context"):
        WeSTARLossSettings(context="superpixel")
    with pytest.raises(ValueError, match="model.loss.ordinal_form"):
        WeSTARLossSettings(ordinal_form="depth")
    for weight in ("self_training_weight", "weak_weight", "regularizer_weight"):
        with pytest.raises(ValueError, match="model.loss weights must be >= 0"):
            WeSTARLossSettings(**{weight: -0.1})
    with pytest.raises(ValueError, match="corruption"):
        WeSTARAdapter(TINY, eval_corruptions=("smog",))


class Marked(torch.nn.Module):
    """A view that fills the images with one value, to see which model receives which view."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.full_like(images, self.value)


def test_teacher_sees_the_weak_view_and_the_student_the_strong_one(monkeypatch) -> None:
    module = WeSTARAdapter(TINY, weak_augmentation=Marked(0.25), strong_augmentation=Marked(0.75))
    seen: dict[str, float] = {}

    def spy(name: str, model: torch.nn.Module):
        forward = model.forward

        def recorded(x: torch.Tensor, *args, **kwargs):
            seen[name] = float(x[0, 0, 0, 0])
            return forward(x, *args, **kwargs)

        monkeypatch.setattr(model, "forward", recorded)

    spy("teacher", module.teacher)
    spy("student", module.model)
    module.training_step(synthetic_batch(), 0)
    normalise = TINY.normalise
    assert seen["teacher"] == pytest.approx(float(normalise(torch.full((1, 3, 1, 1), 0.25))[0, 0, 0, 0]))
    assert seen["student"] == pytest.approx(float(normalise(torch.full((1, 3, 1, 1), 0.75))[0, 0, 0, 0]))


@pytest.mark.parametrize(("context", "count"), [("instances", 3), ("grid", 21), ("depth_range", 7), ("global", 1)])
def test_the_context_switch_reaches_the_loss(context: str, count: int, monkeypatch) -> None:
    import depthadapt.westar.loss

    contexts_seen: list[torch.Tensor] = []
    original = depthadapt.westar.loss.sa_hdn_loss

    def spy(pred, pseudo_label, contexts, *args, **kwargs):
        contexts_seen.append(contexts)
        return original(pred, pseudo_label, contexts, *args, **kwargs)

    monkeypatch.setattr(depthadapt.westar.loss, "sa_hdn_loss", spy)
    WeSTARAdapter(TINY, loss=WeSTARLossSettings(context=context)).training_step(synthetic_batch(), 0)
    assert contexts_seen[0].shape[-3] == count  # image + 2 instances; 1 + 4 + 16 cells; 1 + 2 + 4 ranges; 1


def test_the_weak_term_ranks_the_batchs_own_pairs(monkeypatch) -> None:
    """The pairs come from the datamodule (a file or the simulated annotator), whatever made them."""
    from depthadapt.westar import loss as westar_loss

    seen: list[torch.Tensor] = []
    original = westar_loss.ordinal_loss
    monkeypatch.setattr(westar_loss, "ordinal_loss", lambda pred, pairs, *args: seen.append(pairs) or
                        original(pred, pairs, *args))
    batch = synthetic_batch()
    batch["ordinal"] = torch.tensor([[[0.0, 0, 27, 0, 1]], [[-1.0, -1, -1, -1, 0]]])
    WeSTARAdapter(TINY).training_step(batch, 0)
    assert seen[0] is batch["ordinal"]


def run_fit(tmp_path: Path, *args: str):
    return cli.main(["fit", "--config", str(CONFIG), "--data.cache_dir", str(tmp_path / "cache"), *args])


def test_cli_fit_exports_adapted_model_and_test_prints_source_vs_adapted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from peft import PeftModel

    monkeypatch.chdir(tmp_path)
    run = run_fit(tmp_path, "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger",
                  "--trainer.logger.save_dir", "outputs")
    assert run.trainer.global_step == 2
    assert {f"train/grad_norm/{term}" for term in ("self_training", "ordinal")} <= set(run.trainer.callback_metrics)
    out = capsys.readouterr().out
    assert "source clean" in out and "adapted fog-3" in out
    export = tmp_path / "outputs" / "westar" / "checkpoints"
    merged = load_checkpoint(build_depth_model("vitt"), export / "adapted_model.pth")
    adapted = PeftModel.from_pretrained(build_depth_model("vitt"), export / "lora_adapter")
    student = run.model.model.eval()
    x = torch.randn(1, 3, 28, 84)
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(x), student(x), rtol=1e-4, atol=1e-5)
    assert any("lora_A" in n for n, _ in adapted.named_parameters())
    processor = json.loads((export / "adapted_model_hf" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 28, "width": 28}  # the run's input size travels with the export
    events = list((tmp_path / "outputs").rglob("events.out.tfevents*"))
    assert events  # scalars and the image panel went to TensorBoard

    run = cli.main(["test", "--config", str(CONFIG), "--data.cache_dir", str(tmp_path / "cache"),
                    "--ckpt_path", str(export / "last.ckpt")])
    out = capsys.readouterr().out
    for row in ("source clean", "adapted clean", "source fog-3", "adapted fog-3"):
        assert row in out
    metrics = run.trainer.callback_metrics
    assert {"test/d1", "test_source/d1", "test/fog-3/abs_rel"} <= set(metrics)
    scores = run.model.last_test_scores  # what the benchmarks read after a test (the metrics are reset by then)
    assert set(scores) == {"source", "adapted"} and set(scores["adapted"]) == {"clean", "fog-3"}
    assert scores["adapted"]["clean"]["d1"] == pytest.approx(float(metrics["test/d1"]))
    assert scores["source"]["fog-3"]["d1"] == pytest.approx(float(metrics["test_source/fog-3/d1"]))


def test_resume_restores_lora_teacher_optimizer_and_scheduler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = run_fit(tmp_path, "--trainer.logger", "false")
    assert not any("grad_norm" in key for key in first.trainer.callback_metrics)  # no logger: no extra backward
    checkpoint_path = tmp_path / "outputs" / "westar" / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint_path, weights_only=False)
    assert saved["global_step"] == 2

    restored: dict = {}

    def capture(module: WeSTARAdapter) -> None:
        restored["lora"] = lora_parameters(module.model)
        restored["teacher"] = lora_parameters(module.teacher.module)
        restored["averaged"] = int(module.teacher.n_averaged)
        optimizer = module.trainer.optimizers[0]
        restored["exp_avg"] = [optimizer.state[p]["exp_avg"].clone() for p in optimizer.param_groups[0]["params"]]
        restored["scheduler_step"] = module.trainer.lr_scheduler_configs[0].scheduler.last_epoch
        restored["global_step"] = module.trainer.global_step

    monkeypatch.setattr(WeSTARAdapter, "on_train_start", capture, raising=False)
    second = run_fit(tmp_path, "--trainer.logger", "false", "--trainer.max_epochs", "2",
                     "--ckpt_path", str(checkpoint_path))
    assert restored["global_step"] == 2 and second.trainer.global_step == 4
    assert restored["scheduler_step"] == 2
    assert restored["averaged"] == 2  # the EMA teacher kept its history
    for name, value in lora_parameters(first.model.model).items():
        torch.testing.assert_close(restored["lora"][name], value)
    for name, value in lora_parameters(first.model.teacher.module).items():
        torch.testing.assert_close(restored["teacher"][name], value)
    lora_b = [n for n in restored["lora"] if "lora_B" in n]
    assert any(restored["lora"][n].abs().sum() > 0 for n in lora_b)  # the student did train
    assert any(not torch.equal(restored["teacher"][n], restored["lora"][n]) for n in lora_b)  # and the EMA lags
    saved_state = saved["optimizer_states"][0]["state"]
    for index, exp_avg in enumerate(restored["exp_avg"]):
        torch.testing.assert_close(exp_avg, saved_state[index]["exp_avg"])


def test_gradient_norm_per_term_is_the_norm_of_that_terms_gradient() -> None:
    module = WeSTARAdapter(TINY, loss=WeSTARLossSettings(weak_weight=0.5, regularizer_weight=2.0))
    randomise_lora_b(module.model, std=0.1)  # a non-zero regulariser
    batch = synthetic_batch()
    teacher_view, student_view = batch["image"], batch["image"]
    with torch.no_grad():
        pseudo_label = module.teacher(TINY.normalise(teacher_view))
    pred = module.model(TINY.normalise(student_view))
    terms = module.objective(pred, pseudo_label, batch["instances"], module.ordinal_pairs(batch), module.model)
    terms.pop("loss")
    norms = module.term_gradient_norms(terms)
    assert set(norms) == {"self_training", "ordinal", "lora_regularizer"}
    params = [p for p in module.model.parameters() if p.requires_grad]
    for name, value in terms.items():
        module.zero_grad()
        (module.objective.weights[name] * value).backward(retain_graph=True)
        expected = torch.sqrt(sum(p.grad.pow(2).sum() for p in params if p.grad is not None))
        torch.testing.assert_close(norms[name], expected)
    assert norms["lora_regularizer"] != norms["ordinal"]


def test_activation_checkpointing_switch_wraps_the_students_blocks_only() -> None:
    plain = WeSTARAdapter(TINY)
    wrapped = WeSTARAdapter(TINY, activation_checkpointing=True)
    wrapped.configure_model()  # Lightning's hook, called before every stage
    assert set(wrapped.state_dict()) == set(plain.state_dict())  # checkpoints stay interchangeable
    wrapped.load_state_dict(plain.state_dict())
    kinds = {type(block).__name__ for block in wrapped.model.base_model.model.pretrained.blocks}
    assert kinds == {"CheckpointWrapper"}
    assert {type(b).__name__ for b in wrapped.teacher.module.base_model.model.pretrained.blocks} != kinds
    batch = synthetic_batch()
    torch.manual_seed(1)
    loss_plain = plain.training_step(batch, 0)
    torch.manual_seed(1)
    loss_wrapped = wrapped.training_step(batch, 0)
    torch.testing.assert_close(loss_wrapped, loss_plain)


def test_spatial_distance_matrix_relates_every_pair_of_patches_scale_free() -> None:
    from depthadapt.consistency import spatial_distance_matrix

    disparity = torch.rand(2, 28, 56)
    matrix = spatial_distance_matrix(disparity, patch=14)
    assert matrix.shape == (2, 8, 8)
    torch.testing.assert_close(matrix, matrix.transpose(1, 2))
    torch.testing.assert_close(spatial_distance_matrix(3.0 * disparity + 2.0, patch=14), matrix)  # scale-free
    flat = torch.ones(1, 28, 56)
    positions = spatial_distance_matrix(flat, patch=14)[0]
    assert positions.max() == pytest.approx(1.0, abs=1e-5)  # the far corners of the 2 x 4 grid
    assert positions[0, 1] < positions[0, 3]  # farther cells, larger distance
    ramp = torch.linspace(0, 1, 56).expand(1, 28, 56)
    assert (spatial_distance_matrix(ramp, patch=14)[0] >= positions - 1e-6).all()  # depth differences add


def test_peer_loss_is_zero_at_agreement_and_sends_no_gradient_to_the_source() -> None:
    from depthadapt.consistency import PerturbationConsistencyLoss

    objective = PerturbationConsistencyLoss(patch=14)
    source = torch.rand(2, 28, 56, requires_grad=True)
    terms = objective(source.detach().clone(), source.detach().clone(), source)
    assert all(terms[k].item() == pytest.approx(0.0, abs=1e-5) for k in ("distill", "consistency", "spatial"))
    student = torch.rand(2, 28, 56, requires_grad=True)
    terms = objective(student, student.flip(-1), source)
    assert min(terms[k].item() for k in ("distill", "consistency", "spatial")) > 0
    terms["loss"].backward()
    assert source.grad is None and student.grad is not None
    weighted = PerturbationConsistencyLoss(1.0, 0.0, 0.0, patch=14)(student, student.flip(-1), source)
    torch.testing.assert_close(weighted["loss"], weighted["distill"])


def test_peer_baseline_distils_from_the_frozen_source_and_trains_lora_only(monkeypatch) -> None:
    from lightning_modules import PerturbationConsistencyAdapter

    module = PerturbationConsistencyAdapter(TINY)
    randomise_lora_b(module.model, std=0.1)  # the student differs from the source
    seen: list[torch.Tensor] = []
    original = module.peer_objective.forward
    monkeypatch.setattr(module.peer_objective, "forward", lambda c, p, s: seen.append(s) or original(c, p, s))
    batch = synthetic_batch()
    batch.pop("ordinal")  # label-free
    module.weak_augmentation = torch.nn.Identity()
    loss = module.training_step(batch, 0)
    loss.backward()
    source = build_depth_model("vitt")
    source.load_state_dict({k.replace("base_model.model.", "").replace(".base_layer", ""): v
                            for k, v in module.model.state_dict().items() if "lora_" not in k})
    with torch.no_grad():
        torch.testing.assert_close(seen[0], source.eval()(TINY.normalise(batch["image"])), rtol=1e-4, atol=1e-5)
    grads = {n for n, p in module.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)
