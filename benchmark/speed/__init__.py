"""Speed benchmarks (`python -m benchmark.speed.snapshot`, `.update`, `.training`): scripts
that time the library's steps on generated repositories and print JSON; they never fail a
build on timing. `scaffold` is what they share; `repos` generates what they time."""
