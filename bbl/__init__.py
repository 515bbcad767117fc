"""bbl: Baby Llama as a tool — teachers, a cached top-k logit store in Zarr, and offline distillation.

The package is a house of rooms, one per stage, imports running one way (docs/architecture.md):
errors, io, runtime, config -> data -> losses -> models -> train -> cache -> distill -> evaluate -> study ->
pipeline -> cli. `import bbl` stays light: torch and transformers are imported by the modules that need them.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

MOVED_MODULES = {
    "bbl.blimp": "bbl.evaluate.zero_shot",
    "bbl.cache_dataset": "bbl.cache.dataset",
    "bbl.cache_integrity": "bbl.cache.integrity",
    "bbl.cache_tools": "bbl.cache.verify",
    "bbl.child": "bbl.study.runner",
    "bbl.chunked_loss": "bbl.losses.chunked",
    "bbl.cleaning": "bbl.data.cleaning",
    "bbl.cli_cache": "bbl.cli.cache_commands",
    "bbl.corpus": "bbl.data.corpus",
    "bbl.dump": "bbl.cache.dump",
    "bbl.ledger": "bbl.train.ledger",
    "bbl.repair": "bbl.cache.repair",
    "bbl.report": "bbl.evaluate.report",
    "bbl.stats": "bbl.study.stats",
    "bbl.stores": "bbl.cache.store",
    "bbl.study_report": "bbl.study.report",
    "bbl.teachers": "bbl.models.teachers",
    "bbl.tokenizer": "bbl.data.tokenizer",
    "bbl.trainer_loss": "bbl.train.trainer",
    "bbl.verify_data": "bbl.data.verify",
    "bbl.windows": "bbl.data.windows",
    "bbl.words": "bbl.data.words",
}
"""Module paths of the flat layout (before 0.2) -> where their code lives now. Importing an old path still works
for one release, with a DeprecationWarning naming the new one."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to its new module (the same module object) and warns."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import {new} (the old path goes in the next release)",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the new module is already executed


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
