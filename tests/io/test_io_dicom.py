"""DICOM files and series, on the real pydicom-data and TCIA samples."""

from __future__ import annotations

import random
import shutil
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from meddx.errors import CorruptFileError, DatasetError, ImageContentError, InputError, MissingCodecError
from meddx.io import read_image
from meddx.io.dicom import read_dicom_file, read_dicom_series

# file -> expected array shape (MANIFEST 3b; palette colour expands to RGB)
DECODABLE = {
    "693_UNCR.dcm": (1, 512, 512),
    "693_J2KR.dcm": (1, 512, 512),
    "MR2_J2KI.dcm": (1, 1024, 1024),
    "emri_small.dcm": (1, 10, 64, 64),
    "emri_small_big_endian.dcm": (1, 10, 64, 64),
    "emri_small_RLE.dcm": (1, 10, 64, 64),
    "emri_small_jpeg_2k_lossless.dcm": (1, 10, 64, 64),
    "US1_J2KI.dcm": (3, 480, 640),
    "OBXXXX1A_rle_2frame.dcm": (3, 2, 600, 800),
    "gdcm-US-ALOKA-16.dcm": (3, 480, 640),
    "SC_rgb_2frame.dcm": (3, 2, 100, 100),
    "liver.dcm": (1, 3, 512, 512),
}
SERIES = ["11-T1post-80644", "35623-FLAIRreg-79237", "37908-T2reg-21119", "5388-MaskTumor-63335"]
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
               "StudyDate", "SeriesDate", "ReferringPhysicianName", "StudyInstanceUID", "SeriesInstanceUID")


def _identifiers(ds) -> list[str]:
    vals = [str(ds.get(k, "")) for k in IDENTIFYING]
    return [v for v in vals if len(v) >= 4]


@pytest.mark.parametrize("name", sorted(DECODABLE))
def test_pydicom_samples_decode(dicom_dir, name):
    img = read_dicom_file(dicom_dir / name)
    assert img.array.shape == DECODABLE[name]
    assert img.array.dtype == np.float32 and np.isfinite(img.array).all()
    m = img.meta
    assert m["format"] == "dicom" and m["n_frames"] == (img.array.shape[1] if img.array.ndim == 4 else 1)
    ds = pydicom.dcmread(dicom_dir / name, stop_before_pixels=True)
    assert m["transfer_syntax"] == ds.file_meta.TransferSyntaxUID.name
    assert m["modality"] == ds.Modality and m["photometric"] == ds.PhotometricInterpretation
    text = str(m)
    for ident in _identifiers(ds):
        assert ident not in text, f"{name}: identifier leaked into meta"
    if img.array.ndim == 4:
        assert len(img.spacing) == 3
    if m["affine"] is not None:
        assert np.array(m["affine"]).shape == (4, 4)


@pytest.mark.parametrize(("name", "needs"), [("JPEG-LL.dcm", "JPEG Lossless"),
                                             ("emri_small_jpeg_ls_lossless.dcm", "JPEG-LS")])
def test_missing_codec_names_package(dicom_dir, name, needs, assert_one_line_error):
    with pytest.raises(MissingCodecError) as ei:
        read_image(dicom_dir / name)
    msg = assert_one_line_error(ei, dicom_dir / name)
    assert needs in msg and "pip install pylibjpeg pylibjpeg-libjpeg" in msg
    if needs == "JPEG-LS":
        assert "pyjpegls" in msg


@pytest.mark.parametrize("other", ["emri_small_big_endian.dcm", "emri_small_RLE.dcm",
                                   "emri_small_jpeg_2k_lossless.dcm"])
def test_lossless_encodings_equal_uncompressed(dicom_dir, other):
    ref = read_dicom_file(dicom_dir / "emri_small.dcm")
    got = read_dicom_file(dicom_dir / other)
    np.testing.assert_array_equal(got.array, ref.array)
    assert got.spacing == ref.spacing == (1.2, 1.0, 1.0)


