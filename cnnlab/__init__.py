"""cnnlab: run the classic CNN studies on MNIST, Fashion-MNIST and CIFAR-10, fast and reproducibly."""

__version__ = "0.1.0"
