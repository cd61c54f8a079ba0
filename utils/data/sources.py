"""Inference inputs for the torch side: the readers are deploy/sources.py's (torch-free, one implementation for
detect.py, the Python API and the edge runner), imported here where the library looks for them."""
from deploy.sources import Frame, is_live_source, open_source

__all__ = ["Frame", "is_live_source", "open_source"]
