"""The tuning job: LoRA and QLoRA fine-tuning of a preset on chat data, run as
`python -m kaito_jupyter.runtimes.tuning` (see cli.py and docs/tuning.md).

Modules, in the order a job uses them: config (training_config.yaml), sources (URLs, images,
directories), records (files to conversations), chat (templates and assistant-token targets),
packing (steps without padding), model (4-bit or full-precision base plus LoRA), kernels (the
fast parts of a step), trainer (the loop), checkpoints (resume), progress (events and failure
reasons), output (the adapter directory and its image).

Importing this package imports no torch: the notebook side may read its config and progress
helpers.
"""
