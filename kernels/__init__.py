"""Triton kernels for real-quantized inference, each beside its pure-torch reference twin."""
