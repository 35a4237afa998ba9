"""Segmentation datasets: layouts, mask merging, label sets, size/geometry checks (generated and real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from meddx_testutils import data_dir, write_png, write_seg_pairs, write_seg_volumes

from meddx.data.fingerprint import compute_fingerprint
from meddx.data.segsources import infer_label_values, label_index, load_mask_values, open_seg_dataset
from meddx.errors import DatasetError, ImageContentError

REAL = data_dir()
needs_real = pytest.mark.skipif(not (REAL / "seg").exists(), reason="real data not found")


def test_sibling_masks_pair_by_name(tmp_path):
    root = write_seg_pairs(tmp_path / "d", n=5)
    cs = open_seg_dataset(root)
    assert cs.task == "segment" and cs.kind == "mask beside image" and len(cs) == 5
    img, m = load_mask_values(cs, cs.cases[0])
    assert img.spatial_shape == m.shape and set(np.unique(m)) <= {0.0, 255.0}


def test_images_masks_folders_and_manifest(tmp_path):
    root = write_seg_pairs(tmp_path / "d", n=4, layout="folders")
    cs = open_seg_dataset(root)
    assert cs.kind == "image/mask folders" and len(cs) == 4
    man = tmp_path / "m.csv"
    man.write_text("image,mask,split\n" + "".join(
        f"d/images/case{i:03d}.png,d/masks/case{i:03d}.png,{'test' if i == 3 else 'train'}\n" for i in range(4)))
    cm = open_seg_dataset(man)
    assert cm.kind == "manifest" and cm.official_split and [c.split for c in cm.cases] == ["train"] * 3 + ["test"]


def test_several_masks_of_one_image_are_merged(tmp_path):
    img = np.full((16, 16), 50, np.uint8)
    a = np.zeros((16, 16), np.uint8)
    a[2:5, 2:5] = 255
    b = np.zeros((16, 16), np.uint8)
    b[10:14, 10:14] = 255
    write_png(tmp_path / "x.png", img)
    write_png(tmp_path / "x_mask.png", a)
    write_png(tmp_path / "x_mask_1.png", b)
    cs = open_seg_dataset(tmp_path)
    _, m = load_mask_values(cs, cs.cases[0])
    assert int((m > 0).sum()) == 9 + 16


def test_image_without_mask_and_mask_without_image_are_errors(tmp_path):
    write_seg_pairs(tmp_path / "a", n=2)
    write_png(tmp_path / "a" / "lonely.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError, match="lonely.png.*no mask"):
        open_seg_dataset(tmp_path / "a")
    write_seg_pairs(tmp_path / "b", n=2, layout="folders")
    write_png(tmp_path / "b" / "masks" / "orphan.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError, match="orphan.png.*no image"):
        open_seg_dataset(tmp_path / "b")


@pytest.mark.parametrize("layout, extra", [("folders", "images/case001.jpg"), ("folders", "masks/case001.tif"),
                                           ("siblings", "case001.jpg"), ("siblings", "case001_mask.tif")])
def test_two_files_of_one_name_are_an_error_naming_both(tmp_path, layout, extra):
    """images/case001.png and images/case001.jpg: one of them was dropped without a word (and of two masks
    of one name, one was used, or beside the image both were merged)."""
    root = write_seg_pairs(tmp_path / "d", n=3, size=16, layout=layout)
    write_png(root / extra, np.zeros((16, 16), np.uint8))
    with pytest.raises(DatasetError, match="have the same name") as e:
        open_seg_dataset(root)
    assert Path(extra).name in str(e.value) and "Fix:" in str(e.value)


def test_mask_size_mismatch_is_an_error_unless_resampling(tmp_path):
    write_png(tmp_path / "x.png", np.full((20, 30), 80, np.uint8))
    m = np.zeros((10, 15), np.uint8)
    m[2:6, 3:9] = 255
    write_png(tmp_path / "x_mask.png", m)
    cs = open_seg_dataset(tmp_path)
    with pytest.raises(ImageContentError, match=r"mask is 10x15 but its image is 20x30.*--resample-masks"):
        load_mask_values(cs, cs.cases[0])
    cs = open_seg_dataset(tmp_path, resample_masks=True)
    _, mm = load_mask_values(cs, cs.cases[0])
    assert mm.shape == (20, 30) and int((mm > 0).sum()) == 4 * 6 * 4


def test_a_2d_mask_of_a_volume_is_refused_even_with_resampling(tmp_path):
    """--resample-masks handed a 16x16 PNG mask of a 16x16x16 NIfTI volume to torch's interpolate: a
    ValueError traceback."""
    write_seg_volumes(tmp_path, n=1, shape=(16, 16, 16))
    (tmp_path / "labels" / "vol00.nii.gz").unlink()
    write_png(tmp_path / "labels" / "vol00.png", np.zeros((16, 16), np.uint8))
    for resample in (False, True):
        cs = open_seg_dataset(tmp_path, resample_masks=resample)
        with pytest.raises(ImageContentError, match=r"mask is (2D \()?16x16\)? but its image is") as e:
            load_mask_values(cs, cs.cases[0])
        assert "vol00.png" in str(e.value)


def test_label_sets_inferred_declared_and_refused(tmp_path):
    assert infer_label_values({0.0, 255.0}, None, "x")[:2] == ([0, 255], ["background", "foreground"])
    vals, names, how = infer_label_values({0.0, 1.0, 2.0}, None, "x")
    assert vals == [0, 1, 2] and "class" in how
    with pytest.raises(DatasetError, match="non-integer"):
        infer_label_values({0.0, 0.5}, None, "x")
    with pytest.raises(DatasetError, match="empty"):
        infer_label_values({0.0}, None, "x")
    with pytest.raises(DatasetError, match="not declared"):
        infer_label_values({0.0, 3.0}, {0: "bg", 1: "a"}, "x")
    assert label_index(np.array([0.0, 255.0, 255.0]), [0, 255], "m").tolist() == [0, 1, 1]
    with pytest.raises(ImageContentError, match=r"value\(s\) 7 outside the label set \[0, 1, 2\]"):
        label_index(np.array([0.0, 7.0]), [0, 1, 2], "m.png")


def test_dataset_json_declares_labels_and_fingerprint_reads_them(tmp_path):
    root = write_seg_volumes(tmp_path / "v", n=3)
    (root / "dataset.json").write_text('{"labels": {"0": "background", "1": "core", "2": "rim"}}')
    cs = open_seg_dataset(root)
    assert cs.declared_labels == {0: "background", 1: "core", 2: "rim"}
    fp = compute_fingerprint(cs)
    sg = fp["segmentation"]
    assert sg["label_values"] == [0, 1, 2] and sg["label_names"] == ["background", "core", "rim"]
    assert sg["labels_from"] == "declared in dataset.json" and fp["spacing_median"] == [1.5, 1.0, 1.0]


def test_group_by_folder_pseudonymises_patient_folders(tmp_path):
    for pat in ("TCGA_AB_0001", "TCGA_CD_0002"):
        for i, (img, m) in enumerate([(np.full((8, 8), 9, np.uint8), np.zeros((8, 8), np.uint8))] * 2):
            write_png(tmp_path / pat / f"{pat}_{i}.png", img)
            write_png(tmp_path / pat / f"{pat}_{i}_mask.png", m)
    cs = open_seg_dataset(tmp_path, group_by_folder=True)
    assert len({c.group for c in cs.cases}) == 2
    assert not any("TCGA" in c.case_id or "TCGA" in (c.group or "") for c in cs.cases)
    assert cs.class_names == ["all"]


@needs_real
def test_real_hippocampus_nifti_pairs_keep_geometry():
    cs = open_seg_dataset(REAL / "seg" / "msd_hippocampus_udacity")
    assert len(cs) == 260
    img, m = load_mask_values(cs, cs.cases[0])
    assert img.spatial_shape == m.shape and set(np.unique(m)) == {0.0, 1.0, 2.0} and img.spacing == (1.0, 1.0, 1.0)


@needs_real
def test_real_dicom_series_with_mask_series(tmp_path):
    root = REAL / "dicom" / "tcia_brain_tumor_progression_PGBM-001"
    man = tmp_path / "m.csv"
    man.write_text(f"image,mask\n{root / '35623-FLAIRreg-79237'},{root / '5388-MaskTumor-63335'}\n")
    cs = open_seg_dataset(man)
    img, m = load_mask_values(cs, cs.cases[0])
    assert img.spatial_shape == m.shape == (24, 320, 260)
    assert int((m > 0).sum()) == 6809  # the manifest's documented tumour voxel count


@needs_real
def test_real_busi_mismatched_extra_mask_is_named():
    cs = open_seg_dataset(REAL / "seg" / "busi_subset")
    case = next(c for c in cs.cases if c.case_id.endswith("benign (4).png"))
    with pytest.raises(ImageContentError, match=r"benign \(4\)_mask_1.png.*mask is 465x555 but its image is 416x416"):
        load_mask_values(cs, case)


@needs_real
def test_real_covid_masks_need_resampling():
    root = REAL / "seg" / "covid19_radiography_viral_pneumonia_subset"
    cs = open_seg_dataset(root)
    with pytest.raises(ImageContentError, match="256x256 but its image is 299x299"):
        load_mask_values(cs, cs.cases[0])
    cs = open_seg_dataset(root, resample_masks=True)
    img, m = load_mask_values(cs, cs.cases[0])
    assert m.shape == (299, 299)


def test_bilevel_and_8bit_masks_mean_the_same_foreground(tmp_path):
    """BUSI mixes mode-1 (bilevel) and 8-bit 0/255 masks: both must give one foreground class."""
    from PIL import Image

    from meddx.data.fingerprint import compute_fingerprint

    img = np.full((12, 12), 80, np.uint8)
    img[3:7, 3:7] = 200
    m = np.zeros((12, 12), np.uint8)
    m[3:7, 3:7] = 255
    write_png(tmp_path / "a.png", img)
    write_png(tmp_path / "a_mask.png", m)
    write_png(tmp_path / "b.png", img)
    Image.fromarray(m > 0).save(tmp_path / "b_mask.png")  # mode "1"
    cs = open_seg_dataset(tmp_path)
    _, mb = load_mask_values(cs, cs.cases[1])
    assert set(np.unique(mb)) == {0.0, 255.0}
    sg = compute_fingerprint(cs)["segmentation"]
    assert sg["label_values"] == [0, 255] and sg["label_names"] == ["background", "foreground"]


def test_mask_geometry_mismatch_is_an_error_unless_resampling(tmp_path):
    """Same voxel grid size, different affine (the mask sits 5 mm elsewhere): an error naming the mask."""
    import nibabel as nib

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img = np.random.default_rng(0).normal(100, 10, (12, 12, 8)).astype(np.float32)
    m = np.zeros((12, 12, 8), np.uint8)
    m[3:8, 3:8, 2:5] = 1
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    moved = aff.copy()
    moved[0, 3] = 5.0
    nib.save(nib.Nifti1Image(img, aff), str(tmp_path / "images" / "v.nii.gz"))
    nib.save(nib.Nifti1Image(m, moved), str(tmp_path / "masks" / "v.nii.gz"))
    cs = open_seg_dataset(tmp_path)
    with pytest.raises(ImageContentError, match=r"geometry \(affine\) differs.*--resample-masks") as e:
        load_mask_values(cs, cs.cases[0])
    assert "v.nii.gz" in str(e.value)
    nib.save(nib.Nifti1Image(m, aff), str(tmp_path / "masks" / "v.nii.gz"))  # same grid: accepted
    _, mm = load_mask_values(open_seg_dataset(tmp_path), cs.cases[0])
    assert int((mm > 0).sum()) == 5 * 5 * 3


def test_bad_masks_and_datasets_name_the_file(tmp_path):
    """A NaN mask, a two-channel mask, a mask of 100 distinct values, an unreadable dataset.json
    and a folder with images but no masks: each a one-line error that names the file."""
    import nibabel as nib

    from meddx.errors import InputError

    vol = np.random.default_rng(0).normal(0, 1, (8, 8, 4)).astype(np.float32)
    bad = tmp_path / "nan"
    (bad / "images").mkdir(parents=True)
    (bad / "masks").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(bad / "images" / "a.nii.gz"))
    m = np.zeros((8, 8, 4), np.float32)
    m[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(m, np.eye(4)), str(bad / "masks" / "a.nii.gz"))
    cs = open_seg_dataset(bad)
    with pytest.raises(ImageContentError, match="NaN") as e:
        load_mask_values(cs, cs.cases[0])
    assert "a.nii.gz" in str(e.value)

    two = tmp_path / "two"
    (two / "images").mkdir(parents=True)
    (two / "masks").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(two / "images" / "b.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 2), np.uint8), np.eye(4)), str(two / "masks" / "b.nii.gz"))
    cs = open_seg_dataset(two)
    with pytest.raises(ImageContentError, match="one channel.*has 2") as e:  # a 4D NIfTI of two channels
        load_mask_values(cs, cs.cases[0])
    assert "b.nii.gz" in str(e.value)

    with pytest.raises(DatasetError, match="100 distinct values; that is not a label map"):
        infer_label_values({float(v) for v in range(100)}, None, "m")

    js = tmp_path / "js"
    write_seg_pairs(js, n=2)
    (js / "dataset.json").write_text("{labels: oops")
    with pytest.raises(DatasetError, match="dataset.json cannot be read") as e:
        open_seg_dataset(js)
    assert "dataset.json" in str(e.value)

    empty = tmp_path / "nomasks"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises((DatasetError, InputError), match="no image/mask pairs found|no mask"):
        open_seg_dataset(empty)


def test_a_dicom_image_with_a_nifti_mask_is_refused_even_with_resampling(real_data, tmp_path):
    """A DICOM series is (slice, row, column), a NIfTI volume (i, j, k): resizing the mask onto the
    image (--resample-masks) would pair each voxel with a voxel of another place."""
    import nibabel as nib

    series = real_data / "dicom" / "tcia_brain_tumor_progression_PGBM-001" / "11-T1post-80644"
    mask = np.zeros((260, 320, 24), np.uint8)  # the series' 24x320x260 voxels in NIfTI's axis order
    mask[100:140, 150:200, 10:14] = 1
    nib.save(nib.Nifti1Image(mask, np.diag([0.6875, 0.6875, 6.5, 1.0])), tmp_path / "mask.nii.gz")
    (tmp_path / "m.csv").write_text(f"image,mask\n{series},mask.nii.gz\n")
    cs = open_seg_dataset(tmp_path / "m.csv", resample_masks=True)
    with pytest.raises(ImageContentError, match="another voxel grid, even turned to the image's axes"):
        load_mask_values(cs, cs.cases[0])
    # the NIfTI mask `meddx predict` writes for a DICOM series keeps the series' grid: it is accepted
    from meddx.evaluation.seg_predict import write_mask
    from meddx.io import read_image

    img = read_image(series)
    own = np.zeros(img.spatial_shape, np.uint8)
    own[10:14, 150:200, 100:140] = 1
    written = write_mask(own, img, tmp_path / "pred")
    (tmp_path / "m2.csv").write_text(f"image,mask\n{series},{written.name}\n")
    for resample in (False, True):
        cs = open_seg_dataset(tmp_path / "m2.csv", resample_masks=resample)
        assert np.array_equal(load_mask_values(cs, cs.cases[0])[1], own)
    # the same mask stored as 3D Slicer or dcm2niix would (its grid in NIfTI's closest-to-RAS voxel order):
    # turned to the series' axes first, it pairs up voxel for voxel (before, a shape mismatch)
    canon = nib.as_closest_canonical(nib.load(str(written)))
    assert canon.shape != own.shape
    nib.save(canon, str(tmp_path / "canon.nii.gz"))
    (tmp_path / "m3.csv").write_text(f"image,mask\n{series},canon.nii.gz\n")
    cs = open_seg_dataset(tmp_path / "m3.csv")
    assert np.array_equal(load_mask_values(cs, cs.cases[0])[1], own)


def test_mixed_orientations_are_a_finding(real_data, tmp_path):
    """DICOM series beside NIfTI volumes in one classification manifest: the fingerprint says the
    volumes' axes point different ways (train and inspect print it)."""
    import nibabel as nib

    from meddx.data.sources import open_dataset

    rows = ["path,label"]
    tcia = real_data / "dicom" / "tcia_brain_tumor_progression_PGBM-001"
    for i, s in enumerate(["11-T1post-80644", "35623-FLAIRreg-79237", "37908-T2reg-21119"]):
        rows.append(f"{tcia / s},{'ab'[i % 2]}")
        vol = np.random.default_rng(i).normal(100, 10, (40, 48, 24)).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / f"v{i}.nii.gz")
        rows.append(f"v{i}.nii.gz,{'ba'[i % 2]}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    fp = compute_fingerprint(open_dataset(tmp_path / "m.csv"), strict=False)
    assert any(f.startswith("mixed orientations") for f in fp["findings"]), fp["findings"]


def test_a_mask_of_fractions_or_undeclared_labels_is_named(tmp_path):
    """The label set is decided over all masks at once: the error named only the dataset folder, so
    the one bad mask among hundreds had to be hunted down."""
    import json

    import nibabel as nib

    root = write_seg_volumes(tmp_path / "v", n=4, shape=(12, 14, 12))
    bad = root / "labels" / "vol02.nii.gz"
    m = nib.load(str(bad))
    lab, aff = np.asarray(m.dataobj).copy(), m.affine
    nib.save(nib.Nifti1Image(lab.astype(np.float32) * 0.5, aff), str(bad))
    with pytest.raises(DatasetError, match="non-integer") as e:
        compute_fingerprint(open_seg_dataset(root))
    assert str(e.value).startswith(f"{bad}: ")
    nib.save(nib.Nifti1Image(lab * 3, aff), str(bad))  # values 3 and 6
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "a", "2": "b"}}))
    with pytest.raises(DatasetError, match="not declared") as e:
        compute_fingerprint(open_seg_dataset(root))
    assert str(e.value).startswith(f"{bad}: ")


