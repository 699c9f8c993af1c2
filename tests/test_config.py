"""Case files: validation names the key; defaults resolve; overrides apply."""

from pathlib import Path

import pytest

from sciprune.config import load_case, parse_case
from sciprune.errors import ConfigError

CASES = Path(__file__).resolve().parents[1] / "cases"


def test_shipped_cases_are_valid():
    for path in CASES.glob("*.toml"):
        case = load_case(path)
        assert case.prune.methods, path


def test_all_methods_expands_to_registry():
    import sciprune

    case = parse_case({"prune": {"methods": ["all"]}})  # "all": every weight criterion (ratios count weights)
    assert case.prune.methods == [m for m in sciprune.methods("weight") if m != "obs"]  # but whole-network OBS


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"trian": {}}, "trian: unknown key"),
        ({"train": {"lrr": 1}}, "train.lrr: unknown key"),
        ({"train": {"lr": -1}}, "train.lr"),
        ({"prune": {"ratios": [0.5, 1.0]}}, "ratios must be in [0, 1)"),
        ({"prune": {"methods": ["nope"]}}, "unknown method(s) ['nope']"),
        ({"noise": {"levels": [-0.1]}}, "noise.levels.0: Input should be greater than or equal to 0"),
        ({"data": {"kind": "pdebench"}}, "data.file is required"),
        ({"model": {"activation": "swish"}}, "model.activation"),
        ({"device": "tpu"}, "device must be"),
        ({"seeds": []}, "seeds"),
    ],
)
def test_bad_values_name_the_key(raw, needle):
    with pytest.raises(ConfigError) as err:
        parse_case(raw, source="case.toml")
    assert "case.toml" in str(err.value)
    assert needle in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such case file"):
        load_case(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_case(bad)


def test_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('name = "x"\n[train]\nepochs = 5\n')
    case = load_case(p, {"train.epochs": 7, "output": "elsewhere"})
    assert case.train.epochs == 7 and case.output == "elsewhere"


def test_case_is_frozen():
    case = parse_case({})
    with pytest.raises(Exception):
        case.name = "other"


@pytest.mark.parametrize("raw", [
    {"train": {"epochs": 10**7, "patience": 10**7, "batch_size": 2**31 - 1}},
    {"seeds": [0, 2**32 - 1]},
    {"data": {"kind": "pdebench", "file": "x.h5"}, "noise": {"levels": [0.0, 1e15]}},
    {"device": "cuda:3"},
    {"prune": {"methods": ["ec", "magnitude"], "options": {"ec": {"probes": 4, "probe_distribution": "gaussian"}}}},
    {"prune": {"methods": ["ec-exact"], "options": {"ec-exact": {"max_weights": 1}}}},
    {"prune": {"methods": ["ec"], "options": {"ec": {"probes": 10**9}}}},  # checked, not run, at load time
    {"architectures": {"narrow-1": {"widths": [4]}, "wide_2.b": {"widths": [8]}}, "name": "study+v2=ok"},
    {"model": {"kind": "lenet-300-100"}},
    {"train": {"lr": 1}, "finetune": {"epochs": 0}},
])
def test_edge_values_are_accepted(raw):
    parse_case(raw)


def test_errors_name_nested_keys_and_stop_after_three():
    with pytest.raises(ConfigError) as err:
        parse_case({"seeds": ["a", "b", "c", "d", "e"]}, source="c.toml")
    msg = str(err.value)
    assert msg.startswith("c.toml: seeds.0: Input should be a valid integer, got 'a'") and msg.endswith("(and 2 more)")
