"""Leakage-free splits: exact and near duplicates, conflicts, stratification, the manifest and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from training.cli import main
from training.split_builder import build_split
from training.splits import SUBSETS, SplitError, assign_subsets, load_split, validate_ratios, write_split
from training.tasks import TaskError

CLASS_FOLDERS = ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")


def encode(seed: int, ext: str = ".jpg", brighten: int = 0) -> bytes:
    """A smooth random greyscale picture (80 x 96), optionally brightened, encoded as ``ext``."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 6), dtype=np.uint8)
    image = cv2.resize(small, (96, 80), interpolation=cv2.INTER_CUBIC).astype(np.int16) + brighten
    ok, data = cv2.imencode(ext, np.clip(image, 0, 255).astype(np.uint8))
    assert ok
    return data.tobytes()


def put(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def sartaj_like(tmp_path: Path) -> Path:
    """A tiny Sartaj-layout tree holding each awkward case once (61 files)."""
    root = tmp_path / "sartaj"
    for k, folder in enumerate(CLASS_FOLDERS):
        for n in range(12):
            split = "Training" if n < 9 else "Testing"
            put(root, f"{split}/{folder}/img ({n}).jpg", encode(1000 * k + n))
    put(root, "Testing/glioma_tumor/copy of (0).jpg", encode(0))  # byte-identical to Training/glioma/img (0)
    put(root, "Training/no_tumor/png inside.jpg", encode(5000, ".png"))
    put(root, "Training/meningioma_tumor/conflict.jpg", encode(6000))
    put(root, "Training/pituitary_tumor/conflict.jpg", encode(6000))
    put(root, "Training/no_tumor/broken (1).jpg", b"\xff\xd8\xff\xe0 truncated nonsense")
    put(root, "Training/pituitary_tumor/near.jpg", encode(7000))
    put(root, "Testing/pituitary_tumor/near brighter.jpg", encode(7000, brighten=10))
    return root


def split_of(manifest: dict[str, Any]) -> dict[str, str]:
    """Subset of each item's path."""
    return {item["path"]: name for name in SUBSETS for item in manifest["subsets"][name]}


def assert_leakage_free(manifest: dict[str, Any]) -> None:
    """No content hash and no near-duplicate group in two subsets; counts agree with the items."""
    subsets_of_sha: dict[str, set[str]] = defaultdict(set)
    subsets_of_group: dict[int, set[str]] = defaultdict(set)
    for name in SUBSETS:
        items = manifest["subsets"][name]
        assert Counter(item["label"] for item in items) == {
            c: n for c, n in manifest["summary"]["counts"][name].items() if n
        }
        for item in items:
            subsets_of_sha[item["sha256"]].add(name)
            subsets_of_group[item["group"]].add(name)
    assert all(len(s) == 1 for s in subsets_of_sha.values())
    assert all(len(s) == 1 for s in subsets_of_group.values())
    assert sum(len(manifest["subsets"][name]) for name in SUBSETS) == len(subsets_of_sha)


def test_synthetic_tree_dedups_reports_and_groups(sartaj_like: Path) -> None:
    manifest = build_split([sartaj_like], "4class", cache_dir=None, workers=1)
    summary = manifest["summary"]
    subset = split_of(manifest)

    assert manifest["format"] == "brain-mri-split/1"
    assert manifest["roots"] == [str(sartaj_like.resolve())]
    assert manifest["classes"] == ["glioma", "meningioma", "no_tumor", "pituitary"]
    assert {k: summary[k] for k in ("files", "distinct", "exact_duplicates_removed")} == {
        "files": 55,
        "distinct": 53,
        "exact_duplicates_removed": 2,
    }
    assert (summary["label_conflicts"], summary["undecodable"], summary["excluded_by_task"]) == (1, 1, 0)
    assert summary["images"] == 51  # 53 distinct - 1 conflict - 1 undecodable
    # the copy with the smaller path is kept, the other recorded
    assert "Testing/glioma_tumor/copy of (0).jpg" in subset
    assert "Training/glioma_tumor/img (0).jpg" not in subset
    assert list(manifest["duplicates"].values()) == [
        [{"root": 0, "path": "Training/glioma_tumor/img (0).jpg"}]
    ]
    # both conflicting copies are dropped and listed
    [conflict] = manifest["label_conflicts"].values()
    assert [(c["path"], c["label"]) for c in conflict] == [
        ("Training/meningioma_tumor/conflict.jpg", "meningioma"),
        ("Training/pituitary_tumor/conflict.jpg", "pituitary"),
    ]
    assert not any(path.endswith("conflict.jpg") for path in subset)
    [broken] = manifest["undecodable"]
    assert broken["path"] == "Training/no_tumor/broken (1).jpg"
    assert broken["error"].startswith("ImageDecodeError: ")
    assert "Training/no_tumor/png inside.jpg" in subset
    # the brightened re-encoded copy shares its group, hence its subset
    items = {item["path"]: item for name in SUBSETS for item in manifest["subsets"][name]}
    near, brighter = (
        items["Training/pituitary_tumor/near.jpg"],
        items["Testing/pituitary_tumor/near brighter.jpg"],
    )
    assert near["group"] == brighter["group"]
    assert summary["near_duplicate_groups"] == 1 and summary["largest_group"] == 2
    assert_leakage_free(manifest)


@pytest.mark.parametrize("seed", range(6))
def test_near_duplicates_always_share_a_subset(sartaj_like: Path, seed: int) -> None:
    subset = split_of(build_split([sartaj_like], "4class", seed=seed, cache_dir=None, workers=1))
    assert subset["Training/pituitary_tumor/near.jpg"] == subset["Testing/pituitary_tumor/near brighter.jpg"]


def test_binary_task_merges_tumour_types_so_no_conflict(sartaj_like: Path) -> None:
    manifest = build_split([sartaj_like], "binary", cache_dir=None, workers=1)
    assert manifest["classes"] == ["no_tumor", "tumor"]
    assert manifest["summary"]["label_conflicts"] == 0
    labels = {item["path"]: item["label"] for name in SUBSETS for item in manifest["subsets"][name]}
    assert labels["Training/meningioma_tumor/conflict.jpg"] == "tumor"
    assert set(labels.values()) == {"no_tumor", "tumor"}


def test_pairwise_task_keeps_only_its_two_classes(sartaj_like: Path) -> None:
    manifest = build_split([sartaj_like], "pairwise:glioma", cache_dir=None, workers=1)
    labels = Counter(item["label"] for name in SUBSETS for item in manifest["subsets"][name])
    assert manifest["classes"] == ["no_tumor", "glioma"]
    assert labels == {"glioma": 12, "no_tumor": 13}
    # meningioma (12 + the conflict pair) and pituitary (12 + 2 near duplicates) are left out
    assert manifest["summary"]["excluded_by_task"] == 12 + 12 + 2 + 1
    assert manifest["summary"]["label_conflicts"] == 0


def test_same_seed_same_bytes_other_seed_other_split(sartaj_like: Path, tmp_path: Path) -> None:
    first, second, other = (
        build_split([sartaj_like], "4class", seed=seed, cache_dir=tmp_path / "cache", workers=1)
        for seed in (42, 42, 43)
    )
    write_split(tmp_path / "a.json", first)
    write_split(tmp_path / "b.json", second)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert split_of(other) != split_of(first)


def test_bad_task_and_bad_ratios_are_clear_errors(sartaj_like: Path) -> None:
    with pytest.raises(TaskError, match="unknown task 'fiveclass'; valid tasks are 4class, binary"):
        build_split([sartaj_like], "fiveclass", cache_dir=None)
    with pytest.raises(SplitError, match=r"ratios must sum to 1, got 0.8 \+ 0.2 \+ 0.1 = 1.1"):
        build_split([sartaj_like], "4class", ratios=(0.8, 0.2, 0.1), cache_dir=None)


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ((0.9, 0.1), "give 3 ratios (train val test), not 2"),
        ((1.2, -0.1, -0.1), "ratios must be non-negative numbers, got 1.2 -0.1 -0.1"),
        ((0.0, 0.5, 0.5), "the train ratio must be greater than 0"),
    ],
)
def test_invalid_ratios(ratios: tuple[float, ...], message: str) -> None:
    with pytest.raises(SplitError) as caught:
        validate_ratios(ratios)
    assert str(caught.value) == message


