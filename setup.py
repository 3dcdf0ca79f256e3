import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = re.search(r'^__version__ = "([^"]+)"', (here / "score_sde" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="score_sde",
    version=version,
    description="Continuous-time score-based generative models (score SDEs): SDEs, solvers, likelihoods, training, evaluation.",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["score_sde", "score_sde.*"]),
    install_requires=[
        "torch>=2.1",
        "torchsde>=0.2.6",
        "torchdiffeq>=0.2.3",
        "numpy>=1.22",
        "scipy>=1.8",
        "ml-collections>=0.1.1",
        "scikit-learn>=1.0",  # bundled 8x8 digits data set and the classical baselines
        "pillow>=9.0",  # PNG sample grids
        "tqdm>=4.60",  # progress bars
        "matplotlib>=3.5",  # the main job's metric-against-NFE plot (score-sde compare / demo)
    ],
    extras_require={
        "plot": ["matplotlib>=3.5"],
        "notebooks": ["matplotlib>=3.5", "jupyter", "nbclient>=0.7", "nbformat>=5.7", "ipykernel", "jupytext>=1.14"],
        "dev": ["pytest>=7", "pytest-xdist>=3", "matplotlib>=3.5", "nbclient>=0.7", "nbformat>=5.7", "ipykernel",
                "jupytext>=1.14", "ruff>=0.4"],
    },
    entry_points={"console_scripts": ["score-sde=score_sde.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
