"""Test helpers that are not fixtures, shared by the concept folders of ``tests/``: ``cli`` (the outcome classes
of a bad input: one-line CLI errors, typed user errors), ``data`` (tiny data sets in their exact on-disk formats),
``models`` (the one tiny test architecture and its narrow registered twin), ``hub`` (the local Hub server's
settings), ``nir`` (stepping an imported NIR graph), ``compiled_vs_eager`` (torch.compile against eager, also run
as a script)."""
