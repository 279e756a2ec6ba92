"""`python -m benchmark.lsp_latency`: run the latency benchmark and print its JSON."""

import sys

from benchmark.lsp_latency import main

sys.exit(main())
