"""The report's "One-model test" section: the excess gap the verdict rests on, and how well calibrated the
correlation classifier (the reference of an audit without ``--reference``) is where it never trained."""

from __future__ import annotations

from typing import Any, Mapping

from dejavu.report.format import interval, p_value, pct, points

CALIBRATION_HEADER = ["crops", "n", "accuracy", "mean confidence", "ECE", "NLL (nats)", "Brier"]


def _calibration_row(name: str, cal: Mapping[str, Any]) -> list[str]:
    return [name, str(cal["n"]), pct(cal["accuracy"]), pct(cal["mean_confidence"]), f"{cal['ece']:.3f}",
            f"{cal['nll']:.3f}", f"{cal['brier']:.3f}"]


def one_model_data(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """The section's numbers; None for a two-model run (no ``one_model`` in metrics.json)."""
    one = metrics.get("one_model")
    if not one:
        return None
    control = metrics["control"]
    excess = [
        [label, points(e["value"]), interval(e["ci95"]), p_value(e["p_value"]), points(attack), points(held_out)]
        for label, attack, held_out, e in (
            ("all crops", metrics["gap"], control["gap"], one["excess_gap"]),
            ("each one's 20 % most confident", metrics["dejavu_score_top20"], control["dejavu_score_top20"],
             one["excess_gap_top20"]),
        )
    ]
    calibration = [_calibration_row("T (held out: the control)", one["calibration_T"])]
    if one.get("calibration_validation"):
        calibration.append(_calibration_row("validation fold (of B and X)", one["calibration_validation"]))
    trained = ", ".join(f"{n} of {name}" for name, n in one["trained_on"].items())
    return {
        "excess_header": ["", "excess gap, A's − T's (points): decides",
                          f"{100 * float(metrics['ci_level']):.0f} % bootstrap interval", "permutation p",
                          "gap on A (points)", "gap on T (points)"],
        "excess": excess, "permutations": one["permutations"], "calibration_header": CALIBRATION_HEADER,
        "calibration": calibration, "temperature": f"{one['temperature']:.3g}", "trained_on": trained,
        "accuracy_T": pct(one["calibration_T"]["accuracy"]),
        "confidence_T": pct(one["calibration_T"]["mean_confidence"]),
    }
