"""Layouts and streams on hand-made skeletons."""

import numpy as np
import pytest
import torch

from pcm3.errors import ConfigError
from pcm3.skeleton import KINECT_V1, NTU25, Layout, get_layout, part_mask, to_bone, to_motion, to_stream


def test_ntu_layout_matches_the_method_doc():
    # (child, parent), 1-based, from the method doc
    pairs = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
             (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (21, 21),
             (22, 23), (23, 8), (24, 25), (25, 12)]
    assert [(c - 1, p - 1) for c, p in pairs] == list(enumerate(NTU25.parents))
    parts = {frozenset(p) for p in NTU25.parts.values()}
    doc = [[1, 2, 3, 4, 21], [9, 10, 11, 12, 24, 25], [5, 6, 7, 8, 22, 23], [17, 18, 19, 20], [13, 14, 15, 16]]
    assert parts == {frozenset(j - 1 for j in p) for p in doc}
    assert NTU25.center == 1 and len(NTU25.bones) == 24


@pytest.mark.parametrize("name", ["ntu25", "kinect_v1", "msr20"])
def test_layouts_are_trees_with_five_parts(name):
    lay = get_layout(name)
    assert lay.part_names == ("trunk", "left_arm", "right_arm", "left_leg", "right_leg")
    assert part_mask(lay).sum(0).tolist() == [1] * lay.num_joints
    for j in range(lay.num_joints):  # every joint reaches the root
        seen = set()
        while lay.parents[j] != j:
            assert j not in seen
            seen.add(j)
            j = lay.parents[j]


def test_unknown_layout_and_stream():
    with pytest.raises(ConfigError, match="unknown skeleton layout"):
        get_layout("kinect_v3")
    with pytest.raises(ConfigError, match="unknown stream"):
        to_stream(np.zeros((3, 2, 25, 1)), "velocity")


def hand_made():
    """(C=3, T=3, V=25, M=1): joint v at (v, 2v, 3v) + t * (1, 0, 0)."""
    x = np.zeros((3, 3, 25, 1), np.float32)
    for t in range(3):
        for v in range(25):
            x[:, t, v, 0] = [v + t, 2 * v, 3 * v]
    return x


def test_bone_on_a_hand_made_skeleton():
    x = hand_made()
    b = to_bone(x, "ntu25")
    # joint 4 (head, index 3) has parent 3 (neck, index 2): bone = (3-2, 6-4, 9-6) = (1, 2, 3)
    np.testing.assert_allclose(b[:, 1, 3, 0], [1, 2, 3])
    # joint 1 (index 0) -> parent joint 2 (index 1): (0-1, 0-2, 0-3)
    np.testing.assert_allclose(b[:, 0, 0, 0], [-1, -2, -3])
    assert np.all(b[:, :, 20, :] == 0)  # the root's bone is zero
    bt = to_bone(torch.from_numpy(x)[None], NTU25)
    np.testing.assert_allclose(bt[0].numpy(), b)
    with pytest.raises(ValueError, match="joints"):
        to_bone(x[:, :, :20], "ntu25")


def test_motion_on_a_hand_made_skeleton():
    x = hand_made()
    m = to_motion(x)
    np.testing.assert_allclose(m[0, :2], 1.0)
    np.testing.assert_allclose(m[1:, :2], 0.0)
    np.testing.assert_allclose(m[:, 2], 0.0)  # last frame zero
    mt = to_motion(torch.from_numpy(x)[None].repeat(2, 1, 1, 1, 1))
    np.testing.assert_allclose(mt[1].numpy(), m)
    assert to_stream(x, "joint") is x


def test_from_motion_inverts_to_motion():
    from pcm3.skeleton import from_motion

    x = torch.randn(2, 3, 7, 25, 2)
    back = from_motion(to_motion(x), x[:, :, :1])
    torch.testing.assert_close(back, x, rtol=0, atol=1e-5)


def test_kinect_v1_bones():
    assert KINECT_V1.num_joints == 20 and KINECT_V1.parents[3] == 2  # head -> shoulder centre


@pytest.mark.parametrize("layout", ["ntu25", "kinect_v1", "msr20"])
@pytest.mark.parametrize("up", ["y", "z"])
def test_align_view_puts_hip_spine_up_and_shoulders_on_x(layout, up):
    from pcm3.skeleton import ALIGN_JOINTS, align_view, get_layout, view_rotation

    lay = get_layout(layout)
    g = np.random.default_rng(0)
    x = g.normal(size=(3, 12, lay.num_joints, 2)).astype(np.float32)
    x[:, 0, :, 1] = 0.0  # person 2 absent in frame 0: stays zero
    x[..., 0] -= x[:, :, lay.center:lay.center + 1, 0]  # centred: the centre joint is exactly 0
    out = align_view(x, lay, up)
    hip, spine, ls, rs = (lay.joint_names.index(n) for n in ALIGN_JOINTS[layout])
    axis = {"y": 1, "z": 2}[up]
    u = out[:, 0, spine, 0] - out[:, 0, hip, 0]
    s = out[:, 0, rs, 0] - out[:, 0, ls, 0]
    np.testing.assert_allclose(u / np.linalg.norm(u), np.eye(3)[axis], atol=1e-5)  # hip -> spine exactly up
    other = 3 - axis
    assert s[0] > 0 and abs(s[other]) < 1e-5  # shoulders along +x (after removing the up component)
    r = view_rotation(x, lay, up)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(r) == pytest.approx(1.0)  # a rotation, not a reflection
    assert np.all(out[:, 0, :, 1] == 0)
    # distances are preserved
    np.testing.assert_allclose(np.linalg.norm(out[:, 3, 2, 0] - out[:, 5, 7, 0]),
                               np.linalg.norm(x[:, 3, 2, 0] - x[:, 5, 7, 0]), rtol=1e-5)


def test_align_view_leaves_a_sample_without_a_body_alone():
    from pcm3.skeleton import align_view

    x = np.zeros((3, 4, 25, 2), np.float32)
    assert np.array_equal(align_view(x, "ntu25"), x)


@pytest.mark.parametrize("parents, center, msg", [
    ((0, 5, 1), 0, "parent 5 is not a joint"),
    ((0, 0, 1), 7, "center 7 is not a joint"),
    ((1, 0, 1), 0, "the parents of joint 0 form a cycle without a root"),
    ((0, -1, 1), 0, "parent -1 is not a joint"),
    ((0, 3, 1), 0, "parent 3 is not a joint"),
    ((0, 0, 1), 3, "center 3 is not a joint"),
])
def test_a_layout_must_be_a_forest_of_its_own_joints(parents, center, msg):
    """A cycle used to end in a RecursionError in bone_scale; an outside parent in an IndexError later."""
    with pytest.raises(ValueError, match=msg):
        Layout("x", ("a", "b", "c"), parents, {"p": (0, 1, 2)}, center)
    Layout("ok", ("a", "b", "c"), (0, 0, 1), {"p": (0, 1, 2)}, 1)
