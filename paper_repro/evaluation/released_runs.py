"""The authors' released run files' logged errors, beside the paper's tables and ablations (for the report).

Read from github computerhistory/AlexNet-Source-Code, layers/layer-params-*.cfg (the errors each run
logged when it was stopped, top-1 / top-5 on ten views unless said otherwise).
"""

# run, data and split, logged top-1 %, top-5 %, the paper's figure it is, the setting that makes it an ablation
RUNS = (
    ("145", "ILSVRC-2012 val", 40.66, 18.21, "Table 2, 1 CNN: 40.7 / 18.2", None),
    ("145-2010", "ILSVRC-2010 test", 37.47, 17.00, "Table 1: 37.5 / 17.0 (centre patch logged: 39.02 / 18.30)", None),
    ("148", "ILSVRC-2012 val", 42.03, 19.36, "section 3.3, without normalisation: +1.4 / +1.2", ("lrn", "none")),
    ("147", "ILSVRC-2012 val", 41.06, 18.51, "section 3.4, non-overlapping pooling: +0.4 / +0.3",
     ("pooling", "non-overlapping")),
    ("145-half", "ILSVRC-2010 test", 39.17, 18.23, "section 3.2, one GPU's half net: +1.7 / +1.2",
     ("variant", "one-column-half")),
    ("146-2012-2011", "ILSVRC-2012 val", 38.99, 16.62, "Table 2, 1 CNN*: 39.0 / 16.6 (pre-trained on 2011-20k)", None),
)
REFERENCE = {"ILSVRC-2012 val": "145", "ILSVRC-2010 test": "145-2010"}


def released_section(settings):
    """Markdown lines: every released run's logged errors, its difference to its reference run, the paper's figure."""
    logged = {run: (t1, t5) for run, _, t1, t5, _, _ in RUNS}
    md = ["### The authors' released runs", "",
          "What the released run files logged (github computerhistory/AlexNet-Source-Code, "
          "`layers/layer-params-<run>.cfg`), beside the paper's figure each one is. The ablations' differences "
          "are to the full net's run on the same data.", "",
          "| run | data | logged top-1 % | top-5 % | difference to the full net | paper | this run |",
          "|---|---|---|---|---|---|---|"]
    for run, data, t1, t5, paper, ablation in RUNS:
        ref = REFERENCE[data]
        diff = "" if run == ref or ablation is None else (
            f"{t1 - logged[ref][0]:+.2f} / {t5 - logged[ref][1]:+.2f} (vs {ref})")
        mine = ""
        if ablation is not None and settings.get(ablation[0]) == ablation[1]:
            mine = f"this run's setting (`{ablation[0]}` {ablation[1]})"
        md.append(f"| {run} | {data} | {t1:.2f} | {t5:.2f} | {diff} | {paper} | {mine} |")
    return md + [""]
