"""`kbsim demo`: the stages built so far, end to end on the default corpus.

Until the later stages (models, federated, eval) exist, this is the main job:

1. the simulator: the BYU Chit-Chat messages are written as JSONL, then typed by the `raw`
   preset (what lands on the keys) and the `committed` preset (what users leave after
   correcting), each into a pairs file and an M2 edit file, with headline statistics;
2. the data stage: `kbsim data build configs/data.yaml` (the defaults): clean messages, one
   client per sender with a typist of its own, user and time splits, per-client pairs, the
   word vocabulary and the subword model, with its summary table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kbsim.simjob import RunSummary, SimulateJob, run_simulate
from keyboard_sim.io import AtomicFile, json_line

PRESETS = ("raw", "committed")


@dataclass
class DemoResult:
    out: Path
    messages: Path
    senders: int
    runs: dict[str, tuple[SimulateJob, RunSummary]]
    data_dir: Path | None = None
    data_summary: dict | None = None

    def report(self) -> str:
        """Where everything went and the headline numbers, as lines for a terminal."""
        lines = [f"kbsim demo: wrote {self.out}/",
                 f"  corpus    {self.messages}  ({self.runs[PRESETS[0]][1].written:,} "
                 f"messages from {self.senders:,} senders, BYU Chit-Chat Challenge)"]
        for preset, (job, summary) in self.runs.items():
            s = summary.stats
            assert s is not None
            top = ", ".join(f"{t} {n / max(1, sum(s.edits.values())):.0%}"
                            for t, n in s.edits.most_common(4))
            lines += [
                f"  {preset:<9} {job.output}  {job.m2}",
                f"            {s.records:,} pairs, character error rate {s.cer:.2%}, "
                f"{s.changed / max(1, s.records):.0%} of messages changed, "
                f"{sum(s.edits.values()):,} edits in {summary.seconds:.1f} s",
                f"            top edit types: {top or 'none'}",
            ]
        if self.data_summary is not None:
            from data.build import format_summary

            lines += ["", f"kbsim data build: {self.data_dir}/ (kbsim data summary "
                      f"{self.data_dir})", format_summary(self.data_summary)]
        return "\n".join(lines)


def run_demo(out: Path, limit: int | None = None, workers: int = 2, seed: int = 0,
             layout: str = "en-US", progress: bool = False) -> DemoResult:
    """Writes the corpus and its simulated pairs under `out`."""
    from data.chitchat import iter_messages

    out = Path(out)
    messages = out / "messages.jsonl"
    senders: set[str] = set()
    with AtomicFile(messages, "wb") as af:
        for m in iter_messages(limit):
            senders.add(m["sender"])
            row = {"id": m["id"], "sender": m["sender"], "text": m["text"]}
            af.file.write(json_line(row).encode("utf-8"))
    runs = {}
    for preset in PRESETS:
        job = SimulateJob(input=messages, output=out / f"{preset}.pairs.jsonl", layout=layout,
                          profile=preset, seed=seed, workers=workers, id_field="id",
                          m2=out / f"{preset}.m2", stats=True)
        runs[preset] = (job, run_simulate(job, progress=progress))
    from data.build import build
    from data.config import DataConfig

    config = DataConfig()
    if limit is not None:
        import dataclasses

        config = dataclasses.replace(config, corpus=dataclasses.replace(config.corpus,
                                                                        limit=limit))
    data_dir = out / "data"
    summary = build(config, data_dir, progress=progress)
    return DemoResult(out, messages, len(senders), runs, data_dir, summary)
