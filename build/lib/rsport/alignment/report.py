"""The result of an alignment run: verdicts per pair, dtype and step, as an object, a table,
``report.json`` (+ ``report_<dtype>.json``), ``report.md`` and a per-tap error plot per pair."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class AlignReport:
    """What ``rsport.align_pair`` and ``align/run_all.py`` return. Nothing raises on a failed
    comparison: ``passed`` says it, ``table()`` and the files show where.

    Attributes:
        reports: per dtype, ``{passed, dtype, variant, models: {name: {passed, notes, steps:
            {step: {passed, verdict, max_abs, max_rel, first_divergence, ...}}}}}``.
        taps: per (name, dtype), the declared taps' comparison rows in call order.
        results: per (name, dtype, step), the StepResult (rows included).
        seconds: wall time of the run.
        out: the folder the files were written to (None until ``write``).
    """

    reports: dict = field(default_factory=dict)
    taps: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    seconds: float = 0.0
    out: Path | None = None
    command: str = "rsport.align_pair"

    @property
    def passed(self) -> bool:
        return bool(self.reports) and all(r["passed"] for r in self.reports.values())

    def add(self, name: str, dtype: str, variant: str, result, notes=()) -> None:
        report = self.reports.setdefault(dtype, {"passed": True, "dtype": dtype, "variant": variant, "models": {}})
        entry = report["models"].setdefault(name, {"passed": True, "notes": list(notes), "steps": {}})
        entry["steps"][result.step] = result.summary()
        entry["passed"] &= result.passed
        report["passed"] &= result.passed
        self.results[(name, dtype, result.step)] = result

    def step(self, name: str, dtype: str, step: str):
        """The StepResult of one step."""
        return self.results[(name, dtype, step)]

    def rows(self):
        for dtype, report in self.reports.items():
            for name, entry in report["models"].items():
                for step, s in entry["steps"].items():
                    extra = s["error"] or (s["first_divergence"] if not s["passed"] else s["note"]) or ""
                    if s.get("cause"):
                        extra += f"; likely cause: {s['cause']}"
                    if s.get("location"):
                        extra += f" [{s['location']}]"
                    yield name, dtype, step, s, extra

    def table(self) -> str:
        lines = [f"{'model':<18}{'dtype':<9}{'step':<11}{'max_abs':>11}{'max_rel':>11}  {'verdict':<7} "
                 "first divergence / note"]
        for name, dtype, step, s, extra in self.rows():
            lines.append(f"{name:<18}{dtype:<9}{step:<11}{s['max_abs']:>11.2e}{s['max_rel']:>11.2e}  "
                         f"{s.get('verdict', 'PASS' if s['passed'] else 'FAIL'):<7} {extra}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "seconds": round(self.seconds, 1), "reports": list(self.reports.values())}

    def write(self, out: str | Path) -> Path:
        """report.json, report_<dtype>.json, report.md and taps_<name>.png under ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for dtype, report in self.reports.items():
            (out / f"report_{dtype}.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "report.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        pngs = plot_taps(self.taps, out)
        md = [f"# Alignment report: {'PASSED' if self.passed else 'FAILED'}", "",
              f"Command: `{self.command}` ({self.seconds:.0f} s). Verdicts: max-abs against the named tolerance "
              "profiles in rsport/tolerances.py (atol + rtol x max|reference|); float64 is the strict proof. "
              "NaN or Inf on either side fails. The reprod_log files beside this report load with "
              "`ReprodDiffHelper`, but do not judge with it: reprod_log 1.0.1 passes NaN and judges by the mean.", ""]
        notes = [(name, entry["notes"]) for report in list(self.reports.values())[:1]
                 for name, entry in report["models"].items() if entry.get("notes")]
        for name, lines in notes:
            md += [f"- {name}: " + "; ".join(lines)]
        md += ["", "| model | dtype | step | max_abs | max_rel | verdict | first divergence / note |",
               "|---|---|---|---|---|---|---|"]
        for name, dtype, step, s, extra in self.rows():
            md.append(f"| {name} | {dtype} | {step} | {s['max_abs']:.2e} | {s['max_rel']:.2e} | "
                      f"{s.get('verdict', 'PASS' if s['passed'] else 'FAIL')} | {extra} |")
        md += ["", *[f"![{p.stem}]({p.name})" for p in pngs]]
        (out / "report.md").write_text("\n".join(md) + "\n")
        self.out = out
        return out


def plot_taps(taps: dict, out: Path) -> list[Path]:
    """One PNG per pair: relative error of each tap in forward order, one line per dtype."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    written = []
    for name in dict.fromkeys(model for model, _ in taps):
        fig, ax = plt.subplots(figsize=(10, 4))
        labels = []
        for (model, dtype), rows in taps.items():
            if model == name and rows:
                ax.semilogy(range(len(rows)), [max(r.max_rel, 1e-17) for r in rows], marker="o", label=dtype)
                labels = [r.name for r in rows]
        if not ax.lines:
            plt.close(fig)
            continue
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("max |paddle - torch| / max |torch|")
        ax.set_title(f"{name}: per-tap error, forward order")
        ax.legend()
        fig.tight_layout()
        path = out / f"taps_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
