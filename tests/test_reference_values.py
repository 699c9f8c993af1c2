"""Nothing changes for existing users: the reduced quickstart (float64 and float32, ``sciprune run`` and
``sciprune sweep``) and the reduced EC studies of ``tests/test_ec_study.py`` give the numbers recorded
in ``tests/reference/values.json`` before the redesign of issue 10.

Every data variable of each study's ``results.nc`` (all methods x ratios x stages, ``dense_*``,
``sparsity``, ``scratch_*``) is compared entry by entry, by coordinate label, with
|new - recorded| <= rtol |recorded| + atol, atol = 1e-2 rtol max|recorded of that variable| (so entries
near 0 are held to 1e-14 of the variable's scale in float64). The studies and the recorder are in
``tests/reference/record.py``; rerun it only when a change is meant to change numbers (its docstring).

Tolerances, measured on the recording machine (AMD EPYC, torch 2.13.0+cpu with MKL, AVX512 kernels)
against the recorded values:

- rerun, 1 or 2 torch threads, ``MKL_ENABLE_INSTRUCTIONS=AVX2``: bit for bit the same, every study;
- ``MKL_CBWR=COMPATIBLE`` (MKL's other reduction order): float64 within 4e-16, float32 within 2.1e-7;
- ``ATEN_CPU_CAPABILITY=avx2`` (torch's AVX2 kernels instead of AVX512): float64 bit for bit, float32
  within 2.1e-7 (``ec_digits`` test_loss, a float32 cross-entropy: 2 units in its last place);
- ``ATEN_CPU_CAPABILITY=default`` (torch's scalar kernels, as on a CPU without AVX2): float64 differs by
  up to 7e-9 (training amplifies the different summation order of torch's reductions), float32 2.1e-7.

So float64 is held to the issue's 1e-12 where the arithmetic environment (torch and numpy versions,
torch's CPU kernels, architecture: ``record.environment()``) is the recorded one, which is the case on
the project's machines and in CI (``.ci/run`` pins torch 2.13.0), and that is where a refactoring is
checked. Elsewhere float64 cannot be reproduced to 1e-12 by any code, and the test holds it to 1e-6
(over 100 times the 7e-9 measured) and says so. float32 "to rounding": rtol 1e-5, about 40 times the
largest difference seen (2 float32 ulps), because a different BLAS or kernel reduction order moves the
last bits of a float32 sum; 1e-4 off the recorded environment.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

REFERENCE = Path(__file__).resolve().parent / "reference"


def _load_recorder():
    """``tests/reference/record.py`` as a module (a file beside the values, not an installed package)."""
    spec = importlib.util.spec_from_file_location("sciprune_reference_record", REFERENCE / "record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


record = _load_recorder()
STORED = json.loads((REFERENCE / "values.json").read_text())

#: rtol where the arithmetic environment is the recorded one (module docstring: the measurements).
RTOL = {"float64": 1e-12, "float32": 1e-5}
#: rtol on another environment (other torch/numpy version, CPU kernels or architecture).
RTOL_OTHER_ENVIRONMENT = {"float64": 1e-6, "float32": 1e-4}
#: atol = ATOL_FRACTION * rtol * (largest |recorded| entry of the variable): 1e-14 of its scale in float64.
ATOL_FRACTION = 1e-2


def _array(rec: dict) -> xr.DataArray:
    values = np.asarray(rec["values"], dtype=float)
    return xr.DataArray(values, dims=rec["dims"], coords={d: rec["coords"][d] for d in rec["dims"]})


def _where(da: xr.DataArray, index: tuple) -> str:
    return ", ".join(f"{d}={da[d].values[i].item()!r}" for d, i in zip(da.dims, index))


def compare(got: dict, want: dict, rtol: float, *, atol_fraction: float = ATOL_FRACTION) -> list[str]:
    """Differences of ``got`` from ``want`` (both ``record.compute`` results), one line each naming the
    variable, the coordinates and both values; empty when every recorded entry is matched within
    ``|got - want| <= rtol |want| + atol_fraction rtol max|want|``. Variables or coordinate labels that
    ``got`` adds are allowed (new results may record more); missing ones are differences."""
    problems = []
    for name, rec in want["variables"].items():
        if name not in got["variables"]:
            problems.append(f"{name}: missing (recorded with dims {rec['dims']})")
            continue
        w, g = _array(rec), _array(got["variables"][name])
        if set(g.dims) != set(w.dims):
            problems.append(f"{name}: dims {list(g.dims)}, recorded {list(w.dims)}")
            continue
        try:
            g = g.sel({d: w[d].values for d in w.dims}).transpose(*w.dims)
        except KeyError as err:
            problems.append(f"{name}: recorded coordinate label {err} missing")
            continue
        x, y = g.values, w.values
        finite = y[np.isfinite(y)]
        atol = atol_fraction * rtol * (float(np.abs(finite).max()) if finite.size else 0.0)
        same_nan = np.isnan(x) & np.isnan(y)
        bad = ~(same_nan | (np.abs(x - y) <= rtol * np.abs(y) + atol))
        for index in map(tuple, np.argwhere(bad)):
            a, b = float(x[index]), float(y[index])
            rel = abs(a - b) / abs(b) if b else math.inf
            problems.append(f"{name}[{_where(w, index)}]: {a!r} now, {b!r} recorded (relative difference "
                            f"{rel:.2e}, tolerance rtol {rtol:g} + atol {atol:.2e})")
    return problems


def _tolerance(dtype: str) -> tuple[float, str]:
    """rtol for a study in ``dtype`` here, and a note when this environment is not the recorded one."""
    now, then = record.environment(), {k: STORED["recorded"].get(k) for k in record.environment()}
    if now == then:
        return RTOL[dtype], ""
    diff = ", ".join(f"{k} {then[k]} -> {now[k]}" for k in now if now[k] != then[k])
    return RTOL_OTHER_ENVIRONMENT[dtype], f" (environment differs from the recording: {diff}; cross-machine tolerance)"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One folder for every study's output, so studies on the same data make its file once."""
    return tmp_path_factory.mktemp("reference")


