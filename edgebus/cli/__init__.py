"""The `edgebus` command line: one module per command group, wired together in main.py.

Client imports happen inside each command's function, so `edgebus --help` and argument errors
never pay for (or depend on) the client and server packages.
"""
