"""The data room: a BabyLM corpus in any released layout → cleaned text → tokenizer → token streams and word
counts (`bbl prepare`), the prepared dir later stages read (`PreparedData`), windows over its streams, and the
release check (`bbl data verify`); `bbl.data.prepare.prepare` runs `bbl prepare`. Imports nothing of bbl's but the leaves (errors, io, config)."""

from bbl.data.prepared import MANIFEST, PreparedData, stream_dtype
from bbl.data.windows import TokenWindows, select_dev_windows, select_train_windows

__all__ = ["MANIFEST", "PreparedData", "TokenWindows", "select_dev_windows", "select_train_windows",
           "stream_dtype"]
