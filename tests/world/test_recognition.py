"""The CDM's action-recognition set: first and last frames of one-action clips, canonical texts,
never a transition of the sets the world models train on or the test triplets."""

from __future__ import annotations

from collections import Counter

from worldboot.world import FAMILIES, SUBSETS, canonical_text, parse_scene
from worldboot.world.actions import Action
from worldboot.world.recognition import generate_recognition, transition_key, triplet_keys


def test_each_sample_is_a_clips_first_and_last_frame_with_its_canonical_action(tmp_path):
    samples = generate_recognition(tmp_path / "rec", 3, seed=7)
    assert Counter(s.subset for s in samples) == {SUBSETS[f]: 3 for f in FAMILIES}
    for s in samples:
        action = Action.from_json(s.meta["action"])
        assert s.action == canonical_text(action) and s.meta["clip"].startswith("clip_")
        # 96-pixel frames with the clip's camera shake still show the scenes before and after.
        assert parse_scene(s.source).to_json() == s.meta["source_scene"]
        assert parse_scene(s.target).to_json() == s.meta["target_scene"]
    again = generate_recognition(tmp_path / "again", 3, seed=7)
    assert [s.meta for s in again] == [s.meta for s in samples]  # deterministic by seed
    assert (tmp_path / "rec" / "manifest.jsonl").is_file()


def test_excluded_transitions_are_never_drawn(tmp_path):
    first = generate_recognition(tmp_path / "a", 4, seed=1)
    banned = triplet_keys(first)
    redrawn = generate_recognition(tmp_path / "b", 4, seed=1, exclude=banned)
    assert not triplet_keys(redrawn) & banned and len(redrawn) == len(first)


def test_the_demos_recognition_set_overlaps_neither_the_labelled_nor_the_test_triplets(tmp_path):
    from worldboot.demo import Demo, DemoConfig

    demo = Demo(DemoConfig(train_per_subset=30, test_per_subset=10, recognition_per_subset=30,
                           recognition_per_source=5, clips=1),
                tmp_path / "demo")
    counts = demo.stage_data()
    assert counts["recognition"] == 150
    rec = triplet_keys(demo.triplets("recognition"))
    assert len(rec) == 150  # no transition twice
    assert not rec & triplet_keys(demo.triplets("train")) and not rec & triplet_keys(demo.triplets("test"))
    assert transition_key(*(demo.triplets("test")[0].meta[k] for k in ("source_scene", "target_scene"))) \
        in triplet_keys(demo.triplets("test"))


def test_samples_sharing_a_first_frame_are_each_of_another_family_and_new(tmp_path):
    import pytest

    from worldboot.errors import DataError

    banned = triplet_keys(generate_recognition(tmp_path / "a", 4, seed=2))
    samples = generate_recognition(tmp_path / "rec", 4, seed=2, per_source=5, exclude=banned)
    assert Counter(s.subset for s in samples) == {SUBSETS[f]: 4 for f in FAMILIES}
    groups: dict[str, list] = {}
    for s in samples:
        groups.setdefault(s.source, []).append(s)
    assert len(groups) == 4  # 24 images for 20 samples, not 40
    for group in groups.values():
        assert sorted(Action.from_json(s.meta["action"]).family for s in group) == sorted(FAMILIES)
        assert len({s.target for s in group}) == 5
        assert all(s.meta["source_scene"] == group[0].meta["source_scene"] for s in group)
        assert parse_scene(group[0].source).to_json() == group[0].meta["source_scene"]
        for s in group:
            assert parse_scene(s.target).to_json() == s.meta["target_scene"]
    keys = triplet_keys(samples)
    assert len(keys) == 20 and not keys & banned
    uneven = generate_recognition(tmp_path / "three", 2, seed=2, per_source=3)  # 10 samples: 3, 3, 3, 1
    assert len(uneven) == 10 and len({s.source for s in uneven}) == 4
    with pytest.raises(DataError, match="per_source must be between 1 and 5"):
        generate_recognition(tmp_path / "bad", 1, per_source=6)