def test_ct_modality_lut_gives_hounsfield(dicom_dir):
    img = read_dicom_file(dicom_dir / "693_UNCR.dcm")
    ds = pydicom.dcmread(dicom_dir / "693_UNCR.dcm")
    raw = ds.pixel_array.astype(np.float64)
    np.testing.assert_array_equal(img.array[0], raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    assert img.array.min() == -3024  # stored -2000 (outside the scan circle) + intercept -1024
    assert img.meta["rescale_intercept"] == -1024.0
    np.testing.assert_array_equal(read_dicom_file(dicom_dir / "693_J2KR.dcm").array, img.array)
    assert img.spacing == pytest.approx((0.478516, 0.478516))
    assert img.meta["oblique"] is False
    a = np.array(img.meta["affine"])
    np.testing.assert_allclose(a[:3, 3], [float(v) for v in ds.ImagePositionPatient])


def test_multiframe_spacing_and_unknowns(dicom_dir):
    emri = read_dicom_file(dicom_dir / "emri_small.dcm")
    assert emri.spacing == (1.2, 1.0, 1.0)  # SpacingBetweenSlices; no PixelSpacing in the file
    assert emri.meta["pixel_spacing_unknown"] is True and "frame_spacing_unknown" not in emri.meta
    rgb = read_dicom_file(dicom_dir / "SC_rgb_2frame.dcm")
    assert rgb.meta["frame_spacing_unknown"] is True and rgb.spacing == (1.0, 1.0, 1.0)
    ds = pydicom.dcmread(dicom_dir / "SC_rgb_2frame.dcm")
    np.testing.assert_array_equal(rgb.array, np.moveaxis(ds.pixel_array, -1, 0))


def test_seg_uses_functional_groups(dicom_dir):
    img = read_dicom_file(dicom_dir / "liver.dcm")
    assert set(np.unique(img.array)) <= {0.0, 1.0}
    assert img.spacing == pytest.approx((1.0, 0.810547, 0.810547))
    a = np.array(img.meta["affine"])
    np.testing.assert_allclose(a[:3, 3], [-235.2, -226.8, -128.69])
    np.testing.assert_allclose(a[:3, 0], [0, 0, 1.0])  # frames step 1 mm along +z
    assert img.meta["irregular_slices"] is False


def test_palette_colour_expanded(dicom_dir):
    img = read_dicom_file(dicom_dir / "gdcm-US-ALOKA-16.dcm")
    assert img.meta["palette_applied"] is True and img.channels == 3
    assert img.spacing is None and img.meta["affine"] is None


def test_monochrome1_is_inverted(dicom_dir, tmp_path):
    ds = pydicom.dcmread(dicom_dir / "693_UNCR.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    p = tmp_path / "m1.dcm"
    ds.save_as(p)
    m1 = read_dicom_file(p)
    m2 = read_dicom_file(dicom_dir / "693_UNCR.dcm")
    assert m1.meta["monochrome1_inverted"] is True
    total = m1.array + m2.array
    assert np.all(total == total.flat[0])  # a mirror: bright and dark swap, differences preserved
    assert np.argmax(m1.array) == np.argmin(m2.array)


def _write_text_report(p) -> None:
    """A DICOM Basic Text SR: a DICOM object without pixel data."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.save_as(p, enforce_file_format=True)


def test_no_pixel_data_is_input_error(tmp_path, assert_one_line_error):
    p = tmp_path / "report.dcm"
    _write_text_report(p)
    with pytest.raises(InputError) as ei:
        read_image(p)
    assert not isinstance(ei.value, CorruptFileError)
    assert "no pixel data" in assert_one_line_error(ei, p)


def test_a_blank_sop_class_and_modality_read_as_unknown(tmp_path, assert_one_line_error):
    """A damaged header with blank SOP class and modality gave "no pixel data ( , modality )"."""
    p = tmp_path / "blank.dcm"
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.3.4"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = " "
    ds.Modality = " "
    with warnings.catch_warnings():  # pydicom warns about the blank UID as the test writes it
        warnings.simplefilter("ignore")
        ds.save_as(p, enforce_file_format=True)
    with pytest.raises(InputError) as ei:
        read_image(p)
    assert "(unknown SOP class, modality ?)" in assert_one_line_error(ei, p)


def test_truncated_dicom(tmp_path, dicom_dir, assert_one_line_error):
    data = (dicom_dir / "693_UNCR.dcm").read_bytes()
    p = tmp_path / "half.dcm"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError) as ei:
        read_image(p)
    assert_one_line_error(ei, p)


def test_dicom_cut_inside_header(tmp_path, dicom_dir, assert_one_line_error):
    p = tmp_path / "head.dcm"
    p.write_bytes((dicom_dir / "693_UNCR.dcm").read_bytes()[:300])
    with pytest.raises(CorruptFileError) as ei:
        read_image(p)
    assert_one_line_error(ei, p)


def test_dicom_without_preamble(tmp_path, dicom_dir):
    data = (dicom_dir / "693_UNCR.dcm").read_bytes()
    p = tmp_path / "bare.dcm"
    p.write_bytes(data[132:])  # no preamble, no "DICM"
    np.testing.assert_array_equal(read_image(p).array, read_dicom_file(dicom_dir / "693_UNCR.dcm").array)


def test_dicom_with_a_tiff_preamble_is_read_as_dicom(tmp_path, dicom_dir):
    # A dual-personality file: the free 128-byte preamble holds a TIFF header (pydicom's CT_small.dcm,
    # MR_small.dcm ...); "DICM" at byte 128 makes it DICOM, whatever the first bytes say.
    data = (dicom_dir / "693_UNCR.dcm").read_bytes()
    p = tmp_path / "dual"
    p.write_bytes(b"II*\x00" + (8).to_bytes(4, "little") + bytes(120) + data[128:])
    np.testing.assert_array_equal(read_image(p).array, read_dicom_file(dicom_dir / "693_UNCR.dcm").array)
    ct = get_testdata_file("CT_small.dcm")
    img = read_image(ct)
    assert img.meta["format"] == "dicom" and img.array.shape == (1, 128, 128)
    np.testing.assert_array_equal(img.array[0], pydicom.dcmread(ct).pixel_array * 1.0 - 1024)


def test_dicom_max_pixels_checked_before_decoding(dicom_dir):
    with pytest.raises(ImageContentError, match="MR2_J2KI.dcm"):
        read_dicom_file(dicom_dir / "MR2_J2KI.dcm", max_pixels=1024 * 1024 - 1)


# ------------------------------------------------------------------ series


@pytest.fixture(scope="module")
def series(tcia_dir):
    return {s: read_image(tcia_dir / s) for s in SERIES}


def test_tcia_series_geometry(series, tcia_dir):
    for name, img in series.items():
        assert img.array.shape == (1, 24, 320, 260), name
        assert img.spacing == pytest.approx((6.5, 0.6875, 0.6875), abs=1e-5)
        m = img.meta
        assert m["n_slices"] == 24 and m["sort_key"] == "position"
        assert m["slice_thickness"] == 5.0
        assert m["oblique"] is True and m["irregular_slices"] is False
        assert m["transfer_syntax"] == "Explicit VR Little Endian" and m["modality"] == "MR"
        np.testing.assert_allclose(m["image_orientation_patient"],
                                   [0.998, 0.010, 0.061, 0, 0.986, -0.165], atol=1e-3)
    ref = np.array(series[SERIES[0]].meta["affine"])
    for img in series.values():
        np.testing.assert_allclose(np.array(img.meta["affine"]), ref, atol=1e-4)


def test_tcia_affine_maps_each_slice_to_its_file(series, tcia_dir):
    # Every file's ImagePositionPatient must be affine @ (k, 0, 0) for exactly one k,
    # and its pixels must be slice k: the series is ordered along the slice normal.
    img = series[SERIES[0]]
    a = np.array(img.meta["affine"])
    ks = []
    for f in sorted((tcia_dir / SERIES[0]).iterdir()):
        ds = pydicom.dcmread(f)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        k = int(np.argmin([np.linalg.norm(a[:3] @ [i, 0, 0, 1] - ipp) for i in range(24)]))
        np.testing.assert_allclose(a[:3] @ [k, 0, 0, 1], ipp, atol=1e-3)
        np.testing.assert_array_equal(img.array[0, k], ds.pixel_array.astype(np.float32))
        ks.append(k)
    assert sorted(ks) == list(range(24))
    # slices run along +normal (row x column direction cosines)
    iop = np.array(img.meta["image_orientation_patient"])
    assert a[:3, 0] @ np.cross(iop[:3], iop[3:]) == pytest.approx(6.5, abs=1e-4)
    # in-plane: column index moves along the row direction cosines times the column spacing
    np.testing.assert_allclose(a[:3, 2], np.array(img.meta["image_orientation_patient"][:3]) * 0.6875)


def test_tcia_mask_is_binary_with_6809_voxels(series):
    mask = series["5388-MaskTumor-63335"].array
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert int(mask.sum()) == 6809


def test_series_meta_has_no_patient_identifiers(series, tcia_dir):
    ds = pydicom.dcmread(next((tcia_dir / SERIES[0]).iterdir()), stop_before_pixels=True)
    idents = _identifiers(ds)
    assert "PGBM-001" in idents  # the check below would be vacuous otherwise
    for img in series.values():
        text = str(img.meta)
        assert "PGBM-001" not in text
        for ident in idents:
            assert ident not in text


def test_non_conforming_identifiers_are_not_quoted_by_pydicom_warnings(tcia_dir, tmp_path, caplog):
    """Clinical files often hold values their VR forbids (a UID with a letter or a leading-zero
    component, a name over 64 characters, a date with dashes). pydicom validates a value when it is
    first read and warns, on stderr and in its log, quoting it: reading a series once did so with the
    SeriesInstanceUID of every slice. Slices of the TCIA series here get such values in every
    identifying attribute; reading one file or the folder quotes none of them."""
    import logging
    import warnings

    bad = {"PatientName": "Doe" * 24 + "^Jane", "PatientID": "PGBM-001-" + "7" * 60, "PatientBirthDate": "1950-01-12",
           "AccessionNumber": "ACC-5686274134839343", "InstitutionName": "Memorial " * 9,
           "ReferringPhysicianName": "House" * 14 + "^Greg", "StudyDate": "1992-04-02",
           "StudyInstanceUID": "1.3.6.1.04.STUDY", "SeriesInstanceUID": "1.3.6.1.04.SERIES",
           "SOPInstanceUID": "1.3.6.1.04.SOP"}
    folder = tmp_path / "series"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, f in enumerate(sorted((tcia_dir / SERIES[0]).iterdir())[:3]):
            ds = pydicom.dcmread(f)
            for k, v in bad.items():
                setattr(ds, k, f"{v}.{i}" if k == "SOPInstanceUID" else v)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(folder / f"{i:06d}.dcm", enforce_file_format=False)
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as plain:
        warnings.simplefilter("always")
        pydicom.dcmread(folder / "000000.dcm").SeriesInstanceUID
    assert any(bad["SeriesInstanceUID"] in str(w.message) for w in plain)  # pydicom quotes it: not vacuous
    caplog.clear()
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        one, vol = read_image(folder / "000001.dcm"), read_image(folder)
    assert vol.array.shape == (1, 3, 320, 260)
    text = " ".join(str(w.message) for w in got) + caplog.text + str(one.meta) + str(vol.meta)
    for v in bad.values():
        assert v not in text and v.replace("^", " ") not in text, v


def test_shuffled_copy_reads_identically(series, tcia_dir, tmp_path):
    src = tcia_dir / SERIES[0]
    files = sorted(src.iterdir())
    names = [f"{random.Random(7).getrandbits(64):x}{i}" for i in range(len(files))]
    random.Random(3).shuffle(names)
    for f, n in zip(files, names):
        shutil.copy(f, tmp_path / n)  # scrambled names, no suffix
    (tmp_path / "README.txt").write_text("not dicom")
    (tmp_path / ".DS_Store").write_bytes(b"\0" * 10)
    img = read_dicom_series(tmp_path)
    ref = series[SERIES[0]]
    np.testing.assert_array_equal(img.array, ref.array)
    assert img.meta["affine"] == ref.meta["affine"] and img.spacing == ref.spacing
    assert img.meta["skipped_files"] == 1


def test_positions_beat_instance_numbers_and_fallback(series, tcia_dir, tmp_path):
    ref = series[SERIES[0]]
    files = sorted((tcia_dir / SERIES[0]).iterdir())
    numbers = list(range(1, 25))
    random.Random(5).shuffle(numbers)
    (tmp_path / "scrambled").mkdir()
    (tmp_path / "no_position").mkdir()
    for f, k in zip(files, numbers):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = k  # deliberately unrelated to the position
        ds.save_as(tmp_path / "scrambled" / f.name)
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(tmp_path / "no_position" / f.name)
    img = read_dicom_series(tmp_path / "scrambled")
    np.testing.assert_array_equal(img.array, ref.array)
    fallback = read_dicom_series(tmp_path / "no_position")
    assert fallback.meta["sort_key"] == "instance_number"
    assert fallback.spacing == pytest.approx((6.5, 0.6875, 0.6875))  # from SpacingBetweenSlices
    assert fallback.meta["affine"] is None
    order = np.argsort([int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in files])
    for k, i in enumerate(order):
        np.testing.assert_array_equal(fallback.array[0, k], pydicom.dcmread(files[i]).pixel_array)


def _first_slices(tcia_dir, to, n: int = 3) -> list:
    """Copy the first ``n`` slice files of the T1post series into ``to``; returns the originals."""
    files = sorted((tcia_dir / SERIES[0]).iterdir())[:n]
    for f in files:
        shutil.copy(f, to / f.name)
    return files


def test_two_series_in_one_folder(tcia_dir, tmp_path, assert_one_line_error):
    for s in SERIES[:2]:
        for f in sorted((tcia_dir / s).iterdir())[:2]:
            shutil.copy(f, tmp_path / f"{s[:3]}_{f.name}")
    with pytest.raises(DatasetError) as ei:
        read_image(tmp_path)
    assert "2 DICOM series" in assert_one_line_error(ei, tmp_path)


def test_series_with_differing_slice_sizes(tcia_dir, tmp_path):
    files = _first_slices(tcia_dir, tmp_path)
    ds = pydicom.dcmread(tmp_path / files[1].name)
    ds.PixelData = ds.pixel_array[:100].tobytes()
    ds.Rows = 100
    ds.save_as(tmp_path / files[1].name)
    with pytest.raises(DatasetError, match="differ in size"):
        read_dicom_series(tmp_path)


def test_series_with_a_gap_is_irregular(tcia_dir, tmp_path, series):
    files = sorted((tcia_dir / SERIES[0]).iterdir())
    ref = series[SERIES[0]]
    a = np.array(ref.meta["affine"])
    gone = None
    for f in files:
        ipp = np.array([float(v) for v in pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient])
        if np.allclose(a[:3] @ [10, 0, 0, 1], ipp, atol=1e-3):
            gone = f
            continue
        shutil.copy(f, tmp_path / f.name)
    assert gone is not None
    img = read_dicom_series(tmp_path)
    assert img.array.shape == (1, 23, 320, 260)
    assert img.meta["irregular_slices"] is True
    assert img.spacing[0] == pytest.approx(6.5, abs=1e-5)


def test_series_duplicate_positions(tcia_dir, tmp_path):
    f = sorted((tcia_dir / SERIES[0]).iterdir())[0]
    shutil.copy(f, tmp_path / "a.dcm")
    shutil.copy(f, tmp_path / "b.dcm")
    with pytest.raises(DatasetError, match="share one position"):
        read_dicom_series(tmp_path)


def test_series_errors(tmp_path, tcia_dir):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DatasetError, match="no DICOM images"):
        read_dicom_series(tmp_path)
    with pytest.raises(ImageContentError, match="downsample or crop"):
        read_dicom_series(tcia_dir / SERIES[0], max_pixels=24 * 320 * 260 - 1)


def test_truncated_slice_in_series_is_named(tcia_dir, tmp_path, assert_one_line_error):
    files = _first_slices(tcia_dir, tmp_path, 4)
    cut = tmp_path / files[2].name
    cut.write_bytes(cut.read_bytes()[:600])  # keeps the SOP class (MR Image Storage), loses Rows and pixels
    assert "Rows" not in pydicom.dcmread(cut, defer_size="256 KB")
    with pytest.raises(CorruptFileError) as ei:
        read_dicom_series(tmp_path)
    assert "truncated" in assert_one_line_error(ei, cut)
    with pytest.raises(CorruptFileError) as ei:  # the same file on its own: truncated, not "not an image"
        read_image(cut)
    assert "truncated" in assert_one_line_error(ei, cut)


def test_series_skips_non_image_objects(tcia_dir, tmp_path):
    _first_slices(tcia_dir, tmp_path)
    _write_text_report(tmp_path / "report.dcm")
    shutil.copy(get_testdata_file("DICOMDIR"), tmp_path / "DICOMDIR")
    img = read_dicom_series(tmp_path)
    assert img.array.shape == (1, 3, 320, 260) and img.meta["skipped_files"] == 2


def _enhanced_ct(path, z_positions):
    """A tiny enhanced (multi-frame) CT whose frame k is filled with k, at per-frame z_positions[k]."""
    from pydicom.sequence import Sequence

    n = len(z_positions)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4, 5, n
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (np.arange(n, dtype=np.uint16)[:, None, None] * np.ones((1, 4, 5), np.uint16)).tobytes()
    orient, measures, shared = pydicom.Dataset(), pydicom.Dataset(), pydicom.Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.5], 1.0
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = Sequence([orient]), Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for z in z_positions:
        pos, group = pydicom.Dataset(), pydicom.Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, float(z)]
        group.PlanePositionSequence = Sequence([pos])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_multiframe_frames_sorted_by_position(tmp_path):
    img = read_dicom_file(_enhanced_ct(tmp_path / "mf.dcm", [10.0, 12.0, 11.0, 13.0]))
    assert img.spacing == pytest.approx((1.0, 0.5, 0.5))
    assert img.meta["sort_key"] == "position" and img.meta["irregular_slices"] is False
    assert [int(img.array[0, k, 0, 0]) for k in range(4)] == [0, 2, 1, 3]  # frames in z order
    a = np.array(img.meta["affine"])
    np.testing.assert_allclose(a[:3, 3], [0, 0, 10.0])
    np.testing.assert_allclose(a[:3, 0], [0, 0, 1.0])


def test_multiframe_repeated_positions_keep_file_order(tmp_path):
    img = read_dicom_file(_enhanced_ct(tmp_path / "cine.dcm", [10.0, 11.0, 10.0, 11.0]))  # two phases
    assert img.meta["sort_key"] == "frame_order" and img.meta["irregular_slices"] is True
    assert [int(img.array[0, k, 0, 0]) for k in range(4)] == [0, 1, 2, 3]
