"""Test scaffolding shared by the tests, the benchmarks and `make demo-local`.

Not part of the shipped wheel: a throwaway PostgreSQL cluster, a SeaweedFS S3
server and the HO API under gunicorn, all on loopback.
"""
