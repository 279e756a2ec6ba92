"""The pygls language server: watches a repository, keeps its adapter current, serves
completions. (Built on top of `repo2lora.snapshot` and `evo_state`; see the language-server
issue.)"""
