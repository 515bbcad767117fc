"""bbl: Baby Llama as a tool — teachers, a cached top-k logit store in Zarr, and offline distillation.

The package is a house of rooms, one per stage, imports running one way (docs/architecture.md):
errors, io, runtime, config -> data -> losses -> models -> train -> cache -> distill -> evaluate -> finetune ->
study -> pipeline -> cli. `import bbl` stays light: torch and transformers are imported by the modules that need
them.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

__version__ = "0.1.0"

MOVED_MODULES = {
    "bbl.blimp": ("bbl.evaluate.zero_shot", "bbl.models.ensemble"),
    "bbl.cache_dataset": "bbl.cache.dataset",
    "bbl.cache_integrity": "bbl.cache.integrity",
    "bbl.cache_tools": ("bbl.cache.verify", "bbl.cache.inspect"),
    "bbl.cache.kinds.cross_tokenizer_dump": "bbl.cache.compute.cross_tokenizer",
    "bbl.cache.kinds.operations": "bbl.cache.compute.registry",
    "bbl.child": "bbl.orchestration.runner",
    "bbl.study.runner": "bbl.orchestration.runner",
    "bbl.chunked_loss": "bbl.losses.chunked",
    "bbl.cleaning": "bbl.data.cleaning",
    "bbl.cli_cache": "bbl.cli.cache_commands",
    "bbl.corpus": ("bbl.data.corpus", "bbl.data.cleaning"),
    "bbl.dump": ("bbl.cache.dump", "bbl.cache.format", "bbl.models.ensemble", "bbl.models.teachers"),
    "bbl.ledger": "bbl.train.ledger",
    "bbl.repair": "bbl.cache.repair",
    "bbl.report": "bbl.evaluate.report",
    "bbl.stats": "bbl.study.stats",
    "bbl.stores": "bbl.cache.store",
    "bbl.study_report": "bbl.study.report",
    "bbl.teachers": ("bbl.models.teachers", "bbl.models.ensemble"),
    "bbl.tokenizer": "bbl.data.tokenizer",
    "bbl.trainer_loss": "bbl.train.trainer",
    "bbl.verify_data": "bbl.data.verify",
    "bbl.windows": "bbl.data.windows",
    "bbl.words": ("bbl.data.words", "bbl.config"),
}
"""Module paths of the flat layout (before 0.2) -> where their code lives now (several modules where one was
split). Importing an old path still works for one release, with a DeprecationWarning naming the new one."""

RENAMED_OPTIONS = {
    "dump-logits": {"--out": "--cache", "--seed": "--data-seed"},
    "finetune": {"--data": "--task-data", "--task": "--tasks"},
    "pipeline": {"--data": "--corpus"},
    "sweep": {"--seed": "--sampler-seed"},
}
"""Option spellings of 0.1 -> their spelling now, by command (docs/commands.md, "Conventions"): `--data` is always a
prepared dir, a cache is always `--cache`, `--seed` always a run's training seed. The old spelling still works for
one release, with one `warning:` line naming the new one (`bbl.cli.params.BblCommand`); the runner fingerprints a
step in the old spelling, so a workdir made before the rename resumes (`bbl.orchestration.runner.fingerprint`)."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to its new module (the same module object) and warns."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED_MODULES[spec.name]
        names = (new,) if isinstance(new, str) else new
        warnings.warn(f"{spec.name} moved to {' and '.join(names)}; import from there (the old path goes in the next "
                      f"release)", DeprecationWarning, stacklevel=3)
        if len(names) == 1:
            return importlib.import_module(names[0])
        modules = [importlib.import_module(n) for n in names]
        proxy = types.ModuleType(spec.name, f"Deprecated: the names of {', '.join(names)}.")

        def __getattr__(name):
            for module in modules:
                if hasattr(module, name):
                    return getattr(module, name)
            raise AttributeError(f"module {spec.name!r} has no attribute {name!r}")

        proxy.__getattr__ = __getattr__
        return proxy

    def exec_module(self, module):
        pass  # the new module is already executed


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
