"""The benchmarks: run each as a module from the repository root (`python -m bench.run`,
`python -m bench.fleet`, ...); bench/common.py holds what they share."""
