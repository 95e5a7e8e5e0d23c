.PHONY: install test test-slow lint

install:
	pip install -e ".[dev]"

test:
	python -m pytest

test-slow:
	python -m pytest -m slow

lint:
	ruff check growres tests examples benchmarks
