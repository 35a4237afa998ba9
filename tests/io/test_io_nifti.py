"""NIfTI reading on the nibabel samples and the MSD hippocampus volumes."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest

from meddx.errors import CorruptFileError, ImageContentError, InputError
from meddx.io import read_image
from meddx.io.nifti import read_nifti


def test_example4d_channels_last_axis(data_dir):
    p = data_dir / "nifti" / "nibabel_samples" / "example4d.nii.gz"
    img = read_image(p)
    assert img.array.shape == (2, 128, 96, 24)
    assert img.spacing == pytest.approx((2.0, 2.0, 2.2))
    ref = nib.load(p).get_fdata()
    np.testing.assert_array_equal(img.array, np.moveaxis(ref, -1, 0).astype(np.float32))
    m = img.meta
    assert m["format"] == "nifti" and m["source_dtype"] == "int16"
    assert m["axcodes"] == ["L", "A", "S"]
    np.testing.assert_allclose(m["affine"], nib.load(p).affine)


def test_big_endian_anatomical(data_dir):
    p = data_dir / "nifti" / "nibabel_samples" / "anatomical.nii"
    img = read_nifti(p)
    assert img.array.shape == (1, 33, 41, 25)
    assert img.spacing == (2.0, 2.0, 2.0)
    assert img.meta["source_dtype"] == "int16"
    np.testing.assert_array_equal(img.array[0], nib.load(p).get_fdata().astype(np.float32))
    assert img.array.max() > 0


@pytest.mark.parametrize(("case", "dtype"), [("hippocampus_001", "uint8"), ("hippocampus_003", "float32")])
def test_hippocampus_volumes(data_dir, case, dtype):
    p = data_dir / "seg" / "msd_hippocampus_udacity" / "images" / f"{case}.nii.gz"
    img = read_image(p)
    shape = nib.load(p).shape
    assert img.array.shape == (1, *shape)
    assert img.spacing == (1.0, 1.0, 1.0)
    assert img.meta["source_dtype"] == dtype and img.meta["axcodes"] == ["R", "A", "S"]
    lab = read_image(data_dir / "seg" / "msd_hippocampus_udacity" / "labels" / f"{case}.nii.gz")
    assert lab.spatial_shape == img.spatial_shape and set(np.unique(lab.array)) <= {0.0, 1.0, 2.0}


def test_single_slice_and_2d_become_2d(tmp_path):
    a = np.arange(10 * 12, dtype=np.int16).reshape(10, 12)
    aff = np.diag([0.5, 0.7, 3.0, 1.0])
    nib.save(nib.Nifti1Image(a[..., None], aff), tmp_path / "slice.nii.gz")
    img = read_image(tmp_path / "slice.nii.gz")
    assert img.array.shape == (1, 10, 12) and img.spacing == pytest.approx((0.5, 0.7))
    np.testing.assert_array_equal(img.array[0], a)
    nib.save(nib.Nifti1Image(a, aff), tmp_path / "flat.nii")
    assert read_image(tmp_path / "flat.nii").array.shape == (1, 10, 12)


def test_scaling_applied(tmp_path):
    img = nib.Nifti1Image(np.ones((3, 4, 5), np.int16), np.eye(4))
    img.header.set_slope_inter(2.5, -1.0)
    nib.save(img, tmp_path / "s.nii")
    out = read_image(tmp_path / "s.nii")
    assert np.all(out.array == 1.5)


def test_huge_header_refused_before_loading(tmp_path, assert_one_line_error):
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape((30_000, 30_000, 30_000))  # NIfTI-1 dims are int16
    p = tmp_path / "huge.nii"
    p.write_bytes(hdr.binaryblock + b"\0" * 4)  # header only: no voxel data at all
    t = time.perf_counter()
    with pytest.raises(ImageContentError) as ei:
        read_image(p)
    assert time.perf_counter() - t < 1.0
    assert "downsample or crop" in assert_one_line_error(ei, p)


def test_truncated_nifti(tmp_path, data_dir, assert_one_line_error):
    src = data_dir / "nifti" / "nibabel_samples"
    for name in ("example4d.nii.gz", "anatomical.nii"):
        data = (src / name).read_bytes()
        p = tmp_path / name
        p.write_bytes(data[: len(data) // 2])
        with pytest.raises(CorruptFileError) as ei:
            read_image(p)
        assert_one_line_error(ei, p)


@pytest.mark.parametrize(("src", "name", "fix"), [("example4d.nii.gz", "x.nii", ".nii.gz"),
                                                   ("anatomical.nii", "x.nii.gz", ".nii"),
                                                   ("anatomical.nii", "x", ".nii")])
def test_misnamed_nifti_says_which_name(tmp_path, data_dir, assert_one_line_error, src, name, fix):
    # nibabel chooses plain or gzip by the name: these were called truncated or damaged
    p = tmp_path / name
    p.write_bytes((data_dir / "nifti" / "nibabel_samples" / src).read_bytes())
    with pytest.raises(InputError) as ei:
        read_image(p)
    msg = assert_one_line_error(ei, p)
    assert f"rename it to end in {fix}." in msg and "damaged" not in msg


def test_rgb24(tmp_path, assert_one_line_error):
    rgb = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
    a = np.zeros((4, 5, 6, 2), rgb)
    a["R"], a["G"], a["B"] = 7, 8, 9
    nib.save(nib.Nifti1Image(a[..., 0], np.eye(4)), tmp_path / "rgb.nii")
    img = read_image(tmp_path / "rgb.nii")
    assert img.array.shape == (3, 4, 5, 6) and img.meta["source_dtype"] == "rgb"
    assert img.array[:, 0, 0, 0].tolist() == [7, 8, 9]
    nib.save(nib.Nifti1Image(a, np.eye(4)), tmp_path / "rgb4d.nii")
    with pytest.raises(ImageContentError) as ei:
        read_image(tmp_path / "rgb4d.nii")
    assert "RGB" in assert_one_line_error(ei, tmp_path / "rgb4d.nii")


def test_complex_voxels_refused(tmp_path, assert_one_line_error):
    # A float32 cast would keep the real part and drop the imaginary one without a word (the TIFF
    # reader refuses complex pixels the same way).
    a = (np.arange(60).reshape(3, 4, 5) + 1j).astype(np.complex64)
    nib.save(nib.Nifti1Image(a, np.eye(4)), tmp_path / "c.nii")
    with pytest.raises(ImageContentError) as ei:
        read_image(tmp_path / "c.nii")
    assert "complex64" in assert_one_line_error(ei, tmp_path / "c.nii")


@pytest.mark.parametrize(("unit", "zoom", "mm"), [("micron", 500.0, 0.5), ("meter", 0.002, 2.0), ("mm", 0.5, 0.5),
                                                  ("unknown", 3.0, 3.0)])
def test_spacing_converted_to_mm(tmp_path, unit, zoom, mm):
    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.diag([zoom, zoom, 2 * zoom, 1.0]))
    img.header.set_xyzt_units(xyz=unit)
    nib.save(img, tmp_path / "u.nii")
    out = read_image(tmp_path / "u.nii")
    assert out.spacing == pytest.approx((mm, mm, 2 * mm)) and out.meta["spatial_unit"] == unit


def test_invalid_unit_code_read_as_is(tmp_path):
    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.diag([0.7, 0.7, 0.7, 1.0]))
    img.header["xyzt_units"] = 7  # not a NIfTI unit code
    nib.save(img, tmp_path / "odd.nii")
    out = read_image(tmp_path / "odd.nii")
    assert out.spacing == pytest.approx((0.7, 0.7, 0.7)) and out.meta["spatial_unit"] == "unknown"
