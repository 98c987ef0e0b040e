"""No top-level package or module of ours shares its name with an installed distribution's.

The repository root is first on ``sys.path`` when ``main.py`` or pytest runs, so a folder of ours
named like an installed package hides it from every library that imports it. That happened with
``kernels``: transformers >= 5.25 depends on Hugging Face's ``kernels`` package and imports it at
``import transformers``, which then found our Triton kernels (now ``quant_kernels``) instead.
"""
import importlib.metadata
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def our_top_level_names() -> set[str]:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in ROOT.glob("*.py")}
    return packages | modules


def test_finds_our_packages():
    names = our_top_level_names()
    assert {"quant_kernels", "quant_layers", "main", "model_quant"} <= names


def test_no_name_shadows_an_installed_distribution():
    installed = importlib.metadata.packages_distributions()
    clashes = {name: installed[name] for name in sorted(our_top_level_names()) if name in installed}
    assert not clashes, (f"these top-level names of ours hide installed packages of the same name "
                         f"(rename ours): {clashes}")
