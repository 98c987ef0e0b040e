"""Compiled Triton reads a module-level name inside a kernel only if it is a ``tl.constexpr``.

The interpreter (the CI's way of running the kernels) reads any global, so a plain number
used in a kernel passes every CPU test and fails to compile on a GPU. This test reads the
kernels' source and catches that case before a GPU does.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

KERNEL_FILES = sorted((pathlib.Path(__file__).resolve().parent.parent / "quant_kernels").glob("*.py"))


def _is_jit(node: ast.FunctionDef) -> bool:
    return any("jit" in ast.unparse(d) for d in node.decorator_list)


def _plain_globals(tree: ast.Module) -> set[str]:
    """Module-level names bound to a value that is not ``tl.constexpr(...)`` (numbers, tuples, strings ...)."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and not (isinstance(node.value, ast.Call)
                                                 and ast.unparse(node.value.func).endswith("constexpr")):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


@pytest.mark.parametrize("path", KERNEL_FILES, ids=lambda p: p.name)
def test_kernels_read_only_constexpr_globals(path):
    tree = ast.parse(path.read_text())
    plain = _plain_globals(tree)
    offending = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and _is_jit(node):
            local = {a.arg for a in node.args.args} | {n.id for n in ast.walk(node)
                                                       if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            offending += [f"{node.name} reads {name}" for name in sorted((used & plain) - local)]
    assert not offending, f"{path.name}: make these tl.constexpr (compiled Triton refuses them): {offending}"


def test_the_check_catches_a_plain_number():
    tree = ast.parse("import triton\nLIMIT = -1e30\n@triton.jit\ndef k(x):\n    return x + LIMIT\n")
    assert "LIMIT" in _plain_globals(tree)
