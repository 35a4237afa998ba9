import numpy as np
import pytest

from meddx.data.case import Case, CaseSet, pseudonymise
from meddx.data.split import apply_split, make_split
from meddx.errors import DatasetError


def _cs(labels, groups=None, splits=None):
    cases = [Case(case_id=f"c{i}", label=int(y), group=None if groups is None else groups[i],
                  split=None if splits is None else splits[i]) for i, y in enumerate(labels)]
    return CaseSet(name="t", source="t", kind="manifest", class_names=["a", "b"], cases=cases,
                   official_split=splits is not None, loader=lambda c: None)


def test_stratified_fractions_and_seed():
    labels = np.array([0] * 300 + [1] * 100)
    cs = _cs(labels)
    s1, s2, s3 = make_split(cs, seed=0), make_split(cs, seed=0), make_split(cs, seed=1)
    assert s1 == s2 and s1 != s3
    for name, frac in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        ids = [i for i, c in enumerate(cs.cases) if s1[c.case_id] == name]
        assert abs(len(ids) - frac * 400) <= 2
        # each class keeps its share in every split
        assert abs(labels[ids].mean() - 0.25) < 0.03


def test_patient_grouping_never_splits_a_patient():
    rng = np.random.default_rng(0)
    groups = [pseudonymise(f"p{i // 4}") for i in range(200)]
    labels = np.array([int(rng.random() < 0.4) if i % 4 == 0 else 0 for i in range(200)])
    for i in range(200):  # label is per patient
        labels[i] = labels[i - i % 4]
    cs = _cs(labels, groups)
    split = make_split(cs, seed=3)
    by_group = {}
    for c in cs.cases:
        by_group.setdefault(c.group, set()).add(split[c.case_id])
    assert all(len(v) == 1 for v in by_group.values())
    parts = apply_split(cs, split)
    assert all(len(parts[s]) > 0 for s in parts)


def test_official_split_kept_and_val_carved_from_train():
    labels = [0, 1] * 50
    splits = ["train"] * 80 + ["test"] * 20
    cs = _cs(labels, splits=splits)
    split = make_split(cs, seed=0)
    assert [split[f"c{i}"] for i in range(80, 100)] == ["test"] * 20
    n_val = sum(1 for v in split.values() if v == "val")
    assert 8 <= n_val <= 14


def test_too_few_cases_is_a_clear_error():
    cs = _cs([0, 1, 0, 1])
    with pytest.raises(DatasetError, match="split is empty"):
        apply_split(cs, make_split(cs, seed=0))


def test_a_case_missing_from_a_stored_split_says_the_dataset_is_not_the_runs():
    """`meddx compress RUN --data OTHER` (or --resume after adding images) told the user to 're-run without
    --split', an option no command has."""
    cs = _cs([0, 1] * 6)
    split = make_split(cs, seed=0)
    del split["c3"]
    with pytest.raises(DatasetError, match=r"case 'c3' is not in the run's split \(split.csv\)") as e:
        apply_split(cs, split)
    assert "--split" not in str(e.value) and "run's own dataset" in str(e.value)


@pytest.mark.parametrize("n", [3, 4, 5])
def test_few_cases_per_class_still_reach_every_split(n):
    labels = [0] * n + [1] * n
    cs = _cs(labels)
    for seed in range(5):
        split = make_split(cs, seed=seed)
        assert split == make_split(cs, seed=seed)
        for s in ("train", "val", "test"):
            assert sorted({labels[i] for i, c in enumerate(cs.cases) if split[c.case_id] == s}) == [0, 1], (n, s)
        parts = apply_split(cs, split)
        assert len(parts["train"]) == 2 * (n - 2)


