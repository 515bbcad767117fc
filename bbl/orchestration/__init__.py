"""Orchestration both `bbl study` and `bbl pipeline` stand on: `runner`, the resumable child `bbl` runs (a step is
skipped when its fingerprint matches and its output says it finished; the state file replaced atomically). Below
`study` and `pipeline`, above the stage rooms it only calls as child processes."""
