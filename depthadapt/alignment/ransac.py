"""RANSAC backends of ``depthadapt.alignment.fit_scale_shift``: sklearn's reference, a batched torch one (GPUs)
and the same rules in compiled CPU kernels.

All take the support points of each image packed to the front of its row (``p``, ``t`` B x W float64,
``support`` B x W bool marking a prefix of each row) and return the consensus set (B x W bool), whether one
was found (B,) and the trials run (B,) int64. ``ransac_sklearn`` loops over the images with
``sklearn.linear_model.RANSACRegressor``; ``ransac_torch`` runs all images and hypotheses at once on any
device and follows sklearn's semantics: hypotheses are least-squares lines through ``min_samples`` points
drawn without replacement, a point is an inlier when ``|residual| <= threshold``, the hypothesis with the
most inliers wins (ties: the smaller sum of squared inlier residuals, sklearn's higher R^2 on the inliers
whenever the tied hypotheses share their inlier set), and an image stops at sklearn's adaptive trial budget
(``STOP_PROBABILITY``). On the CPU, ``cpu.ransac.ransac_row`` runs ``ransac_torch``'s rules image by image
 and trial by trial (the same uniforms and stop ratios, from here), so that an image's work ends at its own
stopping trial.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from depthadapt.alignment.solver import weighted_scale_shift

__all__ = ["STOP_PROBABILITY", "ransac_sklearn", "ransac_torch"]

STOP_PROBABILITY = 0.99
"""sklearn's RANSACRegressor default: stop once an outlier-free sample was drawn with this probability."""
# Elements of one B x trials x W scoring chunk: on the CPU small enough to stay in the last-level cache
# (measured fastest), on a GPU large enough to saturate it while staying <= 256 MB of float32.
_CPU_CHUNK_ELEMENTS = 2**21
_GPU_CHUNK_ELEMENTS = 2**26
# Hypotheses are drawn in blocks of doubling size starting here, so an early stop skips most of the drawing.
_FIRST_BLOCK = 8
# Target of the padding slots: residuals beyond any meaningful threshold, yet finite in float32.
_PAD_TARGET = 1e30


