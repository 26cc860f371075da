"""The report of a results store: built in build.py from the study's numbers, drawn in figures.py,
tabulated in tables.py, put into sections in sections.py, and written as Markdown, HTML and JSON by
render.py."""
