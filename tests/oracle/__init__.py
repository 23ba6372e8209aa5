"""Scripts run inside .venv-oracle (the reference implementation), never imported by the suite."""
