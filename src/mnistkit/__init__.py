"""mnistkit: train, evaluate and use handwritten-digit classifiers (MNIST and its family) with PyTorch."""

__version__ = "0.1.0"

__all__ = ["Classifier", "__version__"]


def __getattr__(name: str):
    # Loaded on first use: `import mnistkit` (and the CLI's start-up) stays free of the inference stack.
    if name == "Classifier":
        from .inference import Classifier

        return Classifier
    raise AttributeError(f"module 'mnistkit' has no attribute {name!r}")
