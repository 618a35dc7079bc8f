"""The compiled CPU kernels' building blocks (``depthadapt.alignment.cpu``): the block passes of the selection against
numpy, the vector code LLVM makes of them, the thread pool, and numba's cache (never stale: no kernel calls into
another file, and an edit of a kernel file recompiles it)."""

from __future__ import annotations

import ast
import builtins
import inspect
import re
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numba
import numpy as np
import pytest
import torch

from depthadapt.alignment.cpu import moments, ransac, rows, selection

pytestmark = pytest.mark.unit

KERNEL_MODULES = (selection, ransac, moments, rows)


def _row(dtype: type) -> np.ndarray:
    """Runs of whole blocks chosen and not chosen, single points, ties with the bounds 0.25 / 0.75 and 0.125 / 0.875
    (exact in float32, as the kernels' bounds are: values of the row), a 7-point tail."""
    rng = np.random.default_rng(0)
    block = selection.BLOCK
    parts = [rng.random(10 * block), np.zeros(3 * block), np.full(2 * block, 0.5), np.ones(block), np.full(40, 0.25),
             np.full(24, 0.75), np.full(block, 0.5), [0.9], np.full(9, 0.125), np.full(5, 0.875),
             np.full(block - 1, 0.5), rng.random(7)]
    return np.concatenate(parts).astype(dtype)


@pytest.mark.parametrize(("value_dtype", "packed_dtype", "index_dtype"),
                         [(np.float32, np.float32, np.int32), (np.float64, np.float64, np.int32)])  # the fits' types
@pytest.mark.parametrize(("low_strict", "high_strict"), [(True, True), (False, True), (True, False), (False, False)])
def test_pack_and_keep_choose_numpys_points_in_order(value_dtype: type, packed_dtype: type, index_dtype: type,
                                                     low_strict: bool, high_strict: bool) -> None:
    values = _row(value_dtype)
    preds = (np.random.default_rng(1).standard_normal(values.size) * 100).astype(value_dtype)
    below = values < 0.25 if low_strict else values <= 0.25
    above = values > 0.75 if high_strict else values >= 0.75
    chosen = np.flatnonzero(below | above)
    idx, pc, tc = np.full(values.size, -7, index_dtype), np.zeros(values.size, packed_dtype), np.zeros(values.size,
                                                                                                       packed_dtype)
    packed = selection._pack(values, preds, 0.25, low_strict, 0.75, high_strict, idx, pc, tc)
    assert packed == chosen.size
    assert np.array_equal(idx[:packed], chosen) and np.array_equal(tc[:packed], values[chosen])
    assert np.array_equal(pc[:packed], preds[chosen])
    # _keep: the same test again in place, with tighter bounds
    kept = selection._keep(idx, pc, tc, packed, 0.125, low_strict, 0.875, high_strict)
    tight = chosen[(values[chosen] < 0.125 if low_strict else values[chosen] <= 0.125)
                   | (values[chosen] > 0.875 if high_strict else values[chosen] >= 0.875)]
    assert kept == tight.size and np.array_equal(idx[:kept], tight)
    assert np.array_equal(tc[:kept], values[tight]) and np.array_equal(pc[:kept], preds[tight])


def test_pack_stops_at_a_nan_or_inf_in_any_block() -> None:
    # Blocks with nothing chosen are tested too (the not-finite count runs on every block), and the tail.
    n = 10 * selection.BLOCK + 5
    buffers = np.empty(n, np.int32), np.empty(n), np.empty(n)
    for where, position, bad in (("values", 3, np.nan), ("preds", 5 * selection.BLOCK + 1, np.inf),
                                 ("values", n - 2, -np.inf), ("preds", n - 1, np.nan)):
        row = {"values": np.full(n, 0.5), "preds": np.linspace(1, 2, n)}
        row[where][position] = bad
        assert selection._pack(row["values"], row["preds"], 0.1, True, 0.9, True, *buffers) == -1, (where, position)
    assert selection._pack(np.full(n, 0.5), np.linspace(1, 2, n), 0.1, True, 0.9, True, *buffers) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bracket_values_counts_and_collects_numpys_points(dtype: type) -> None:
    values = _row(dtype)
    packed = values[(values <= 0.25) | (values >= 0.75)]  # what _pack leaves at the brackets' inner ends
    bounds = np.array([[0.125, 0.25], [0.75, 0.875]])
    scratch = np.full(2 * packed.size, -1.0, dtype)
    n_low, n_high, counts = selection._bracket_values(packed, packed.size, bounds, scratch)
    in_low = packed[(packed >= 0.125) & (packed <= 0.25)]
    in_high = packed[(packed >= 0.75) & (packed <= 0.875)]
    assert np.array_equal(scratch[:n_low], in_low) and n_low == in_low.size
    assert np.array_equal(scratch[packed.size : packed.size + n_high], in_high) and n_high == in_high.size
    expected = [(packed < 0.125).sum(), (packed <= 0.25).sum(), (packed >= 0.75).sum(), (packed > 0.875).sum()]
    assert counts.tolist() == expected


@pytest.mark.slow  # default suite under 10 minutes: runs in make test-all
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_support_row_in_single_precision_is_numpys_rule(dtype: type) -> None:
    # float32 rows long enough for the sampled brackets, random and quantised (runs of ties at the percentiles)
    g = torch.Generator().manual_seed(9)
    for values in (torch.rand(90_001, generator=g).numpy(), torch.randint(0, 9, (90_001,), generator=g).numpy()):
        values = values.astype(dtype)
        n = values.size
        preds = np.arange(n, dtype=dtype)
        idx, pc, tc, scratch = np.empty(n, np.int32), np.empty(n, dtype), np.empty(n, dtype), np.empty(2 * n, dtype)
        count = selection.support_row(values, preds, True, 10.0, 90.0, idx, pc, tc, scratch)
        low, high = np.percentile(values.astype(np.float64), (10, 90))
        expected = np.flatnonzero((values < low) | (values > high))
        assert count == expected.size and np.array_equal(idx[:count], expected)
        assert np.array_equal(tc[:count], values[expected]) and np.array_equal(pc[:count], preds[expected])


