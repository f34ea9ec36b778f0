"""mnistkit: train, evaluate and use handwritten-digit classifiers (MNIST and its family) with PyTorch."""

__version__ = "0.1.0"
