"""The pictures' tests draw under a non-Agg matplotlib backend (as a notebook's inline backend
would be selected); a pcm3 function that draws must leave it selected."""

import contextlib

import matplotlib


@contextlib.contextmanager
def pdf_backend():
    """Select the ``pdf`` backend inside the block (the previous one is put back after); yields
    a check, to call after the drawing, that it is still selected and pyplot holds no new figure."""
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    figures = plt.get_fignums()

    def unchanged():
        assert matplotlib.get_backend().lower() == "pdf"
        assert plt.get_fignums() == figures

    try:
        yield unchanged
    finally:
        matplotlib.use(before)
