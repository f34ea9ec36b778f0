"""``python -m mnistkit`` (and ``torchrun -m mnistkit``) run the command line."""

from .cli import main

if __name__ == "__main__":
    main()