def test_recorded_studies_are_the_ones_run():
    assert set(STORED["studies"]) == set(record.STUDIES)
    assert {"commit", "date", "torch", "numpy"} <= set(STORED["recorded"])


@pytest.mark.parametrize("name", list(record.STUDIES))
def test_same_numbers_as_recorded(name, work):
    want = STORED["studies"][name]
    got = record.compute(name, work)  # figures off (record.compute): they change no number
    assert got["dtype"] == want["dtype"], f"{name}: dtype {got['dtype']}, recorded {want['dtype']}"
    rtol, note = _tolerance(want["dtype"])
    problems = compare(got, want, rtol)
    shown = "\n  ".join(problems[:12]) + (f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else "")
    if problems:
        pytest.fail(f"{name} ({want['dtype']}): {len(problems)} entries differ from the values recorded at "
                    f"{STORED['recorded']['commit']}{note}:\n  {shown}", pytrace=False)


def _study(scale: float = 1.0) -> dict:
    """A small stored-study dict like ``record.compute`` returns."""
    return {"dtype": "float64", "variables": {
        "test_mse": {"dims": ["method", "ratio"], "coords": {"method": ["ec", "magnitude"], "ratio": [0.5, 0.9]},
                     "values": [[0.25 * scale, 0.5], [1e-20, 2.0]]},
        "dense_weights": {"dims": ["seed"], "coords": {"seed": [0]}, "values": [88]}}}


def test_compare_names_variable_coordinates_and_both_values():
    want = _study()
    assert compare(_study(), want, 1e-12) == []
    assert compare(_study(1 + 1e-13), want, 1e-12) == []  # within rtol
    (line,) = compare(_study(1 + 1e-11), want, 1e-12)
    assert line.startswith(f"test_mse[method='ec', ratio=0.5]: {0.25 * (1 + 1e-11)!r} now, 0.25 recorded"), line
    # an entry near 0 is held to 1e-14 of the variable's largest value (2.0), not to 1e-12 of itself
    near0 = _study()
    near0["variables"]["test_mse"]["values"][1][0] = 1e-20 + 1e-14
    assert compare(near0, want, 1e-12) == []
    near0["variables"]["test_mse"]["values"][1][0] = 1e-13
    assert compare(near0, want, 1e-12)[0].startswith("test_mse[method='magnitude', ratio=0.5]")


def test_compare_reports_missing_variables_labels_and_dims_and_allows_additions():
    want = _study()
    more = _study()
    more["variables"]["scratch_test_mse"] = {"dims": ["ratio"], "coords": {"ratio": [0.5]}, "values": [1.0]}
    more["variables"]["test_mse"] = {"dims": ["ratio", "method"],  # transposed, one label more: still equal
                                     "coords": {"method": ["ec", "magnitude", "random"], "ratio": [0.5, 0.9]},
                                     "values": [[0.25, 1e-20, 7.0], [0.5, 2.0, 7.0]]}
    assert compare(more, want, 1e-12) == []
    less = _study()
    del less["variables"]["dense_weights"]
    less["variables"]["test_mse"]["coords"]["method"] = ["ec", "random"]
    problems = compare(less, want, 1e-12)
    assert any(p.startswith("dense_weights: missing") for p in problems)
    assert any(p.startswith("test_mse: recorded coordinate label") for p in problems)
    other = _study()
    other["variables"]["dense_weights"]["dims"] = ["arch"]
    other["variables"]["dense_weights"]["coords"] = {"arch": ["model"]}
    assert compare(other, want, 1e-12) == ["dense_weights: dims ['arch'], recorded ['seed']"]
