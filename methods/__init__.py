"""SSL methods behind one interface (``methods.base.SSLMethod``) and their parts."""

from methods.registry import METHOD_SETS, METHODS, build_method, get_method

__all__ = ["METHODS", "METHOD_SETS", "build_method", "get_method"]
