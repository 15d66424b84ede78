"""Planning + preprocessing on a real local Ray cluster (Ray Data), including every kind of bad case."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from nnunet_ray.config import ConfigError, PlanConfig, PreprocessConfig, SynthConfig
from nnunet_ray.data.dataset import load_dataset
from nnunet_ray.data.folds import kfold_splits
from nnunet_ray.data.synth import make_synthetic_task
from nnunet_ray.distributed.cluster import init_ray
from nnunet_ray.distributed.preprocess import plan_dataset, preprocess_dataset
from nnunet_ray.planning.schema import load_plans


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    init_ray(num_cpus=2)  # one local cluster per test session; later calls are no-ops


def _paths(raw, case_id):
    return raw / "imagesTr" / f"{case_id}.nii.gz", raw / "labelsTr" / f"{case_id}.nii.gz"


def _rewrite(path, array=None, affine=None):
    img = nib.load(str(path))
    data = np.asarray(img.dataobj) if array is None else array
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine, img.header), str(path))


def _break_truncated(raw, cid):
    image, _ = _paths(raw, cid)
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])


def _break_missing_label(raw, cid):
    _paths(raw, cid)[1].unlink()


def _break_shape(raw, cid):
    label = _paths(raw, cid)[1]
    _rewrite(label, np.asarray(nib.load(str(label)).dataobj)[:-3])


def _break_affine(raw, cid):
    label = _paths(raw, cid)[1]
    affine = nib.load(str(label)).affine.copy()
    affine[:3, 3] += 25.0
    _rewrite(label, affine=affine)


def _break_nan(raw, cid):
    image = _paths(raw, cid)[0]
    data = np.asarray(nib.load(str(image)).dataobj).astype(np.float32)
    data[data.shape[0] // 2, data.shape[1] // 2, data.shape[2] // 2] = np.nan
    _rewrite(image, data)


def _break_empty(raw, cid):
    image = _paths(raw, cid)[0]
    _rewrite(image, np.zeros(nib.load(str(image)).shape, np.float32))


def _break_unreadable(raw, cid):
    image = _paths(raw, cid)[0]
    image.unlink()
    image.mkdir()  # the path exists but is a folder: unreadable as a file


BAD_KINDS = {  # kind -> (how to break a case, words the error line must contain)
    "truncated": (_break_truncated, ("corrupt", "truncated", "unreadable", "read")),
    "missing_label": (_break_missing_label, ("label",)),
    "shape_mismatch": (_break_shape, ("shape",)),
    "affine_mismatch": (_break_affine, ("affine",)),
    "nan": (_break_nan, ("nan", "finite")),
    "empty_image": (_break_empty, ("nonzero",)),
    "unreadable_path": (_break_unreadable, ("read", "directory", "not a file", "unreadable")),
}


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    """A 9-case task with one case broken per kind, preprocessed once; returns (summary, out dir, good ids, bad ids)."""
    raw = tmp_path_factory.mktemp("raw") / "Task97_Broken"
    make_synthetic_task(SynthConfig(out=str(raw), cases=len(BAD_KINDS) + 2, test=0, size=24, seed=3))
    case_ids = [c.case_id for c in load_dataset(raw).training]
    bad = dict(zip(BAD_KINDS, case_ids))
    for kind, cid in bad.items():
        BAD_KINDS[kind][0](raw, cid)
    results = tmp_path_factory.mktemp("pre")
    summary = preprocess_dataset(PreprocessConfig(data=str(raw), results=str(results), dim=3))
    summary.raw_dir = raw
    return summary, summary.out_dir, case_ids[len(BAD_KINDS):], bad


def test_preprocess_writes_arrays_plans_and_kfold_splits(synth_task, tmp_path):
    summary = preprocess_dataset(PreprocessConfig(data=str(synth_task), results=str(tmp_path), dim=3))
    ids = [c.case_id for c in load_dataset(synth_task).training]
    assert summary.ok and sorted(summary.done) == ids
    out = summary.out_dir
    plans = json.loads((out / "plans.json").read_text())
    for cid in ids:
        x, y = np.load(out / f"{cid}_x.npy"), np.load(out / f"{cid}_y.npy")
        assert x.dtype == np.float32 and y.dtype == np.uint8 and x.shape[1:] == y.shape[1:]
        assert all(s >= p for s, p in zip(x.shape[1:], plans["patch_size"]))
    assert json.loads((out / "splits.json").read_text()) == kfold_splits(ids, n_splits=5)
    # The same plans in the pre-version format (one "hash", a "scheme"): migrated, rewritten, and nothing redone.
    old = {k: v for k, v in plans.items() if k not in ("version", "min_fmap", "max_depth", "preprocessing_hash",
                                                        "network_hash")}
    (out / "plans.json").write_text(json.dumps({**old, "hash": "0" * 16,
                                                "normalization": {**old["normalization"], "scheme": "mri"}}))
    # --splits: an nnU-Net v2 splits_final.json replaces the generated folds, as is.
    final = [{"train": ids[2:], "val": ids[:2]}, {"train": ids[:2], "val": ids[2:]}]
    (tmp_path / "splits_final.json").write_text(json.dumps(final))
    imported = preprocess_dataset(PreprocessConfig(data=str(synth_task), results=str(tmp_path), dim=3,
                                                   splits=str(tmp_path / "splits_final.json")))
    assert imported.ok and sorted(imported.skipped) == ids and not imported.done
    assert json.loads((out / "plans.json").read_text()) == plans
    assert json.loads((out / "splits.json").read_text()) == final
    # A plain rerun keeps the folds runs were trained on: imported ones too, whatever --nfolds says.
    rerun = preprocess_dataset(PreprocessConfig(data=str(synth_task), results=str(tmp_path), dim=3, nfolds=3))
    assert rerun.ok and sorted(rerun.skipped) == ids
    assert json.loads((out / "splits.json").read_text()) == final


def test_bad_splits_file_fails_before_any_case(synth_task, tmp_path):
    ids = [c.case_id for c in load_dataset(synth_task).training]
    bad = tmp_path / "splits_final.json"
    bad.write_text(json.dumps([{"train": ids[1:], "val": ["nope"]}]))
    with pytest.raises(ConfigError, match=r"--splits: .*splits_final.json: fold 0 names cases that are not in the "
                                          r"dataset: \['nope'\]"):
        preprocess_dataset(PreprocessConfig(data=str(synth_task), results=str(tmp_path / "pre"), splits=str(bad)))
    assert not (tmp_path / "pre").exists()


def test_plan_dataset_writes_plans_and_fingerprint(synth_task, tmp_path):
    plans = plan_dataset(PlanConfig(data=str(synth_task), results=str(tmp_path), dim=2))
    out = tmp_path / synth_task.name / "2d"
    assert load_plans(out) == plans
    assert len(plans.patch_size) == 2 and (out / "fingerprint.json").exists()


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_bad_case_is_named_and_reported_without_partial_files(broken_run, kind):
    summary, out, _, bad = broken_run
    cid = bad[kind]
    assert cid in summary.failed, f"{kind}: {cid} not reported as failed"
    message = summary.failed[cid]
    assert message.startswith(cid) and "\n" not in message
    assert any(word in message.lower() for word in BAD_KINDS[kind][1]), message
    assert not [p.name for p in out.iterdir() if cid in p.name], "partial files left behind"


def test_good_cases_survive_bad_ones(broken_run):
    summary, out, good, _ = broken_run
    assert sorted(summary.done) == sorted(good)
    for cid in good:
        assert np.load(out / f"{cid}_x.npy").ndim == 4
        assert json.loads((out / f"{cid}.json").read_text())["case_id"] == cid
    assert not any(".tmp" in p.name for p in out.iterdir())
    splits = json.loads((out / "splits.json").read_text())
    assert sorted(splits[0]["train"] + splits[0]["val"]) == sorted(good)


def test_cli_rerun_skips_good_cases_reports_bad_ones_and_exits_1(broken_run, capsys):
    from nnunet_ray.cli import main
    summary, out, good, bad = broken_run
    raw, results = summary.raw_dir, out.parents[1]
    assert main(["preprocess", "--data", str(raw), "--results", str(results), "--dim", "3"]) == 1
    captured = capsys.readouterr()
    assert f"0 preprocessed, {len(good)} already done, {len(bad)} failed" in captured.out
    for cid in bad.values():
        assert f"error: {cid}: " in captured.err
