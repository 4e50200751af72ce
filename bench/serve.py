"""Serve one variant under uvicorn: ``python -m bench.serve VARIANT PORT``."""

from __future__ import annotations

import sys

import uvicorn

from bench.variants import VARIANTS

if __name__ == "__main__":
    variant, port = sys.argv[1], int(sys.argv[2])
    uvicorn.run(
        VARIANTS[variant](),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