def test_a_negative_mask_value_is_refused_not_made_the_background(tmp_path):
    """Label values are sorted and the lowest is class 0: a mask holding -1 made -1 the background and
    the real background (0) a foreground class 'label_0' that trained and was scored."""
    import json

    import nibabel as nib

    root = write_seg_volumes(tmp_path / "v", n=4, shape=(12, 14, 12))
    bad = root / "labels" / "vol01.nii.gz"
    m = nib.load(str(bad))
    lab = np.asarray(m.dataobj).astype(np.int16)
    lab[lab == 2] = -1
    nib.save(nib.Nifti1Image(lab, m.affine), str(bad))
    with pytest.raises(DatasetError, match=r"negative value \(-1\)") as e:
        compute_fingerprint(open_seg_dataset(root))
    assert str(e.value).startswith(f"{bad}: ")
    with pytest.raises(DatasetError, match="negative label value"):
        infer_label_values({0.0, 1.0}, {-1: "ignore", 0: "background", 1: "a"}, "x",
                           declared_in="dataset.json")
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "a", "2": "b"}}))
    with pytest.raises(DatasetError, match="negative value"):  # declared or not
        compute_fingerprint(open_seg_dataset(root))


def test_a_colour_coded_mask_is_refused_not_merged(tmp_path):
    """A mask drawn in red for one class and green for another was read as the maximum over its channels,
    so both classes became one foreground (255) without a word; grey RGB masks (COVID, BUSI) still read."""
    img = np.full((12, 12), 80, np.uint8)
    img[3:9, 3:9] = 200
    m = np.zeros((12, 12, 3), np.uint8)
    m[3:6, 3:9, 0] = 255  # red: one class
    m[6:9, 3:9, 1] = 255  # green: another
    write_png(tmp_path / "a.png", img)
    write_png(tmp_path / "a_mask.png", m)
    write_png(tmp_path / "b.png", img)
    write_png(tmp_path / "b_mask.png", np.repeat((img > 100)[..., None] * 255, 3, -1).astype(np.uint8))
    cs = open_seg_dataset(tmp_path)
    with pytest.raises(ImageContentError, match="colour mask") as e:
        load_mask_values(cs, cs.cases[0])
    assert str(e.value).startswith(f"{tmp_path / 'a_mask.png'}: ")
    _, grey = load_mask_values(cs, cs.cases[1])
    assert set(np.unique(grey)) == {0.0, 255.0}


