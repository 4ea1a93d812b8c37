"""The inference server: a tornado HTTP server over a continuous-batching engine.

`python -m kaito_jupyter.runtimes.inference --preset NAME` serves a preset; see docs/inference.md.
Everything heavy (torch, transformers) is imported lazily by the modules that need it.
"""