def _optimised_ir(function: numba.core.registry.CPUDispatcher, *arguments: object) -> str:
    """The LLVM IR numba makes of a kernel for these arguments (a fresh compile: a cached one keeps no IR)."""
    options = {k: v for k, v in function.targetoptions.items() if k not in ("cache", "nopython")}
    fresh = numba.njit(**options)(function.py_func)
    fresh(*arguments)
    return next(iter(fresh.inspect_llvm().values()))


def test_the_hot_loops_are_vector_code_and_the_residuals_keep_strict_arithmetic() -> None:
    # The passes' counts and RANSAC's inlier count are plain loops: LLVM must vectorise them (on any CPU with vector
    # registers), and the residual must stay ransac_torch's float32 expression: no reassociation, no fused ops.
    values = np.linspace(0, 1, 4 * selection.BLOCK, dtype=np.float32)
    count_ir = _optimised_ir(selection._count_outside, values, 0, np.float32(0.1), np.float32(0.9))
    assert re.search(r"fcmp (\w+ )+<\d+ x float>", count_ir)  # flags, predicate, vector
    p = np.linspace(0, 1, 4 * ransac.BLOCK, dtype=np.float32)
    residual_ir = _optimised_ir(ransac._count_block, p, p, 0, np.float32(2), np.float32(1), np.float32(0.1))
    assert re.search(r"fmul <\d+ x float>", residual_ir) and re.search(r"fadd reassoc nsz <\d+ x float>", residual_ir)
    assert not re.search(r"f(mul|sub) (reassoc|nsz|fast|contract)", residual_ir)
    assert "fma" not in residual_ir and "fmuladd" not in residual_ir


def test_map_rows_keeps_the_order_and_raises_what_a_thread_raised() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert rows.map_rows(lambda b: b * b, 7) == [0, 1, 4, 9, 16, 25, 36]

        def fail(b: int) -> int:
            if b == 5:
                raise ValueError("row 5")
            return b

        with pytest.raises(ValueError, match="row 5"):
            rows.map_rows(fail, 7)
    finally:
        torch.set_num_threads(threads)


def _defined_at_top_level(module: types.ModuleType) -> set[str]:
    """Names a module assigns or defines itself (not the ones it imports)."""
    names = set()
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
    return names


def _global_names(code: types.CodeType) -> set[str]:
    return set(code.co_names).union(*(_global_names(c) for c in code.co_consts if isinstance(c, types.CodeType)))


def test_no_kernel_reaches_into_another_file() -> None:
    # numba's cache is keyed on the file of the function it compiles: what a kernel inlines from another file (a
    # function, a constant) would stay stale in it after an edit. Every global a kernel reads is its own module's,
    # a library module (numpy, math) or a builtin.
    kernels = 0
    for module in KERNEL_MODULES:
        own = _defined_at_top_level(module)
        for name, kernel in vars(module).items():
            compiled = isinstance(kernel, numba.core.registry.CPUDispatcher)
            if not compiled or kernel.py_func.__module__ != module.__name__:
                continue
            kernels += 1
            for used in _global_names(kernel.py_func.__code__) & kernel.py_func.__globals__.keys():
                value = kernel.py_func.__globals__[used]
                library = isinstance(value, types.ModuleType) and not value.__name__.startswith("depthadapt")
                assert library or used in own or hasattr(builtins, used), (module.__name__, name, used)
    assert kernels >= 15


_RUN = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
from depthadapt.alignment.cpu import selection
values = np.linspace(0, 1, 100_000)
n = values.size
buffers = np.empty(n, np.int64), np.empty(n), np.empty(n), np.empty(2 * n)
count = selection.support_row(values, values, True, 10.0, 90.0, *buffers)
print(count, sum(selection.support_row.stats.cache_hits.values()))
"""


@pytest.mark.slow
def test_an_edit_of_a_kernel_helper_recompiles_the_kernel(tmp_path: Path) -> None:
    # The package's kernels copied with their numba cache; an edit of a helper the kernel inlines (the percentile's
    # ranks) must show in the next process, not the cached code.
    source = Path(selection.__file__).parent
    package = tmp_path / "depthadapt" / "alignment"
    shutil.copytree(source, package / "cpu")  # copy2: the modification times that numba's cache index checks
    for folder in (package.parent, package):
        (folder / "__init__.py").write_text("")
    run = textwrap.dedent(_RUN).format(root=str(tmp_path))

    def support_count() -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, check=True).stdout
        return tuple(map(int, out.split()))

    values = np.linspace(0, 1, 100_000)
    expected = {q: np.sum((values < np.percentile(values, q[0])) | (values > np.percentile(values, q[1])))
                for q in ((10, 90), (5, 45))}
    assert support_count()[0] == expected[10, 90]
    assert support_count() == (expected[10, 90], 1)  # a second process loads the kernel from the cache
    helper = package / "cpu" / "selection.py"
    text = helper.read_text()
    edited = text.replace("position = percentile / 100 * (n - 1)", "position = percentile / 200 * (n - 1)")
    assert edited != text
    helper.write_text(edited)
    assert support_count() == (expected[5, 45], 0)  # the edited percentiles, compiled afresh
