"""Box manifests for detection."""

from __future__ import annotations

import numpy as np
import pytest
from meddx_testutils import write_png

from meddx.data.detsources import draw_boxes, open_det_dataset, reference_boxes
from meddx.data.segsources import load_mask_values
from meddx.errors import DatasetError


def _images(tmp_path, n=3):
    for i in range(n):
        write_png(tmp_path / f"im{i}.png", np.full((32, 40), 30 * i, np.uint8))


def test_box_manifest_groups_rows_by_image_and_draws_boxes(tmp_path):
    _images(tmp_path)
    (tmp_path / "b.csv").write_text(
        "image,x,y,w,h,label,patient_id\n"
        "im0.png,4,2,10,6,Mass,P001\nim0.png,20,20,8,8,Nodule,P001\n"
        "im1.png,0,0,4,4,Mass,P002\nim2.png,,,,,,P003\n")
    cs = open_det_dataset(tmp_path / "b.csv")
    assert cs.task == "detect" and len(cs) == 3
    assert cs.declared_labels == {0: "background", 1: "Mass", 2: "Nodule"}
    c0 = cs.cases[0]
    assert c0.boxes == ((4, 2, 14, 8, 1), (20, 20, 28, 28, 2)) and "P001" not in c0.case_id
    img, lab = load_mask_values(cs, c0)
    assert lab.shape == (32, 40) and int((lab == 1).sum()) == 60 and int((lab == 2).sum()) == 64
    assert [(b.lo, b.hi, b.cls) for b in reference_boxes(c0)] == [((2, 4), (8, 14), 1), ((20, 20), (28, 28), 2)]
    assert cs.cases[2].boxes == ()


def test_scale_column_and_errors(tmp_path):
    _images(tmp_path, 1)
    (tmp_path / "s.csv").write_text("image,x1,y1,x2,y2,label,scale\nim0.png,8,8,40,40,Mass,0.25\n")
    assert open_det_dataset(tmp_path / "s.csv").cases[0].boxes == ((2, 2, 10, 10, 1),)
    (tmp_path / "e.csv").write_text("image,x1,y1,x2,y2,label\nim0.png,8,8,4,40,Mass\n")
    with pytest.raises(DatasetError, match="line 2: the box has no area"):
        open_det_dataset(tmp_path / "e.csv")
    (tmp_path / "m.csv").write_text("image,x1,y1,x2,y2,label\nnope.png,1,1,4,4,Mass\n")
    with pytest.raises(DatasetError, match="do not exist"):
        open_det_dataset(tmp_path / "m.csv")
    (tmp_path / "c.csv").write_text("image,label\nim0.png,Mass\n")
    with pytest.raises(DatasetError, match="x1,y1,x2,y2"):
        open_det_dataset(tmp_path / "c.csv")


def test_draw_boxes_later_box_wins():
    lab = draw_boxes((10, 10), [(0, 0, 6, 6, 1), (3, 3, 8, 8, 2)])
    assert lab[4, 4] == 2 and lab[1, 1] == 1 and lab[9, 9] == 0


@pytest.mark.parametrize("box, ok", [("38,28,42,33", True),     # past the corner by 2 of 40 x 32 px: clipped
                                     ("-1,-1,6,6", True),
                                     ("50,8,60,20", False),     # wholly right of the image
                                     ("8,8,160,120", False),    # drawn on a 4x larger image (no scale column)
                                     ("-10,4,6,10", False)])
def test_a_box_outside_its_image_is_refused_naming_the_image(tmp_path, box, ok):
    """A box beyond its 40 x 32 image would train and score as a finding that is not there (or a clipped
    one); a small overhang is clipped as before."""
    _images(tmp_path, 1)
    (tmp_path / "b.csv").write_text(f"image,x1,y1,x2,y2,label\nim0.png,{box},Mass\n")
    cs = open_det_dataset(tmp_path / "b.csv")
    if ok:
        assert int((load_mask_values(cs, cs.cases[0])[1] > 0).sum()) > 0
        return
    with pytest.raises(DatasetError, match=r"lies outside the 40 x 32 px image") as e:
        load_mask_values(cs, cs.cases[0])
    assert "im0.png" in str(e.value) and "scale column" in str(e.value)



