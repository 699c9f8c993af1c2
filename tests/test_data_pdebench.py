"""PDEBench HDF5 readers: both layouts, lazy samples, clear errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from sciprune.data import PDEBenchFile, describe_file, open_pdebench
from sciprune.errors import DataFormatError, SciPruneError

NT, NX = 6, 8


def _fields(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((n, NT, NX)).astype(np.float32)


def write_groups(path, fields, *, channels: int = 1, config: bool = True):
    """Per-sample group layout as in 1D_diff-sorp_NA_NA.h5."""
    x = ((np.arange(NX) + 0.5) / NX).astype(np.float32)
    t = np.linspace(0, 500, NT).astype(np.float32)
    with h5py.File(path, "w") as h5:
        for i, u in enumerate(fields):
            g = h5.create_group(f"{i:04d}")
            data = np.repeat(u[..., None], channels, axis=-1) if channels > 1 else u[..., None]
            g.create_dataset("data", data=data, compression="lzf")
            g.create_dataset("grid/x", data=x)
            g.create_dataset("grid/t", data=t)
            if config:
                g.attrs["config"] = "sim:\n  seed: %d\n" % i
    return x, t


def write_tensor(path, fields, *, extra_t: bool = True, cfd: bool = False):
    """Single-tensor layout as in the Advection/Burgers files (t-coordinate one longer)."""
    x = ((np.arange(NX) + 0.5) / NX).astype(np.float32)
    t = (0.01 * np.arange(NT + int(extra_t))).astype(np.float32)
    with h5py.File(path, "w") as h5:
        if cfd:
            h5["density"] = fields
            h5["pressure"] = 2 * fields
            h5["Vx"] = -fields
        else:
            h5["tensor"] = fields
        h5["x-coordinate"] = x
        h5["t-coordinate"] = t
    return x, t


def test_groups_layout_round_trip(tmp_path):
    fields = _fields(3)
    p = tmp_path / "diff.h5"
    x, t = write_groups(p, fields)
    with open_pdebench(p) as f:
        assert isinstance(f, PDEBenchFile)
        assert f.layout == "groups" and len(f) == 3 and f.keys == ["0000", "0001", "0002"]
        u = f.sample(1)
        assert u.dims == ("t", "x") and u.name == "u"
        np.testing.assert_array_equal(u.values, fields[1])
        np.testing.assert_array_equal(u["x"].values, x.astype(np.float64))
        np.testing.assert_array_equal(u["t"].values, t.astype(np.float64))
        assert u.attrs == {"file": str(p), "sample": 1, "layout": "groups", "group": "0001"}
        np.testing.assert_array_equal(f.sample("0002").values, fields[2])
        info = f.info()
        assert info["layout"] == "groups" and info["n_samples"] == 3
        assert info["shapes"]["0000/data"] == [NT, NX, 1] and info["dtypes"]["0000/data"] == "float32"
        assert "seed: 0" in info["attrs"]["0000/config"]
    with pytest.raises(SciPruneError, match="closed"):
        f.sample(0)


def test_group_keys_sorted_numerically(tmp_path):
    p = tmp_path / "g.h5"
    fields = _fields(12)
    write_groups(p, fields)
    with open_pdebench(p) as f:
        assert f.keys[:3] == ["0000", "0001", "0002"] and f.keys[-1] == "0011"
        np.testing.assert_array_equal(f.sample(10).values, fields[10])


def test_groups_multichannel_keeps_var_dim(tmp_path):
    p = tmp_path / "g2.h5"
    write_groups(p, _fields(1), channels=2)
    with open_pdebench(p) as f:
        u = f.sample(0)
    assert u.dims == ("t", "x", "var") and u.sizes["var"] == 2


@pytest.mark.parametrize("extra_t", [True, False])
def test_tensor_layout_trims_time_coordinate(tmp_path, extra_t):
    fields = _fields(4)
    p = tmp_path / "adv.hdf5"
    x, t = write_tensor(p, fields, extra_t=extra_t)
    with open_pdebench(p) as f:
        assert f.layout == "tensor" and len(f) == 4
        u = f.sample(3)
        assert u.dims == ("t", "x")
        np.testing.assert_array_equal(u.values, fields[3])
        np.testing.assert_array_equal(u["t"].values, t[:NT].astype(np.float64))
        np.testing.assert_array_equal(u["x"].values, x.astype(np.float64))
        assert u.attrs["layout"] == "tensor" and u.attrs["sample"] == 3
        assert f.info()["shapes"]["tensor"] == [4, NT, NX]


def test_tensor_cfd_channels_stacked(tmp_path):
    fields = _fields(2)
    p = tmp_path / "cfd.hdf5"
    write_tensor(p, fields, cfd=True)
    with open_pdebench(p) as f:
        u = f.sample(1)
    assert u.dims == ("t", "x", "var") and list(u["var"].values) == ["density", "pressure", "Vx"]
    np.testing.assert_array_equal(u.sel(var="pressure").values, 2 * fields[1])


def test_tensor_time_coordinate_wrong_length(tmp_path):
    p = tmp_path / "bad_t.hdf5"
    with h5py.File(p, "w") as h5:
        h5["tensor"] = _fields(1)
        h5["x-coordinate"] = np.arange(NX, dtype=np.float32)
        h5["t-coordinate"] = np.arange(NT + 3, dtype=np.float32)
    with open_pdebench(p) as f, pytest.raises(DataFormatError, match=r"bad_t\.hdf5: key 't-coordinate' has length 9; expected 6 or 7"):
        f.sample(0)


def test_missing_and_not_hdf5(tmp_path):
    with pytest.raises(DataFormatError, match=r"nope\.h5: no such file"):
        open_pdebench(tmp_path / "nope.h5")
    p = tmp_path / "text.h5"
    p.write_text("hello")
    with pytest.raises(DataFormatError, match=r"text\.h5: not an HDF5 file"):
        open_pdebench(p)


def test_neither_layout_names_keys(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as h5:
        h5["velocity"] = np.zeros(3)
        h5["force"] = np.zeros(3)
    with pytest.raises(DataFormatError) as exc:
        open_pdebench(p)
    msg = str(exc.value)
    assert "other.h5" in msg and "'velocity'" in msg and "'force'" in msg and "'tensor'" in msg and "'0000'" in msg


def test_group_without_data_and_wrong_shape(tmp_path):
    p = tmp_path / "nodata.h5"
    with h5py.File(p, "w") as h5:
        h5.create_group("0000")["u"] = np.zeros(3)
    with pytest.raises(DataFormatError, match=r"nodata\.h5: group '0000' has keys \['u'\]; expected 'data'"):
        open_pdebench(p)

    p = tmp_path / "shape.h5"
    write_groups(p, _fields(4))
    with h5py.File(p, "a") as h5:
        del h5["0003/data"]
        h5["0003/data"] = np.zeros((NT, NX), dtype=np.float32)
    with open_pdebench(p) as f:
        f.sample(0)
        with pytest.raises(DataFormatError) as exc:
            f.sample(3)
    assert str(exc.value) == (
        f"{p}: key 'data' in group '0003' has shape ({NT}, {NX}); expected (Nt, Nx, 1) = ({NT}, {NX}, 1) "
        "from 'grid/t' and 'grid/x'"
    )


def test_missing_grid_in_group(tmp_path):
    p = tmp_path / "nogrid.h5"
    with h5py.File(p, "w") as h5:
        h5["0000/data"] = np.zeros((NT, NX, 1))
        h5["0000/grid/x"] = np.zeros(NX)
    with open_pdebench(p) as f, pytest.raises(DataFormatError, match=r"group '0000' has no key 'grid/t'"):
        f.sample(0)


@pytest.mark.parametrize("layout", ["groups", "tensor"])
def test_nan_in_sample_named(tmp_path, layout):
    fields = _fields(3)
    fields[2, 1, 4] = np.nan
    fields[2, 0, 0] = np.inf
    p = tmp_path / f"nan_{layout}.h5"
    (write_groups if layout == "groups" else write_tensor)(p, fields)
    with open_pdebench(p) as f:
        f.sample(1)  # clean samples still readable
        with pytest.raises(DataFormatError) as exc:
            f.sample(2)
    msg = str(exc.value)
    assert str(p) in msg and "sample 2" in msg and "2 NaN/inf" in msg
    assert ("group '0002'" in msg) if layout == "groups" else ("'tensor'" in msg)


@pytest.mark.parametrize("bad", [3, -1, 100, 1.5, True, "0009"])
def test_index_out_of_range(tmp_path, bad):
    p = tmp_path / "g.h5"
    write_groups(p, _fields(3))
    with open_pdebench(p) as f, pytest.raises(SciPruneError) as exc:
        f.sample(bad)
    assert str(p) in str(exc.value)
    if isinstance(bad, int) and not isinstance(bad, bool):
        assert "out of range" in str(exc.value) and "3 samples" in str(exc.value)


def test_describe_file_pdebench(tmp_path):
    p = tmp_path / "g.h5"
    write_groups(p, _fields(2))
    text = describe_file(p)
    assert "per-sample groups" in text and "samples: 2" in text and "'0000' ... '0001'" in text
    p2 = tmp_path / "t.hdf5"
    write_tensor(p2, _fields(2))
    text = describe_file(p2)
    assert "single tensor" in text and "t: 6 points" in text


def test_describe_file_unknown(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataFormatError, match=r"x\.bin: unknown format"):
        describe_file(p)
    with pytest.raises(DataFormatError, match="no such file"):
        describe_file(tmp_path / "missing.h5")


def test_links_inside_the_file_are_followed(tmp_path):
    """Soft links within the file resolve (only external and dangling links are refused); a
    digit-named dataset is not a sample group."""
    p = tmp_path / "links.h5"
    write_groups(p, _fields(2))
    with h5py.File(p, "a") as h5:
        h5["0002"] = h5py.SoftLink("/0000")  # a sample stored once, linked twice
        h5["0003"] = np.zeros(3)  # a dataset with a digit name
    with open_pdebench(p) as f:
        assert f.keys == ["0000", "0001", "0002"]
        np.testing.assert_array_equal(f.sample(2).values, f.sample(0).values)


def test_decreasing_coordinates_are_accepted(tmp_path):
    p = tmp_path / "dec.h5"
    write_tensor(p, _fields(1), extra_t=False)
    with h5py.File(p, "a") as h5:
        x = h5["x-coordinate"][...]
        del h5["x-coordinate"]
        h5["x-coordinate"] = x[::-1]
    with open_pdebench(p) as f:
        assert f.sample(0)["x"].values[0] > f.sample(0)["x"].values[-1]
