"""KFP v2 components, the pipeline, and its compiler."""
