"""Export of the query encoder, ``pcm3.load_encoder`` and ``pcm3 embed``."""

import json

import numpy as np
import pytest
import torch

import pcm3
from pcm3.cli import main
from pcm3.errors import DataError
from pcm3.pretrain import fit, load_checkpoint

from tests.cli_errors import one_line_error
from tests.test_pretrain import tiny_config


@pytest.fixture(scope="module")
def tiny_run(synthetic_small, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    fit(tiny_config(synthetic_small, "train.epochs=1"), run)
    return run


def test_export_and_load(tiny_run, tmp_path):
    out = tmp_path / "encoder.pt"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    enc = pcm3.load_encoder(out)
    assert not enc.training and enc.stream == "joint" and enc.layout == "ntu25" and enc.clip_len == 16
    names = [n for n, _ in enc.named_parameters()]
    assert not any("prompt" in n or "proj" in n or "decoder" in n for n in names)
    x = torch.randn(4, 3, 16, 25, 2)
    feats = enc(x)
    assert feats.shape == (4, enc.feature_dim)
    # identical to the run's query encoder
    state = load_checkpoint(tiny_run / "checkpoint_last.pt")["model"]
    for k, v in enc.state_dict().items():
        assert torch.equal(v, state["encoder_q." + k]), k


def test_load_encoder_errors(tmp_path):
    with pytest.raises(DataError, match="no such"):
        pcm3.load_encoder(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="bad.pt"):
        pcm3.load_encoder(bad)


def test_embed_writes_features(tiny_run, synthetic_small, tmp_path):
    enc_path = tmp_path / "encoder.pt"
    main(["export", str(tiny_run), "--out", str(enc_path)])
    out = tmp_path / "feats.npy"
    assert main(["embed", str(enc_path), "--data", str(synthetic_small), "--benchmark", "xsub",
                 "--part", "test", "--out", str(out), "--device", "cpu"]) == 0
    feats = np.load(out)
    labels = np.load(tmp_path / "feats.labels.npy")
    assert feats.shape[0] == labels.shape[0] > 0 and np.isfinite(feats).all()
    assert main(["export", str(tmp_path / "norun"), "--out", str(tmp_path / "x.pt")]) == 2


@pytest.mark.parametrize("part", ["train", "test"])
def test_embed_encodes_the_requested_part(tmp_path_factory, tmp_path, part):
    from pcm3.data.dataset import SkeletonDataset
    from pcm3.evaluation.features import extract_features
    from tests.evaluation.tiny import encoder_file, tiny_data

    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    out = tmp_path / "feats.npy"
    assert main(["embed", str(enc), "--data", str(data), "--benchmark", "xsub", "--part", part, "--out", str(out),
                 "--device", "cpu"]) == 0
    dataset = SkeletonDataset(data, "xsub", part)
    other = SkeletonDataset(data, "xsub", {"train": "test", "test": "train"}[part])
    assert not set(dataset.indices.tolist()) & set(other.indices.tolist())
    labels = np.load(tmp_path / "feats.labels.npy")
    assert labels.tolist() == dataset.prepared.labels[dataset.indices].tolist()
    expected, _ = extract_features(pcm3.load_encoder(enc), dataset)
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- embed: what --overwrite may replace

@pytest.fixture(scope="module")
def encoder_path(tiny_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    assert main(["export", str(tiny_run), "--out", str(path)]) == 0
    return path


def test_embed_never_replaces_a_pair_the_user_wrote(encoder_path, synthetic_small, tmp_path, capsys):
    """Any ``(N, D)`` + ``(N,)`` pair was taken for embed's: ``--overwrite`` replaced a user's own
    ``other.npy`` and ``other.labels.npy`` written with NumPy."""
    feats = tmp_path / "feats"
    feats.mkdir()
    np.save(feats / "other.npy", np.ones((5, 4), np.float32))
    np.save(feats / "other.labels.npy", np.arange(5))
    before = {p.name: p.read_bytes() for p in feats.iterdir()}
    argv = ["embed", str(encoder_path), "--data", str(synthetic_small), "--benchmark", "xsub", "--part", "test",
            "--device", "cpu"]
    for extra in ([], ["--overwrite"]):
        assert main([*argv, "--out", str(feats / "other.npy"), *extra]) == 2
        one_line_error(capsys, "other.npy", "not written by pcm3 embed", "remove them yourself")
    np.save(feats / "lonely.labels.npy", np.arange(5))  # labels of the user's whose features file is gone
    assert main([*argv, "--out", str(feats / "lonely.npy"), "--overwrite"]) == 2
    one_line_error(capsys, "lonely.labels.npy", "not written by pcm3 embed")
    (feats / "lonely.labels.npy").unlink()
    assert {p.name: p.read_bytes() for p in feats.iterdir()} == before


def test_embed_replaces_its_own_pair_while_the_record_proves_it(encoder_path, synthetic_small, tmp_path, capsys):
    argv = ["embed", str(encoder_path), "--data", str(synthetic_small), "--benchmark", "xsub", "--part", "test",
            "--device", "cpu", "--out", str(tmp_path / "f.npy")]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".f.npy.pcm3", "f.labels.npy", "f.npy"]
    record = json.loads((tmp_path / ".f.npy.pcm3").read_text())
    assert record["kind"] == "features" and set(record["files"]) == {"f.npy", "f.labels.npy"}
    assert record["files"]["f.npy"]["size"] == (tmp_path / "f.npy").stat().st_size
    assert main(argv) == 2
    one_line_error(capsys, "--overwrite")
    assert main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    np.save(tmp_path / "f.labels.npy", np.arange(3))  # the user wrote over a file of the pair
    mine = (tmp_path / "f.labels.npy").read_bytes()
    assert main([*argv, "--overwrite"]) == 2
    one_line_error(capsys, "f.labels.npy was changed since pcm3 wrote it")
    assert (tmp_path / "f.labels.npy").read_bytes() == mine
    (tmp_path / ".f.npy.pcm3").write_text("my notes\n")  # a file of the user's where the record goes
    (tmp_path / "f.npy").unlink()
    (tmp_path / "f.labels.npy").unlink()
    assert main(argv) == 2
    one_line_error(capsys, ".f.npy.pcm3", "not a record pcm3 wrote")
    assert (tmp_path / ".f.npy.pcm3").read_text() == "my notes\n"


def test_embed_device_errors_name_the_option(encoder_path, synthetic_small, tmp_path, capsys):
    """``--device cuda`` without CUDA named ``train.device``, a key embed does not have."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["embed", str(encoder_path), "--data", str(synthetic_small), "--device", "cuda",
                 "--out", str(tmp_path / "f.npy")]) == 2
    msg = one_line_error(capsys, "--device cuda", "CUDA")
    assert "train.device" not in msg and not list(tmp_path.iterdir())


def test_embed_output_not_inside_a_pcm3_folder(encoder_path, synthetic_small, tmp_path, capsys):
    from tests.test_bad_input import make_prepared, tree

    other = make_prepared(tmp_path / "other")
    before = tree(tmp_path)
    assert main(["embed", str(encoder_path), "--data", str(synthetic_small), "--device", "cpu",
                 "--out", str(other / "f.npy")]) == 2
    one_line_error(capsys, "f.npy", "pcm3 prepared folder")
    assert tree(tmp_path) == before


def test_unreadable_checkpoint_message_is_short(tiny_run, encoder_path, tmp_path):
    """``pcm3 import-release RUN/checkpoint_last.pt`` printed torch's whole 1.2 KB advice with
    terminal escape codes; :func:`pcm3.export.unreadable_checkpoint` says what the file is."""
    from pcm3.io import pcm3_file_format, unreadable_checkpoint

    ckpt = tiny_run / "checkpoint_last.pt"
    assert pcm3_file_format(ckpt) == "pcm3-pretrain" and pcm3_file_format(encoder_path) == "pcm3-encoder"
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint\n")
    assert pcm3_file_format(junk) is None
    for path in (ckpt, junk):
        with pytest.raises(Exception) as e:
            torch.load(path, map_location="cpu", weights_only=True)
        msg = unreadable_checkpoint(path, e.value, "the authors' release checkpoint (.pth.tar)")
        assert "\n" not in msg and "\x1b" not in msg and len(msg) < 220, msg
        assert "release checkpoint" in msg
    assert "pcm3 pretraining checkpoint" in unreadable_checkpoint(ckpt, RuntimeError("x"), "y")
    assert "pcm3 export RUN" in unreadable_checkpoint(ckpt, RuntimeError("x"), "y")


@pytest.mark.parametrize("key, value, message", [
    ("clip_len", -5, "'clip_len' is -5, expected a whole number of frames >= 1"),
    ("clip_len", 16.5, "'clip_len' is 16.5"),
    ("test_crop", "abc", "'test_crop' is 'abc', expected a number in (0, 1]"),
    ("test_crop", 0.0, "'test_crop' is 0.0"),
    ("test_crop", float("nan"), "'test_crop' is nan"),
    ("version", 99, "encoder file version 99 is newer than this pcm3 reads (1)"),
    ("version", "1", "'version' is '1', expected a whole number >= 1"),
    ("layout", "kinect_v9", "'layout' is 'kinect_v9', not a registered skeleton layout"),
    ("stream", "bones", "'stream' is 'bones', expected one of joint, bone, motion"),
])
def test_encoder_metadata_is_checked(tmp_path_factory, tmp_path, capsys, key, value, message):
    """An encoder file edited to clip_len=-5 gave a torch RuntimeError in eval, test_crop='abc' a
    ValueError; version 99 was accepted. Now one line naming the file."""
    from tests.evaluation.tiny import cli, encoder_file, tiny_data

    payload = torch.load(encoder_file(tmp_path_factory), weights_only=False)
    payload[key] = value
    bad = tmp_path / "edited.pt"
    torch.save(payload, bad)
    with pytest.raises(DataError, match="edited.pt") as e:
        pcm3.load_encoder(bad)
    assert message in str(e.value)
    capsys.readouterr()
    assert cli("eval", "linear", "--encoder", str(bad), "--data", str(tiny_data(tmp_path_factory)), "--benchmark",
               "xsub", "--out", str(tmp_path / "ev")) == 2
    one_line_error(capsys, f"{bad}: ", message)
    assert not (tmp_path / "ev").exists()


def test_an_unreadable_encoder_file_says_why(tmp_path_factory, tmp_path):
    """`not a readable encoder file (OSError)` named only the exception class."""
    import shutil

    from tests.evaluation.tiny import encoder_file

    enc = encoder_file(tmp_path_factory)
    size = enc.stat().st_size
    cases = [(size // 2, "not a readable encoder file: truncated or not a torch file"),
             (100, "not a readable encoder file: truncated or not a torch file"),
             (0, "not a readable encoder file: empty or truncated")]
    for cut, message in cases:
        bad = tmp_path / f"cut{cut}.pt"
        shutil.copyfile(enc, bad)
        with open(bad, "r+b") as f:
            f.truncate(cut)
        with pytest.raises(DataError) as e:
            pcm3.load_encoder(bad)
        text = str(e.value)
        assert text.startswith(f"{bad}: {message}") and "\n" not in text and len(text) < len(str(bad)) + 200, text
        assert "PytorchStreamReader" not in text and "(OSError)" not in text


def test_embed_part_without_a_benchmark_is_refused(encoder_path, synthetic_small, tmp_path, capsys):
    """`--part train` without --benchmark was ignored: every sample was embedded."""
    assert main(["embed", str(encoder_path), "--data", str(synthetic_small), "--part", "train",
                 "--out", str(tmp_path / "f.npy")]) == 2
    one_line_error(capsys, "--part", "needs --benchmark")
    assert not list(tmp_path.iterdir())
