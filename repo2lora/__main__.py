"""`python -m repo2lora` runs the CLI."""

import sys

from repo2lora.cli import main

sys.exit(main())
