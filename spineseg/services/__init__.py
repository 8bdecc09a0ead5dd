"""Use cases shared by the CLI and the web layer: each feature exists once, here, on top of
the imaging, model, metrics and registry layers."""
