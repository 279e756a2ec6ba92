"""Tasks and training data: assertion tasks mined from a repository's tests, the synthetic
suite of evolving repositories, and the encoder input and examples that training (and the
benchmark above it) read. Nothing here imports the benchmark."""
