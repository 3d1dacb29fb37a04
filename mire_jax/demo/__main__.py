"""python -m mire_jax.demo [--out runs/demo] [--quick]"""
from mire_jax.cli import user_errors
from mire_jax.demo.run import main

with user_errors():
    main()