def test_an_nnunet_v2_dataset_pairs_x_0000_with_its_mask_x(tmp_path):
    root = write_seg_volumes(tmp_path / "Dataset001_Blobs", n=3, shape=(12, 12, 12))
    (root / "images").rename(root / "imagesTr")
    (root / "labels").rename(root / "labelsTr")
    for p in (root / "imagesTr").iterdir():
        p.rename(p.with_name(p.name.replace(".nii.gz", "_0000.nii.gz")))
    (root / "dataset.json").write_text('{"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2},'
                                       ' "numTraining": 3, "file_ending": ".nii.gz"}')
    cs = open_seg_dataset(root)
    assert len(cs) == 3 and [c.masks[0].name for c in cs.cases] == ["vol00.nii.gz", "vol01.nii.gz", "vol02.nii.gz"]
    assert [c.path.name for c in cs.cases] == ["vol00_0000.nii.gz", "vol01_0000.nii.gz", "vol02_0000.nii.gz"]
    img, m = load_mask_values(cs, cs.cases[0])
    assert img.spatial_shape == m.shape and set(np.unique(m)) == {0.0, 1.0, 2.0}
    (root / "labelsTr" / "vol02.nii.gz").unlink()   # an image without its mask: the fix names the mask's name
    with pytest.raises(DatasetError, match=r"vol02_0000.nii.gz.*no mask.*add labelsTr/vol02.nii.gz "):
        open_seg_dataset(root)
    (root / "imagesTr" / "vol02_0000.nii.gz").unlink()
    (root / "imagesTr" / "vol01_0001.nii.gz").write_bytes((root / "imagesTr" / "vol01_0000.nii.gz").read_bytes())
    with pytest.raises(DatasetError, match=r"imagesTr/vol00_0001.nii.gz: case 'vol00' has 1 channel file\(s\) where "
                                           r"others have 2: vol00_0001.nii.gz is missing"):
        open_seg_dataset(root)


