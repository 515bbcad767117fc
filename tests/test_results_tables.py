"""Every results table in README.md, BENCHMARKS.md and docs/ against its raw file (benchmarks/check_results_tables.py):
a number edited by hand, or a raw file changed without its table, fails here."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "check_results_tables.py"


def test_every_results_table_matches_its_raw_file(capsys):
    spec = importlib.util.spec_from_file_location("check_results_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    code = module.main([])
    assert code == 0, capsys.readouterr().err
