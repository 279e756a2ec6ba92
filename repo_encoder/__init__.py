"""Reads a repository snapshot from git objects and turns its Python code into content-hashed
chunks and chunk vectors. The lowest layer: it imports nothing else of this project."""