def test_pseudonyms_are_keyed_and_the_split_does_not_depend_on_the_key(tmp_path, monkeypatch):
    """A patient id is pseudonymised with a secret key (an unkeyed hash of a 7-digit id is reversed
    by trying all 10^7 in seconds); the key is made once per user (mode 600) or taken from
    MEDDX_PSEUDONYM_KEY, and the seeded split is the same whatever the key."""
    import hashlib
    import stat

    from meddx.data import case

    monkeypatch.delenv("MEDDX_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    a = pseudonymise("1234567")
    key_file = tmp_path / "cfg" / "meddx" / "pseudonym.key"
    assert key_file.exists() and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().strip()) == 64 and pseudonymise("1234567") == a  # made once, then read
    assert a != hashlib.sha256(b"meddx:1234567").hexdigest()[:12]  # not the old unkeyed hash
    monkeypatch.setenv("MEDDX_PSEUDONYM_KEY", "another site")
    assert pseudonymise("1234567") != a

    def dataset():
        cases = [Case(case_id=f"p{i // 4}/{i}.png", label=(i // 4) % 2, group=pseudonymise(f"p{i // 4}"),
                      split_key=case.split_order_key(f"p{i // 4}")) for i in range(200)]
        return CaseSet(name="t", source="t", kind="manifest", class_names=["a", "b"], cases=cases,
                       official_split=False, loader=lambda c: None)

    by_patient = {}
    for key in ("site one", "site two"):
        monkeypatch.setenv("MEDDX_PSEUDONYM_KEY", key)
        split = make_split(dataset(), seed=0)
        by_patient[key] = {cid.split("/")[1]: s for cid, s in split.items()}
    assert by_patient["site one"] == by_patient["site two"]


def test_a_run_made_with_another_key_says_so(tmp_path, monkeypatch):
    import json

    from meddx.data.split import read_split
    from meddx.errors import RunError

    (tmp_path / "split.csv").write_text("case_id,label,split,group\nabc/1.png,a,test,abc\n")
    monkeypatch.setenv("MEDDX_PSEUDONYM_KEY", "site one")
    from meddx.data.case import pseudonym_key_id

    (tmp_path / "run.json").write_text(json.dumps({"status": "complete", "pseudonym_key_id": pseudonym_key_id()}))
    assert read_split(tmp_path / "split.csv") == {"abc/1.png": "test"}
    monkeypatch.setenv("MEDDX_PSEUDONYM_KEY", "site two")
    with pytest.raises(RunError, match="another key"):
        read_split(tmp_path / "split.csv")
    (tmp_path / "run.json").write_text(json.dumps({"status": "complete"}))  # made before keyed pseudonyms
    with pytest.raises(RunError, match="before meddx keyed"):
        read_split(tmp_path / "split.csv")
    (tmp_path / "split.csv").write_text("case_id,label,split,group\nx/1.png,a,test,\n")  # no patients: no key
    assert read_split(tmp_path / "split.csv") == {"x/1.png": "test"}


def test_the_data_hash_is_the_same_whatever_the_key(tmp_path, monkeypatch):
    from PIL import Image

    from meddx.data.fingerprint import compute_fingerprint
    from meddx.data.sources import open_dataset

    rows = ["path,label,patient_id"]
    for k in range(8):
        Image.fromarray(np.full((8, 8), 10 * k, np.uint8)).save(tmp_path / f"P{k}.png")
        rows.append(f"P{k}.png,{'ab'[k % 2]},P{k}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    hashes = set()
    for key in ("site one", "site two"):
        monkeypatch.setenv("MEDDX_PSEUDONYM_KEY", key)
        cs = open_dataset(tmp_path / "m.csv")
        assert cs.cases[0].case_id != "P0.png"  # the id embedded in the path is pseudonymised
        hashes.add(compute_fingerprint(cs, strict=False)["data_hash"])
    assert len(hashes) == 1


def test_a_key_file_is_made_whole_once(tmp_path, monkeypatch):
    from meddx.data import case

    monkeypatch.delenv("MEDDX_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "meddx").mkdir()
    (tmp_path / "meddx" / "pseudonym.key").write_text("already there\n")  # another process won the race
    case._file_key.cache_clear()
    assert case.pseudonym_key() == b"already there"
    assert [p.name for p in (tmp_path / "meddx").iterdir()] == ["pseudonym.key"]  # no temp file left
