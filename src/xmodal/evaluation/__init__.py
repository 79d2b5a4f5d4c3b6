"""Measure retrieval quality on a labelled dataset: ``xmodal eval`` (manifest, metrics, runner, report)."""