def test_a_volume_in_a_box_manifest_is_one_error_line(tmp_path):
    """The bounds check unpacked (rows, cols) from a volume's shape: a ValueError traceback."""
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(np.zeros((20, 16, 12), np.float32), np.eye(4)), str(tmp_path / "v.nii.gz"))
    (tmp_path / "b.csv").write_text("image,x1,y1,x2,y2,label\nv.nii.gz,2,2,6,6,Mass\n")
    cs = open_det_dataset(tmp_path / "b.csv")
    with pytest.raises(DatasetError, match="2D"):
        load_mask_values(cs, cs.cases[0])


@pytest.mark.parametrize("content, match", [(b"image,x1,y1,x2,y2,label\nim0.png,1,1,4,4,sp\xe9t\n", "not UTF-8"),
                                            (b"image,x1,y1,x2,y2,label\nim0.png,1,1,4,4,\"" + b"a" * 200_000 + b"\"\n",
                                             "line 2 cannot be read as CSV")], ids=["latin1", "overlong"])
def test_an_unreadable_box_manifest_is_one_error_line(tmp_path, content, match):
    """A Latin-1 CSV or an overlong field came out as a UnicodeDecodeError / csv.Error traceback."""
    _images(tmp_path, 1)
    (tmp_path / "b.csv").write_bytes(content)
    with pytest.raises(DatasetError, match=match) as e:
        open_det_dataset(tmp_path / "b.csv")
    assert "b.csv" in str(e.value) and "Fix:" in str(e.value)


def test_another_manifest_is_scored_by_finding_name_not_by_its_own_numbering(tmp_path):
    """A box manifest numbers findings by their sorted names: evaluating a Mass/Nodule run on boxes of
    Nodule only scored them as Mass, and a finding the run never learned ('Cyst') was scored as one of its
    own, or refused as 'mask value 2 outside the label set' naming another image and dataset.json."""
    from meddx.planning.plan import SegmentConfig
    from meddx.training.seg_run import open_for_plan
    from meddx_testutils import make_plan_for

    _images(tmp_path, 2)
    plan = make_plan_for()
    plan.task = "detect"
    plan.segment = SegmentConfig(label_values=[0, 1, 2], label_names=["background", "Mass", "Nodule"])
    (tmp_path / "n.csv").write_text("image,x1,y1,x2,y2,label\nim0.png,1,1,6,6,Nodule\nim1.png,,,,,\n")
    cs = open_for_plan(str(tmp_path / "n.csv"), plan)
    assert cs.cases[0].boxes == ((1, 1, 6, 6, 2),) and cs.cases[1].boxes == ()
    assert cs.declared_labels == {0: "background", 1: "Mass", 2: "Nodule"}
    (tmp_path / "c.csv").write_text("image,x1,y1,x2,y2,label\nim0.png,1,1,6,6,Nodule\nim1.png,1,1,6,6,Cyst\n")
    with pytest.raises(DatasetError, match=r"\['Cyst'\] are not among the run's findings \['Mass', 'Nodule'\]") as e:
        open_for_plan(str(tmp_path / "c.csv"), plan)
    assert "c.csv" in str(e.value)


@pytest.mark.parametrize("second", ["im0.png,5,5,9,9,Mass,test,P001", "im0.png,5,5,9,9,Mass,train,P002",
                                    "im0.png,5,5,9,9,Mass,,P001"])
def test_rows_of_one_image_that_disagree_on_split_or_patient_are_refused(tmp_path, second):
    """The first row's split and patient_id were used and the others' silently dropped: an image could be
    listed as test and train at once, or under two patients."""
    _images(tmp_path, 2)
    (tmp_path / "b.csv").write_text("image,x1,y1,x2,y2,label,split,patient_id\nim0.png,1,1,4,4,Mass,train,P001\n"
                                    f"{second}\nim1.png,1,1,4,4,Mass,test,P003\n")
    with pytest.raises(DatasetError, match="line 3 gives 'im0.png' another split or patient_id than line 2") as e:
        open_det_dataset(tmp_path / "b.csv")
    assert "P00" not in str(e.value)


