"""Markdown table of a study results file written by tools/study_learning.py.

    python tools/study_table.py study.jsonl
"""

import json
import sys


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| run | data | changes (--set) | pretrained linear / 1-NN | random init | raw input | emb_std | pretrain s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        data = "MSR" if "msr" in r["config"] else "built-in"
        sets = " ".join(s for s in r["set"] if not s.startswith(("train.epochs", "optim.milestones"))) or "(config as packaged)"
        cell = lambda k: f"{r[k]['linear']:.1f} / {r[k]['knn1']:.1f}" if k in r else "-"
        print(f"| {r['name']} | {data} | `{sets}` | {cell('pretrained')} | {cell('random_init')} | {cell('raw_input')} | "
              f"{r['last_epoch'].get('emb_std', float('nan')):.3f} | {r['pretrain_seconds']:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1])
