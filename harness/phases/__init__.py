"""One module per phase, each with `compute(ctx, cfg, inputs, **options)`, run inside the phase's
open MLflow run, and `load(ctx, cfg, run)`, the outputs of a finished run of it. What each reads
and consumes is declared once, in the table of harness/pipeline.py."""