def _channel_dataset(tmp_path, n=3, shape=(12, 12, 12)):
    """nnU-Net v2 layout, two channels per case: channel 1 is channel 0 on another scale (x 40, + 1000)."""
    import nibabel as nib

    root = write_seg_volumes(tmp_path / "Dataset002_Two", n=n, shape=shape)
    (root / "images").rename(root / "imagesTr")
    (root / "labels").rename(root / "labelsTr")
    for p in sorted((root / "imagesTr").iterdir()):
        img = nib.load(str(p))
        nib.save(img, str(p.with_name(p.name.replace(".nii.gz", "_0000.nii.gz"))))
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 40 + 1000, img.affine),
                 str(p.with_name(p.name.replace(".nii.gz", "_0001.nii.gz"))))
        p.unlink()
    (root / "dataset.json").write_text('{"channel_names": {"0": "T1", "1": "FLAIR"}, "labels": {"background": 0, '
                                       '"a": 1, "b": 2}, "file_ending": ".nii.gz"}')
    return root


def test_an_nnunet_case_of_several_channel_files_is_one_image_of_those_channels_in_order(tmp_path):
    import nibabel as nib

    root = _channel_dataset(tmp_path)
    cs = open_seg_dataset(root)
    assert len(cs) == 3 and [c.path.name for c in cs.cases] == ["vol00_0000.nii.gz", "vol01_0000.nii.gz",
                                                                 "vol02_0000.nii.gz"]
    assert [p.name for p in cs.cases[1].channels] == ["vol01_0000.nii.gz", "vol01_0001.nii.gz"]
    img, m = load_mask_values(cs, cs.cases[1])
    first = np.asarray(nib.load(str(root / "imagesTr" / "vol01_0000.nii.gz")).dataobj)
    assert img.channels == 2 and img.spatial_shape == m.shape == first.shape
    np.testing.assert_allclose(img.array[0], first)
    np.testing.assert_allclose(img.array[1], first * 40 + 1000, rtol=1e-6)
    np.testing.assert_allclose(img.meta["affine"], nib.load(str(root / "imagesTr" / "vol01_0000.nii.gz")).affine)
    fp = compute_fingerprint(cs)
    assert fp["channel_names"] == ["T1", "FLAIR"] and not any("dataset.json names" in f for f in fp["findings"])
    (root / "dataset.json").write_text('{"modality": {"0": "T1", "1": "T2", "2": "FLAIR"}}')  # MSD's key
    fp = compute_fingerprint(open_seg_dataset(root))
    assert "dataset.json names 3 channel(s) (T1, T2, FLAIR) but the images have 2: check that every channel's " \
           "files are there" in fp["findings"]


