"""One module per DVC stage: ``run(params, paths, ...)`` returns the stage's typed output.

A stage reads its inputs, calls the domain packages, writes its outputs atomically
and returns what it wrote; it never prints and never exits. The CLI echoes.
"""
