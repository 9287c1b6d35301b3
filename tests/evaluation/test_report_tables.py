"""``pcm3 report``'s tables (src/pcm3/evaluation/report_tables.py) on hand-written metrics: the paper's
figures and column order, rows that share a cell, settings that differ, notes, caveats, what is missing."""

from pathlib import Path


def test_tables_put_the_paper_beside_matching_data_only():
    from pcm3.evaluation.report_tables import recognition_tables

    def run(task, dataset, figures, kind="pretrained", **extra):
        return {"task": task, "dataset": dataset, "benchmark": "xsub", "encoder": {"kind": kind},
                "input": {"stream": "joint"}, "figures": figures, **extra}

    runs = [run("linear", "ntu60", {"top1": 80.0}), run("linear", "synthetic", {"top1": 40.0}, kind="random_init"),
            run("fusion", "ntu60", {"top1": 85.0}, run_kinds=["pretrained"] * 3, runs=[1, 2, 3]),
            run("knn", "synthetic", {"top1": 30.0, "knn1": 30.0, "knn5": 31.0})]
    md = "\n".join(recognition_tables(runs))
    assert "| encoder | stream | ntu60 xsub | synthetic xsub |" in md
    assert "| pretrained | joint | 80.0 | - |" in md and "| random init | joint | - | 40.0 |" in md
    assert "| paper: PCM3 | joint | 83.9 | - |" in md and "| paper: 3s-PCM3 | 3s fusion | 87.4 | - |" in md
    knn = md[md.index("Table 3"):]
    assert "paper" not in knn.split("\n\n")[1]   # no NTU k-NN run: no paper row in Table 3


def test_occlusion_in_the_papers_shape():
    """Table 4 as the paper lays it out: spatial xsub, xview, Δ, temporal xsub, xview, Δ, Δ the
    mean drop over the two benchmarks; the paper's row (with its Δ) beside NTU 60 only."""
    from pcm3.evaluation.report_tables import recognition_tables

    def occ(dataset, bench, s, t, clean=80.0):
        return {"task": "occlusion", "dataset": dataset, "benchmark": bench, "encoder": {"kind": "pretrained"},
                "input": {"stream": "joint"}, "figures": {"clean_top1": clean, "spatial_top1": s, "temporal_top1": t,
                                                          "spatial_drop": clean - s, "temporal_drop": clean - t}}

    md = "\n".join(recognition_tables([occ("ntu60", "xsub", 70.0, 74.0), occ("ntu60", "xview", 76.0, 78.0, clean=84.0),
                                        occ("synthetic", "xsub", 40.0, 30.0, clean=60.0)]))
    assert "| encoder | stream | spatial xsub | spatial xview | spatial Δ | temporal xsub | temporal xview | temporal Δ |" in md
    assert "| pretrained | joint | 70.0 | 76.0 | 9.0 | 74.0 | 78.0 | 6.0 |" in md
    assert "| paper: PCM3 | joint | 80.8 | 87.0 | 3.3 | 77.6 | 86.1 | 5.4 |" in md
    synthetic = md[md.index("paper's shape, synthetic"):]
    assert "| pretrained | joint | 40.0 | 20.0 | 30.0 | 30.0 |" in synthetic and "paper" not in synthetic.split("\n\n")[1]


def test_runs_that_share_a_cell_each_get_a_row():
    """Two pretrained joint encoders (seeds, ablation variants) on the same data: both shown,
    labelled by folder, neither overwriting the other; a lone run keeps the plain label."""
    from pcm3.evaluation.report_tables import recognition_tables

    def run(folder, top1, dataset="ntu60"):
        return {"task": "linear", "dataset": dataset, "benchmark": "xsub", "encoder": {"kind": "pretrained"},
                "input": {"stream": "joint"}, "figures": {"top1": top1}, "_dir": f"/runs/{folder}"}

    md = "\n".join(recognition_tables([run("lin_a", 80.0), run("lin_b", 70.0), run("lin_c", 60.0, "ntu120")]))
    assert "| encoder | stream | ntu60 xsub | ntu120 xsub |" in md  # the paper's column order
    assert "| pretrained (`lin_a`) | joint | 80.0 | - |" in md and "| pretrained (`lin_b`) | joint | 70.0 | - |" in md
    assert "| pretrained | joint | - | 60.0 |" in md


def _rec(task, dataset, figures, kind="pretrained", folder="/runs/x", **extra):
    return {"task": task, "dataset": dataset, "benchmark": "xsub", "encoder": {"kind": kind},
            "input": {"stream": "joint"}, "figures": figures, "_dir": folder, **extra}


