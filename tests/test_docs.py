"""The documentation site builds with `mkdocs build --strict`, and its API
reference documents every name that tfnode's packages export.

A strict build fails on any warning: a docstring that Griffe cannot parse, a
documented parameter that is not in the signature, a broken link, a README
section that `docs/` includes but the README no longer marks. Griffe reads the
sources without importing them, so the build imports no TensorFlow; nor does
this module, which reads `__all__` and docstrings with `ast`.
"""

import ast
import functools
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tfnode", "tfnode.layers", "tfnode.solvers", "tfnode.models", "tfnode.data")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Builds the site once; returns the finished process and the site's path."""
    if importlib.util.find_spec("mkdocs") is None:  # fail: a skip would hide it in CI
        pytest.fail(
            'mkdocs is not installed: `pip install -e ".[test]"` installs the '
            "pinned documentation tools"
        )
    site = tmp_path_factory.mktemp("site")
    # Material for MkDocs prints a notice about its successor at every build.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir"]
    result = subprocess.run(
        [*command, str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result, site


def test_strict_build(build):
    result, _ = build
    problems = [
        line
        for line in result.stderr.splitlines()
        if "WARNING" in line or "ERROR" in line
    ]
    assert result.returncode == 0, (
        f"`mkdocs build --strict` failed in {ROOT}:\n"
        + "\n".join(problems or result.stderr.splitlines()[-30:])
    )


def _source(module):
    """The file of the dotted `module`, or `None` if there is no such module."""
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _tree(module):
    return ast.parse(_source(module).read_text())


def _binding(module, name):
    """The top-level statement of `module` that binds `name`, if any. `from
    module import name` inside `module` itself imports a submodule: not counted."""
    for node in _tree(module).body:
        if isinstance(node, ast.ImportFrom) and node.module != module:
            if any((alias.asname or alias.name) == name for alias in node.names):
                return node
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(getattr(target, "id", None) == name for target in targets):
                return node
    return None


def _definition(module, name):
    """Where attribute `name` of `module` is defined, as Python resolves it
    (a binding in `module` first, then a submodule): `(module, name)` pairs."""
    node = _binding(module, name)
    if isinstance(node, ast.ImportFrom):
        [alias] = [a for a in node.names if (a.asname or a.name) == name]
        return _definition(node.module, alias.name)
    if node is None and _source(f"{module}.{name}") is not None:
        return (f"{module}.{name}", None)
    return (module, name)


def _documented(anchor):
    """What a heading anchor of mkdocstrings (`tfnode.odeint.odeint`) refers
    to: as in Griffe, a submodule takes precedence over an attribute."""
    parts = anchor.split(".")
    for split in range(len(parts), 0, -1):
        module, rest = ".".join(parts[:split]), parts[split:]
        if _source(module) is not None:
            break
    if not rest:
        return (module, None)
    return (*_definition(module, rest[0]), *rest[1:])


def _exports(package):
    for node in _tree(package).body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "__all__":
            return ast.literal_eval(node.value)
    raise AssertionError(f"{package} has no __all__")


def _docstring(module, name):
    tree = _tree(module)
    if name is None:
        return ast.get_docstring(tree)
    node = _binding(module, name)
    if node is None:
        return None
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return ast.get_docstring(node)
    # An attribute's docstring is the string right after its assignment.
    following = tree.body[tree.body.index(node) + 1 :][:1]
    if following and isinstance(following[0], ast.Expr):
        value = following[0].value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return value.value
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_every_export_is_documented(build, package):
    result, site = build
    if result.returncode != 0:
        pytest.skip("the build failed (see test_strict_build)")
    pages = [path.read_text() for path in (site / "api").rglob("*.html")]
    anchors = set(re.findall(r'id="(tfnode[\w.]*)"', "".join(pages)))
    documented = {_documented(anchor) for anchor in anchors}
    missing = [
        name
        for name in _exports(package)
        if _definition(package, name) not in documented
    ]
    assert not missing, (
        f"{package} exports {missing}, but no page of docs/api/ documents them: "
        f"add `::: {package}.{missing[0]}` (or the module holding it) to a page "
        "of docs/api/ and give it a docstring"
    )
    undocumented = [
        name
        for name in _exports(package)
        if not _docstring(*_definition(package, name))
    ]
    assert not undocumented, f"{package} exports {undocumented} without a docstring"