def test_assignment_is_stratified_and_keeps_groups_whole() -> None:
    labels = ["a"] * 600 + ["b"] * 300
    groups = [i // 3 if i < 300 else i for i in range(900)]  # class a: 100 triplets + 300 singletons
    ratios = validate_ratios((0.8, 0.1, 0.1))

    subsets = assign_subsets(labels, groups, ["a", "b"], ratios, seed=1)

    counts = Counter(zip(subsets, labels, strict=True))
    for label, total in (("a", 600), ("b", 300)):
        for name in SUBSETS:
            assert abs(counts[name, label] - ratios[name] * total) <= 3
    by_group: dict[int, set[str]] = defaultdict(set)
    for group, name in zip(groups, subsets, strict=True):
        by_group[group].add(name)
    assert all(len(names) == 1 for names in by_group.values())
    assert assign_subsets(labels, groups, ["a", "b"], ratios, seed=1) == subsets
    assert assign_subsets(labels, groups, ["a", "b"], ratios, seed=2) != subsets


def test_load_split_resolves_paths_and_honours_an_override(sartaj_like: Path, tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    write_split(path, build_split([sartaj_like], "4class", cache_dir=None, workers=1))

    loaded = load_split(path)
    moved = load_split(path, data_root_override=[Path("/elsewhere/sartaj")])

    assert loaded.task == "4class" and loaded.seed == 42
    assert loaded.classes == ("glioma", "meningioma", "no_tumor", "pituitary")
    assert sum(len(loaded.items(name)) for name in SUBSETS) == 51
    assert all(item.path.is_file() for name in SUBSETS for item in loaded.items(name))
    assert loaded.class_index("no_tumor") == 2
    first = loaded.items("train")[0]
    assert moved.items("train")[0].path == Path("/elsewhere/sartaj") / first.path.relative_to(sartaj_like)
    with pytest.raises(SplitError, match="the split has no subset 'holdout'; it has train, val, test"):
        loaded.items("holdout")
    with pytest.raises(SplitError, match="the manifest has 1 data roots but 2 overrides were given"):
        load_split(path, data_root_override=[tmp_path, tmp_path])
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(SplitError, match="is not a split manifest"):
        load_split(tmp_path / "other.json")


def test_cli_writes_the_manifest_and_prints_the_table(
    sartaj_like: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "split.json"
    argv = ["split", "--data", str(sartaj_like), "--task", "binary", "--out", str(out), "--no-cache"]

    assert main([*argv, "--workers", "1"]) == 0

    printed = capsys.readouterr()
    assert json.loads(out.read_text())["task"] == "binary"
    assert "subset  no_tumor  tumor  total" in printed.out
    assert (
        "files 55, distinct 53, exact duplicates removed 2, label conflicts 0, undecodable 1" in printed.out
    )
    assert "undecodable: " in printed.out and "broken (1).jpg: ImageDecodeError" in printed.out
    assert "hashing images: 55/55" in printed.err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "pairwise:no_tumor"], "error: unknown task 'pairwise:no_tumor'; valid tasks are"),
        (["--task", "4class", "--ratios", "0.6", "0.3", "0.3"], "error: ratios must sum to 1"),
        (["--task", "4class", "--radius", "65"], "error: the near-duplicate radius must be between 0 and 64"),
    ],
)
def test_cli_reports_bad_input_in_one_line(
    sartaj_like: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["split", "--data", str(sartaj_like), "--out", str(tmp_path / "s.json"), "--no-cache", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "s.json").exists()


# --- the real data sets -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hash_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One hash cache for the whole test session, so each real data set is decoded once."""
    return tmp_path_factory.mktemp("hash-cache")


@pytest.fixture(scope="session")
def sartaj_4class(data_root: Path, hash_cache: Path) -> dict[str, Any]:
    return build_split([data_root / "sartaj-brain-tumor-mri"], "4class", cache_dir=hash_cache, workers=2)


@pytest.fixture(scope="session")
def br35h_binary(data_root: Path, hash_cache: Path) -> dict[str, Any]:
    return build_split([data_root / "br35h"], "binary", cache_dir=hash_cache, workers=2)


@pytest.mark.realdata
def test_sartaj_4class_counts_and_no_leakage(sartaj_4class: dict[str, Any]) -> None:
    summary = sartaj_4class["summary"]
    assert (summary["files"], summary["distinct"], summary["exact_duplicates_removed"]) == (3264, 3027, 237)
    assert (summary["label_conflicts"], summary["undecodable"], summary["excluded_by_task"]) == (0, 0, 0)
    assert summary["images"] == 3027
    assert summary["largest_group"] <= 20  # union-find did not chain the slices into a giant group
    assert sum(len(removed) for removed in sartaj_4class["duplicates"].values()) == 237
    assert_leakage_free(sartaj_4class)
    totals = Counter(item["label"] for name in SUBSETS for item in sartaj_4class["subsets"][name])
    for name in SUBSETS:
        for label, total in totals.items():
            share = summary["counts"][name][label] / total
            assert abs(share - sartaj_4class["ratios"][name]) < 0.02


@pytest.mark.realdata
def test_sartaj_split_is_deterministic_per_seed(
    data_root: Path, hash_cache: Path, sartaj_4class: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "again.json"
    argv = ["split", "--data", str(data_root / "sartaj-brain-tumor-mri"), "--task", "4class"]
    command = [sys.executable, "-m", "training", *argv, "--out", str(out), "--cache-dir", str(hash_cache)]
    result = subprocess.run([*command, "--quiet"], capture_output=True, text=True, check=False)
    write_split(tmp_path / "first.json", sartaj_4class)

    assert result.returncode == 0, result.stderr
    assert "files 3264, distinct 3027, exact duplicates removed 237" in result.stdout
    assert out.read_bytes() == (tmp_path / "first.json").read_bytes()
    other = build_split([data_root / "sartaj-brain-tumor-mri"], "4class", seed=7, cache_dir=hash_cache)
    assert split_of(other) != split_of(sartaj_4class)
    assert_leakage_free(other)


@pytest.mark.realdata
def test_br35h_binary_counts_and_no_leakage(br35h_binary: dict[str, Any]) -> None:
    summary = br35h_binary["summary"]
    assert (summary["files"], summary["distinct"], summary["undecodable"]) == (3000, 2999, 0)
    assert br35h_binary["duplicates"] == {
        sha: [{"root": 0, "path": "no/no532.jpg"}] for sha in br35h_binary["duplicates"]
    }
    assert len(br35h_binary["duplicates"]) == 1
    paths = split_of(br35h_binary)
    assert not any(path.startswith("pred/") for path in paths)
    assert "no/no396.jpg" in paths and "yes/y355.jpg" in paths  # PNG data under .jpg names
    assert_leakage_free(br35h_binary)


@pytest.mark.realdata
def test_pooled_binary_dedups_across_roots(
    data_root: Path, hash_cache: Path, sartaj_4class: dict[str, Any], br35h_binary: dict[str, Any]
) -> None:
    manifest = build_split(
        [data_root / "sartaj-brain-tumor-mri", data_root / "br35h"], "binary", cache_dir=hash_cache
    )
    summary = manifest["summary"]
    # 190 distinct images of Br35H yes/ and no/ also stand in Sartaj (218 counting pred/)
    assert summary["files"] == 3264 + 3000
    assert summary["distinct"] == 3027 + 2999 - 190
    assert summary["label_conflicts"] == 0  # Sartaj no_tumor and Br35H no are one label; tumour types merge
    kept_root = {item["sha256"]: item["root"] for name in SUBSETS for item in manifest["subsets"][name]}
    cross_root = [
        sha
        for sha, removed in manifest["duplicates"].items()
        if kept_root[sha] == 0 and any(copy["root"] == 1 for copy in removed)
    ]
    assert len(cross_root) == 190
    assert summary["images"] == summary["distinct"]
    assert_leakage_free(manifest)