def test_paper_3s_figure_only_beside_a_joint_bone_motion_linear_fusion():
    """Table 1's 3s-PCM3 figure stands beside a fusion of the joint, bone and motion linear scores
    on the same data only: not beside a 2-stream or 3-joint fusion, a joint-only NTU column, or
    fused semi-supervised scores (those go to Table 2)."""
    from pcm3.evaluation.report_tables import recognition_tables

    fus = dict(run_kinds=["pretrained"] * 3, runs=["a", "b", "c"])
    cases = [
        [_rec("linear", "ntu60", {"top1": 80.0}),
         _rec("fusion", "ntu60", {"top1": 85.0, "joint_top1": 80.0, "bone_top1": 79.0},
              run_kinds=["pretrained"] * 2, runs=["a", "b"])],
        [_rec("linear", "ntu60", {"top1": 80.0}), _rec("fusion", "synthetic", {"top1": 85.0}, **fus)],
        [_rec("fusion", "ntu60", {"top1": 55.0, "run1_joint_top1": 1.0, "run2_joint_top1": 1.0,
                                  "run3_joint_top1": 1.0}, **fus)],
        [_rec("fusion", "ntu60", {"top1": 55.0}, protocol={"prefix": "frac0.01_seed0_"}, **fus)],
    ]
    for runs in cases:
        md = "\n".join(recognition_tables(runs))
        assert "3s-PCM3" not in md and "87.4" not in md, md
    md = "\n".join(recognition_tables(cases[2]))
    assert "| pretrained | 3-run fusion (joint, joint, joint) | 55.0 |" in md
    md = "\n".join(recognition_tables(cases[3]))
    assert "Table 1" not in md and "| pretrained | 3s fusion, semi 1% seed 0 | 1%: 55.0 |" in md
    md = "\n".join(recognition_tables([_rec("fusion", "ntu60", {"top1": 86.0}, streams=["joint", "bone", "motion"],
                                            **fus)]))
    assert "| pretrained | 3s fusion | 86.0 |" in md and "| paper: 3s-PCM3 | 3s fusion | 87.4 |" in md


def _section(md: str, title: str) -> str:
    """The part of ``md`` from the heading containing ``title`` to the next heading."""
    start = md.index(title)
    end = md.find("\n### ", start)
    return md[start:] if end < 0 else md[start:end]


def test_rows_that_differ_in_settings_are_footnoted_and_fusion_weights_shown():
    """Runs of 3 and 5 linear epochs, one trained on 768 clips (val_fraction 0.2) instead of 960,
    sat side by side told apart by folder alone; a searched fusion that gave 0.5/0/0.5 (really
    two streams) showed no weights."""
    from pcm3.evaluation.report_tables import recognition_tables

    def lin(folder, epochs, val, train, stream="joint"):
        return _rec("linear", "ntu60", {"top1": 80.0}, folder=f"/runs/{folder}", seed=0,
                    protocol={"epochs": epochs, "val_fraction": val, "lr": 0.1, "num_workers": 4 if val else 0},
                    splits={"train": train, "test": 500}, input={"stream": stream})

    runs = [lin("e3", 3, 0.0, 960), lin("e5", 5, 0.2, 768), lin("bone", 3, 0.0, 960, "bone"),
            _rec("fusion", "ntu60", {"top1": 85.0}, runs=["a", "b", "c"], streams=["joint", "bone", "motion"],
                 run_kinds=["pretrained"] * 3, weights=[0.5, 0.0, 0.5], weights_searched=True)]
    table1 = _section("\n".join(recognition_tables(runs)), "Table 1")
    assert ("Settings differ between rows: epochs 5 (pretrained (`e5`) joint) vs 3 (the other linear rows); "
            "val_fraction 0.2 (pretrained (`e5`) joint) vs 0 (the other linear rows); training split 768 clips "
            "(pretrained (`e5`) joint) vs 960 clips (the other linear rows).") in table1
    assert "num_workers" not in table1 and "lr " not in table1   # no effect on figures / the same everywhere
    assert ("| pretrained | 3s fusion | 85.0 (weights joint 0.50, bone 0.00, motion 0.50, searched; "
            "bone unused: 2 of 3 in effect) |") in table1
    # rows of the same settings: no footnote
    same = _section("\n".join(recognition_tables([lin("e3", 3, 0.0, 960), lin("bone", 3, 0.0, 960, "bone")])),
                    "Table 1")
    assert "Settings differ" not in same


