"""The benchmark of the whole pipeline (`make bench`, `make bench-quick`); see docs/performance.md."""