def test_channel_files_that_disagree_are_refused_naming_the_file(tmp_path):
    import nibabel as nib

    root = _channel_dataset(tmp_path)
    moved = root / "imagesTr" / "vol02_0001.nii.gz"
    img = nib.load(str(moved))
    shifted = img.affine.copy()
    shifted[0, 3] += 5.0  # 5 mm to the side: same grid, another place
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted), str(moved))
    cs = open_seg_dataset(root)
    with pytest.raises(ImageContentError, match=r"vol02_0001.nii.gz: channel file lies elsewhere in space than "
                                                r"vol02_0000.nii.gz.*co-registered"):
        cs.load(cs.cases[2])
    bad = np.asarray(img.dataobj, np.float32).copy()
    bad[2, 3, 4] = np.nan  # on the stacked image the error would name vol02_0000, which holds none
    nib.save(nib.Nifti1Image(bad, img.affine), str(moved))
    with pytest.raises(ImageContentError, match=r"vol02_0001.nii.gz: 1 voxel\(s\) of this channel file are NaN"):
        cs.load(cs.cases[2])
    nib.save(nib.Nifti1Image(np.zeros((12, 12, 11), np.float32), img.affine), str(moved))
    with pytest.raises(ImageContentError, match=r"vol02_0001.nii.gz: channel file is \[12, 12, 11\] but "
                                                r"vol02_0000.nii.gz is \[12, 12, 12\]"):
        cs.load(cs.cases[2])


