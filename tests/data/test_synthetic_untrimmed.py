"""The built-in untrimmed videos: PKU-MMD Part I's prepared format, seeded, cross-subject splits."""

import numpy as np
import pytest

from pcm3.cli import main
from pcm3.data.prepared import Prepared
from pcm3.data.synthetic import CLASS_NAMES, TRUNK, iter_untrimmed, prepare_synthetic_untrimmed
from pcm3.errors import ConfigError


@pytest.fixture(scope="module")
def untrimmed(tmp_path_factory):
    out = tmp_path_factory.mktemp("untrimmed") / "data"
    prepare_synthetic_untrimmed(out, seed=3, num_subjects=4, videos_per_view=1, actions_per_video=4, progress=False)
    return out


def test_format_matches_pku1(untrimmed):
    p = Prepared(untrimmed)
    assert p.kind == "sequences" and p.layout == "ntu25" and len(p) == 4 * 3
    assert (untrimmed / "offsets.npy").exists() and (untrimmed / "intervals.csv").exists()
    assert p.data.shape == (int(p.offsets[-1]), 3, 25, 2)
    assert np.all(np.diff(p.offsets) == p.lengths)
    ivs = p.intervals()
    assert len(ivs) == 12 * 4
    for iv in ivs:
        assert 0 <= iv["label"] < len(CLASS_NAMES)
        assert 0 <= iv["start"] < iv["end"] <= p.lengths[iv["index"]]
    # per video: distinct actions, in order, not overlapping, with background between them
    for i in range(len(p)):
        mine = sorted((iv for iv in ivs if iv["index"] == i), key=lambda iv: iv["start"])
        assert len({iv["label"] for iv in mine}) == 4
        assert all(a["end"] < b["start"] for a, b in zip(mine, mine[1:]))
    x = p.sample(0)
    assert x.shape[0] == 3 and np.isfinite(x).all()
    # NTU-normalised: person 1's spine-middle joint at the origin in every frame
    assert np.abs(x[:, :, 1, 0]).max() < 1e-4


def test_cross_subject_split(untrimmed):
    p = Prepared(untrimmed)
    subj = np.asarray([int(r["subject"]) for r in p.rows])
    train, test = p.split("xsub", "train"), p.split("xsub", "test")
    assert set(subj[train]) == {0, 2} and set(subj[test]) == {1, 3}
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == len(p)


def test_seeded():
    a = next(iter_untrimmed(5, num_subjects=2, videos_per_view=1, actions_per_video=3))
    b = next(iter_untrimmed(5, num_subjects=2, videos_per_view=1, actions_per_video=3))
    c = next(iter_untrimmed(6, num_subjects=2, videos_per_view=1, actions_per_video=3))
    assert np.array_equal(a["data"], b["data"]) and a["intervals"] == b["intervals"]
    assert a["data"].shape != c["data"].shape or not np.array_equal(a["data"], c["data"])


def test_transitions_are_smooth():
    v = next(iter_untrimmed(0, num_subjects=2, videos_per_view=1, actions_per_video=4))
    x = v["data"][:, :, list(TRUNK), 0]                        # (C, T, trunk joints), person 1
    step = np.linalg.norm(np.diff(x, axis=1), axis=0)          # (T-1, joints) metres per frame
    assert step.max() < 0.1  # no jump between joined clips (hands and feet have sensor faults)


def test_bad_arguments():
    with pytest.raises(ConfigError):
        next(iter_untrimmed(0, num_subjects=1))
    with pytest.raises(ConfigError):
        next(iter_untrimmed(0, actions_per_video=17))


def test_cli(tmp_path, capsys):
    out = tmp_path / "u"
    assert main(["prepare", "synthetic", "--untrimmed", "--out", str(out), "--subjects", "2",
                 "--videos-per-camera", "1", "--actions-per-video", "2", "--quiet"]) == 0
    assert Prepared(out).kind == "sequences"
    assert main(["prepare", "synthetic", "--untrimmed", "--samples-per-class", "3", "--out", str(tmp_path / "v")]) == 2
    assert "--samples-per-class" in capsys.readouterr().err
