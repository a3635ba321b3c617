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
        # statsmodels: the CO2 data set examples/pandas_ragged.py (tested) reads
        "test": ["pytest>=7", "hypothesis>=6", "statsmodels>=0.14", "tensorboard>=2.10"],
        "plot": ["matplotlib>=3.5"],
        # Trainer(log_dir=...) and `vlrnn train` write TensorBoard scalars with it
        "tensorboard": ["tensorboard>=2.10"],
        # examples/pandas_ragged.py reads the CO2 data set that ships with statsmodels
        "examples": ["statsmodels>=0.14"],
    },
    entry_points={"console_scripts": ["vlrnn=vlrnn.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
