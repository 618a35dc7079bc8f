"""Depth Anything 3 parity figures: max |ours - official| / max |official| of the depth output (and, for the
any-view models, the confidence and the camera) for the four Apache-2.0 models at two input sizes, the official
network (PyPI `depth-anything-3`) with every parameter perturbed so that no branch stays at its zero init, its
weights loaded into ours by name. One image per call (the official sky fill pools a batch; ours is per image).

The tests (`tests/models/test_da3_parity.py`) assert the 1e-4 bound; this records the measured values.
"""

from __future__ import annotations

import argparse

import torch
from depth_anything_3.cfg import create_object, load_config
from depth_anything_3.registry import MODEL_REGISTRY
from torch import nn

from benchmarks.common import device_description, write_result
from depthadapt.models.da3 import DepthAnything3

MODELS = ("da3-small", "da3-base", "da3mono-large", "da3metric-large")
SIZES = ((28, 42), (70, 42))  # (H, W), the parity tests' sizes; --sizes adds others
OUTPUTS = ("depth", "depth_conf", "extrinsics", "intrinsics")


def perturbed_official(model_name: str, seed: int = 1) -> nn.Module:
    """The official network with noise on every parameter; the sky head's bias set so that about half the pixels are
    sky (the fill runs), the camera's field of view made informative (its ReLU would often give 0)."""
    torch.manual_seed(0)
    net = create_object(load_config(MODEL_REGISTRY[model_name]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
            if name.endswith("cam_dec.fc_fov.0.weight"):
                parameter.mul_(1e-3)
            if name.endswith(("cam_dec.fc_fov.0.bias", "sky_output_conv2.2.bias")):
                parameter.fill_(1.0 if "fov" in name else 0.3)
    return net.eval()


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected|."""
    return ((got - expected).abs().max() / expected.abs().max()).item()


def measure(model_name: str, sizes: tuple[tuple[int, int], ...]) -> list[dict]:
    """Relative errors of each output at each size."""
    official = perturbed_official(model_name)
    with torch.device("meta"):
        ours = DepthAnything3(model_name)
    ours.load_state_dict(official.state_dict(), assign=True)
    ours.eval()
    rows = []
    generator = torch.Generator().manual_seed(2)
    for height, width in sizes:
        x = torch.randn(1, 3, height, width, generator=generator)
        with torch.inference_mode():
            expected = {k: v[:, 0] for k, v in official(x[:, None]).items() if isinstance(v, torch.Tensor)}
            got = ours.forward_all(x)
            depth_only = ours(x)
        errors = {k: relative_error(got[k], expected[k]) for k in OUTPUTS if k in expected and k in got}
        errors["forward (depth)"] = relative_error(depth_only, expected["depth"])
        for output, error in errors.items():
            rows.append({"benchmark": "da3_parity", "model": model_name, "size": f"{height}x{width}",
                         "output": output, "max_relative_error": float(f"{error:.2e}"),
                         "threads": torch.get_num_threads(), "precision": "fp32",
                         "device": device_description(torch.device("cpu"))})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [row for name in args.models for row in measure(name, SIZES)]
    write_result("da3_parity", rows)


if __name__ == "__main__":
    main()