def ransac_sklearn(
    p: Tensor, t: Tensor, support: Tensor, max_trials: int, min_samples: int, threshold: float, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Reference RANSAC, one image at a time: p, t, support B x W (prefix) -> consensus set, found, trials."""
    from sklearn.linear_model import LinearRegression, RANSACRegressor

    inliers = torch.zeros_like(support)
    found = torch.zeros(support.shape[0], dtype=torch.bool, device=support.device)
    trials = torch.zeros(support.shape[0], dtype=torch.long, device=support.device)
    for b, n in enumerate(support.sum(1).tolist()):
        ransac = RANSACRegressor(
            estimator=LinearRegression(),
            min_samples=min_samples,
            residual_threshold=threshold,
            max_trials=max_trials,
            stop_probability=STOP_PROBABILITY,
            random_state=seed,
        )
        try:
            ransac.fit(p[b, :n, None].cpu().numpy(), t[b, :n].cpu().numpy())
        except ValueError:  # fewer points than min_samples, or no hypothesis with an inlier
            trials[b] = getattr(ransac, "n_trials_", 0)
            continue
        inliers[b, :n] = torch.from_numpy(ransac.inlier_mask_).to(support.device)
        found[b], trials[b] = True, ransac.n_trials_
    return inliers, found, trials


@lru_cache(maxsize=8)
def uniforms(seed: int, trials: int, k: int) -> Tensor:
    """The uniforms that draw the hypotheses' samples (trials x k float64, CPU; read only): one seeded stream per
    ``seed``, shared by all images and devices. Cached: drawing 1000 x 50 costs more than a mild fit's RANSAC."""
    return torch.rand((trials, k), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _sample_subsets(count: Tensor, u: Tensor) -> Tensor:
    """Uniform random k-subsets of range(count[b]) (without replacement): count (B,), u T x k -> B x T x k.

    Floyd's algorithm, vectorised over images and trials, driven by the uniforms ``u`` in [0, 1). Images with
    count < k get subsets of range(k) (callers skip them).
    """
    k = u.shape[1]
    # Step i draws from [0, j_i], j_i = n - k + i; a value taken already is replaced by j_i itself (never
    # drawn before step i).
    j = (count.clamp_min(k)[:, None] - k + torch.arange(k, device=count.device))[:, None, :]  # B x 1 x k
    cand = torch.minimum((u * (j + 1)).long(), j)  # B x T x k
    subsets = torch.empty_like(cand)
    for i in range(k):
        taken = (subsets[:, :, :i] == cand[:, :, i : i + 1]).any(-1)
        subsets[:, :, i] = torch.where(taken, j[:, :, i], cand[:, :, i])
    return subsets


def _hypotheses(p: Tensor, t: Tensor, count: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares lines through random subsets: p, t B x W, count (B,), u T x k -> scale, shift B x T.

    Constant-pred samples get sklearn's LinearRegression answer: scale 0, shift = mean target.
    """
    batch, trials, k = p.shape[0], u.shape[0], u.shape[1]
    subsets = _sample_subsets(count, u).view(batch, -1)
    sample_p = p.gather(1, subsets).view(batch, trials, k)
    sample_t = t.gather(1, subsets).view(batch, trials, k)
    scale, shift, _ = weighted_scale_shift(sample_p, sample_t, p.new_ones(()))
    return scale, shift


@lru_cache(maxsize=8)
def stop_ratios(trials: int, k: int) -> Tensor:
    """(1 - (1 - P) ** (1 / i)) ** (1 / k) for trials i = 1..trials (float64, CPU; read only): see ``_stop_counts``."""
    i = torch.arange(1, trials + 1, dtype=torch.float64)
    return (1 - (1 - STOP_PROBABILITY) ** (1 / i)) ** (1 / k)


def _stop_counts(count: Tensor, trials: int, k: int) -> Tensor:
    """sklearn's adaptive stop, inverted: count (B,) -> B x trials, the best inlier count that ends trial i + 1.

    sklearn stops after trial i once i >= ceil(log(1 - P) / log(1 - (inliers / count) ** k)), P = 0.99,
    which is: inliers >= ceil(count * (1 - (1 - P) ** (1 / i)) ** (1 / k)) (the kernels: the same product).
    """
    return torch.ceil(count[:, None].double() * stop_ratios(trials, k).to(count.device))


def _abs_residuals(neg_t: Tensor, p: Tensor, scale: Tensor, shift: Tensor, out: Tensor | None = None) -> Tensor:
    """|scale * p + shift - t|: neg_t, p B x 1 x W, scale, shift B x T x 1 -> B x T x W (into ``out``)."""
    # Elementwise rather than a K=3 matmul: faster on the CPU, and exact float32 even where TF32 or
    # reduced-precision matmuls are enabled.
    return torch.add(neg_t, shift, out=out).addcmul_(scale, p).abs_()


def ransac_torch(
    p: Tensor, t: Tensor, support: Tensor, max_trials: int, min_samples: int, threshold: float, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Batched RANSAC, all images and hypotheses at once: p, t, support B x W (prefix) -> consensus, found, trials.

    ``p`` and ``t`` must be 0 outside ``support`` (the packed layout of ``fit_scale_shift``).

    Scoring runs in float32 on per-image centred values, in chunks of hypotheses; the uniforms that draw the
    samples come from a CPU generator seeded with ``seed`` and are shared by all images, so that an image's
    hypotheses and stopping trial depend on the seed and its own points only (not on the device or the batch).
    """
    batch, width = p.shape
    device = p.device
    count = support.sum(1)
    done = count < min_samples
    trials = torch.where(done, 0, max_trials)
    if width < min_samples:  # not a single image has enough points for a hypothesis
        return torch.zeros_like(support), torch.zeros(batch, dtype=torch.bool, device=device), trials
    u = uniforms(seed, max_trials, min_samples).to(device)
    # Centred per image, float32 keeps the residuals accurate whatever the data's offset. Padding slots (0 in p
    # and t) get t = _PAD_TARGET: never an inlier, and finite, so that masking their residual with 0 gives 0.
    denom = count.clamp_min(1)
    mean_p = (p.sum(1) / denom)[:, None]
    mean_t = (t.sum(1) / denom)[:, None]
    p_row = (p - mean_p).float()[:, None]
    neg_t = torch.where(support, mean_t - t, -_PAD_TARGET).float()[:, None]

    best_count = torch.zeros(batch, device=device)
    best_ssr = torch.full((batch,), torch.inf, device=device)
    best_line = torch.zeros((batch, 1, 2), device=device)  # centred scale, shift
    stop_counts = _stop_counts(count, max_trials, min_samples)
    chunk_elements = _CPU_CHUNK_ELEMENTS if device.type == "cpu" else _GPU_CHUNK_ELEMENTS
    start = block_start = block_stop = 0
    residual = None
    while start < max_trials:
        if start == block_stop:  # hypotheses in doubling blocks: the work follows the trials actually run
            block_start, block_stop = start, min(max(2 * start, _FIRST_BLOCK), max_trials)
            h_scale, h_shift = _hypotheses(p, t, count, u[block_start:block_stop])
            lines = torch.stack([h_scale, h_shift + h_scale * mean_p - mean_t], -1).float()
            residual = None
        if residual is None:  # (re)slice the images still running
            active = (~done).nonzero().squeeze(1)
            if active.numel() == batch:  # all of them: views, no copies
                a_p, a_neg_t, a_lines, a_stop = p_row, neg_t, lines, stop_counts
            else:
                a_p, a_neg_t, a_lines, a_stop = p_row[active], neg_t[active], lines[active], stop_counts[active]
            size = max(1, chunk_elements // (active.numel() * width))
            residual = torch.empty((active.numel(), size, width), device=device)
            spare = torch.empty_like(residual)
        stop = min(start + residual.shape[1], block_stop)
        h = a_lines[:, start - block_start : stop - block_start]
        is_inlier = _abs_residuals(a_neg_t, a_p, h[..., :1], h[..., 1:], out=residual[:, : stop - start])
        n_inl = is_inlier.le_(threshold).sum(-1)
        # sklearn checks its adaptive budget after every trial: a trial is the last one once the best inlier
        # count so far reaches its stop count; the chunk's later hypotheses never happened.
        prev_count = best_count[active]
        last = torch.maximum(n_inl.cummax(1).values, prev_count[:, None]) >= a_stop[:, start:stop]
        n_inl = torch.where((last.cumsum(1) - last.long()) == 0, n_inl, -1.0)
        top = n_inl.amax(1, keepdim=True)
        contender = (top[:, 0] >= 1) & (top[:, 0] >= prev_count)
        if bool(contender.any()):  # the squared residuals only matter for a new best or a tie with it
            tied = n_inl == top
            if bool((tied.sum(1) == 1).all()):  # one top hypothesis per image: score only that one
                j = tied.long().argmax(1, keepdim=True)
                top_line = h.gather(1, j[:, :, None].expand(-1, 1, 2))
                res = _abs_residuals(a_neg_t, a_p, top_line[..., :1], top_line[..., 1:])
                top_ssr = torch.linalg.vector_norm(res.mul_(res <= threshold), dim=-1)[:, 0].square()
            else:
                res = _abs_residuals(a_neg_t, a_p, h[..., :1], h[..., 1:], out=spare[:, : stop - start])
                ssr = torch.linalg.vector_norm(res.mul_(is_inlier), dim=-1).square()
                j = torch.where(tied, ssr, torch.inf).argmin(1, keepdim=True)
                top_ssr = ssr.gather(1, j)[:, 0]
                top_line = h.gather(1, j[:, :, None].expand(-1, 1, 2))
            top, prev_ssr = top[:, 0], best_ssr[active]
            better = contender & ((top > prev_count) | (top_ssr < prev_ssr))
            best_count[active] = torch.where(better, top, prev_count)
            best_ssr[active] = torch.where(better, top_ssr, prev_ssr)
            best_line[active] = torch.where(better[:, None, None], top_line, best_line[active])
        stopped = last.any(1)
        if bool(stopped.any()):
            done[active[stopped]] = True
            trials[active[stopped]] = start + 1 + last.long().argmax(1)[stopped]
            if bool(done.all()):
                break
            residual = None
        start = stop

    found = best_count >= 1
    best_res = _abs_residuals(neg_t, p_row, best_line[..., :1], best_line[..., 1:])[:, 0]
    return (best_res <= threshold) & found[:, None], found, trials
