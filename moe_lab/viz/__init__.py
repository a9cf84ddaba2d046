"""Figures (data -> matplotlib figure) and dashboards (ipywidgets wired to those figures), for notebooks 02-08
(the widget pattern is introduced in notebook 05). They import the rest of the package; only the exercise
checkers import them."""
