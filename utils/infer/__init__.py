"""Inference: backends over every exported format, the Detector API, exporters, TTA, ensembles."""
