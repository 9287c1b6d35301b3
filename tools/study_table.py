"""Markdown table of a study results file written by tools/study_learning.py.

    python tools/study_table.py study.jsonl
"""

import argparse
import json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Markdown table of a study results file (tools/study_learning.py)")
    parser.add_argument("results", help="the .jsonl file written by study_learning.py --results")
    path = parser.parse_args(argv).results
    try:
        rows = [json.loads(line) for line in open(path) if line.strip()]
    except (OSError, ValueError) as e:
        parser.error(f"{path}: {e}")
    print("| run | data | changes (--set) | pretrained linear / 1-NN | random init | raw input | emb_std | pretrain s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        data = "MSR" if "msr" in r["config"] else "built-in"
        sets = " ".join(s for s in r["set"] if not s.startswith(("train.epochs", "optim.milestones"))) or "(config as packaged)"
        cell = lambda k: f"{r[k]['linear']:.1f} / {r[k]['knn1']:.1f}" if k in r else "-"
        print(f"| {r['name']} | {data} | `{sets}` | {cell('pretrained')} | {cell('random_init')} | {cell('raw_input')} | "
              f"{r['last_epoch'].get('emb_std', float('nan')):.3f} | {r['pretrain_seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