@needs_real
def test_real_lgg_slices_split_into_nnunet_channel_files_load_as_the_rgb_slices(tmp_path):
    """LGG stores pre-contrast, FLAIR and post-contrast as the three colours of one TIFF. Written as
    nnU-Net's one grey PNG per channel (x_0000, x_0001, x_0002), every case loads to the same array."""
    from PIL import Image

    from meddx.io import read_image

    src = sorted((REAL / "seg" / "lgg_mri_kaggle_3m_subset").glob("TCGA_*/*_1[0-9].tif"))[:6]
    root = tmp_path / "Dataset004_LGG"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for k, tif in enumerate(src):
        rgb = np.asarray(Image.open(tif))
        for c in range(3):
            Image.fromarray(rgb[..., c]).save(root / "imagesTr" / f"lgg{k:02d}_{c:04d}.png")
        Image.open(tif.with_name(tif.stem + "_mask.tif")).save(root / "labelsTr" / f"lgg{k:02d}.png")
    cs = open_seg_dataset(root)
    assert len(cs) == len(src) == 6
    for c, tif in zip(cs.cases, src):
        img, mask = load_mask_values(cs, c)
        assert img.channels == 3 and np.array_equal(img.array, read_image(tif).array)
        assert mask.shape == img.spatial_shape
    fp = compute_fingerprint(cs)
    assert fp["channels"] == {"3": 6}


def test_an_nnunet_rgb_case_is_one_file_of_three_channels(tmp_path):
    """nnU-Net's own 2D RGB layout (Dataset120_RoadSegmentation): channel_names R, G, B and one RGB
    x_0000.png per case. One file, three channels: nothing to group, nothing missing."""
    root = tmp_path / "Dataset120_Road"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[4:12, 4:12] = (200, 120, 40)
    for k in range(3):
        write_png(root / "imagesTr" / f"road{k}_0000.png", rgb)
        write_png(root / "labelsTr" / f"road{k}.png", (rgb[..., 0] > 0).astype(np.uint8))
    (root / "dataset.json").write_text('{"channel_names": {"0": "R", "1": "G", "2": "B"}, '
                                       '"labels": {"background": 0, "road": 1}, "file_ending": ".png"}')
    cs = open_seg_dataset(root)
    assert len(cs) == 3 and all(c.channels == () for c in cs.cases)
    img, m = load_mask_values(cs, cs.cases[0])
    assert img.channels == 3 and m.shape == (16, 16) and set(np.unique(m)) == {0.0, 1.0}
    assert compute_fingerprint(cs)["channel_files"] == {"1": 3}
