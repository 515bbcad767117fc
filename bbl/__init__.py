"""bbl: Baby Llama as a tool — teachers, a cached top-k logit store in Zarr, and offline distillation.

`import bbl` stays light: torch and transformers are imported by the modules that need them.
"""

__version__ = "0.1.0"
