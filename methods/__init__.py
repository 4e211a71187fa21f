"""SSL methods behind one interface (``methods.base.SSLMethod``) and their parts."""

from methods.registry import METHODS, build_method, get_method

__all__ = ["METHODS", "build_method", "get_method"]
