"""The runtime's numpy preprocessing equals training's on real files, through the exported spec.

The spec goes the way a deployment takes it: the export builds it from the run's plan,
writes JSON, the runtime parses it and preprocesses; training's own ``prepare`` +
``standardise`` read the same plan. Any drift between the two shows up here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from meddx.data.preprocess import PreprocessSpec, prepare, standardise
from meddx.deploy.export import preprocessing_from_plan
from meddx.errors import MeddxError
from meddx.io import read_image
from meddx.planning.plan import DataConfig, Plan
from meddx.runtime.preprocess import prepare as rt_prepare
from meddx.runtime.spec import Preprocessing


def _plan(dims, channels, size, intensity="scale255", clip=None, mean=0.31, std=0.27, steps=(), antialias=False):
    from meddx.planning.plan import PreprocessStep

    return Plan(data=DataConfig(source="x", kind="folder", class_names=["a", "b"], spatial_dims=dims, channels=channels,
                                input_size=[size] * dims, intensity=intensity, clip=clip, norm_mean=mean, norm_std=std,
                                preprocess=[PreprocessStep(name=n, params=p) for n, p in steps],
                                antialias_3d=antialias))


def _files(real_data):
    seg = real_data / "seg"
    dcm = real_data / "dicom" / "pydicom_data_selection"
    return {
        "busi_png": seg / "busi_subset" / "benign" / "benign (1).png",
        "nih_rgba_png": real_data / "det" / "nih_chestxray14_bbox" / "thumbnails" / "00001369_000.png",
        "covid_png": next(iter(sorted((seg / "covid19_radiography_viral_pneumonia_subset" / "Viral Pneumonia" / "images").iterdir()))),
        "ct_dicom": dcm / "693_UNCR.dcm",
        "us16_dicom": dcm / "gdcm-US-ALOKA-16.dcm",
        "mr_multiframe_dicom": dcm / "emri_small.dcm",
        "rgb_multiframe_dicom": dcm / "SC_rgb_2frame.dcm",
        "dicom_series": real_data / "dicom" / "tcia_brain_tumor_progression_PGBM-001" / "35623-FLAIRreg-79237",
        "hippocampus_nifti": next(iter(sorted((seg / "msd_hippocampus_udacity" / "images").iterdir()))),
        "bigendian_nifti": real_data / "nifti" / "nibabel_samples" / "anatomical.nii",
        "4d_nifti": real_data / "nifti" / "nibabel_samples" / "example4d.nii.gz",
    }


PLANS = [
    _plan(2, 1, 28), _plan(2, 3, 64), _plan(2, 1, 300),                         # shrink, RGB, enlarge
    _plan(2, 1, 64, "clip_scale", [-200.0, 400.0]), _plan(2, 1, 40, "image_zscore", mean=0.0, std=1.0),
    _plan(3, 1, 32, "image_zscore", mean=0.01, std=0.98), _plan(3, 1, 16, "clip_scale", [0.0, 900.0]),
    _plan(3, 2, 24),
    _plan(3, 1, 16, "image_zscore", mean=0.01, std=0.98, antialias=True),   # R3: volumes filtered as they shrink
    _plan(3, 2, 24, "channel_zscore", mean=0.0, std=1.0, antialias=True),   # two channels, z-scored each
    _plan(2, 3, 32, "channel_zscore", mean=0.1, std=0.9),
    _plan(2, 1, 28, steps=[("median", {}), ("percentile_clip", {})]),   # the plan's preprocessing steps
]


@pytest.mark.slow
def test_runtime_preprocessing_equals_training_on_real_files(real_data):
    compared = refused = 0
    for name, path in _files(real_data).items():
        img = read_image(path)
        for plan in PLANS:
            spec_json = json.loads(json.dumps(preprocessing_from_plan(plan).to_dict()))  # what the bundle holds
            rt_spec = Preprocessing.from_dict(spec_json, path)
            tr_spec = PreprocessSpec.from_plan(plan.data)
            try:
                ref = standardise(torch.from_numpy(prepare(img, tr_spec, str(path))), tr_spec).numpy()
            except MeddxError as e:
                with pytest.raises(type(e)) as got:
                    rt_prepare(img, rt_spec, str(path))
                assert str(got.value) == str(e)
                refused += 1
                continue
            out = rt_prepare(img, rt_spec, str(path))
            assert out.dtype == np.float32 and out.shape == ref.shape, (name, plan.data)
            scale = max(1.0, float(np.abs(ref).max()))
            assert np.abs(out - ref).max() <= 1e-4 * scale, (name, plan.data.input_size, float(np.abs(out - ref).max()))
            compared += 1
    assert compared >= 30 and refused >= 10, (compared, refused)  # both paths were exercised


def test_spec_round_trip_and_validation(tmp_path):
    from meddx.runtime.spec import BundleError

    spec = preprocessing_from_plan(_plan(2, 1, 28, "clip_scale", [-1.0, 2.0]))
    back = Preprocessing.from_dict(json.loads(json.dumps(spec.to_dict())), tmp_path)
    assert back == spec
    bad = spec.to_dict()
    bad["std"] = 0
    with pytest.raises(BundleError, match="std must be > 0"):
        Preprocessing.from_dict(bad, tmp_path / "preprocess.json")
    del bad["intensity"]
    with pytest.raises(BundleError, match="lacks the field 'intensity'"):
        Preprocessing.from_dict(bad, tmp_path / "preprocess.json")


def test_target_spacing_size_matches_segmentation_prep(real_data):
    from meddx.data.segprep import image_spec
    from meddx.planning.plan import SegmentConfig
    from meddx.runtime.preprocess import target_size

    f = sorted((real_data / "seg" / "msd_hippocampus_udacity" / "images").iterdir())[0]
    img = read_image(f)
    plan = _plan(3, 1, 32, "image_zscore")
    plan.task = "segment"
    plan.data.target_spacing = [1.5, 0.8, 2.0]
    plan.segment = SegmentConfig(label_values=[0, 1, 2], label_names=["bg", "a", "p"], patch_size=[32, 32, 32])
    spec = Preprocessing.from_dict(json.loads(json.dumps(preprocessing_from_plan(plan).to_dict())), f)
    assert target_size(spec, img) == tuple(image_spec(plan, img).size) != img.spatial_shape
