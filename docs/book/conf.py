"""Sphinx settings for `make book` (lib/obslab/book.py): the course's notebooks as a static site.

The notebooks arrive already executed (papermill, kernel obslab) or deliberately unexecuted, so
myst-nb only reads them; nothing on a page loads from the internet (charts are SVG files)."""

project = "obslab: the course"
author = "obslab"
copyright = "obslab contributors, Apache-2.0"

extensions = ["myst_nb"]
myst_enable_extensions = ["colon_fence"]
nb_execution_mode = "off"  # book.py executed them; a notebook needing the lab stays as committed
nb_output_stderr = "remove"  # Spark's and the kernel's log lines are noise on a reading page
exclude_patterns = ["data", "**.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type"]

html_theme = "sphinx_book_theme"
html_title = "obslab: the course"
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "use_download_button": True,
}
html_last_updated_fmt = ""  # the build date: a reader sees when the outputs were made
