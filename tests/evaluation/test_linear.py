"""Linear evaluation and the encoder rows through the CLI on tiny data; bad input; output folders."""

import json

import numpy as np
import pytest
import torch

from pcm3.evaluation.common import EvalContext, load_protocol
from pcm3.evaluation.linear import LinearProtocol, fit_linear

from .tiny import CLIP, cli, encoder_file, fast, tiny_data


def test_fit_linear_learns_separable_features():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = torch.tensor(np.eye(3)[y] * 3 + rng.normal(size=(300, 3)) * 0.3, dtype=torch.float32)
    p = LinearProtocol(epochs=5, batch_size=32, milestones=(3,))
    head, hist = fit_linear(lambda e: x, y, 3, p, device=torch.device("cpu"), seed=0)
    assert hist[-1]["train_top1"] > 95 and hist[-1]["lr"] == pytest.approx(0.01)
    assert (head(x).argmax(1).numpy() == y).mean() > 0.95
    # standardisation is folded into the layer: the saved head reads the raw features
    far = x * 1e-3 + 50.0
    p = LinearProtocol(epochs=5, batch_size=32, milestones=(3,), standardize=True)
    head, _ = fit_linear(lambda e: far, y, 3, p, device=torch.device("cpu"), seed=0)
    assert (head(far).argmax(1).numpy() == y).mean() > 0.95


def test_cli_linear_rows(tmp_path_factory, tmp_path):
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    base = ["--data", str(data), "--benchmark", "xsub", *fast()]
    assert cli("eval", "linear", "--encoder", str(enc), "--out", str(tmp_path / "pre"), *base,
               "--set", "val_fraction=0.5", "--set", "select=val") == 0
    m = json.loads((tmp_path / "pre" / "metrics.json").read_text())
    assert m["splits"] == {"train": 48, "val": 48, "test": 96}
    assert {"top1", "top5", "val_top1"} <= set(m["figures"]) and m["figures"]["top5"] >= m["figures"]["top1"]
    assert m["protocol"]["epochs"] == 4 and m["protocol"]["lr"] == 0.1 and m["dataset"] == "synthetic"
    for name in ("scores.npy", "val_scores.npy", "linear_head.pt", "test_features.npy", "history.csv", "results.md",
                 ".pcm3"):
        assert (tmp_path / "pre" / name).exists(), name
    assert np.load(tmp_path / "pre" / "test_features.npy").shape == (96, 32)

    assert cli("eval", "linear", "--random-init", "--encoder", str(enc), "--out", str(tmp_path / "rnd"), *base,
               "--seed", "1") == 0
    r = json.loads((tmp_path / "rnd" / "metrics.json").read_text())
    assert r["encoder"]["kind"] == "random_init" and "seed 1" in r["encoder"]["weights"]

    assert cli("eval", "linear", "--raw-input", "--out", str(tmp_path / "raw"), *base, "--set", f"clip_len={CLIP}") == 0
    w = json.loads((tmp_path / "raw" / "metrics.json").read_text())
    assert w["encoder"]["kind"] == "raw_input" and np.load(tmp_path / "raw" / "test_features.npy").shape == (96, 3 * CLIP * 50)

    assert cli("eval", "linear", "--supervised", "--pretrain-config", "demo", "--out", str(tmp_path / "sup"), *base,
               "--set", "supervised.epochs=1", "--set", "supervised.min_len=8", "--set", f"clip_len={CLIP}") == 0
    s = json.loads((tmp_path / "sup" / "metrics.json").read_text())
    assert s["encoder"]["kind"] == "supervised" and s["encoder"]["pretrain_config"] == "demo"
    from pcm3.export import load_encoder

    # the stream of the pretraining config (demo: motion), as a pretrained encoder of it would read
    assert load_encoder(tmp_path / "sup" / "supervised_encoder.pt").stream == "motion"


def test_cli_bad_input_one_line(tmp_path_factory, tmp_path, capsys):
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    cases = [
        (["--encoder", str(enc), "--benchmark", "xset"], "no benchmark 'xset'"),
        (["--encoder", str(enc), "--benchmark", "xsub", "--set", "epoch=3"], "unknown key 'epoch'"),
        (["--benchmark", "xsub"], "needs --encoder FILE or --run RUN"),
        (["--encoder", str(enc)], "--benchmark: required"),
        (["--random-init", "--benchmark", "xsub"], "needs the encoder architecture"),
        (["--encoder", str(tmp_path / "missing.pt"), "--benchmark", "xsub"], "no such encoder file"),
    ]
    for extra, message in cases:
        code = cli("eval", "linear", "--data", str(data), "--out", str(tmp_path / "x"), *extra)
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("error: "), (extra, err)
        assert not (tmp_path / "x").exists()
    assert cli("eval", "nope", "--data", str(data), "--out", str(tmp_path / "x")) == 2
    assert "unknown" in capsys.readouterr().err


def test_encoder_of_another_layout_is_refused(tmp_path_factory, tmp_path, capsys):
    from pcm3.evaluation.baselines import random_init_encoder
    from pcm3.evaluation.runner import save_encoder
    from pcm3.models import EncoderConfig

    data = tiny_data(tmp_path_factory)
    other = random_init_encoder(EncoderConfig(num_joints=20, num_persons=1, hidden=8, layers=1), 0, layout="kinect_v1")
    save_encoder(other, tmp_path / "ucla.pt", {})
    code = cli("eval", "knn", "--encoder", str(tmp_path / "ucla.pt"), "--data", str(data), "--benchmark", "xsub",
               "--out", str(tmp_path / "k"))
    err = capsys.readouterr().err
    assert code == 2 and "layout 'kinect_v1'" in err and err.count("\n") == 1


def test_output_folder_rules(tmp_path_factory, tmp_path, capsys):
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    args = ["eval", "knn", "--encoder", str(enc), "--data", str(data), "--benchmark", "xsub"]
    assert cli(*args, "--out", str(foreign)) == 2 and (foreign / "notes.txt").read_text() == "keep"
    assert cli(*args, "--out", str(tmp_path / "k")) == 0
    assert cli(*args, "--out", str(tmp_path / "k")) == 2          # exists: needs --overwrite
    assert cli(*args, "--out", str(tmp_path / "k"), "--overwrite") == 0
    assert cli(*args, "--out", str(data / "inside")) == 2           # never inside the input data
    capsys.readouterr()


def test_protocol_fields_reach_the_context(tmp_path_factory):
    p = load_protocol(LinearProtocol, "eval_linear", ["stream=bone"])
    ctx = EvalContext(task="linear", data=tiny_data(tmp_path_factory), benchmark="xsub", encoder=None,
                      encoder_kind="raw_input", encoder_info={}, protocol=p, out=None)
    from pcm3.evaluation.common import input_spec

    assert input_spec(ctx) == {"stream": "bone", "layout": "ntu25", "clip_len": 64, "test_crop": 0.95}
