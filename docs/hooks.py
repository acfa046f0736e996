"""MkDocs hooks: the repository's own documents join the site at their paths.

The README links `CHANGELOG.md`, `LICENSE`, `benchmarks/README.md` and
`examples/README.md` by their paths in the repository. The site's pages hold
the README's sections at the top level of the site, so serving these files at
the same paths makes every such link work in both places, and lets
`mkdocs build --strict` check them.
"""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY_FILES = (
    "CHANGELOG.md",
    "LICENSE",
    "benchmarks/README.md",
    "benchmarks/*.py",
    "examples/README.md",
    "examples/*.py",
)


def on_files(files, config):
    for pattern in REPOSITORY_FILES:
        for path in sorted(ROOT.glob(pattern)):
            files.append(
                File(
                    path.relative_to(ROOT).as_posix(),
                    str(ROOT),
                    config["site_dir"],
                    config["use_directory_urls"],
                )
            )
    return files
