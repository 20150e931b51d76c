"""Near-duplicates that only a flip or a quarter turn reveals, measured on committed splits.

The split builder groups images whose 64-bit DCT hashes are within a small Hamming radius; that hash is not
invariant to mirroring, and public 2-D brain MRI collections hold left-right mirrored and rotated copies of
one another. Here every image is hashed under the 8 transforms of :data:`training.dedup.DIHEDRAL` and grouped
both ways; a dihedral group whose members sit in different subsets is leakage the committed split did not see.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from service.preprocessing import ImageError, decode_image
from training.dedup import dihedral_phashes, group_near_duplicates, group_near_duplicates_dihedral
from training.splits import load_split

Row = tuple[str, str, str, tuple[int, ...]]  # (split, subset, label, the 8 hashes)


def measure_splits(splits: Sequence[Path], radius: int, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Per split and pooled: images, groups without and with flips, merged groups, straddling groups."""
    rows: list[Row] = []
    unreadable = 0
    for path in splits:
        split = load_split(path)
        for subset, items in split.subsets.items():
            for item in items:
                try:
                    image = decode_image(item.path.read_bytes())
                except (OSError, ImageError):
                    unreadable += 1
                    continue
                rows.append((path.stem, subset, item.label, dihedral_phashes(image)))
        say(f"{path}: hashed")
    results = {path.stem: _measure([r for r in rows if r[0] == path.stem], radius) for path in splits}
    if len(splits) > 1:
        results["pooled"] = _measure(rows, radius, pooled=True)
    return {"radius": radius, "unreadable": unreadable, "splits": results}


def _measure(
    rows: Sequence[tuple[str, str, str, tuple[int, ...]]], radius: int, pooled: bool = False
) -> dict:
    hashes = [row[3] for row in rows]
    plain = group_near_duplicates([h[0] for h in hashes], radius)
    dihedral = group_near_duplicates_dihedral(hashes, radius)
    members: dict[int, list[int]] = {}
    for index, group in enumerate(dihedral):
        members.setdefault(group, []).append(index)
    merged = sum(1 for indexes in members.values() if len({plain[i] for i in indexes}) > 1)
    straddling, images, crossing_classes = 0, 0, 0
    pairs: Counter[str] = Counter()
    for indexes in members.values():
        where = {(rows[i][0], rows[i][1]) for i in indexes}
        if len(where) > 1:
            straddling += 1
            images += len(indexes)
            crossing_classes += int(len({rows[i][2] for i in indexes}) > 1)
            pairs[" + ".join(sorted(f"{s}/{t}" if pooled else t for s, t in where))] += 1
    return {
        "images": len(rows),
        "groups_without_flips": len(set(plain)),
        "groups_with_flips": len(members),
        "largest_group_with_flips": max((len(indexes) for indexes in members.values()), default=0),
        "groups_merged_by_flips": merged,
        "groups_straddling_subsets": straddling,
        "images_in_straddling_groups": images,
        "straddling_groups_with_two_labels": crossing_classes,
        "straddling_by_subsets": dict(pairs.most_common(8)),
    }


def render_markdown(summary: dict[str, Any], command: str) -> str:
    """One row per split (and pooled)."""
    lines = [
        "# Near-duplicates under flips and quarter turns",
        "",
        f"Command: `{command}` (Hamming radius {summary['radius']}; "
        f"unreadable images: {summary['unreadable']})",
        "",
        "| split | images | groups (no flips) | groups (flips) | largest (flips) | merged by flips | "
        "straddling subsets | their images | with two labels |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in summary["splits"].items():
        lines.append(
            f"| {name} | {row['images']} | {row['groups_without_flips']} | {row['groups_with_flips']} | "
            f"{row['largest_group_with_flips']} | "
            f"{row['groups_merged_by_flips']} | {row['groups_straddling_subsets']} | "
            f"{row['images_in_straddling_groups']} | {row['straddling_groups_with_two_labels']} |"
        )
    lines.append("")
    for name, row in summary["splits"].items():
        if row["straddling_by_subsets"]:
            shown = ", ".join(f"{where}: {count}" for where, count in row["straddling_by_subsets"].items())
            lines.append(f"- {name}: {shown}")
    return "\n".join(lines) + "\n"
