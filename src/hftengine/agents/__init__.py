"""Thin Faust agents: decode → pure kernels → emit."""
