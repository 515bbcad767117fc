"""The study room: `bbl study` — the student's arms over seeds, compared pairwise (`run`, `arms`, `stats`,
`report`), and the resumable runner of `bbl` child processes it shares with `bbl pipeline` (`runner`)."""

from bbl.study.run import run_study

__all__ = ["run_study"]