def test_a_given_split_needs_every_finding_in_train_not_every_stratum(tmp_path):
    """Images without findings all in val/test used to be refused ("class(es) ['none'] have no training
    cases"): training needs a box of each finding, not a no-finding image. A finding with no box in
    the training images is what is refused now, by name."""
    from meddx.data.split import apply_split

    _images(tmp_path, 6)
    rows = ["im0.png,1,1,9,9,Mass,train", "im1.png,2,2,9,9,Mass,train", "im1.png,12,12,19,19,Nodule,train",
            "im2.png,1,1,9,9,Mass,val", "im3.png,,,,,,val", "im4.png,1,1,9,9,Nodule,test", "im5.png,,,,,,test"]
    (tmp_path / "b.csv").write_text("image,x1,y1,x2,y2,label,split\n" + "\n".join(rows) + "\n")
    cs = open_det_dataset(tmp_path / "b.csv")
    parts = apply_split(cs, {c.case_id: c.split for c in cs.cases})
    assert [len(parts[s]) for s in ("train", "val", "test")] == [2, 2, 2]
    rows[2] = "im1.png,12,12,19,19,Mass,train"  # Nodule only in test now
    (tmp_path / "b.csv").write_text("image,x1,y1,x2,y2,label,split\n" + "\n".join(rows) + "\n")
    cs = open_det_dataset(tmp_path / "b.csv")
    with pytest.raises(DatasetError, match=r"finding\(s\) \['Nodule'\] have no box in the training images"):
        apply_split(cs, {c.case_id: c.split for c in cs.cases})


@pytest.mark.parametrize("word", ["none", "No Finding", "background"])
def test_words_for_no_finding_mark_an_unboxed_image_and_cannot_label_a_box(tmp_path, word):
    """A box labelled 'background' became a second class named like label 0, and one labelled 'none'
    shared its stratum with the images without findings; the words now mean what they say."""
    _images(tmp_path)
    (tmp_path / "b.csv").write_text(f"image,x1,y1,x2,y2,label\nim0.png,1,1,9,9,Mass\nim1.png,,,,,{word}\n")
    cs = open_det_dataset(tmp_path / "b.csv")
    assert cs.declared_labels == {0: "background", 1: "Mass"} and cs.cases[1].boxes == ()
    (tmp_path / "c.csv").write_text(f"image,x1,y1,x2,y2,label\nim0.png,1,1,9,9,Mass\nim1.png,2,2,8,8,{word}\n")
    with pytest.raises(DatasetError, match=f"line 3: '{word}' labels a box, but it means no finding"):
        open_det_dataset(tmp_path / "c.csv")


def test_a_box_reaching_past_the_edge_is_scored_as_drawn_clipped_to_the_image(tmp_path):
    """A box may reach a little past its image's edge (it is drawn clipped); its reference box for scoring
    was not clipped, so a detection of exactly the drawn region had IoU 0.5 with it and could not count."""
    from meddx.evaluation.detection import boxes_from_labels, detection_summary

    _images(tmp_path, 1)  # 32 rows x 40 columns
    (tmp_path / "b.csv").write_text("image,x1,y1,x2,y2,label\nim0.png,36,10,41.5,20,Mass\n")
    cs = open_det_dataset(tmp_path / "b.csv")
    img, drawn = load_mask_values(cs, cs.cases[0])
    ref = reference_boxes(cs.cases[0], img.spatial_shape)
    assert [(b.lo, b.hi) for b in ref] == [((10, 36), (20, 40))]
    det = detection_summary([boxes_from_labels(drawn.astype(np.uint8))], [ref], ["Mass"])
    assert det["per_class"]["Mass"]["ap"] == 1.0
