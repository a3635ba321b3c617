"""mkdocs hook: the figures in benchmarks/results/ are served as figures/<name>.png.

The benchmark scripts write their plots there; the docs link to ``figures/...`` so that
the site always shows the figures the README shows, without a second copy in docs/.
"""
from pathlib import Path

from mkdocs.structure.files import File

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def on_files(files, config):
    for png in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"figures/{png.name}", abs_src_path=str(png)))
    return files
