"""The examples' command lines and figures, as a new user meets them.

`--help` answers without importing TensorFlow (the proof that it is quick: no
wall-clock assertion), describes the script in a sentence and gives every flag
help text and its default; the flags map one to one onto `main`'s keywords, with
`main`'s defaults. `assert_panels_labelled` is the figure check that the
examples' own tests apply to the figures they draw.
"""

import importlib.util
import inspect
import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py"))
# Imported by no example before its command line is parsed.
HEAVY_MODULES = (
    "keras",
    "matplotlib",
    "numpy",
    "tensorflow",
    "tensorflow_datasets",
    "tfnode",
)
# Runs an example as `python examples/X.py ARGS...` would, in this process, and
# reports its exit code and which of the heavy modules it imported.
_RUN_AND_LIST_MODULES = f"""
import runpy, sys
script, *args = sys.argv[1:]
sys.argv = [script, *args]
code = None
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exit:
    code = exit.code
print(code, sorted(set({HEAVY_MODULES!r}) & set(sys.modules)))
"""


def _python(*args):
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=EXAMPLES.parent,
        env={**os.environ, "COLUMNS": "100"},  # argparse wraps help at $COLUMNS
    )


def _options(help_text):
    """`{invocation: help}` for each entry of the `options:` section of `--help`."""
    entries = {}
    for line in help_text.split("\noptions:\n", 1)[1].splitlines():
        if line.startswith("  -"):  # "  --flag VALUE    help..." or "  --flag VALUE"
            invocation, _, rest = line.strip().partition("  ")
            entries[invocation] = rest.strip()
        elif line.startswith("   ") and entries:  # the help, continued
            entries[invocation] = f"{entries[invocation]} {line.strip()}".strip()
        else:
            break
    return entries


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_gives_every_flag_help_and_default(script):
    result = _python(str(EXAMPLES / script), "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for header in ("Title:", "Author:", "Description:", "Accelerator:"):
        assert header not in text, f"{script} --help shows its header line {header}"
    usage, description, *_ = text.split("\n\n")
    assert usage.startswith("usage:") and len(description.split()) >= 8, text
    options = _options(text)
    assert "-h, --help" in options and len(options) > 3, text
    for invocation, help_ in options.items():
        assert help_, f"{script} {invocation}: no help text"
        if invocation != "-h, --help":
            assert "(default: " in help_, f"{script} {invocation}: no default shown"


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(("args", "code"), [(["--help"], 0), (["--no-such-flag"], 2)])
def test_command_line_is_parsed_before_tensorflow_is_imported(script, args, code):
    result = _python("-c", _RUN_AND_LIST_MODULES, str(EXAMPLES / script), *args)
    assert result.stdout.splitlines()[-1] == f"{code} []", result.stdout
    if code:
        assert "unrecognized arguments: --no-such-flag" in result.stderr


def _load(script):
    spec = importlib.util.spec_from_file_location(
        f"_cli_{script[:-3]}", EXAMPLES / script
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS)
def test_flags_map_onto_main_with_its_defaults(script):
    module = _load(script)  # imports TensorFlow, but parses no command line
    assert not hasattr(module, "_ARGS")
    keywords = inspect.signature(module.main).parameters
    assert all(p.kind is p.KEYWORD_ONLY for p in keywords.values())
    parser = module._parser()
    # argparse has no public list of its flags.
    dests = [a.dest for a in parser._actions if a.dest != "help"]
    assert sorted(dests) == sorted(keywords), f"{script}: flags and keywords differ"
    # Flags left out of the namespace unless given (default SUPPRESS) take main's
    # default; every other flag's default is main's.
    defaults = vars(parser.parse_args([]))
    assert defaults == {k: keywords[k].default for k in defaults}, script


def assert_panels_labelled(fig):
    """Every visible panel of `fig` has axis labels, every labelled series is in a
    legend (of its panel or of the figure), and every colour bar has a label."""
    in_figure_legends = {
        text.get_text() for legend in fig.legends for text in legend.get_texts()
    }
    for ax in fig.axes:
        name = repr(ax.get_title() or fig.get_suptitle())
        if not ax.axison:
            continue
        if ax.get_label() == "<colorbar>":
            assert ax.get_xlabel() or ax.get_ylabel(), f"a colour bar of {name}"
            continue
        assert ax.get_xlabel() and ax.get_ylabel(), f"panel {name}: no axis label"
        legend = ax.get_legend()
        shown = in_figure_legends | {
            text.get_text() for text in (legend.get_texts() if legend else ())
        }
        _, labels = ax.get_legend_handles_labels()
        missing = set(labels) - shown
        assert not missing, f"panel {name}: {sorted(missing)} in no legend"


def colour_bar_labels(fig):
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_assert_panels_labelled_catches_a_missing_label():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.subplots()
    ax.plot([0, 1], label="series")
    ax.set(xlabel="x", ylabel="y")
    with pytest.raises(AssertionError, match="in no legend"):
        assert_panels_labelled(fig)
    ax.legend()
    assert_panels_labelled(fig)
    ax.set_ylabel("")
    with pytest.raises(AssertionError, match="no axis label"):
        assert_panels_labelled(fig)