def test_notes_of_the_runs_and_the_papers_caveat_are_in_the_report():
    """Detection's notes ("a smoke test, not an evaluation", "encoder frozen; the paper fine-tunes")
    were in the folder's results.md only; the paper's rows stood beside runs of other settings
    without a word."""
    from pcm3.evaluation.report import to_html
    from pcm3.evaluation.report_tables import detection_tables, recognition_tables

    def det(kind, folder, notes):
        f = {"mAP_a@0.5 (authors)": 10.0, "mAP_v@0.5 (authors)": 9.0}
        return {"task": "detection", "dataset": "pku1", "benchmark": "xsub", "encoder": {"kind": kind},
                "figures": f, "stream": "joint", "seed": 0, "_dir": f"/runs/{folder}", "notes": notes,
                "splits": {"train": 3, "test": 3}, "protocol": {"epochs": 1}}

    frozen = "encoder frozen; the paper fine-tunes"
    smoke = "train and test share 3 videos: a smoke test, not an evaluation"
    md = "\n".join(detection_tables([det("pretrained", "det", [smoke, frozen]), det("random_init", "rnd", [frozen])]))
    assert md.count(frozen) == 1 and f"- {frozen}\n" in md               # deduplicated, both rows have it
    assert f"- {smoke} (pretrained joint)" in md                         # one row's: named
    assert ("> **Warning: a smoke test, not an evaluation.** pretrained joint: " + smoke) in md
    assert "not comparable with the paper's rows" in md
    assert "Caveat: the paper's rows come from the authors' settings" in md and "training split 3 videos" in md
    html = to_html(md, Path("."))
    assert "<blockquote" in html and "<strong>Warning: a smoke test, not an evaluation.</strong>" in html
    lin = _rec("linear", "ntu60", {"top1": 20.0}, protocol={"epochs": 2}, splits={"train": 960},
               encoder={"kind": "pretrained", "pretrain_epochs": 1}, notes=["model of epoch 2 of 2"])
    table1 = _section("\n".join(recognition_tables([lin])), "Table 1")
    assert "| paper: PCM3 | joint | 83.9 |" in table1 and "- model of epoch 2 of 2" in table1
    assert "(here: pretraining epochs 1; epochs 2; training split 960 clips)" in table1
    assert "Warning" not in table1   # no smoke test: the caveat alone
    # an encoder pretrained on other data (synthetic, evaluated on NTU 60): said in the caveat
    moved = dict(lin, encoder={"kind": "pretrained", "pretrain_epochs": 1, "pretrained_on": {"dataset": "synthetic"}})
    table1 = _section("\n".join(recognition_tables([moved])), "Table 1")
    assert "encoders pretrained on synthetic (transfer))" in table1
    home = dict(lin, encoder={"kind": "pretrained", "pretrain_epochs": 1, "pretrained_on": {"dataset": "ntu60"}})
    assert "transfer" not in _section("\n".join(recognition_tables([home])), "Table 1")


def test_columns_in_the_papers_order_and_what_is_missing_named():
    """Columns were sorted alphabetically (ntu120 before ntu60), and a report of one linear
    folder said nothing of the baselines, streams, fusion, benchmarks and tables it lacks."""
    from pcm3.evaluation.report_tables import recognition_tables

    cols = [("synthetic", "xsub"), ("pku2", "xsub"), ("ntu120", "xset"), ("ntu60", "xview"), ("ntu120", "xsub")]
    runs = [dict(_rec("linear", d, {"top1": 50.0}), benchmark=b) for d, b in cols]
    md = "\n".join(recognition_tables(runs))
    assert "| encoder | stream | ntu60 xview | ntu120 xsub | ntu120 xset | pku2 xsub | synthetic xsub |" in md
    md = "\n".join(recognition_tables([_rec("linear", "ntu60", {"top1": 80.0})]))
    assert ("missing: rows random init, raw input, supervised; streams bone, motion; 3-stream fusion; "
            "benchmarks ntu60 xview, ntu120 xsub, ntu120 xset, pku2 xsub.") in md
    # a stream present in one column only is named with the column it lacks
    md = "\n".join(recognition_tables([_rec("linear", "ntu60", {"top1": 80.0}),
                                       dict(_rec("linear", "ntu60", {"top1": 70.0}), input={"stream": "bone"}),
                                       dict(_rec("linear", "ntu60", {"top1": 70.0}), benchmark="xview")]))
    assert "streams bone (ntu60 xview), motion;" in md
    semi = _rec("semi", "ntu60", {"10%_top1_mean": 60.0, "10%_top1_std": 1.0})
    md = "\n".join(recognition_tables([semi]))
    assert "missing: labelled fractions 1%; benchmarks ntu60 xview." in md


