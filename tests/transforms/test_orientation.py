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


def test_a_45_degree_dicom_series_is_turned_once_and_then_reads_as_the_target():
    """At exactly 45 degrees nibabel's tie-break could read the turned affine as another orientation,
    and training's prepare would turn the image a second time while its mask was turned once."""
    c = np.sqrt(0.5)
    rows, cols = np.array([c, c, 0.0]), np.array([c, -c, 0.0])
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2] = np.cross(rows, cols) * 3, cols * 0.8, rows * 0.8
    img = ImageData(np.random.default_rng(0).random((1, 5, 6, 7)).astype(np.float32), spacing=(3.0, 0.8, 0.8),
                    meta={"format": "dicom", "affine": aff.tolist()})
    for target in (("P", "I", "L"), ("P", "S", "L"), ("S", "L", "A"), ("R", "A", "S")):
        once = oriented(img, target)
        assert axcodes_of(once) == target and oriented(once, target) is once, target


def test_a_volume_with_an_axis_of_no_direction_has_no_orientation(tmp_path):
    """A degenerate affine (a zero column) leaves nibabel an axis without a letter: unknown, not a crash
    in the fingerprint or a plan the validator refuses."""
    import nibabel as nib

    from meddx.data.fingerprint import compute_fingerprint
    from meddx.data.sources import open_dataset

    for k, cls in enumerate(("a", "a", "b", "b")):
        (tmp_path / cls).mkdir(exist_ok=True)
        vol = np.random.default_rng(k).normal(size=(6, 7, 8)).astype(np.float32)
        hdr = nib.Nifti1Header()  # an sform with a zero column, written as it is (nibabel would refuse to)
        hdr.set_data_shape(vol.shape)
        hdr.set_data_dtype(vol.dtype)
        hdr["pixdim"][1:4] = [1.0, 1.0, 1.0]
        hdr.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)
        hdr["qform_code"] = 0
        img = nib.Nifti1Image(vol, None, hdr)
        img.update_header = lambda: None
        nib.save(img, str(tmp_path / cls / f"v{k}.nii.gz"))
    img = read_image(tmp_path / "a" / "v0.nii.gz")
    assert axcodes_of(img) is None and reorientation(img, ("R", "A", "S")) is None
    fp = compute_fingerprint(open_dataset(str(tmp_path)))
    assert fp["axcodes"] is None and fp["orientations"] == {}


def test_the_fingerprint_measures_mixed_volumes_along_the_axes_training_turns_them_to(tmp_path):
    """Two of five volumes stored PIL (axes permuted): their shape and spacing are counted as R20 will
    train them, so one 1.5 x 1 x 1 mm grid of 20 x 24 x 20 is what the planner reads, not five shapes,
    two spacings and a resampling."""
    import nibabel as nib
    from meddx_testutils import write_seg_volumes

    from meddx.data.fingerprint import compute_fingerprint
    from meddx.data.segsources import open_seg_dataset

    root = write_seg_volumes(tmp_path / "vols", n=5)
    for name in ("vol03.nii.gz", "vol04.nii.gz"):
        for sub in ("images", "labels"):
            src = nib.load(str(root / sub / name))
            _stored(root / sub, name, ("P", "I", "L"), np.asarray(src.dataobj), src.affine)
    assert read_image(root / "images" / "vol03.nii.gz").spatial_shape == (24, 20, 20)
    fp = compute_fingerprint(open_seg_dataset(str(root)))
    assert fp["orientations"] == {"RAS": 3, "PIL": 2}
    assert fp["shape_median"] == [20, 24, 20] and fp["distinct_shapes"] == 1
    assert fp["spacing_median"] == [1.5, 1.0, 1.0] and fp["distinct_spacings"] == 1
    from meddx.planning.planner import make_seg_plan

    plan = make_seg_plan(fp, source="x", cuda=False)
    assert plan.data.target_spacing is None and plan.data.orientation == ["R", "A", "S"]  # one grid: no resampling


def test_a_bundle_orientation_in_small_letters_is_read_as_its_capitals():
    from meddx.runtime.spec import BundleError, Preprocessing

    p = Preprocessing(task="segment", spatial_dims=3, channels=1, size=None, intensity="image_zscore",
                      orientation=["r", "a", "s"])
    p.validate()
    assert p.orientation == ["R", "A", "S"]
    for bad in (["R", "L", "S"], "RAS"):
        with pytest.raises(BundleError, match="orientation"):
            Preprocessing(task="segment", spatial_dims=3, channels=1, size=None, intensity="image_zscore",
                          orientation=bad).validate()
