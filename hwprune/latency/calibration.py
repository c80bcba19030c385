"""Calibration: from the sum of a network's kernel lookups to its measured latency.

A table predicts ``overhead + scale * sum(kernel lookups)``, fitted on whole
networks measured end to end at profile time. Two models compete:

- *constant* (``scale = 1``): ``overhead = median(measured - sum)``. Right when a kernel
  costs inside a network what it cost timed alone, plus a fixed cost per network
  (session call, reorders at the network's ends, width-independent ops): onnxruntime
  at 1 thread, where it predicts resnet20 with a MAPE of 1.9%.
- *affine*: the least-squares line ``measured = overhead + scale * sum``. At 2 threads
  on a 2-core CPU a network's latency grows about twice as fast as its kernels' sum
  (resnet20 on the shipped EPYC: measured = 1.98 * sum - 0.37 ms), so a constant
  misses the level of most networks while ranking them well.

The affine model is taken only when it predicts each calibration network clearly
better from the others (leave-one-out mean absolute percentage error below
:data:`AFFINE_GAIN` times the constant's and at least :data:`AFFINE_MIN_POINTS` lower),
its slope is positive, and there are at least :data:`MIN_AFFINE_NETWORKS` networks;
otherwise the constant, which needs less data and cannot extrapolate badly. Both
errors are kept in the table's metadata.

A third model, *proportional* (``overhead = 0``, ``scale = median(measured / sum)``),
is never chosen by "auto" on its own: "auto" falls back to it where the chosen model
predicts 0 ms or less for the narrowest network (:func:`recalibrate`;
:func:`hwprune.latency.profiling.profile` after timing the kernels once more). That
happens where kernels timed alone cost a share more than inside a network (a
quarter-width resnet20 at 1 thread, kernels of 1-3 us: the full network measured 3-15%
under its kernels' sum), so the fitted constant goes below what the narrowest network's
kernels sum to; a share stays positive at every width.

In a space that may drop residual blocks (``drop_blocks``), a dropped block saves other
than its kernels' lookups, in either direction: more where a kernel costs more inside a
network than alone (the ops a runtime fuses into it, its dispatch: resnet20 at 28x28 on
a 2-core Xeon, networks dropping 1-3 blocks measured 2-4% under a constant calibration's
prediction, those dropping none 1-2% over it), less where it costs less (mobilenet_v2_cifar
there: measured - lookups rose by about 13 us per dropped block, from -0.27 ms dropping none to
-0.13 ms dropping all ten). There the chosen model also takes ``block_ms``, a fixed saving
per dropped block (negative: a cost), fitted with the rest (``measured = overhead + scale *
sum - block_ms * dropped``), when the calibration networks drop different numbers of
blocks (:func:`hwprune.latency.profiling.calibration_encodings` spreads them) and it
predicts them better from the others (its leave-one-out error is kept as
``"<model>+blocks"``).

:func:`recalibrate` refits a table on the networks stored in its metadata, with no
new measurement (a table profiled before the affine model existed, or another
choice of model).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import HwpruneError

if TYPE_CHECKING:
    from .table import LatencyTable

__all__ = ["fit_calibration", "recalibrate", "describe", "loo_mapes", "AFFINE_GAIN", "AFFINE_MIN_POINTS",
           "MIN_AFFINE_NETWORKS", "SUSPECT_LOO_MAPE", "MODELS"]

AFFINE_GAIN = 0.9  # affine only if its leave-one-out MAPE is below this share of the constant's
AFFINE_MIN_POINTS = 0.005  # ... and lower by this much (half a point of MAPE: more than measurement noise)
MIN_AFFINE_NETWORKS = 5
MODELS = ("auto", "constant", "affine", "proportional")
# a calibration that predicts its own networks (each from the others) worse than this, on average, is suspect. It
# foretells the validation: the shipped 1-thread tables reach 2.1-3.4% (validated: MAPE 1.9-3.8%), the 2-thread
# mobilenet_v2_cifar and resnet18 ones 22% and 14% (validated: 16% and 12%, test-retest 32% and 18%); a
# mobilenet_v2_cifar table profiled while a 2-core machine timed one network 0.75 and 0.99 ms a minute apart, 21%
SUSPECT_LOO_MAPE = 0.10


def _proportional(measured: np.ndarray, sums: np.ndarray) -> tuple[float, float]:
    return 0.0, float(np.median(measured / sums))


def _constant(measured: np.ndarray, sums: np.ndarray) -> tuple[float, float]:
    return float(np.median(measured - sums)), 1.0


def _affine(measured: np.ndarray, sums: np.ndarray) -> tuple[float, float]:
    a = np.vstack([np.ones_like(sums), sums]).T
    overhead, scale = np.linalg.lstsq(a, measured, rcond=None)[0]
    return float(overhead), float(scale)


def _with_blocks(model: str):
    """The ``model`` ("constant" or "affine") with a saving per dropped block: ``fit(measured, sums, dropped)`` ->
    (overhead, scale, block_ms)."""
    def fit(measured, sums, dropped):
        cols = [np.ones_like(sums), -dropped.astype(np.float64)] + ([sums] if model == "affine" else [])
        coef = np.linalg.lstsq(np.vstack(cols).T, measured - (sums if model == "constant" else 0), rcond=None)[0]
        return float(coef[0]), float(coef[2]) if model == "affine" else 1.0, float(coef[1])
    return fit


def _plain(fit):
    return lambda measured, sums, dropped: (*fit(measured, sums), 0.0)


def _loo_mape(fit, measured: np.ndarray, sums: np.ndarray, dropped: np.ndarray | None = None) -> float:
    dropped = np.zeros_like(sums) if dropped is None else dropped
    errors = []
    for i in range(len(measured)):
        keep = np.arange(len(measured)) != i
        overhead, scale, block = fit(measured[keep], sums[keep], dropped[keep])
        errors.append(abs(overhead + scale * sums[i] - block * dropped[i] - measured[i]) / measured[i])
    return float(np.mean(errors))


def _affine_wins(loo: dict, suffix: str, n: int) -> bool:
    """Whether the affine model (with ``suffix``: "" or "+blocks") predicts clearly better than the constant one:
    leave-one-out error below :data:`AFFINE_GAIN` x the constant's and :data:`AFFINE_MIN_POINTS` lower, on at least
    :data:`MIN_AFFINE_NETWORKS` networks."""
    c, a = loo.get(f"constant{suffix}"), loo.get(f"affine{suffix}")
    return n >= MIN_AFFINE_NETWORKS and a is not None and a < AFFINE_GAIN * c and c - a >= AFFINE_MIN_POINTS


def fit_calibration(measured, sums, model: str = "auto", dropped=None) -> dict:
    """``{"model", "overhead_ms", "scale", "loo_mape"}`` (and ``"block_ms"`` where it is fitted) for networks
    measured at ``measured`` ms whose kernel lookups sum to ``sums`` ms and which drop ``dropped`` residual blocks
    (None: none). ``model``: "auto" (module docstring), "constant", "affine" or "proportional"."""
    m, s = np.asarray(measured, dtype=np.float64), np.asarray(sums, dtype=np.float64)
    if m.shape != s.shape or m.ndim != 1 or len(m) < 1:
        raise HwpruneError(f"calibration needs one kernel sum per measured network, got {m.shape} and {s.shape}")
    if not (np.isfinite(m).all() and np.isfinite(s).all() and (m > 0).all()):
        raise HwpruneError("calibration measurements must be finite and positive; measure the networks again")
    if model not in MODELS:
        raise HwpruneError(f"calibration model must be one of {', '.join(MODELS)}, got {model!r}")
    if model == "proportional" and not (s > 0).all():
        raise HwpruneError("a proportional calibration needs every network's kernel sum above 0 ms")
    loo = {}
    if len(m) >= 3:
        loo["constant"] = _loo_mape(_plain(_constant), m, s)
        if np.ptp(s) > 0:
            loo["affine"] = _loo_mape(_plain(_affine), m, s)
        if model == "proportional":
            loo["proportional"] = _loo_mape(_plain(_proportional), m, s)
    if model in ("constant", "proportional"):
        chosen = model
    elif model == "affine":
        if len(m) < 2 or np.ptp(s) == 0:
            raise HwpruneError("an affine calibration needs at least 2 networks with different kernel sums")
        chosen = "affine"
    else:
        chosen = "affine" if _affine_wins(loo, "", len(m)) and _affine(m, s)[1] > 0 else "constant"
    overhead, scale = {"affine": _affine, "constant": _constant, "proportional": _proportional}[chosen](m, s)
    out = {"model": chosen, "overhead_ms": overhead, "scale": scale}
    d = np.zeros_like(s) if dropped is None else np.asarray(dropped, dtype=np.float64)
    if d.shape == s.shape and len(m) >= MIN_AFFINE_NETWORKS and np.ptp(d) > 0 and chosen != "proportional":
        # with a cost per dropped block the two models compete again: a scale fitted to the networks' spread in
        # size alone (the widest network's weights leaving the cache) extrapolates badly where blocks drop
        for base in ("constant", "affine") if model == "auto" else (chosen,):
            if base == "constant" or "affine" in loo:
                loo[f"{base}+blocks"] = _loo_mape(_with_blocks(base), m, s, d)
        with_blocks = chosen if model != "auto" else "affine" if (
            _affine_wins(loo, "+blocks", len(m)) and _with_blocks("affine")(m, s, d)[1] > 0) else "constant"
        if loo[f"{with_blocks}+blocks"] < loo[chosen]:
            out["model"] = with_blocks
            out["overhead_ms"], out["scale"], out["block_ms"] = _with_blocks(with_blocks)(m, s, d)
    return {**out, "loo_mape": {k: round(v, 5) for k, v in loo.items()}}


def loo_mapes(calibration: dict) -> dict[str, float]:
    """Each calibration model's leave-one-out MAPE on the table's own networks (``{"constant": .., "affine": ..}``):
    as stored, or, for a table made before it was recorded, computed from its stored networks (empty where they are
    too few)."""
    stored = calibration.get("loo_mape") or {}
    nets = calibration.get("networks", [])
    if stored or len(nets) < 3 or not all("lookup_sum_ms" in x for x in nets):
        return dict(stored)
    return fit_calibration([x["measured_ms"] for x in nets], [x["lookup_sum_ms"] for x in nets],
                           calibration.get("model", "constant"))["loo_mape"]


def describe(calibration: dict) -> str:
    """One line on a table's calibration: its model and how well it predicts its own networks (leave-one-out), with
    what to do where that is over :data:`SUSPECT_LOO_MAPE`."""
    model = calibration.get("model", "constant") + ("+blocks" if "block_ms" in calibration else "")
    n, loo = len(calibration.get("networks", [])), loo_mapes(calibration).get(model)
    why = f" (the {calibration['fallback']})" if calibration.get("fallback") else ""
    if loo is None:
        return f"calibration ({model}) on {n} network(s): too few to check it on networks it was not fitted on{why}"
    line = f"calibration ({model}): {loo:.1%} mean error on each of its {n} networks predicted from the others{why}"
    if loo > SUSPECT_LOO_MAPE:
        line += (f"; over {SUSPECT_LOO_MAPE:.0%}, the machine's speed likely changed while profiling (or these "
                 f"networks do what kernels timed alone do not show): profile again when it is quiet (--force) "
                 f"and check it with --validate")
    return line


def recalibrate(table: "LatencyTable", model: str = "auto") -> "LatencyTable":
    """The same table refitted (:func:`fit_calibration`) on the networks its calibration measured.

    The networks' kernel sums are recomputed from the table's own rows, so only the
    measured end-to-end latencies are taken from the stored calibration. A refit that
    predicts 0 ms or less for the narrowest network of the table's space (a search under
    it would admit any narrow network) is refused in one line, but for "auto", which then
    takes the proportional model and says why (``"fallback"``).
    """
    from .table import LatencyTable

    cal = dict(table.meta.get("calibration", {}))
    nets = cal.get("networks") or []
    if not nets:
        raise HwpruneError("this table stores no calibration networks to refit on; profile it again")
    encs = np.array([n["encoding"] for n in nets], dtype=np.int64)
    sums = table.kernel_sum_batch(encs)
    measured = [n["measured_ms"] for n in nets]
    cal.pop("block_ms", None)
    cal.pop("fallback", None)
    cal.update(fit_calibration(measured, sums, model, table.dropped_batch(encs)))
    cal["networks"] = [dict(n, lookup_sum_ms=round(float(v), 5)) for n, v in zip(nets, sums)]
    refit = LatencyTable(table.entries, dict(table.meta, calibration=cal), interpolate=table.interpolate)
    floor = refit.predict(refit.narrowest())
    name = cal["model"] + ("+blocks" if "block_ms" in cal else "")
    if floor <= 0 and model == "auto":
        why = f"{name} predicted {floor:.4f} ms for the narrowest network (overhead {cal['overhead_ms']:+.4f} ms)"
        cal.pop("block_ms", None)
        cal.update(fit_calibration(measured, sums, "proportional"), fallback=why)
        return LatencyTable(table.entries, dict(table.meta, calibration=cal), interpolate=table.interpolate)
    if floor <= 0:
        raise HwpruneError(
            f"the {name} calibration predicts {floor:.4f} ms for the narrowest network (overhead "
            f"{cal['overhead_ms']:+.4f} ms): its networks took less than their kernels sum to; refit with "
            f"--calibration proportional (a share of the kernels' sum) or auto, or profile again (--force)")
    return refit
