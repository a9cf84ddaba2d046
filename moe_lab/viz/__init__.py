"""Figures (data -> matplotlib figure) and dashboards (ipywidgets wired to those figures). They import the
rest of the package; nothing else imports them."""
