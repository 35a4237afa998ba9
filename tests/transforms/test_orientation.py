"""Reorientation to the plan's orientation (R20): arrays, spacing and affine on NIfTI and a real DICOM
series, the mask following its volume, and the classifier's input unchanged by how a volume is stored."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.io import read_image
from meddx.io.base import ImageData, axcodes_of, ras_affine
from meddx.transforms.orientation import oriented, reorientation, valid_axcodes


def _stored(tmp_path, name: str, codes: tuple[str, str, str], vol=None, aff=None):
    """A NIfTI of ``vol`` (RAS, ``aff``) stored in orientation ``codes`` (nibabel's as_reoriented)."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, ornt_transform

    vol = np.random.default_rng(0).normal(size=(9, 10, 11)).astype(np.float32) if vol is None else vol
    if aff is None:
        aff = np.diag([1.5, 1.0, 2.0, 1.0])
        aff[:3, 3] = [5.0, -6.0, 7.0]
    img = nib.Nifti1Image(vol, aff).as_reoriented(ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(codes)))
    path = tmp_path / name
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("codes", [("L", "P", "S"), ("P", "S", "L"), ("I", "L", "A")])
def test_a_volume_stored_another_way_comes_back_to_the_same_array_spacing_and_affine(tmp_path, codes):
    ras = read_image(_stored(tmp_path, "ras.nii.gz", ("R", "A", "S")))
    other = read_image(_stored(tmp_path, "other.nii.gz", codes))
    assert axcodes_of(other) == codes and other.array.shape != ras.array.shape or codes == ("L", "P", "S")
    ro = reorientation(other, ("R", "A", "S"))
    back = ro.image(other)
    assert np.array_equal(back.array, ras.array)
    assert back.spacing == pytest.approx(ras.spacing)
    np.testing.assert_allclose(back.meta["affine"], ras.meta["affine"], atol=1e-6)
    assert axcodes_of(back) == ("R", "A", "S") and "shape" not in back.meta  # not the file's own shape
    assert np.array_equal(ro.back(back.array), other.array)  # the inverse, with channels in front
    probs = np.stack([back.array[0], -back.array[0]])  # (K, *S): classes in front ride along
    assert np.array_equal(ro.back(probs)[1], -other.array[0])
    assert ro.shape(other.spatial_shape) == ras.spatial_shape
    assert reorientation(ras, ("R", "A", "S")) is None and oriented(ras, ("R", "A", "S")) is ras


def test_nothing_is_done_without_a_target_a_known_orientation_or_a_third_axis():
    vol = ImageData(np.zeros((1, 4, 5, 6), np.float32))  # MedMNIST 3D: no geometry
    assert reorientation(vol, ("L", "P", "S")) is None
    flat = ImageData(np.zeros((1, 4, 5), np.float32), meta={"axcodes": ["R", "A"]})
    assert reorientation(flat, ("L", "P", "S")) is None
    known = ImageData(np.zeros((1, 4, 5, 6), np.float32), meta={"axcodes": ["R", "A", "S"]})
    assert reorientation(known, None) is None and reorientation(known, []) is None


def test_orientation_letters_are_checked():
    assert valid_axcodes(["r", "a", "s"]) == ("R", "A", "S")
    for bad in (["R", "L", "S"], ["R", "A"], ["X", "A", "S"], ["R", "A", "S", "I"]):
        with pytest.raises(ValueError, match="one of L/R, A/P and S/I"):
            valid_axcodes(bad)


def test_a_real_dicom_series_keeps_every_voxel_at_its_place_in_the_patient(real_data):
    """TCIA series read as (slice, row, column) with an oblique LPS affine, reoriented to RAS: each
    voxel of the result holds the value of the original voxel at the same patient position."""
    src = next(p for p in sorted((real_data / "dicom" / "tcia_brain_tumor_progression_PGBM-001").rglob("*"))
               if p.is_dir() and p.name.startswith("11-T1post"))
    img = read_image(src)
    codes = axcodes_of(img)
    assert codes is not None and codes != ("R", "A", "S")
    out = oriented(img, ("R", "A", "S"))
    assert axcodes_of(out) == ("R", "A", "S")
    old, new = ras_affine(img), ras_affine(out)
    rng = np.random.default_rng(0)
    for _ in range(50):
        ijk = [int(rng.integers(0, n)) for n in out.spatial_shape]
        src_ijk = np.rint(np.linalg.solve(old, new @ [*ijk, 1.0])[:3]).astype(int)
        assert out.array[(0, *ijk)] == img.array[(0, *src_ijk)]
    assert sorted(out.spacing) == pytest.approx(sorted(img.spacing))


def test_a_mask_follows_its_volume_into_the_plan_orientation(tmp_path):
    """Segmentation training: a case stored LPI-transposed gives the same image and label arrays as
    the same case stored RAS, so mixed storage no longer shows the network mirrored anatomy."""
    import nibabel as nib
    from meddx_testutils import write_seg_volumes

    from meddx.data.segprep import prepare_case
    from meddx.data.segsources import open_seg_dataset
    from meddx.planning.plan import Plan

    root = write_seg_volumes(tmp_path / "vols", n=2)
    for sub in ("images", "labels"):  # vol01 becomes a copy of vol00 stored another way
        src = nib.load(str(root / sub / "vol00.nii.gz"))
        _stored(tmp_path / "vols" / sub, "vol01.nii.gz", ("P", "I", "L"), np.asarray(src.dataobj), src.affine)
    cs = open_seg_dataset(str(root))
    plan = Plan.model_validate(dict(
        task="segment", data=dict(source="x", kind="folder", class_names=["all"], spatial_dims=3, channels=1,
                                  input_size=[8, 8, 8], orientation=["R", "A", "S"]),
        segment=dict(label_values=[0, 1, 2], label_names=["background", "a", "b"])))
    (a0, l0, _), (a1, l1, _) = (prepare_case(cs, c, plan) for c in sorted(cs.cases, key=lambda c: c.case_id))
    assert np.array_equal(a0, a1) and np.array_equal(l0, l1) and l0.any()
    plan.data.orientation = None  # as stored: the two differ
    a1_raw = prepare_case(cs, sorted(cs.cases, key=lambda c: c.case_id)[1], plan)[0]
    assert a1_raw.shape != a0.shape


def test_a_classifier_sees_one_input_however_the_volume_is_stored(tmp_path):
    from meddx.data.preprocess import PreprocessSpec, prepare

    spec = PreprocessSpec(spatial_dims=3, channels=1, size=(8, 8, 8), scheme="image_zscore", orientation=("R", "A", "S"))
    ras = read_image(_stored(tmp_path, "ras.nii.gz", ("R", "A", "S")))
    other = read_image(_stored(tmp_path, "other.nii.gz", ("S", "L", "P")))
    assert np.array_equal(prepare(ras, spec, "ras"), prepare(other, spec, "other"))
    spec.orientation = None
    assert not np.allclose(prepare(ras, spec, "ras"), prepare(other, spec, "other"))