def test_what_is_missing_and_what_differs_only_where_it_applies():
    """A report on the built-in data listed the paper's NTU/PKU benchmarks as missing; the
    supervised row's training settings and occlusion's per-row linear_run folder were listed as
    settings that differ from the other rows'."""
    from pcm3.evaluation.report_tables import recognition_tables

    def lin(kind, **protocol):
        return _rec("linear", "synthetic", {"top1": 50.0}, kind=kind, folder=f"/runs/{kind}",
                    protocol={"epochs": 3, **protocol})

    md = "\n".join(recognition_tables([lin("pretrained", supervised={"epochs": 60}),
                                       lin("supervised", supervised={"epochs": 1})]))
    table1 = _section(md, "Table 1")
    assert "benchmarks" not in table1 and "missing: rows random init, raw input;" in table1
    assert "Settings differ" not in table1  # supervised.epochs: the supervised row's own training
    occ = [_rec("occlusion", "synthetic", {"clean_top1": 50.0}, kind=k, folder=f"/runs/{k}",
                protocol={"linear_run": f"/runs/{k}/linear"}) for k in ("pretrained", "random_init")]
    assert "linear_run" not in "\n".join(recognition_tables(occ))
    two_sup = "\n".join(recognition_tables([lin("supervised", supervised={"epochs": 1}),
                                            dict(lin("supervised", supervised={"epochs": 5}), _dir="/runs/s5")]))
    assert "supervised.epochs 1" in two_sup or "supervised.epochs 5" in two_sup  # between supervised rows it counts


def test_occlusion_delta_over_different_benchmarks_is_noted():
    """Table 4's Δ averages the drop over the benchmarks a row has: a row with xsub only sat
    beside rows (and the paper) averaging over xsub and xview without a word."""
    from pcm3.evaluation.report_tables import recognition_tables

    def occ(bench, kind="pretrained"):
        return {"task": "occlusion", "dataset": "ntu60", "benchmark": bench, "encoder": {"kind": kind},
                "input": {"stream": "joint"}, "figures": {"clean_top1": 80.0, "spatial_top1": 70.0,
                                                          "temporal_top1": 75.0, "spatial_drop": 10.0,
                                                          "temporal_drop": 5.0}}

    md = "\n".join(recognition_tables([occ("xsub"), occ("xview"), occ("xsub", "random_init")]))
    shape = md[md.index("paper's shape"):]
    assert ("The Δ of these rows average over different benchmarks (a row lacks one), so they do not compare: "
            "spatial Δ over xsub (random init joint) vs xsub, xview (pretrained joint, paper: PCM3)") in shape
    md = "\n".join(recognition_tables([occ("xsub"), occ("xview"), occ("xsub", "random_init"),
                                       occ("xview", "random_init")]))
    assert "average over different benchmarks" not in md


def test_a_setting_some_rows_lack_names_every_group():
    """"pretraining epochs 6 (pretrained joint) vs 2 (the other linear rows)": the raw-input and
    random-init rows have no pretraining, yet "the other rows" took them in. A setting only some
    rows have names each group of rows; one every row has still folds the common value."""
    from pcm3.evaluation.report_tables import recognition_tables

    def lin(kind, stream, epochs=None, lr=0.1):
        m = _rec("linear", "synthetic", {"top1": 50.0}, kind=kind, folder=f"/runs/{kind}_{stream}",
                 protocol={"lr": lr})
        m["input"] = {"stream": stream}
        if epochs is not None:
            m["encoder"]["pretrain_epochs"] = epochs
        return m

    runs = [lin("pretrained", "joint", 6), lin("pretrained", "bone", 2), lin("pretrained", "motion", 2),
            lin("raw_input", "joint"), lin("random_init", "joint", lr=0.3)]
    table1 = _section("\n".join(recognition_tables(runs)), "Table 1")
    assert "pretraining epochs 2 (pretrained bone, pretrained motion) vs 6 (pretrained joint)" in table1, table1
    assert "lr 0.3 (random init joint) vs 0.1 (the other rows)" in table1, table1
    # the same for the training split sizes: rows that record none are not among "the other rows"
    sized = [dict(m, splits={"train": n}) for m, n in zip(runs[:3], (960, 480, 480))] + runs[3:]
    table1 = _section("\n".join(recognition_tables(sized)), "Table 1")
    assert "training split 480 clips (pretrained bone, pretrained motion) vs 960 clips (pretrained joint)" in table1, table1
