"""``python -m score_sde.interop SRC DST --config NAME``: convert a released checkpoint of the paper."""
from .reference import main

main()
